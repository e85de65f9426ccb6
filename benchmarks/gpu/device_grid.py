"""The device-resident path (``training.device_resident: on``) on a grid, in one 10-minute call.

The first ``--runs`` runs of a sweep (default ``configs/paper/table1_s10.yaml``: monitor, metrics and
checkpoints as the sweep configures them) as ONE pack on ``--device`` for at most ``--episodes``
episodes (and ``--seconds`` of wall time). After EVERY episode the JSON (default
``benchmarks/results/gpu/device_resident_grid.json``) is rewritten, so a call cut off keeps what it
measured: the wall time of every pack episode (the whole loop iteration), the median per
run-episode, the extrapolation to the sweep's episodes, the fraction of fp32 peak where the GPU's
peak is known (from the issue's ~14 GFLOP per run-episode), GPU and host memory per run, and the
device path's passes per episode (1: the speculated exceeded pattern held).

Run: PYTHONPATH=src python benchmarks/gpu/device_grid.py --device cuda --runs 160 --episodes 150
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

from ccm_madrl import jsonio
from ccm_madrl.bench import machine
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.experiment.stop import StopToken
from ccm_madrl.sweep import expand, load_sweep

GFLOP_PER_RUN_EPISODE = 14.0  # issue #34: training step 11.6-13.3 + evaluation 2.34 (published sizes)
FP32_PEAK_TFLOPS = {"H100": 67.0, "H200": 67.0, "A100": 19.5}  # dense fp32, non-tensor-core (SXM)


def _peak(device: str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in FP32_PEAK_TFLOPS.items() if k in name), None)


def _summary(res: dict, stamps: list[float], runs: int, total: int, device: str) -> dict:
    it = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = it[2:] if len(it) > 4 else it  # the first episodes fill the replay and compile
    med = statistics.median(steady) if steady else float("nan")
    ms = 1e3 * med / runs
    peak = _peak(device)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.device(device).type == "cuda" else None
    res.update(
        episodes_measured=len(it),
        pack_episode_s=it,
        run_episode_ms=ms,
        grid_minutes_extrapolated=(sum(it) + (total - len(it)) * med) / 60 if it else None,
        fp32_peak_fraction=(GFLOP_PER_RUN_EPISODE * 1e9 / (ms / 1e3)) / (peak * 1e12) if peak and it else None,
        gpu_memory_per_run_mib=gpu / runs if gpu is not None else None,
        host_memory_per_run_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / runs,
    )
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--runs", type=int, default=160)
    p.add_argument("--episodes", type=int, default=150, help="stop after this many episodes")
    p.add_argument("--seconds", type=float, default=540.0, help="stop after this wall time")
    p.add_argument("--sweep", default="configs/paper/table1_s10.yaml")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE override of the sweep's base")
    p.add_argument("--out", default="benchmarks/results/gpu/device_resident_grid.json")
    a = p.parse_args()
    sets = [f"device={a.device}", "training.device_resident=on", *a.set]
    spec, base = load_sweep(a.sweep, set_=sets)
    cfgs = [r.config for r in expand(spec, base, a.sweep)][: a.runs]
    total, out = cfgs[0].training.episodes, Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = machine()
    res = {"device": info.get("gpu") or info["cpu"], "runs": len(cfgs), "commit": info["commit"],
           "machine": info, "sweep": a.sweep, "overrides": sets, "episodes_per_run": total}  # fmt: skip
    stamps: list[float] = []
    stop = StopToken()
    timer = threading.Timer(a.seconds, stop.request)
    orig = PackTrainer.episode

    def timed(self, ep):
        stamps.append(time.perf_counter())
        if len(stamps) > 1:  # the previous loop iteration is whole: write what is measured
            passes = self._device.passes if self._device else []
            out.write_text(jsonio.dumps({**_summary(res, stamps, len(cfgs), total, a.device), "passes": passes}))
        else:
            timer.start()
        if ep + 1 >= a.episodes:
            stop.request()
        return orig(self, ep)

    PackTrainer.episode = timed
    with tempfile.TemporaryDirectory() as d:
        tr = PackTrainer(cfgs, [Path(d) / f"r{i}" for i in range(len(cfgs))], stop=stop)
        try:
            tr.run()
        except KeyboardInterrupt:
            pass
        finally:
            timer.cancel()
        stamps.append(time.perf_counter())
        passes = tr._device.passes if tr._device else []
    out.write_text(jsonio.dumps({**_summary(res, stamps, len(cfgs), total, a.device), "passes": passes}))
    print(out.read_text()[:2000], flush=True)


if __name__ == "__main__":
    main()
