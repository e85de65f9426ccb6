"""Pure, batched dynamics of the MEC environment: E environments x N agents as arrays.

Everything is float64 NumPy. The arithmetic follows the published implementation operation by
operation (same association order, ``log(.) / log(2)`` rather than ``log2``), so that states are
bit-identical and rewards agree to rounding of the final sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .config import MECConfig
from .rng import Stream, uniform01


@dataclass
class Devices:
    """Fixed per-device constants, drawn once at construction. Arrays shaped (N,) or (E, N)."""

    power: np.ndarray
    initial_energy: np.ndarray
    gain: np.ndarray
    res: np.ndarray


@dataclass
class StepOutcome:
    """Everything one batched step computes. Per-agent arrays are (E, N); reward is (E,)."""

    energy: np.ndarray
    time: np.ndarray  # normalised, capped finish time T_n in [0, 1]
    energy_cost: np.ndarray  # E_n
    time_penalty: np.ndarray  # P_T
    energy_penalty: np.ndarray  # P_E
    agent_reward: np.ndarray  # r_n
    reward: np.ndarray  # sum_n r_n, shared by all agents
    energy_penalty_frac: np.ndarray  # (E,)
    time_penalty_frac: np.ndarray  # (E,)


def draw_devices(cfg: MECConfig, stream: Stream) -> Devices:
    """Construction draws: for each agent in order, power, initial energy, gain, res."""
    u = uniform01(stream, (cfg.n_agents, 4))
    return Devices(
        power=cfg.min_power + (cfg.max_power - cfg.min_power) * u[:, 0],
        initial_energy=cfg.min_ene + (cfg.max_ene - cfg.min_ene) * u[:, 1],
        gain=cfg.min_gain + (cfg.max_gain - cfg.min_gain) * u[:, 2],
        res=cfg.min_res + (cfg.max_res - cfg.min_res) * u[:, 3],
    )


def draw_tasks(cfg: MECConfig, stream: Stream, n_envs: int | None = None) -> np.ndarray:
    """New tasks: for each agent in order, size, cycle, deadline. Returns (N, 3) or (E, N, 3)."""
    shape = (cfg.n_agents, 3) if n_envs is None else (n_envs, cfg.n_agents, 3)
    u = uniform01(stream, shape)
    out = np.empty_like(u)
    out[..., 0] = cfg.min_size + (cfg.max_size - cfg.min_size) * u[..., 0]
    out[..., 1] = cfg.min_cycle + (cfg.max_cycle - cfg.min_cycle) * u[..., 1]
    out[..., 2] = cfg.min_ddl + (cfg.ddl_high - cfg.min_ddl) * u[..., 2]
    return out


def draw_harvest(cfg: MECConfig, stream: Stream, n_envs: int | None = None) -> np.ndarray:
    """Harvested energy per agent, Normal(harvest_rate, harvest_std): one normal draw per agent."""
    shape = cfg.n_agents if n_envs is None else (n_envs, cfg.n_agents)
    return stream.normal(cfg.harvest_rate, cfg.harvest_std, size=shape)


@numba.njit(cache=True)
def _h2_finish_kernel(t_off, t_proc, x, order, n_units):  # pragma: no cover - compiled
    n_envs, n_agents = t_off.shape
    finish = np.zeros((n_envs, n_agents))
    offloaded = np.empty(n_agents, dtype=np.int64)
    for e in range(n_envs):
        unit = np.zeros(n_units)
        m = 0  # offloaded tasks seen so far, in order of offload time
        for i in range(n_agents):
            k = order[e, i]
            if x[e, k] != 1.0:
                continue
            if m < n_units:
                f = t_off[e, k] + t_proc[e, k]
                finish[e, k] = f
                unit[np.argmin(unit)] = f
            else:
                # the published quirk: every earlier offloaded task adds its processing time
                # again, each to the currently least-loaded unit
                for jj in range(m):
                    unit[np.argmin(unit)] += t_proc[e, offloaded[jj]]
                start = max(t_off[e, k], np.min(unit))
                finish[e, k] = start + t_proc[e, k]
                unit[np.argmin(unit)] = max(t_off[e, k], np.min(unit)) + t_proc[e, k]
            offloaded[m] = k
            m += 1
    return finish


def h2_finish_times(t_off: np.ndarray, t_proc: np.ndarray, x: np.ndarray, n_units: int) -> np.ndarray:
    """Finish times of offloaded tasks in mode H2, (E, N). ``x`` must be 0/1 (punishment resolved).

    The visiting order is NumPy's default ``argsort`` of the offload times, computed by NumPy
    (not re-implemented) so that ties, which occur among punished tasks, break the same way.
    """
    order = np.argsort(t_off, axis=-1)
    return _h2_finish_kernel(t_off, t_proc, x, order, n_units)


def transmission(
    cfg: MECConfig, power: np.ndarray, gain: np.ndarray, rho: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Transmit power (W) and per-channel data rate, with the published operation order."""
    a_power = 10 ** ((power - 30) / 10) * rho
    rate = cfg.w_bandwidth * 10**6 * np.log(1 + a_power * 10 ** (gain / 10)) / np.log(2)
    return a_power, rate / cfg.k_channel


def offload_time(
    cfg: MECConfig, power: np.ndarray, gain: np.ndarray, size: np.ndarray, rho: np.ndarray
) -> np.ndarray:
    """Time to transmit a task of ``size`` at power fraction ``rho`` (before any punishment)."""
    return size * 8 * 1024 / transmission(cfg, power, gain, rho)[1]


def step_dynamics(
    cfg: MECConfig,
    dev: Devices,
    energy: np.ndarray,
    tasks: np.ndarray,
    action: np.ndarray,
    harvest: np.ndarray,
) -> StepOutcome:
    """One step of E environments. ``tasks`` are the tasks being processed (E, N, 3)."""
    size, cycle, ddl = tasks[..., 0], tasks[..., 1], tasks[..., 2]
    x = action[..., 0].astype(np.float64, copy=True)
    alpha, rho = action[..., 1], action[..., 2]

    a_res = dev.res * 10**9 * alpha
    a_power, rate = transmission(cfg, dev.power, dev.gain, rho)
    t_proc = size * 8 * 1024 * cycle / (cfg.capability_e * 10**9)
    t_local = size * 8 * 1024 * cycle / a_res
    t_off = size * 8 * 1024 / rate
    punished = x == 2
    if punished.any():
        t_off = np.where(punished, cfg.max_ddl, t_off)
        x[punished] = 1.0

    if cfg.mode == "H2":
        finish = h2_finish_times(t_off, t_proc, x, cfg.n_units)
        t = (1 - x) * t_local + x * finish
    else:
        t = (1 - x) * t_local + x * (t_off + t_proc)
    t = np.minimum(t, cfg.max_ddl) / cfg.max_ddl

    e_local = cfg.k_energy_local * size * 8 * 1024 * cycle * a_res
    e_off = a_power * t_off
    e = (1 - x) * e_local + x * e_off
    new_energy = np.clip(energy - e * 1e-6 + harvest * 1e-6, 0, cfg.max_ene)
    t = np.where(new_energy <= 0, cfg.max_ddl / cfg.max_ddl, t)
    p_t = np.maximum(t - ddl / cfg.max_ddl, 0)
    p_e = np.maximum(cfg.min_ene - new_energy, 0) * 10**6
    r = -1 * (cfg.lambda_e * e + cfg.lambda_t * t) - 1 * (cfg.lambda_e * p_e + cfg.lambda_t * p_t)
    n = cfg.n_agents
    return StepOutcome(
        energy=new_energy,
        time=t,
        energy_cost=e,
        time_penalty=p_t,
        energy_penalty=p_e,
        agent_reward=r,
        reward=np.sum(r, axis=-1),
        energy_penalty_frac=np.count_nonzero(p_e, axis=-1) / n,
        time_penalty_frac=np.count_nonzero(p_t, axis=-1) / n,
    )


def scale_fraction(v: np.ndarray) -> np.ndarray:
    """Map an actor output in [-1, 1] to a fraction in [0.01, 1], as the published code does."""
    lo, hi, a, b = 0.01, 1.0, -1.0, 1.0
    return (v - a) * (hi - lo) / (b - a) + lo
