"""``ccm-madrl bench agent``: training episodes of real runs, one process per run."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import torch

from .common import _CpuClock, _started, _step_flops, _with, ms_medians, sequential_step_profile, step_rates
from .options import AgentBench
from .published import _time_published

AGENT = AgentBench()  # the defaults


def _agent_row(t_max: int, upd: str, n_ep: int, eval_episodes: int, monitor: bool, peaks: tuple) -> dict:
    """Train one run (``t_max`` steps per episode, update order ``upd``, ``n_ep`` episodes) and time
    it: a result row of :func:`bench_agent`."""
    import tempfile

    import pandas as pd

    from ..experiment.config import build_config
    from ..experiment.runner import Trainer

    peak, peak_cpu = peaks
    training = {
        "episodes": n_ep,
        "eval_episodes": eval_episodes,
        "tensorboard": False,
        "checkpoint_every": 10**6,
    }
    cfg = build_config(
        {
            "threads": torch.get_num_threads(),  # the machine's setting, as recorded
            "env": {"max_steps": t_max},
            "agent": {"variant": {"actor_update": upd}},
            "training": training,
            "monitor": {"enabled": monitor},
        }
    )
    clock = _CpuClock()
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, Path(d) / "run", progress=False, callbacks=_with(clock))
        tr.run()
        df = pd.read_parquet(Path(d) / "run" / "metrics.parquet")
        df["cpu_episode_s"] = clock.per_episode[: len(df)]
        steady = df[df["trained"]].iloc[2:]
        learner = tr.learner
        batch, leaves, w = learner.replay.sample(learner.batch_size, np.random.default_rng(0))
        flops, t_step = _step_flops(learner.train_step, (batch, w), 3 if upd == "sequential" else 10)
        extra = (
            sequential_step_profile(learner, peak, peak_cpu_gflops=peak_cpu) if upd == "sequential" else {}
        )
    return {
        "steps_per_episode": t_max,
        "actor_update": upd,
        "monitor": monitor,
        "argmax_row_skip": cfg.agent.argmax_row_skip,
        "episodes_measured": len(steady),
        **ms_medians(
            steady,
            episode_ms_median="time_episode_s",
            episode_cpu_ms_median="cpu_episode_s",
            eval_ms_median="time_eval_s",
            act_ms_median="time_act_s",
            train_step_ms_median="time_train_s",
        ),
        **step_rates(flops, t_step, peak, "train_step_gflop"),
        **extra,
    }


def bench_agent(
    steps: tuple[int, ...] = AGENT.steps,
    updates: tuple[str, ...] = AGENT.updates,
    episodes: int = AGENT.episodes,
    eval_episodes: int = AGENT.eval_episodes,
    monitor: bool = AGENT.monitor,
    published: tuple[str, ...] = AGENT.published,
    published_episodes: int = AGENT.published_episodes,
) -> dict:
    """Wall time per training episode (evaluation + acting + one training step) of real runs, FLOPs
    of one training step and the fraction of the measured matmul peak it reaches; for the sequential
    order also the step with the row skipping off and on and the FLOP floor of its maximum
    (:func:`sequential_step_profile`). ``published``: local checkouts of the published repository,
    timed in the same run (:func:`bench_published`) and compared per training episode (10 steps)."""
    out, peak, peak_cpu = _started(episodes_per_run=episodes, eval_episodes=eval_episodes)
    for t_max in steps:
        for upd in updates:
            n_ep = episodes if (upd == "simultaneous" or t_max == 10) else max(8, episodes // 3)
            out["results"].append(_agent_row(t_max, upd, n_ep, eval_episodes, monitor, (peak, peak_cpu)))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if published:
        ours = {r["actor_update"]: r for r in out["results"] if r["steps_per_episode"] == 10}

        def ratios(res: dict) -> None:
            for upd, r in ours.items():
                res[f"episode_ratio_vs_{upd}"] = res["episode_ms_median"] / r["episode_ms_median"]
                res[f"episode_cpu_ratio_vs_{upd}"] = res["episode_cpu_ms_median"] / r["episode_cpu_ms_median"]

        out["published"] = _time_published(published, published_episodes, ratios)
    return out
