"""Memory of a run, estimated from its config before anything is built or written."""

from __future__ import annotations

import os

from ..config.experiment import ExperimentConfig


def run_bytes(cfg: ExperimentConfig) -> int:
    """Memory of one run in a pack, estimated: its replay buffer (float32 transitions), its networks
    and optimiser states (x4: weights, target, two Adam moments), its evaluation table."""
    n, a = cfg.env.n_agents, cfg.agent
    transition = n * 7 * 2 + n * 3 + n + 2
    actor = n * (
        7 * a.architecture.actor_hidden[0]
        + a.architecture.actor_hidden[0] * a.architecture.actor_hidden[1]
        + a.architecture.actor_hidden[1] * 3
    )
    critic = (
        (n * 10 + 10) * a.architecture.critic_hidden[0]
        + a.architecture.critic_hidden[0] * a.architecture.critic_hidden[1]
        + a.architecture.critic_hidden[1]
    )
    table = cfg.training.eval_episodes * (cfg.env.max_steps + 1) * n * 4 * 8
    return 4 * a.replay.capacity * transition + 4 * 4 * (actor + critic) + table


def check_memory(cfg: ExperimentConfig, runs: int = 1) -> None:
    """Refuse (ValueError naming the fields and the estimate) a run whose memory, estimated up
    front (``run_bytes``: replay buffer, networks with their optimiser states, evaluation
    table), exceeds this machine's physical memory: it could only end in a MemoryError after its
    run directory was made. ``runs``: the runs that would share this process (a pack)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # unknown: nothing to compare with
        return
    need = runs * run_bytes(cfg)
    if need > total:
        raise ValueError(
            f"env.n_agents={cfg.env.n_agents}, agent.replay.capacity={cfg.agent.replay.capacity}, "
            f"training.eval_episodes={cfg.training.eval_episodes}, env.max_steps={cfg.env.max_steps}: the run "
            f"needs about {need / 2**30:.3g} GiB of memory (estimated: replay buffer, networks, evaluation "
            f"table), more than this machine's {total / 2**30:.3g} GiB; refused"
        )
