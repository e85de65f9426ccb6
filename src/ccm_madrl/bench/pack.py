"""``ccm-madrl bench agent --pack R``: packs of R runs of the Table 1 grid trained as one program."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import torch

from .. import jsonio
from .common import _agent_header, _step_flops, ms_medians, step_rates
from .options import PackBench
from .published import _time_published

PACK = PackBench()  # the defaults

TABLE1_GRID = [1e-4, 1e-3, 1e-2, 1e-1]


def grid_configs(runs: int, update: str, training: dict, monitor: dict, steps: int = 10, device: str = "cpu"):
    """The configs of ``runs`` runs of the Table 1 grid's cells in order (seeds 0..runs-1, actor /
    critic learning rates cycling over the 4 x 4 grid of ``configs/paper/table1_s10.yaml``)."""
    from ..experiment.config import build_config

    grid = TABLE1_GRID
    return [
        build_config(
            {
                "name": f"r{i}",
                "seed": i,
                "device": device,
                "threads": torch.get_num_threads(),
                "env": {"max_steps": steps},
                "agent": {"actor_update": update, "actor_lr": grid[i % 4], "critic_lr": grid[(i // 4) % 4]},
                "training": training,
                "monitor": monitor,
            }
        )
        for i in range(runs)
    ]


def replay_batch(pack, seed: int = 0) -> tuple[dict, np.ndarray]:
    """One prioritised replay batch of 64 samples per run of ``pack``, run-major, and its weights."""
    samples = [s.replay.sample(64, np.random.default_rng(seed)) for s in pack.runs]
    batch = {k: torch.cat([b[k] for b, _, _ in samples]) for k in samples[0][0]}
    return batch, np.concatenate([x for _, _, x in samples])


def grid_pack_batch(runs: int, episodes: int = 3, seed_batch: int = 0):
    """A pack of ``runs`` runs of the grid (:func:`grid_configs`: N = 50, 10 steps, sequential
    order, monitor off) trained ``episodes`` episodes, and one replay batch (:func:`replay_batch`):
    ``(pack, batch, weights)``, for timing its training step (the pack trainer's run directories
    are temporary and removed)."""
    import tempfile

    from ..experiment.pack import PackTrainer

    cfgs = grid_configs(
        runs,
        "sequential",
        {"episodes": episodes, "eval_episodes": 5, "tensorboard": False},
        {"enabled": False},
    )
    with tempfile.TemporaryDirectory() as d:
        tr = PackTrainer(cfgs, [Path(d) / c.name for c in cfgs])
        tr.run()
    return (tr.pack, *replay_batch(tr.pack, seed_batch))


def _measured(df, mon: bool):
    """The measured episodes of a pack's first run (trained, after the first two; monitor on: the
    measured ones), the monitor's bookkeeping ms per run-episode and its overhead fraction."""
    steady = df[df["trained"]].iloc[2:]
    if not mon:
        return steady, 0.0, None
    on, off = steady[steady["episode"] % 2 == 0], steady[steady["episode"] % 2 == 1]
    mon_ms = 1e3 * float(on["time_monitor_s"].median())
    t_on = float(on["time_episode_s"].median()) + mon_ms / 1e3
    return on, mon_ms, t_on / float(off["time_episode_s"].median()) - 1


def _pack_row(cfgs: list, mon: bool, device: str, peak: float) -> dict:
    """Train one pack of ``cfgs`` and time it: the result row of :func:`bench_pack` (without its
    update order and monitor switch)."""
    import tempfile

    import pandas as pd

    from ..experiment.pack import PackTrainer

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tr = PackTrainer(cfgs, [Path(d) / c.name for c in cfgs])
        tr.run()
        wall = time.perf_counter() - t0
        df = pd.read_parquet(Path(d) / "r0" / "metrics.parquet")
    steady, mon_ms, overhead = _measured(df, mon)
    batch, w = replay_batch(tr.pack)
    flops, t_step = _step_flops(tr.pack.train_step, (batch, w), 3, device)
    row = {
        "episodes_measured": len(steady),
        "run_episode_ms_median": 1e3 * float(steady["time_episode_s"].median()) + mon_ms,
        "monitor_ms_per_run_episode": mon_ms,
        "monitor_overhead_fraction": overhead,
        **ms_medians(
            steady,
            eval_ms_per_run="time_eval_s",
            act_ms_per_run="time_act_s",
            train_step_ms_per_run="time_train_s",
        ),
        **step_rates(flops, t_step, peak, "pack_train_step_gflop"),
        "wall_s_incl_startup": wall,
        "peak_rss_mib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **({"peak_gpu_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20} if cuda else {}),
    }
    del tr, batch  # free this pack before the next one's memory is measured
    if cuda:
        torch.cuda.empty_cache()
    return row


def bench_pack(
    packs: tuple[int, ...] = PACK.packs,
    updates: tuple[str, ...] = PACK.updates,
    monitors: tuple[bool, ...] = PACK.monitors,
    episodes: int = PACK.episodes,
    eval_episodes: int = PACK.eval_episodes,
    steps: int = PACK.steps,
    device: str = PACK.device,
    published: tuple[str, ...] = PACK.published,
    published_episodes: int = PACK.published_episodes,
) -> dict:
    """Milliseconds per run-episode of packs of R runs (seeds 0..R-1, actor / critic learning rates
    cycling over the 4 x 4 grid of ``configs/paper/table1_s10.yaml``): the pack's episode time / R,
    median over its trained episodes after the first two; FLOPs of one packed training step and the
    fraction of the measured matmul peak it reaches (best of 3 repeats on a replay batch); R = 1 is
    the single run through the same engine. Monitor on: ``monitor.interval = 2``; the row's times are
    those of the measured episodes, its overhead (measured episode + bookkeeping) / unmeasured - 1.
    ``device``: where the packs train (``cuda``: the peak is the GPU's float32 matmul peak, the step
    times are synchronised, and each pack's peak GPU memory is recorded). ``published``: local
    checkouts of the published repository, timed after the packs in the same run
    (:func:`bench_published`); each gets its training episode's ratio to every pack's run-episode
    (``run_episode_ratios``, wall time: the packs record no CPU time)."""
    out = _agent_header(episodes, eval_episodes, device)
    training = {
        "episodes": episodes,
        "eval_episodes": eval_episodes,
        "tensorboard": False,
        "checkpoint_every": 10**6,
    }
    for upd in updates:
        for mon in monitors:
            for r in packs:
                # monitor on: measured every other episode, so that measured and unmeasured
                # episodes alternate under the same machine load
                cfgs = grid_configs(r, upd, training, {"enabled": mon, "interval": 2}, steps, device)
                row = _pack_row(cfgs, mon, device, out["matmul_peak_gflops"])
                out["results"].append({"runs_per_pack": r, "actor_update": upd, "monitor": mon, **row})
                print(jsonio.dumps(out["results"][-1]), flush=True)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if published:

        def ratios(res: dict) -> None:
            res["run_episode_ratios"] = [
                {
                    "actor_update": r["actor_update"],
                    "runs_per_pack": r["runs_per_pack"],
                    "monitor": r["monitor"],
                    "ratio": res["episode_ms_median"] / r["run_episode_ms_median"],
                }
                for r in out["results"]
            ]

        out["published"] = _time_published(published, published_episodes, ratios)
    return out
