"""Reproducible speed measurements (``ccm-madrl bench``). Results are JSON with the machine's
description; ``benchmarks/`` keeps the recorded ones."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from . import jsonio
from .mec import MECConfig, MECEnv, record_episodes
from .mec.loop_reference import loop_step
from .provenance import collect


def machine() -> dict:
    p = collect()
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "version": p["version"],
        "commit": p["commit"],
        "torch": p["torch"],
        "numpy": p["numpy"],
        "python": p["python"],
    }


def _timeit(fn, repeat: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {
        "median_ms": 1e3 * statistics.median(ts),
        "p10_ms": 1e3 * float(np.percentile(ts, 10)),
        "p90_ms": 1e3 * float(np.percentile(ts, 90)),
        "repeat": repeat,
    }


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


def bench_env(n_envs: int = 50, n_agents: int = 50, repeat: int = 200) -> dict:
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


def matmul_peak_gflops(n: int = 2048, repeat: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / min(ts) / 1e9


def _agent_header(episodes: int, eval_episodes: int) -> dict:
    return {
        "matmul_peak_gflops": matmul_peak_gflops(),
        "episodes_per_run": episodes,
        "eval_episodes": eval_episodes,
        "results": [],
    }


def _step_flops(step, args: tuple, repeat: int) -> tuple[int, float]:
    """FLOPs of one call ``step(*args)`` (matmul-type ops, forward and backward) and its best time."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(*args)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        step(*args)
        ts.append(time.perf_counter() - t)
    return fc.get_total_flops(), min(ts)


def bench_agent(
    steps: tuple[int, ...] = (10, 100),
    updates: tuple[str, ...] = ("simultaneous", "sequential"),
    episodes: int = 30,
    eval_episodes: int = 50,
    monitor: bool = False,
) -> dict:
    """Wall time per training episode (evaluation + acting + one training step) of real runs, FLOPs
    of one training step and the fraction of the measured matmul peak it reaches."""
    import tempfile

    from .experiment.config import build_config
    from .experiment.runner import Trainer

    out = _agent_header(episodes, eval_episodes)
    peak = out["matmul_peak_gflops"]
    for t_max in steps:
        for upd in updates:
            n_ep = episodes if (upd == "simultaneous" or t_max == 10) else max(8, episodes // 3)
            cfg = build_config(
                {
                    "threads": torch.get_num_threads(),  # the machine's setting, as recorded
                    "env": {"max_steps": t_max},
                    "agent": {"variant": {"actor_update": upd}},
                    "training": {
                        "episodes": n_ep,
                        "eval_episodes": eval_episodes,
                        "tensorboard": False,
                        "checkpoint_every": 10**6,
                    },
                    "monitor": {"enabled": monitor},
                }
            )
            with tempfile.TemporaryDirectory() as d:
                tr = Trainer(cfg, Path(d) / "run", progress=False)
                tr.run()
                import pandas as pd

                df = pd.read_parquet(Path(d) / "run" / "metrics.parquet")
                steady = df[df["trained"]].iloc[2:]
                learner = tr.learner
                batch, leaves, w = learner.replay.sample(learner.batch_size, np.random.default_rng(0))
                flops, t_step = _step_flops(learner.train_step, (batch, w), 3 if upd == "sequential" else 10)
            out["results"].append(
                {
                    "steps_per_episode": t_max,
                    "actor_update": upd,
                    "monitor": monitor,
                    "episodes_measured": len(steady),
                    "episode_ms_median": 1e3 * float(steady["time_episode_s"].median()),
                    "eval_ms_median": 1e3 * float(steady["time_eval_s"].median()),
                    "act_ms_median": 1e3 * float(steady["time_act_s"].median()),
                    "train_step_ms_median": 1e3 * float(steady["time_train_s"].median()),
                    "train_step_gflop": flops / 1e9,
                    "train_step_gflops_achieved": flops / t_step / 1e9,
                    "fraction_of_matmul_peak": flops / t_step / 1e9 / peak,
                }
            )
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def bench_pack(
    packs: tuple[int, ...] = (1, 4, 16),
    updates: tuple[str, ...] = ("simultaneous", "sequential"),
    monitors: tuple[bool, ...] = (False, True),
    episodes: int = 8,
    eval_episodes: int = 50,
    steps: int = 10,
) -> dict:
    """Milliseconds per run-episode of packs of R runs (seeds 0..R-1, actor / critic learning rates
    cycling over the 4 x 4 grid of ``configs/paper/table1_s10.yaml``): the pack's episode time / R,
    median over its trained episodes after the first two; FLOPs of one packed training step and the
    fraction of the measured matmul peak it reaches (best of 3 repeats on a replay batch); R = 1 is
    the single run through the same engine. Monitor on: ``monitor.interval = 2``; the row's times are
    those of the measured episodes, its overhead (measured episode + bookkeeping) / unmeasured - 1."""
    import tempfile

    import pandas as pd

    from .experiment.config import build_config
    from .experiment.pack import PackTrainer

    grid = [1e-4, 1e-3, 1e-2, 1e-1]
    out = _agent_header(episodes, eval_episodes)
    peak = out["matmul_peak_gflops"]
    for upd in updates:
        for mon in monitors:
            for r in packs:
                cfgs = [
                    build_config(
                        {
                            "name": f"r{i}",
                            "seed": i,
                            "threads": torch.get_num_threads(),
                            "env": {"max_steps": steps},
                            "agent": {
                                "actor_update": upd,
                                "actor_lr": grid[i % 4],
                                "critic_lr": grid[(i // 4) % 4],
                            },
                            "training": {
                                "episodes": episodes,
                                "eval_episodes": eval_episodes,
                                "tensorboard": False,
                                "checkpoint_every": 10**6,
                            },
                            # monitor on: measured every other episode, so that measured and
                            # unmeasured episodes alternate under the same machine load
                            "monitor": {"enabled": mon, "interval": 2},
                        }
                    )
                    for i in range(r)
                ]
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as d:
                    tr = PackTrainer(cfgs, [Path(d) / c.name for c in cfgs])
                    tr.run()
                    wall = time.perf_counter() - t0
                    df = pd.read_parquet(Path(d) / "r0" / "metrics.parquet")
                steady = df[df["trained"]].iloc[2:]
                pack = tr.pack
                samples = [s.replay.sample(64, np.random.default_rng(0)) for s in pack.runs]
                batch = {k: torch.cat([b[k] for b, _, _ in samples]) for k in samples[0][0]}
                w = np.concatenate([x for _, _, x in samples])
                flops, t_step = _step_flops(pack.train_step, (batch, w), 3)
                mon_ms, overhead = 0.0, None
                if mon:
                    on, off = steady[steady["episode"] % 2 == 0], steady[steady["episode"] % 2 == 1]
                    mon_ms = 1e3 * float(on["time_monitor_s"].median())
                    t_on = float(on["time_episode_s"].median()) + mon_ms / 1e3
                    overhead = t_on / float(off["time_episode_s"].median()) - 1
                    steady = on
                out["results"].append(
                    {
                        "runs_per_pack": r,
                        "actor_update": upd,
                        "monitor": mon,
                        "episodes_measured": len(steady),
                        "run_episode_ms_median": 1e3 * float(steady["time_episode_s"].median()) + mon_ms,
                        "monitor_ms_per_run_episode": mon_ms,
                        "monitor_overhead_fraction": overhead,
                        "eval_ms_per_run": 1e3 * float(steady["time_eval_s"].median()),
                        "act_ms_per_run": 1e3 * float(steady["time_act_s"].median()),
                        "train_step_ms_per_run": 1e3 * float(steady["time_train_s"].median()),
                        "pack_train_step_gflop": flops / 1e9,
                        "train_step_gflops_achieved": flops / t_step / 1e9,
                        "fraction_of_matmul_peak": flops / t_step / 1e9 / peak,
                        "wall_s_incl_startup": wall,
                        "peak_rss_mib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    }
                )
                print(jsonio.dumps(out["results"][-1]), flush=True)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def bench_monitor(
    updates: tuple[str, ...] = ("simultaneous", "sequential"), episodes: int = 40, eval_episodes: int = 50
) -> dict:
    """Monitor overhead at interval 1, measured robustly to machine load: one run per update order
    with ``monitor.interval = 2``, so measured and unmeasured episodes alternate under the same
    conditions. Overhead = (median measured episode + median monitor bookkeeping of measured
    episodes) / median unmeasured episode - 1, over trained episodes after the first four."""
    import tempfile

    import pandas as pd

    from .experiment.config import build_config
    from .experiment.runner import Trainer

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


def run(which: str, out_dir: str | Path | None, name: str | None = None, **kw) -> dict:
    fn = {"env": bench_env, "agent": bench_agent, "monitor": bench_monitor, "pack": bench_pack}[which]
    cmd = f"ccm-madrl bench {which}"
    if which == "pack":
        cmd = f"ccm-madrl bench agent --pack {' '.join(map(str, kw['packs']))}" + (
            " --monitor" if kw["monitors"][0] else ""
        )
    res = {"benchmark": which, "machine": machine(), "command": cmd, "options": kw, **fn(**kw)}
    if out_dir:
        p = Path(out_dir)
        p.mkdir(parents=True, exist_ok=True)
        (p / f"{name or which}.json").write_text(jsonio.dumps(res))
    return res
