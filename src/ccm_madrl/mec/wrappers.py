"""Standard-API views of one MEC environment: PettingZoo ``ParallelEnv`` and Gymnasium ``Env``.

Both expose the environment's hybrid action directly: per agent a discrete decision ``x`` in
{0 local, 1 offload, 2 offload with punishment} and the two fractions ``[alpha, rho]`` in [0.01, 1].
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
        if not self.agents:
            raise RuntimeError("step: the episode is over; call reset()")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(
                f"actions: missing an action for {missing[:3]}{'...' if len(missing) > 3 else ''}"
            )
        x = np.array([actions[a]["x"] for a in self.possible_agents], dtype=np.float64)
        fr = np.array([actions[a]["fractions"] for a in self.possible_agents], dtype=np.float64)
        obs, reward, done, info = self._env.step(_hybrid(x, fr))
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
