"""Reproducible speed measurements (``ccm-madrl bench``). Results are JSON with the machine's
description; ``benchmarks/`` keeps the recorded ones."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import jsonio
from .experiment.callbacks import Callback
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
        **(
            {
                "gpu": torch.cuda.get_device_name(0),
                "cuda": torch.version.cuda,
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            }
            if torch.cuda.is_available()
            else {}
        ),
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


def _sync(device: torch.device | str = "cpu") -> None:
    """Wait for the device's queued work (a CUDA device runs asynchronously); nothing on a CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(
    n: int | None = None, repeat: int = 10, clock=time.perf_counter, device: torch.device | str = "cpu"
) -> float:
    """The best of ``repeat`` float32 n x n matmuls, in GFLOP/s of ``clock`` (wall by default;
    ``time.process_time``: CPU time, which other processes sharing the cores do not inflate). On a
    CUDA device: n = 8192 by default, synchronised, in the default float32 mode (no TF32 unless the
    process enabled it; the mode is recorded by :func:`machine`)."""
    dev = torch.device(device)
    n = n or (8192 if dev.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeat):
        _sync(dev)
        t = clock()
        a @ b
        _sync(dev)
        ts.append(clock() - t)
    return 2 * n**3 / min(ts) / 1e9


def _agent_header(episodes: int, eval_episodes: int, device: str = "cpu") -> dict:
    return _started(device=device, episodes_per_run=episodes, eval_episodes=eval_episodes)[0]


def _step_flops(step, args: tuple, repeat: int, device: torch.device | str = "cpu") -> tuple[int, float]:
    """FLOPs of one call ``step(*args)`` (matmul-type ops, forward and backward) and its best time
    (synchronised on a CUDA device)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step(*args)
    ts = []
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        step(*args)
        _sync(device)
        ts.append(time.perf_counter() - t)
    return fc.get_total_flops(), min(ts)


def _started(device: str = "cpu", **fields) -> tuple[dict, float, float]:
    """A result with the matmul peak in wall time and in process CPU time (a CUDA device: its own
    float32 peak, and the CPU's), ``fields`` and empty ``results``; and the two peaks."""
    peak, peak_cpu = matmul_peak_gflops(device=device), matmul_peak_gflops(clock=time.process_time)
    out = {"matmul_peak_gflops": peak, "matmul_peak_gflops_cpu_time": peak_cpu, **fields, "results": []}
    if torch.device(device).type == "cuda":
        out["device"] = device
        out["device_matmul_peak_gflops_fp32"] = peak
    return out, peak, peak_cpu


class _CpuClock(Callback):
    """A trainer callback: the process CPU time of every episode (robust to other processes sharing
    the cores; the run's metrics hold wall times)."""

    def __init__(self) -> None:
        self.last = time.process_time()
        self.per_episode: list[float] = []

    def on_episode_start(self, trainer, episode: int) -> None:
        self.last = time.process_time()

    def on_episode_end(self, trainer, row: dict) -> bool:
        self.per_episode.append(time.process_time() - self.last)
        return True


def _with(extra: Callback):
    """A trainer's callbacks factory: its default callbacks and ``extra``."""
    from .experiment.callbacks import default_callbacks

    return lambda trainer: [*default_callbacks(trainer), extra]


def _restoring(learner):
    """A function (skip) -> (wall seconds, process CPU seconds, argmax rows, rows evaluated) of one
    training step on a fixed batch from the learner's current state, restored before every call."""
    import copy

    state = copy.deepcopy(learner.state_dict())
    batch, _, w = learner.replay.sample(learner.batch_size, np.random.default_rng(0))

    def step(skip: bool) -> tuple[float, float, int, int]:
        learner.load_state_dict(copy.deepcopy(state))  # optimiser loads alias their source
        learner.argmax_row_skip = skip
        before = list(learner.argmax_rows)
        t, c = time.perf_counter(), time.process_time()
        learner.train_step(batch, w)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        return dt, dc, learner.argmax_rows[0] - before[0], learner.argmax_rows[1] - before[1]

    return step


def argmax_floor(learner, rows: int, actor_steps: int) -> float:
    """FLOPs of the actor loss's gradient-free maximum: ``rows`` candidate rows (own part, hidden
    and output layer of the critic's head) and the joint first-layer part of every actor step: with
    several actor steps (``offpolicy.ActorSteps``) the state part once and the action part at every
    step, with one the whole joint product once. When each step moves one actor's actions only, the
    rows' own parts are computed once for every (sample, agent) and one agent's column per step, and
    the action part once and then by one agent's columns per step (``ActorSteps.update_joint``)."""
    from .agents.offpolicy import ActorSteps

    c = learner.critic
    h1, h2 = c.hidden
    own = c.fc1.in_features - c.joint_dim
    head = h1 + 2 * h1 * h2 + 2 * h2
    b = learner.batch_size
    if actor_steps <= 1:
        return rows * (2 * own * h1 + head) + actor_steps * 2 * b * c.joint_dim * h1
    state_cols = c.n_agents * c.state_dim
    action_cols = c.joint_dim - state_cols
    agents = learner.schedule(learner.n_agents, learner.actors.shared)
    if ActorSteps.steps_by_column(learner, agents):
        own_flops = 2 * own * h1 * b * (c.n_agents + actor_steps)
        actions = 2 * b * action_cols * h1 + actor_steps * 2 * b * c.action_dim * h1
    else:
        own_flops = rows * 2 * own * h1
        actions = actor_steps * 2 * b * action_cols * h1
    return rows * head + own_flops + 2 * b * state_cols * h1 + actions


def sequential_step_profile(
    learner, peak_gflops: float, rounds: int = 3, peak_cpu_gflops: float | None = None
) -> dict:
    """The sequential training step on one replay batch with the bounded row skipping off and on
    (alternating, ``rounds`` each, the minimum), its FLOPs and the FLOP floor of the maximum."""
    from torch.utils.flop_counter import FlopCounterMode

    step = _restoring(learner)
    out: dict = {}
    for skip in (False, True):
        with FlopCounterMode(display=False) as fc:
            _, _, rows, evaluated = step(skip)
        out[skip] = {
            "gflop": fc.get_total_flops() / 1e9,
            "rows": rows,
            "evaluated": evaluated,
            "ts": [],
            "cs": [],
        }
    for _ in range(rounds):
        for skip in (False, True):
            t, c, _, _ = step(skip)
            out[skip]["ts"].append(t)
            out[skip]["cs"].append(c)
    n_steps = len(learner.schedule(learner.n_agents, learner.actors.shared))
    floor = argmax_floor(learner, out[False]["rows"], n_steps) / 1e9
    floor_skip = argmax_floor(learner, out[True]["evaluated"], n_steps) / 1e9
    full, skip = min(out[False]["ts"]), min(out[True]["ts"])
    cfull, cskip = min(out[False]["cs"]), min(out[True]["cs"])
    learner.argmax_row_skip = learner.cfg.argmax_row_skip
    cpu_peak = peak_cpu_gflops or peak_gflops
    return {
        "train_step_gflops_cpu_full_pass": out[False]["gflop"] / cfull,
        "train_step_gflops_cpu_row_skip": out[True]["gflop"] / cskip,
        "fraction_of_cpu_matmul_peak_full_pass": out[False]["gflop"] / cfull / cpu_peak,
        "fraction_of_cpu_matmul_peak_row_skip": out[True]["gflop"] / cskip / cpu_peak,
        "argmax_floor_ms_at_cpu_peak": 1e3 * floor / cpu_peak,
        "argmax_floor_ms_at_cpu_peak_row_skip": 1e3 * floor_skip / cpu_peak,
        "train_step_cpu_ms_over_argmax_floor_full_pass": cfull / (floor / cpu_peak),
        "train_step_cpu_ms_over_argmax_floor_row_skip": cskip / (floor_skip / cpu_peak),
        "train_step_ms_full_pass": 1e3 * full,
        "train_step_ms_row_skip": 1e3 * skip,
        "train_step_cpu_ms_full_pass": 1e3 * cfull,
        "train_step_cpu_ms_row_skip": 1e3 * cskip,
        "train_step_gflop_full_pass": out[False]["gflop"],
        "train_step_gflop_row_skip": out[True]["gflop"],
        "argmax_rows": out[False]["rows"],
        "argmax_rows_evaluated_row_skip": out[True]["evaluated"],
        "argmax_floor_gflop": floor,
        "argmax_floor_ms_at_peak": 1e3 * floor / peak_gflops,
        "argmax_floor_gflop_row_skip": floor_skip,
        "argmax_floor_ms_at_peak_row_skip": 1e3 * floor_skip / peak_gflops,
        "full_pass_ms_over_floor_ms": full / (floor / peak_gflops),
    }


def bench_agent(
    steps: tuple[int, ...] = (10, 100),
    updates: tuple[str, ...] = ("simultaneous", "sequential"),
    episodes: int = 30,
    eval_episodes: int = 50,
    monitor: bool = False,
    published: tuple[str, ...] = (),
    published_episodes: int = 3,
) -> dict:
    """Wall time per training episode (evaluation + acting + one training step) of real runs, FLOPs
    of one training step and the fraction of the measured matmul peak it reaches; for the sequential
    order also the step with the row skipping off and on and the FLOP floor of its maximum
    (:func:`sequential_step_profile`). ``published``: local checkouts of the published repository,
    timed in the same run (:func:`bench_published`) and compared per training episode (10 steps)."""
    import tempfile

    from .experiment.config import build_config
    from .experiment.runner import Trainer

    out, peak, peak_cpu = _started(episodes_per_run=episodes, eval_episodes=eval_episodes)
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
            clock = _CpuClock()
            with tempfile.TemporaryDirectory() as d:
                tr = Trainer(cfg, Path(d) / "run", progress=False, callbacks=_with(clock))
                tr.run()
                import pandas as pd

                df = pd.read_parquet(Path(d) / "run" / "metrics.parquet")
                df["cpu_episode_s"] = clock.per_episode[: len(df)]
                steady = df[df["trained"]].iloc[2:]
                learner = tr.learner
                batch, leaves, w = learner.replay.sample(learner.batch_size, np.random.default_rng(0))
                flops, t_step = _step_flops(learner.train_step, (batch, w), 3 if upd == "sequential" else 10)
                extra = (
                    sequential_step_profile(learner, peak, peak_cpu_gflops=peak_cpu)
                    if upd == "sequential"
                    else {}
                )
            out["results"].append(
                {
                    "steps_per_episode": t_max,
                    "actor_update": upd,
                    "monitor": monitor,
                    "argmax_row_skip": cfg.agent.argmax_row_skip,
                    "episodes_measured": len(steady),
                    "episode_ms_median": 1e3 * float(steady["time_episode_s"].median()),
                    "episode_cpu_ms_median": 1e3 * float(steady["cpu_episode_s"].median()),
                    "eval_ms_median": 1e3 * float(steady["time_eval_s"].median()),
                    "act_ms_median": 1e3 * float(steady["time_act_s"].median()),
                    "train_step_ms_median": 1e3 * float(steady["time_train_s"].median()),
                    "train_step_gflop": flops / 1e9,
                    "train_step_gflops_achieved": flops / t_step / 1e9,
                    "fraction_of_matmul_peak": flops / t_step / 1e9 / peak,
                    **extra,
                }
            )
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if published:
        ours = {r["actor_update"]: r for r in out["results"] if r["steps_per_episode"] == 10}

        def ratios(res: dict) -> None:
            for upd, r in ours.items():
                res[f"episode_ratio_vs_{upd}"] = res["episode_ms_median"] / r["episode_ms_median"]
                res[f"episode_cpu_ratio_vs_{upd}"] = res["episode_cpu_ms_median"] / r["episode_cpu_ms_median"]

        out["published"] = _time_published(published, published_episodes, ratios)
    return out


def _time_published(paths: tuple[str, ...], episodes: int, ratios: Callable[[dict], None]) -> list[dict]:
    """Each checkout's :func:`bench_published` result, with ``ratios(result)`` adding our ratios to
    the timed ones; a skipped checkout is printed and recorded with its reason."""
    out = []
    for path in paths:
        res = bench_published(path, episodes)
        if "skipped" in res:
            print(f"published code: skipped: {res['skipped']}", flush=True)
        else:
            ratios(res)
        out.append(res)
    return out


def bench_argmax(
    lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1),
    episodes: int = 300,
    eval_every: int = 25,
    seed: int = 0,
) -> dict:
    """The bounded row skipping over real runs (published sequential order, N = 50, 10 steps, the
    skipping on), one per actor learning rate: the fraction of the maximum's candidate rows skipped in every training
    step, the training step's time in the run, and at the end the step on one replay batch with the
    skipping off and on (:func:`sequential_step_profile`). Evaluation every ``eval_every`` episodes
    (it does not touch the learner; in reference mode it changes the training stream)."""
    import tempfile

    from .experiment.config import build_config
    from .experiment.runner import Trainer

    class Rows(Callback):
        def __init__(self, learner):
            self.learner, self.last, self.per_episode = learner, [0, 0], []

        def on_episode_end(self, trainer, row) -> bool:
            now = list(self.learner.argmax_rows)
            rows, ev = now[0] - self.last[0], now[1] - self.last[1]
            self.last = now
            if rows:
                self.per_episode.append((row["episode"], rows, ev, row["time_train_s"]))
            return True

    out, peak, peak_cpu = _started(episodes=episodes, eval_every=eval_every)
    for lr in lrs:
        cfg = build_config(
            {
                "seed": seed,
                "threads": torch.get_num_threads(),
                "agent": {"actor_lr": lr, "argmax_row_skip": True},
                "training": {
                    "episodes": episodes,
                    "eval_every": eval_every,
                    "tensorboard": False,
                    "checkpoint_every": 10**6,
                },
                "monitor": {"enabled": False},
            }
        )
        rec: list = []

        def callbacks(trainer, rec=rec):
            rec.append(Rows(trainer.learner))
            return rec[:]

        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(cfg, Path(d) / "run", progress=False, quiet=True, callbacks=callbacks)
            summary = tr.run()
            prof = sequential_step_profile(tr.learner, peak, peak_cpu_gflops=peak_cpu)
        per = np.array(rec[0].per_episode, dtype=float)
        frac = 1 - per[:, 2] / per[:, 1]
        quarters = np.array_split(frac, 4)
        out["results"].append(
            {
                "actor_lr": lr,
                "training_steps": len(per),
                "rows_skipped_fraction": float(1 - per[:, 2].sum() / per[:, 1].sum()),
                "rows_skipped_fraction_by_quarter": [float(q.mean()) for q in quarters],
                "rows_skipped_fraction_min": float(frac.min()),
                "rows_per_training_step_median": float(np.median(per[:, 1])),
                "train_step_ms_median_in_run": 1e3 * float(np.median(per[:, 3])),
                "final_return": summary.final_return,
                **prof,
            }
        )
    return out


TABLE1_GRID = [1e-4, 1e-3, 1e-2, 1e-1]


def grid_configs(runs: int, update: str, training: dict, monitor: dict, steps: int = 10, device: str = "cpu"):
    """The configs of ``runs`` runs of the Table 1 grid's cells in order (seeds 0..runs-1, actor /
    critic learning rates cycling over the 4 x 4 grid of ``configs/paper/table1_s10.yaml``)."""
    from .experiment.config import build_config

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

    from .experiment.pack import PackTrainer

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


def bench_pack(
    packs: tuple[int, ...] = (1, 4, 16),
    updates: tuple[str, ...] = ("simultaneous", "sequential"),
    monitors: tuple[bool, ...] = (False, True),
    episodes: int = 8,
    eval_episodes: int = 50,
    steps: int = 10,
    device: str = "cpu",
    published: tuple[str, ...] = (),
    published_episodes: int = 3,
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
    import tempfile

    import pandas as pd

    from .experiment.pack import PackTrainer

    out = _agent_header(episodes, eval_episodes, device)
    peak = out["matmul_peak_gflops"]
    cuda = torch.device(device).type == "cuda"
    for upd in updates:
        for mon in monitors:
            for r in packs:
                training = {
                    "episodes": episodes,
                    "eval_episodes": eval_episodes,
                    "tensorboard": False,
                    "checkpoint_every": 10**6,
                }
                # monitor on: measured every other episode, so that measured and unmeasured
                # episodes alternate under the same machine load
                cfgs = grid_configs(r, upd, training, {"enabled": mon, "interval": 2}, steps, device)
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as d:
                    tr = PackTrainer(cfgs, [Path(d) / c.name for c in cfgs])
                    tr.run()
                    wall = time.perf_counter() - t0
                    df = pd.read_parquet(Path(d) / "r0" / "metrics.parquet")
                steady = df[df["trained"]].iloc[2:]
                pack = tr.pack
                batch, w = replay_batch(pack)
                flops, t_step = _step_flops(pack.train_step, (batch, w), 3, device)
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
                        **(
                            {"peak_gpu_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20}
                            if cuda
                            else {}
                        ),
                    }
                )
                print(jsonio.dumps(out["results"][-1]), flush=True)
                del tr, pack, batch  # free this pack before the next one's memory is measured
                if cuda:
                    torch.cuda.empty_cache()
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
    fns = {
        "env": bench_env,
        "agent": bench_agent,
        "monitor": bench_monitor,
        "pack": bench_pack,
        "argmax": bench_argmax,
    }
    cmd = f"ccm-madrl bench {which}"
    if which == "pack":
        cmd = f"ccm-madrl bench agent --pack {' '.join(map(str, kw['packs']))}" + (
            " --monitor" if kw["monitors"][0] else ""
        )
    res = {
        "benchmark": which,
        "machine": machine(),
        "command": cmd,
        "arguments": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
        **fns[which](**kw),
    }
    if out_dir:
        p = Path(out_dir)
        p.mkdir(parents=True, exist_ok=True)
        (p / f"{name or which}.json").write_text(jsonio.dumps(res))
    return res


# ------------------------------------------------------------------------------ the published code
PUBLISHED_SUBDIR = "s10lre4e3CCM_MADRL_MEC"  # the 10-step experiment of TesfayZ/CCM_MADRL_MEC

# Runs in a fresh interpreter inside a scratch directory (the published code writes its CSV files
# relative to the working directory): imports the published modules from CODE, builds the env and
# the agent as its run.py does (N = 50, env seed 37, episodes_before_train 1, 50 evaluation
# episodes), wraps its evaluate() and train() with timers and runs its own interact() loop.
_PUBLISHED_WORKER = r"""
import json, os, sys, time
import numpy as np, torch
code, episodes, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
if not hasattr(np, "long"):  # NumPy 2 removed the alias its utils.py names (dtype "long" only)
    np.long = np.int64
for d in ("results", "Server_constraints", "Energy_constraints", "Time_constraints", "AtTraining"):
    os.makedirs(os.path.join("CSV", d), exist_ok=True)
sys.path.insert(0, code)
import mec_env, CCM_MADRL
env = mec_env.MecEnv(n_agents=50, env_seed=37)
env_eval = mec_env.MecEnv(n_agents=50, env_seed=37)
agent = CCM_MADRL.CCM_MADDPG(
    InfdexofResult="0", env=env, env_eval=env_eval, n_agents=env.n_agents, state_dim=env.state_size,
    action_dim=env.action_size, action_lower_bound=env.action_lower_bound,
    action_higher_bound=env.action_higher_bound, episodes_before_train=1, epsilon_decay=2000,
)
times = {"evaluate": [], "train": [], "episode": [], "evaluate_cpu": [], "train_cpu": [], "episode_cpu": []}
def timed(name, fn):
    def run(*a, **k):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*a, **k)
        times[name].append(time.perf_counter() - t)
        times[name + "_cpu"].append(time.process_time() - c)
        return out
    return run
agent.evaluate = timed("evaluate", agent.evaluate)
agent.train = timed("train", agent.train)
reset = env.reset_mec
stamps, cpu = [], []
def reset_mec(*a, **k):  # the training env is reset once at the start of every episode
    stamps.append(time.perf_counter())
    cpu.append(time.process_time())
    return reset(*a, **k)
env.reset_mec = reset_mec
agent.interact(episodes, 1, 50)
stamps.append(time.perf_counter())
cpu.append(time.process_time())
times["episode"] = [b - a for a, b in zip(stamps[1:-1], stamps[2:])]  # episodes 1.. (evaluated, trained)
times["episode_cpu"] = [b - a for a, b in zip(cpu[1:-1], cpu[2:])]
json.dump(times, sys.stdout)
"""


def _git_commit(path: Path) -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def bench_published(path: str | Path, episodes: int = 3) -> dict:
    """The published implementation's training episode, timed from a local checkout ``path`` (the
    repository root or its ``s10lre4e3CCM_MADRL_MEC`` folder): its own ``interact`` loop for
    ``episodes`` + 1 episodes (the first has neither evaluation nor training), its ``evaluate`` (50
    evaluation episodes) and ``train`` (one training step) timed. Nothing of it is edited; it runs in a
    child interpreter in a scratch directory. Returns ``{"skipped": reason}`` when ``path`` holds no
    published code."""
    import json
    import subprocess
    import sys
    import tempfile

    root = Path(path)
    code = root / PUBLISHED_SUBDIR if (root / PUBLISHED_SUBDIR).is_dir() else root
    if not (code / "CCM_MADRL.py").is_file() or not (code / "mec_env.py").is_file():
        return {"path": str(path), "skipped": f"no published code at {path} (CCM_MADRL.py, mec_env.py)"}
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _PUBLISHED_WORKER,
                str(code.resolve()),
                str(episodes + 1),
                str(torch.get_num_threads()),
            ],
            capture_output=True,
            text=True,
            cwd=scratch,
        )
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])[:300]
        return {"path": str(path), "skipped": f"the published code failed (exit {proc.returncode}): {tail}"}
    t = json.loads(proc.stdout.strip().splitlines()[-1])
    med = lambda xs: 1e3 * statistics.median(xs)  # noqa: E731
    return {
        "path": str(path),
        "commit": _git_commit(root),
        "episodes_measured": len(t["episode"]),
        "episode_ms_median": med(t["episode"]),
        "eval_ms_median": med(t["evaluate"]),
        "train_step_ms_median": med(t["train"]),
        "episode_cpu_ms_median": med(t["episode_cpu"]),
        "eval_cpu_ms_median": med(t["evaluate_cpu"]),
        "train_step_cpu_ms_median": med(t["train_cpu"]),
        "episode_ms": [1e3 * x for x in t["episode"]],
    }
