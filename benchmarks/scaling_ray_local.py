"""A sweep on a two-node Ray cluster started on this machine, beside the same sweep on the local pool.

    OMP_NUM_THREADS=1 python benchmarks/scaling_ray_local.py [--episodes 20] [--out benchmarks/results/scaling]

The cluster is ``ray.cluster_utils.Cluster``: a head and a second node, 1 CPU each, sharing this
machine's filesystem (so the sweep directory is at the same path on both). The sweep is
``configs/smoke.yaml`` (2 learning rates x 2 seeds of a 12-agent, 4-step system) with the given
episodes. Writes ``ray_two_nodes.json``: wall times, and for every run the node (Ray node id, which
of head / node2), host, pid, start time and wall time, read back from the sweep's manifest.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling"))
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from ccm_madrl.provenance import collect
    from ccm_madrl.sweep import BackendOptions, run_sweep

    work = Path(tempfile.mkdtemp(prefix="scaling-"))
    changes = {"set_": [f"training.episodes={args.episodes}"], "progress": False}
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    node2 = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    t_up = time.perf_counter() - t0
    names = {cluster.head_node.node_id: "head", node2.node_id: "node2"}
    try:
        t1 = time.perf_counter()
        res = run_sweep(
            ROOT / "configs" / "smoke.yaml",
            work / "ray",
            backend="ray",
            address=cluster.address,
            backend_options=BackendOptions(ship_package=False),
            **changes,
        )
        t_ray = time.perf_counter() - t1
    finally:
        cluster.shutdown()
    man = json.loads((work / "ray" / "manifest.json").read_text())["runs"]
    t2 = time.perf_counter()
    local = run_sweep(ROOT / "configs" / "smoke.yaml", work / "local", backend="local", workers=2, **changes)
    t_local = time.perf_counter() - t2
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    prov = collect()
    out = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/scaling_ray_local.py --episodes {args.episodes}",
        "commit": commit,
        "machine": {k: prov.get(k) for k in ("hostname", "platform", "device_name", "torch")}
        | {
            "cpu_count": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "ray": ray.__version__,
        },
        "note": "two Ray nodes started on one loaded 2-core machine (other jobs running at nice 19)",
        "sweep": "configs/smoke.yaml",
        "episodes_per_run": args.episodes,
        "runs": len(man),
        "cluster_start_s": round(t_up, 2),
        "ray_sweep_wall_s": round(t_ray, 2),
        "ray_done": res.done,
        "ray_failed": res.failed,
        "local_pool_workers_2_wall_s": round(t_local, 2),
        "local_done": local.done,
        "per_run": [
            {
                "id": e["id"],
                "node": names.get(e.get("node"), e.get("node")),
                "host": e.get("host"),
                "pid": e.get("pid"),
                "started_at_s": round(e["started_at"] - min(x["started_at"] for x in man), 2),
                "wall_time_s": round(e["wall_time_s"], 2),
                "status": e["status"],
            }
            for e in man
        ],
    }
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "ray_two_nodes.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
