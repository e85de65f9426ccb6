"""Why one config and seed has two results: retrain an archived run for its first episodes alone and
in the pack it was archived from (its provenance names the pack's members), and compare both, episode
by episode, with the archive and with each other.

    PYTHONPATH=src python scripts/pack_replay_check.py results/table1_s10_published 8de0e07592d2 \
        --episodes 60 --out benchmarks/results/pack_replay_8de0e07592d2.json

Writes per episode the evaluation and training returns of the archive, the pack replay and the
alone replay, and the first episode at which each pair differs by more than 1e-6 relative, with the
provenance of this check (commit, torch, threads). Runs at one torch thread, as the sweeps do.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ccm_madrl.archive import ArchiveStore
from ccm_madrl.experiment.config import build_config
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.experiment.runner import Trainer
from ccm_madrl.experiment.stop import StopToken
from ccm_madrl.provenance import source_commit

RTOL = 1e-6


class AfterEpisodes(StopToken):
    """Stops a trainer (or a pack) once every run it trains has finished ``episodes`` episodes: the
    runs keep their full config (the exploration schedule depends on the configured episode count)."""

    def __init__(self, episodes: int):
        super().__init__()
        self.episodes, self.runs = episodes, lambda: []

    @property
    def requested(self) -> bool:
        runs = self.runs()
        return bool(runs) and all(r.episodes_done >= self.episodes for r in runs)


def train_first(make, episodes: int):
    """Train what ``make(stop)`` builds until every run has ``episodes`` episodes."""
    stop = AfterEpisodes(episodes)
    trainer = make(stop)
    stop.runs = lambda: getattr(trainer, "members", None) or [trainer]
    try:
        trainer.run()
    except KeyboardInterrupt:
        pass


def first_diff(a: np.ndarray, b: np.ndarray) -> int | None:
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], float), np.asarray(b[:n], float)
    bad = ~np.isclose(a, b, rtol=RTOL, atol=0, equal_nan=True)
    return int(np.argmax(bad)) if bad.any() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("archive")
    p.add_argument("run_id")
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(1)
    store = ArchiveStore([a.archive])
    configs = store.table("configs").set_index("run_id")
    prov = json.loads(configs.loc[a.run_id, "provenance_json"])
    members = prov.get("pack", {}).get("members") or [a.run_id]
    cfgs = []
    for rid in members:
        cfgs.append(build_config(yaml.safe_load(configs.loc[rid, "config_yaml"])))
    met = store.metrics
    archived = met[met["run_id"] == a.run_id].sort_values("episode").head(a.episodes)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pack_dirs = [tmp / f"pack_{i}" for i in range(len(cfgs))]
        train_first(lambda stop: PackTrainer(cfgs, pack_dirs, stop=stop), a.episodes)
        k = members.index(a.run_id)
        packed = pd.read_parquet(pack_dirs[k] / "metrics.parquet").sort_values("episode").head(a.episodes)
        train_first(lambda stop: Trainer(cfgs[k], tmp / "alone", progress=False, quiet=True, stop=stop), a.episodes)
        alone = pd.read_parquet(tmp / "alone" / "metrics.parquet").sort_values("episode").head(a.episodes)
    cols = ("eval_return", "train_return")
    res = {
        "command": "PYTHONPATH=src python scripts/pack_replay_check.py "
        f"{a.archive} {a.run_id} --episodes {a.episodes} --out {a.out}",
        "archive": a.archive,
        "run_id": a.run_id,
        "archived_with": {"commit": prov.get("commit"), "pack": prov.get("pack"), "threads": prov.get("threads")},
        "checked_with": {**source_commit(), "torch": torch.__version__, "threads": 1},
        "episodes": a.episodes,
        "rtol": RTOL,
        "first_episode_beyond_rtol": {
            f"{x} vs {y}: {c}": first_diff(dx[c].to_numpy(), dy[c].to_numpy())
            for c in cols
            for (x, dx), (y, dy) in (
                (("archive", archived), ("pack replay", packed)),
                (("archive", archived), ("alone", alone)),
                (("pack replay", packed), ("alone", alone)),
            )
        },
        "per_episode": {
            name: {c: [None if not np.isfinite(v) else float(v) for v in df[c].to_numpy()] for c in cols}
            for name, df in (("archive", archived), ("pack replay", packed), ("alone", alone))
        },
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    for key, v in res["first_episode_beyond_rtol"].items():
        print(f"{key}: {'agree to ' + str(RTOL) if v is None else f'first beyond rtol at episode {v}'}")


if __name__ == "__main__":
    main()
