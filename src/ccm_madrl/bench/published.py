"""The published implementation's training episode, timed from a local checkout in a child
interpreter (``--published PATH``)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import torch

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
