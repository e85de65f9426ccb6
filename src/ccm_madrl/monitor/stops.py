"""Stop events derived from the per-agent monitor rows.

For each role and agent, with either criterion (``exact``: no weight changed at all during the
episode; ``threshold``: the largest |weight change| was below ``threshold``):

- ``first_stop``: the first measured episode in which it was stopped;
- ``stop``: the episode from which it stayed stopped in every later measured episode until the end
  of the run (NaN if it was not stopped at the end) — the "stopped for good" episode.

- ``grad_zero``: the episode from which its gradient norm was exactly 0 in every later measured
  episode (NaN if not): when it stopped *learning*. With Adam the weights keep moving after that
  (the first moment decays by beta1 per step), so ``stop`` comes later — ~155 steps later for
  lr 0.1 and the 1e-8 threshold.

Run level: ``all_actors_stop`` is the latest ``stop`` over the actors if every actor stopped for
good (else NaN); ``critic_stop`` likewise for the non-actor roles; ``all_actors_grad_zero`` the
latest ``grad_zero`` if every actor's gradient vanished for good.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _stop_for_good(episodes: np.ndarray, stopped: np.ndarray) -> float:
    if len(stopped) == 0 or not stopped[-1]:
        return float("nan")
    moving = np.flatnonzero(~stopped)
    return float(episodes[moving[-1] + 1] if len(moving) else episodes[0])


AGENT_STOP_COLUMNS = [
    "role",
    "agent",
    "is_actor",
    "first_stop_exact",
    "stop_exact",
    "first_stop_thr",
    "stop_thr",
    "grad_zero",
]


def agent_stops(agents: pd.DataFrame, threshold: float = 1e-8) -> pd.DataFrame:
    """One row per (role, agent): first_stop_exact, stop_exact, first_stop_thr, stop_thr, grad_zero.

    Always has these columns, also for a run with no trained episode yet."""
    if agents.empty:
        return pd.DataFrame(columns=AGENT_STOP_COLUMNS)
    df = agents[agents["steps"] > 0].sort_values("episode")
    out = []
    for (role, agent), g in df.groupby(["role", "agent"], sort=True):
        ep = g["episode"].to_numpy()
        exact = ~g["changed"].to_numpy(dtype=bool)
        thr = g["max_abs_change"].to_numpy() < threshold
        out.append(
            {
                "role": role,
                "agent": int(agent),
                "is_actor": bool(g["is_actor"].iloc[0]),
                "first_stop_exact": float(ep[exact][0]) if exact.any() else float("nan"),
                "stop_exact": _stop_for_good(ep, exact),
                "first_stop_thr": float(ep[thr][0]) if thr.any() else float("nan"),
                "stop_thr": _stop_for_good(ep, thr),
                "grad_zero": _stop_for_good(ep, g["grad_norm"].to_numpy() == 0)
                if "grad_norm" in g
                else float("nan"),
            }
        )
    return pd.DataFrame(out, columns=AGENT_STOP_COLUMNS)


def _latest_if_all(col: pd.Series) -> float:
    """The latest event if every member had one, else NaN."""
    return float(col.max()) if len(col) and col.notna().all() else float("nan")


def run_stops(agents: pd.DataFrame, threshold: float = 1e-8) -> dict:
    """Run-level stop events (see the module docstring)."""
    return run_stops_of(agent_stops(agents, threshold), threshold)


def run_stops_of(st: pd.DataFrame, threshold: float = 1e-8) -> dict:
    """Run-level stop events from the per-agent ones (:func:`agent_stops`)."""
    actors = st[st["is_actor"].astype(bool)]
    others = st[~st["is_actor"].astype(bool)]
    nan = float("nan")
    res: dict = {"threshold": threshold}
    for crit in ("exact", "thr"):
        res[f"all_actors_stop_{crit}"] = _latest_if_all(actors[f"stop_{crit}"])
        res[f"critic_stop_{crit}"] = _latest_if_all(others[f"stop_{crit}"])
        res[f"actors_stopped_frac_{crit}"] = (
            float(actors[f"stop_{crit}"].notna().mean()) if len(actors) else nan
        )
        res[f"actor_first_stop_{crit}_min"] = (
            float(actors[f"first_stop_{crit}"].min()) if len(actors) else nan
        )
    res["all_actors_grad_zero"] = _latest_if_all(actors["grad_zero"])
    res["actors_grad_zero_frac"] = float(actors["grad_zero"].notna().mean()) if len(actors) else nan
    return res


def summary_stops(summary: pd.DataFrame, trained: np.ndarray, upto: float = np.inf) -> dict:
    """Run-level stop events of one run from its per-episode aggregates over agents
    (``monitor.compact.aggregate_agents``: ``n_agents``, ``n_changed``, ``n_below_thr`` and
    ``n_grad_zero`` per episode and role) over its trained episodes (``trained``) before ``upto``:
    the events of :func:`run_stops` for the run cut after episode ``upto - 1`` (a prefix's events).
    With ``upto`` past the run's end they equal :func:`run_stops` of its per-agent rows.

    ``all_actors_stop_{exact,thr}``, ``critic_stop_{exact,thr}``, ``all_actors_grad_zero``: the
    episode from which every agent of the roles was stopped (no weight changed / largest change
    below the threshold / gradient exactly 0) in every later episode up to the cut, NaN if not at
    the cut; ``actor_first_stop_{exact,thr}_min``: the first episode in which some actor was
    stopped (unchanged by the cut)."""
    s = summary[summary["episode"].isin(np.asarray(trained)) & (summary["episode"] < upto)]
    res: dict = {}
    for label, part in (("actor", s[s["is_actor"].astype(bool)]), ("critic", s[~s["is_actor"].astype(bool)])):
        g = part.groupby("episode", sort=True)[["n_agents", "n_changed", "n_below_thr", "n_grad_zero"]].sum()
        ep, n = g.index.to_numpy(), g["n_agents"].to_numpy()
        events = {"exact": g["n_changed"].to_numpy() == 0, "thr": g["n_below_thr"].to_numpy() == n}
        for crit, every in events.items():
            res[f"{'all_actors' if label == 'actor' else 'critic'}_stop_{crit}"] = _stop_for_good(ep, every)
        if label == "actor":
            res["all_actors_grad_zero"] = _stop_for_good(ep, g["n_grad_zero"].to_numpy() == n)
            some = {"exact": g["n_changed"].to_numpy() < n, "thr": g["n_below_thr"].to_numpy() > 0}
            for crit, any_ in some.items():
                res[f"actor_first_stop_{crit}_min"] = float(ep[any_][0]) if any_.any() else float("nan")
    return res
