"""A per-agent, pure-Python implementation of one environment step, written directly from the
specification's pseudo-code. It is slow on purpose: it serves as an independent oracle for the
batched dynamics in the tests and as the measured baseline in ``benchmarks/``. Do not use it to train.
"""

from __future__ import annotations

import math

import numpy as np

from .config import MECConfig


def _costs(cfg: MECConfig, power, gain, res, tasks, action) -> tuple[list[float], ...]:
    """The spec's first block, agent by agent: x (2 -> offload at MAX_DDL), T_off, T_proc, T_local,
    A_power and A_res."""
    n = cfg.n_agents
    x = [0.0] * n
    t_off = [0.0] * n
    t_proc = [0.0] * n
    t_local = [0.0] * n
    a_power = [0.0] * n
    a_res = [0.0] * n
    for i in range(n):
        size, cycle, _ = tasks[i]
        xi, alpha, rho = action[i]
        bits = size * 8 * 1024
        a_res[i] = res[i] * 1e9 * alpha
        a_power[i] = 10 ** ((power[i] - 30) / 10) * rho
        rate = (
            cfg.w_bandwidth
            * 1e6
            * math.log(1 + a_power[i] * 10 ** (gain[i] / 10))
            / math.log(2)
            / cfg.k_channel
        )
        t_proc[i] = bits * cycle / (cfg.capability_e * 1e9)
        t_local[i] = bits * cycle / a_res[i]
        t_off[i] = bits / rate
        x[i] = float(xi)
        if x[i] == 2:
            t_off[i] = cfg.max_ddl
            x[i] = 1.0
    return x, t_off, t_proc, t_local, a_power, a_res


def _finish(cfg: MECConfig, x: list[float], t_off: list[float], t_proc: list[float]) -> list[float]:
    """The spec's second block: the finish times of the offloaded tasks (H2: the units' queue with
    its re-adding quirk; TOBM: every task its own unit)."""
    n = cfg.n_agents
    finish = [0.0] * n
    if cfg.mode == "H2":
        order = list(np.argsort(np.array(t_off)))  # the same visiting order as the published code
        unit = [0.0] * cfg.n_units
        used = 0
        for pos, k in enumerate(order):
            if x[k] == 1 and used < cfg.n_units:
                finish[k] = t_off[k] + t_proc[k]
                unit[unit.index(min(unit))] = finish[k]
                used += 1
            elif x[k] == 1:
                for j in order[:pos]:
                    if x[j] == 1:
                        unit[unit.index(min(unit))] += t_proc[j]
                start = max(t_off[k], min(unit))
                finish[k] = start + t_proc[k]
                unit[unit.index(min(unit))] = start + t_proc[k]
    else:
        for k in range(n):
            finish[k] = t_off[k] + t_proc[k]
    return finish


def loop_step(
    cfg: MECConfig,
    power: list[float],
    gain: list[float],
    res: list[float],
    energy: list[float],
    tasks: list[list[float]],
    action: list[list[float]],
    harvest: list[float],
) -> dict:
    """One step of ONE environment, agent by agent, in the spec's three blocks (:func:`_costs`,
    :func:`_finish`, then time, energy, penalties and rewards here). Returns new energy, per-agent T,
    E, penalties, per-agent rewards, the shared reward and the penalty fractions."""
    n = cfg.n_agents
    x, t_off, t_proc, t_local, a_power, a_res = _costs(cfg, power, gain, res, tasks, action)
    finish = _finish(cfg, x, t_off, t_proc)

    new_energy, t_norm, e_cost, p_t, p_e, r = [], [], [], [], [], []
    for i in range(n):
        size, cycle, ddl = tasks[i]
        t = (1 - x[i]) * t_local[i] + x[i] * finish[i]
        t = min(t, cfg.max_ddl) / cfg.max_ddl
        e_local = cfg.k_energy_local * size * 8 * 1024 * cycle * a_res[i]
        e_off = a_power[i] * t_off[i]
        e = (1 - x[i]) * e_local + x[i] * e_off
        en = min(max(energy[i] - e * 1e-6 + harvest[i] * 1e-6, 0.0), cfg.max_ene)
        if en <= 0:
            t = 1.0
        pt = max(t - ddl / cfg.max_ddl, 0.0)
        pe = max(cfg.min_ene - en, 0.0) * 1e6
        new_energy.append(en)
        t_norm.append(t)
        e_cost.append(e)
        p_t.append(pt)
        p_e.append(pe)
        r.append(-(cfg.lambda_e * e + cfg.lambda_t * t) - (cfg.lambda_e * pe + cfg.lambda_t * pt))
    return {
        "energy": new_energy,
        "time": t_norm,
        "energy_cost": e_cost,
        "time_penalty": p_t,
        "energy_penalty": p_e,
        "agent_reward": r,
        "reward": sum(r),
        "energy_penalty_frac": sum(1 for v in p_e if v != 0) / n,
        "time_penalty_frac": sum(1 for v in p_t if v != 0) / n,
    }
