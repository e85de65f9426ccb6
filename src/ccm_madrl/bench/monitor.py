"""``ccm-madrl bench monitor``: the gradient-flow monitor's overhead."""

from __future__ import annotations

from pathlib import Path

import torch

from .options import MonitorBench

MONITOR = MonitorBench()  # the defaults


def bench_monitor(
    updates: tuple[str, ...] = MONITOR.updates,
    episodes: int = MONITOR.episodes,
    eval_episodes: int = MONITOR.eval_episodes,
) -> dict:
    """Monitor overhead at interval 1, measured robustly to machine load: one run per update order
    with ``monitor.interval = 2``, so measured and unmeasured episodes alternate under the same
    conditions. Overhead = (median measured episode + median monitor bookkeeping of measured
    episodes) / median unmeasured episode - 1, over trained episodes after the first four."""
    import tempfile

    import pandas as pd

    from ..experiment.config import build_config
    from ..experiment.runner import Trainer

    out: dict = {"episodes_per_run": episodes, "eval_episodes": eval_episodes, "results": []}
    for upd in updates:
        cfg = build_config(
            {
                "threads": torch.get_num_threads(),  # the machine's setting, as recorded
                "agent": {"variant": {"actor_update": upd}},
                "training": {
                    "episodes": episodes,
                    "eval_episodes": eval_episodes,
                    "tensorboard": False,
                    "checkpoint_every": 10**6,
                },
                "monitor": {"enabled": True, "interval": 2},
            }
        )
        with tempfile.TemporaryDirectory() as d:
            Trainer(cfg, Path(d) / "run", progress=False).run()
            df = pd.read_parquet(Path(d) / "run" / "metrics.parquet")
        df = df[df["trained"]].iloc[4:]
        on = df[df["episode"] % 2 == 0]
        off = df[df["episode"] % 2 == 1]
        t_on = float(on["time_episode_s"].median() + on["time_monitor_s"].median())
        t_off = float(off["time_episode_s"].median())
        out["results"].append(
            {
                "actor_update": upd,
                "episodes_measured_on": len(on),
                "episodes_measured_off": len(off),
                "episode_ms_monitor_off": 1e3 * t_off,
                "episode_ms_monitor_on": 1e3 * t_on,
                "monitor_bookkeeping_ms": 1e3 * float(on["time_monitor_s"].median()),
                "overhead_fraction": t_on / t_off - 1,
            }
        )
    return out
