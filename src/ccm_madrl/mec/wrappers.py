"""Standard-API views of one MEC environment: PettingZoo ``ParallelEnv`` and Gymnasium ``Env``.

:class:`MECParallelEnv` and :class:`MECJointEnv` expose the environment's hybrid action directly: per
agent a discrete decision ``x`` in {0 local, 1 offload, 2 offload with punishment} and the two
fractions ``[alpha, rho]`` in [0.01, 1]. :class:`MECBoxParallelEnv` (``parallel_env(action="box")``)
takes per agent an actor output ``u`` in ``Box(-1, 1, (3,))``, as the package's client actors emit
it, and applies a named master rule to decide who offloads (:data:`MASTER_RULES`), which is what
MARL libraries with continuous actions (BenchMARL, TorchRL) can train. The PettingZoo views expose
the joint state the master critic sees (``state()`` / ``state_space``: the N agents' states,
agent-major, flattened to N * 7).
The reward is shared. An episode ends by time limit after ``max_steps`` steps, reported as
*truncation* (the task stream itself never terminates); the learners in this package treat that
step as terminal, as the published implementation does.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from .config import MECConfig
from .env import MECEnv


# master rule -> (acceptance order, what happens to rejected proposers); the rules of the MADDPG
# benchmarks (agents/benchmarks.py): ``maddpg`` is the vanilla benchmark (proposals beyond the limits
# punished, accepted by offload time), each heuristic order accepts in its order and punishes the rest
# (``agent.rejected: punish``, published) or, with the suffix ``+local``, lets them compute locally.
def _rules() -> dict[str, tuple[str, str]]:
    from ..agents.selection import HEURISTIC_ORDERS as HEURISTICS

    rules = {"maddpg": ("offloadtimefirst", "punish")}
    for h in HEURISTICS:
        rules[h] = (h, "punish")
        rules[f"{h}+local"] = (h, "local")
    return rules


MASTER_RULES: dict[str, tuple[str, str]] = _rules()


def observation_bounds(cfg: MECConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per-agent observation bounds, in state order [power, gain, energy, size, cycle, ddl, res]."""
    low = np.array([cfg.min_power, cfg.min_gain, 0.0, cfg.min_size, cfg.min_cycle, cfg.min_ddl, cfg.min_res])
    high = np.array(
        [cfg.max_power, cfg.max_gain, cfg.max_ene, cfg.max_size, cfg.max_cycle, cfg.ddl_high, cfg.max_res]
    )
    return low, high


def _hybrid(x: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    a = np.empty(x.shape + (3,))
    a[..., 0] = x
    a[..., 1:] = fractions
    return a


class MECParallelEnv(ParallelEnv):
    """PettingZoo parallel view: agents ``client_0 .. client_{N-1}``.

    Action per agent: ``{"x": Discrete(3), "fractions": Box(0.01, 1, (2,))}``.
    """

    metadata = {"name": "mec_offloading_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, cfg: MECConfig | None = None, rng_mode: str = "reference", env_seed: int = 37):
        self.cfg = cfg or MECConfig()
        self._env = MECEnv(self.cfg, 1, rng_mode=rng_mode, env_seed=env_seed)
        self.possible_agents = [f"client_{i}" for i in range(self.cfg.n_agents)]
        self.agents: list[str] = []
        low, high = observation_bounds(self.cfg)
        self._obs_space = spaces.Box(low, high, dtype=np.float64)
        self._act_space = spaces.Dict(
            {"x": spaces.Discrete(3), "fractions": spaces.Box(0.01, 1.0, (2,), dtype=np.float64)}
        )
        self.render_mode = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs = self._env.reset(seed=seed)[0]
        self.agents = list(self.possible_agents)
        return self._obs_dict(obs), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        self._check_actions(actions)
        x = np.array([actions[a]["x"] for a in self.possible_agents], dtype=np.float64)
        fr = np.array([actions[a]["fractions"] for a in self.possible_agents], dtype=np.float64)
        return self._step_hybrid(_hybrid(x, fr))

    def _check_actions(self, actions: dict[str, Any]) -> None:
        if not self.agents:
            raise RuntimeError("step: the episode is over; call reset()")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(
                f"actions: missing an action for {missing[:3]}{'...' if len(missing) > 3 else ''}"
            )

    def _step_hybrid(self, hybrid: np.ndarray):
        obs, reward, done, info = self._env.step(hybrid)
        r = float(reward[0])
        agents = self.agents
        rewards = {a: r for a in agents}
        terms = {a: False for a in agents}
        truncs = {a: bool(done) for a in agents}
        infos = {
            a: {
                "energy_penalty_frac": float(info["energy_penalty_frac"][0]),
                "time_penalty_frac": float(info["time_penalty_frac"][0]),
            }
            for a in agents
        }
        observations = self._obs_dict(obs[0])
        if done:
            self.agents = []
        return observations, rewards, terms, truncs, infos

    def _obs_dict(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {a: obs[i].copy() for i, a in enumerate(self.possible_agents)}

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None

    # the joint state the master critic uses: every agent's state, agent-major, flattened
    @property
    def state_space(self) -> spaces.Box:
        n = self.cfg.n_agents
        low, high = self._obs_space.low, self._obs_space.high
        return spaces.Box(np.tile(low, n), np.tile(high, n), dtype=self._obs_space.dtype)

    def state(self) -> np.ndarray:
        return self._env.observation()[0].reshape(-1).astype(self._obs_space.dtype)


class MECBoxParallelEnv(MECParallelEnv):
    """PettingZoo parallel view with one continuous action per agent, ``Box(-1, 1, (3,))``: an actor
    output ``u = [propose, alpha, rho]`` as the package's client actors emit it (``u[0] >= 0``
    proposes to offload; ``alpha``, ``rho`` are mapped from [-1, 1] to [0.01, 1] as published). Each
    step the master rule ``master_rule`` (:data:`MASTER_RULES`) decides who offloads under the
    server's limits, exactly as the MADDPG benchmark's selection does during its training and
    evaluation. Observations, state and actions are float32 (what deep-learning libraries expect);
    each agent's info holds the step's ``offload`` decision (0 local, 1 offload, 2 punished) and
    whether the proposals ``exceeded`` the limits, besides the penalty fractions."""

    metadata = {"name": "mec_offloading_box_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(
        self,
        cfg: MECConfig | None = None,
        rng_mode: str = "reference",
        env_seed: int = 37,
        master_rule: str = "maddpg",
    ):
        super().__init__(cfg, rng_mode, env_seed)
        if master_rule not in MASTER_RULES:
            raise ValueError(f"master_rule: unknown rule {master_rule!r}; allowed: {', '.join(MASTER_RULES)}")
        self.master_rule = master_rule
        low, high = observation_bounds(self.cfg)
        self._obs_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self._act_space = spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, _ = super().reset(seed=seed, options=options)
        info = {"energy_penalty_frac": 0.0, "time_penalty_frac": 0.0, "offload": 0.0, "exceeded": False}
        return obs, {a: dict(info) for a in self.agents}

    def step(self, actions: dict[str, Any]):
        self._check_actions(actions)
        u = np.stack([np.asarray(actions[a], dtype=np.float64).reshape(-1) for a in self.possible_agents])
        if u.shape != (self.cfg.n_agents, 3):
            raise ValueError(f"actions: each agent's action must have shape (3,), got {u.shape[1:]}")
        states = self._env.observation()
        hybrid, exceeded = apply_master_rule(self.master_rule, states, u[None], self.cfg)
        obs, rewards, terms, truncs, infos = self._step_hybrid(hybrid[0])
        for i, a in enumerate(list(infos)):
            infos[a]["offload"] = float(hybrid[0, i, 0])
            infos[a]["exceeded"] = bool(exceeded[0])
        return obs, rewards, terms, truncs, infos

    def _obs_dict(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {a: obs[i].astype(np.float32) for i, a in enumerate(self.possible_agents)}


def apply_master_rule(
    rule: str, states: np.ndarray, u: np.ndarray, cfg: MECConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid action (E, N, 3) that master rule ``rule`` makes of actor outputs ``u`` (E, N, 3) in
    [-1, 1] on ``states`` (E, N, 7), and whether the proposals exceeded the limits (E,): the MADDPG
    benchmark's selection (``agents.selection.heuristic_select``) and its action mapping."""
    from ..agents.selection import heuristic_select
    from ..agents.utils import hybrid_action

    try:
        order, rejected = MASTER_RULES[rule]
    except KeyError:
        raise ValueError(f"master_rule: unknown rule {rule!r}; allowed: {', '.join(MASTER_RULES)}") from None
    u = np.clip(np.asarray(u, dtype=np.float64), -1.0, 1.0)
    x, exceeded = heuristic_select(states, u, order, cfg.selection_limit, cfg.s_e, cfg, rejected)
    return hybrid_action(x, u), exceeded


def parallel_env(
    cfg: MECConfig | None = None,
    *,
    action: str = "hybrid",
    master_rule: str = "maddpg",
    rng_mode: str = "reference",
    env_seed: int = 37,
    **env_fields: Any,
) -> MECParallelEnv:
    """The PettingZoo ``parallel_env()`` factory. ``action="hybrid"``: the environment's own action
    (:class:`MECParallelEnv`); ``action="box"``: ``Box(-1, 1, (3,))`` per agent with the master rule
    ``master_rule`` (:class:`MECBoxParallelEnv`). Keyword fields of :class:`MECConfig`
    (``n_agents=10``, ``max_steps=10``) build the config when ``cfg`` is not given."""
    if cfg is None:
        cfg = MECConfig(**env_fields)
    elif env_fields:
        cfg = cfg.model_copy(update=env_fields)
    if action == "hybrid":
        return MECParallelEnv(cfg, rng_mode=rng_mode, env_seed=env_seed)
    if action == "box":
        return MECBoxParallelEnv(cfg, rng_mode=rng_mode, env_seed=env_seed, master_rule=master_rule)
    raise ValueError(f"action: must be 'hybrid' or 'box', got {action!r}")


class MECJointEnv(gymnasium.Env):
    """Gymnasium view with joint observation (N, 7) and joint action
    ``{"x": MultiDiscrete([3] * N), "fractions": Box(0.01, 1, (N, 2))}``; reward is the shared sum."""

    metadata = {"render_modes": []}

    def __init__(self, cfg: MECConfig | None = None, rng_mode: str = "reference", env_seed: int = 37):
        super().__init__()
        self.cfg = cfg or MECConfig()
        self._env = MECEnv(self.cfg, 1, rng_mode=rng_mode, env_seed=env_seed)
        n = self.cfg.n_agents
        low, high = observation_bounds(self.cfg)
        self.observation_space = spaces.Box(np.tile(low, (n, 1)), np.tile(high, (n, 1)), dtype=np.float64)
        self.action_space = spaces.Dict(
            {
                "x": spaces.MultiDiscrete([3] * n),
                "fractions": spaces.Box(0.01, 1.0, (n, 2), dtype=np.float64),
            }
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self._env.reset(seed=seed)[0], {}

    def step(self, action: dict[str, Any]):
        if not isinstance(action, dict) or set(action) != {"x", "fractions"}:
            raise ValueError("action: expected a dict with keys 'x' and 'fractions'")
        a = _hybrid(
            np.asarray(action["x"], dtype=np.float64), np.asarray(action["fractions"], dtype=np.float64)
        )
        obs, reward, done, info = self._env.step(a)
        return (
            obs[0],
            float(reward[0]),
            False,
            bool(done),
            {
                "energy_penalty_frac": float(info["energy_penalty_frac"][0]),
                "time_penalty_frac": float(info["time_penalty_frac"][0]),
            },
        )
