"""Write ``learner.json`` (the learner's description, which Table 2 of the report reads) into the
runs written before 0.2.0, which have none: ``python scripts/describe_learners.py SWEEP_OR_RUN_DIR...``.
Archives hold every archived run's description already (``configs.parquet``'s ``learner_json``)."""

from __future__ import annotations

import sys

from ccm_madrl.experiment.describe import write_missing_descriptions


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    written = write_missing_descriptions(argv)
    for rd in written:
        print(f"wrote {rd / 'learner.json'}")
    print(f"{len(written)} run(s) described")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
