"""``ccm-madrl bench env``: the batched environment step against the per-agent Python loop."""

from __future__ import annotations

import numpy as np

from ..mec import MECConfig, MECEnv, record_episodes
from ..mec.loop_reference import loop_step
from .common import _timeit
from .options import EnvBench

ENV = EnvBench()  # the defaults


def _actions(rs: np.random.Generator, e: int, n: int, profile: str, limit: int) -> np.ndarray:
    if profile == "random":  # x uniform over {0, 1, 2}: many offloads, the H2 queue's worst case
        x = rs.integers(0, 3, (e, n)).astype(float)
    else:  # what the master produces: at most `limit` offloads per environment
        x = np.zeros((e, n))
        for i in range(e):
            x[i, rs.choice(n, limit, replace=False)] = 1.0
    return np.stack([x, rs.uniform(0.01, 1, (e, n)), rs.uniform(0.01, 1, (e, n))], axis=-1)


def _bench_env_case(cfg: MECConfig, n_envs: int, profile: str, repeat: int, rs: np.random.Generator) -> dict:
    n_agents = cfg.n_agents
    acts = [_actions(rs, n_envs, n_agents, profile, cfg.selection_limit) for _ in range(16)]
    env = MECEnv(cfg, n_envs, rng_mode="reference")
    env.reset(seed=list(range(n_envs)))
    k = [0]

    def step_live():
        env.step(acts[k[0] % 16])
        k[0] += 1

    live = _timeit(step_live, repeat)
    tcfg = cfg.model_copy(update={"max_steps": 10})
    table = record_episodes(tcfg, "reference", 37, range(n_envs))
    tenv = MECEnv(tcfg, n_envs, devices=env.devices)

    def episode_table():
        tenv.reset(table=table)
        for t in range(10):
            tenv.step(acts[t])

    tab = _timeit(episode_table, max(20, repeat // 10))
    dev, energy, tasks = env.devices, env.energy, env.tasks
    harvest = [cfg.harvest_rate] * n_agents

    def loop_all():
        a = acts[0]
        for i in range(n_envs):
            loop_step(
                cfg,
                dev.power.tolist(),
                dev.gain.tolist(),
                dev.res.tolist(),
                energy[i].tolist(),
                tasks[i].tolist(),
                a[i].tolist(),
                harvest,
            )

    loop = _timeit(loop_all, max(5, repeat // 20), warmup=1)
    return {
        "mode": cfg.mode,
        "actions": profile,
        "batched_step_live_streams_ms": live["median_ms"],
        "batched_step_recorded_table_ms": tab["median_ms"] / 10,
        "python_loop_step_ms": loop["median_ms"],
        "speedup_live_vs_loop": loop["median_ms"] / live["median_ms"],
    }


def bench_env(n_envs: int = ENV.n_envs, n_agents: int = ENV.n_agents, repeat: int = ENV.repeat) -> dict:
    """Batched step of n_envs x n_agents, both modes, with live streams and from a recorded table;
    and the per-agent Python loop implementation of the same step as the baseline. Action profiles:
    ``master`` (at most ``limit`` offloads, as the master produces) and ``random`` (x uniform over
    {0, 1, 2}: many offloads, the H2 queue's worst case)."""
    rs = np.random.default_rng(0)
    results = []
    for mode in ("H2", "TOBM"):
        cfg = MECConfig(n_agents=n_agents, mode=mode, max_steps=10**9)
        for profile in ("master", "random"):
            results.append(_bench_env_case(cfg, n_envs, profile, repeat, rs))
    return {"n_envs": n_envs, "n_agents": n_agents, "results": results}
