"""Whole-episode parity: replay a trajectory golden file (the published code run end to end with its
seeds fixed) with this package's trainer and compare every evaluation and training return.

File format (JSON, ``tests/data/GOLDEN_FORMAT.md``): ``code_commit``, ``seed``, ``episodes``,
``env_seed``, ``eval_episodes``, ``epsilon_decay``, ``episodes_before_train``, ``eval_returns`` and
``train_returns`` (``episodes - 1`` values each). ``eval_returns[k]`` is the mean return of the
evaluation run before episode k + 1, ``train_returns[k]`` the return of training episode k.

The code commit picks the settings: ``44fba1b`` (the published repository's first commit) runs the
``published_code: 44fba1b`` preset, the repository's current code (``16dba8e``) the default system.

Criterion: every value within ``TRAJ_RTOL`` (1e-6) relative (``ccm-madrl parity --rtol`` replaces
it). Where one is not, the first such episode is reported with what the run recorded there: the
smallest gap between two Q values of the master's ranking whose order decides a selection, the
smallest |u_0| (the proposal threshold) and, for a training return, the smallest gap between the
best and the second-best Q of the actor loss's maximum in the training step before it. Gaps are in
float32 units in the last place (ulp) of the larger Q: the published code and this package sum in
different orders in float32, so their Q values differ by about an ulp and a near-tie of that size can
be ranked either way.

An *evaluation* is isolated (its decisions do not change training), so a difference there is resolved
by counterfactual: each decision-relevant near-tie of that evaluation within ``TIE_ULPS`` is ranked the
other way, one at a time, and the evaluation re-run; if one flip reproduces the golden value within
the tolerance, the evaluation passes as a near-tie ("resolved"), reported with its gap. Nothing else is
resolved: a training return beyond the tolerance fails, as does an evaluation no single near-tie flip
explains; their note names the possible cause (a ranking gap or an argmax gap within ``TIE_ULPS``, or
|u_0| within ``U0_TIE`` of the proposal threshold) or says that no near-tie was found.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .agents.ccm import hybrid_action
from .agents.selection import accept_in_order

TRAJ_RTOL = 1e-6
TIE_ULPS = 16.0  # a ranking gap within this many float32 ulps is a near-tie (float32 summation noise)
MAX_FLIPS = 12  # near-ties tried per differing evaluation, smallest gap first

# code commit of TesfayZ/CCM_MADRL_MEC -> published_code preset (None: the default system)
KNOWN_COMMITS = {
    "44fba1b75eb297484fbc3575765bed06442083ac": "44fba1b",
    "16dba8e0edd71a2aecbfe500748e02a686fe3e0d": None,
}
REQUIRED = ("code_commit", "seed", "episodes", "eval_returns", "train_returns")


def preset_for(commit: str) -> str | None:
    """The ``published_code`` preset reproducing a commit (full hash or a prefix of >= 7 digits)."""
    c = str(commit).strip().lower()
    hits = {full: p for full, p in KNOWN_COMMITS.items() if len(c) >= 7 and full.startswith(c)}
    if len(hits) != 1:
        known = ", ".join(f[:7] for f in KNOWN_COMMITS)
        raise ValueError(
            f"code_commit: unknown commit {commit!r} of the published repository (known: {known})"
        )
    return next(iter(hits.values()))


def load_trajectory(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parity: no such file: {path}")
    try:
        g = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"parity: {path} is not valid JSON: {err}") from None
    if not isinstance(g, dict):
        raise ValueError(f"parity: {path}: expected a JSON object with the trajectory fields")
    for key in REQUIRED:
        if key not in g:
            raise ValueError(f"{key}: missing from the trajectory file {path}")
    k = int(g["episodes"]) - 1
    for key in ("eval_returns", "train_returns"):
        if not isinstance(g[key], list) or len(g[key]) != k:
            raise ValueError(f"{key}: expected a list of episodes - 1 = {k} numbers")
    return g


def trajectory_config(g: dict):
    """The experiment that replays a trajectory file."""
    from .experiment.config import build_config

    preset = preset_for(g["code_commit"])
    data = {
        "name": "parity",
        "seed": int(g["seed"]),
        "env_seed": int(g.get("env_seed", 37)),
        "rng_mode": "reference",
        "device": "cpu",
        "training": {
            "episodes": int(g["episodes"]),
            "eval_episodes": int(g.get("eval_episodes", 50)),
            "checkpoint_every": max(1, int(g["episodes"])),
            "tensorboard": False,
        },
        "agent": {
            "exploration": {"epsilon_decay": g.get("epsilon_decay")},
            "replay": {"episodes_before_train": int(g.get("episodes_before_train", 1))},
        },
        "monitor": {"enabled": False},
    }
    if preset is not None:
        data["published_code"] = preset
    return build_config(data, source="trajectory file")


def _ulps(gap: np.ndarray, q: np.ndarray) -> np.ndarray:
    return gap / np.spacing(np.abs(q).astype(np.float32)).astype(np.float64)


@dataclass
class Tie:
    """A decision-relevant near-tie of the master's ranking: swapping ranks ``pos`` and ``pos + 1``
    in environment ``env`` at step ``step`` changes the selection to ``alt``."""

    ulps: float
    env: int
    step: int
    alt: np.ndarray
    agents: tuple[int, int]  # the two agents, higher-ranked first
    states: np.ndarray  # (N, 7) and (N, 3): the environment's state and actor outputs at that step
    u: np.ndarray


@dataclass
class EpisodeProbe:
    rank_gap_ulps: float = np.inf  # smallest decision-relevant ranking gap
    min_abs_u0: float = np.inf  # smallest |u_0| (distance to the proposal threshold)
    ties: list[Tie] = field(default_factory=list)  # near-ties within TIE_ULPS (evaluations)


class _Probe:
    """Wraps a learner's ``select`` and ``actor_objective`` to record near-ties; changes nothing."""

    def __init__(self, learner) -> None:
        self.learner = learner
        self.current: EpisodeProbe | None = None
        self.step = 0
        self.argmax_gap_ulps = np.inf  # actor-loss maximum: best minus second-best Q (last training step)
        self._select, self._objective, self._candq = (
            learner.select,
            learner.actor_objective,
            learner.candidate_q,
        )
        self._in_actor = False
        learner.argmax_row_skip = False  # the gap to the second-best row needs every row scored
        learner.select = self.select
        learner.actor_objective = self.actor_objective
        learner.candidate_q = self.candidate_q

    def select(self, states, u, explore, epsilon):
        sel, exceeded = self._select(states, u, explore, epsilon)
        if self.current is not None:
            self._record(states, u, sel, exceeded)
            self.step += 1
        return sel, exceeded

    def _record(self, states, u, sel, exceeded) -> None:
        rec, lim, s_e = self.current, self.learner.limit, self.learner.env_cfg.s_e
        u0, size = u[..., 0], states[..., 3]
        rec.min_abs_u0 = min(rec.min_abs_u0, float(np.abs(u0).min()))
        envs = np.flatnonzero(exceeded)
        if not envs.size:
            return
        q = self.learner.q_candidates(states[envs], u[envs], u0[envs] > 0)
        order = np.argsort(q, axis=-1)[:, ::-1]
        for k, e in enumerate(envs):
            o, qs = order[k], q[k]
            m = int(np.isfinite(qs).sum())
            if m < 2 or not np.array_equal(
                accept_in_order(o[None], u0[e][None], size[e][None], lim, s_e)[0], sel[e]
            ):
                continue  # fewer than two ranked agents, or an exploratory (random) selection
            alts = np.repeat(o[None, :m], m - 1, axis=0)
            idx = np.arange(m - 1)
            alts[idx, idx], alts[idx, idx + 1] = o[idx + 1], o[idx]
            full = np.concatenate([alts, np.repeat(o[None, m:], m - 1, axis=0)], axis=1)
            acc = accept_in_order(
                full, np.repeat(u0[e][None], m - 1, 0), np.repeat(size[e][None], m - 1, 0), lim, s_e
            )
            relevant = np.flatnonzero((acc != sel[e]).any(axis=1))
            if not relevant.size:
                continue
            gaps = _ulps(
                qs[o[relevant]] - qs[o[relevant + 1]],
                np.maximum(np.abs(qs[o[relevant]]), np.abs(qs[o[relevant + 1]])),
            )
            rec.rank_gap_ulps = min(rec.rank_gap_ulps, float(gaps.min()))
            for j in np.flatnonzero(gaps <= TIE_ULPS):
                p = int(relevant[j])
                rec.ties.append(
                    Tie(
                        float(gaps[j]),
                        int(e),
                        self.step,
                        acc[p].copy(),
                        (int(o[p]), int(o[p + 1])),
                        states[e],
                        u[e],
                    )
                )

    def actor_objective(self, *args, **kwargs):
        self._in_actor = True
        try:
            return self._objective(*args, **kwargs)
        finally:
            self._in_actor = False

    def candidate_q(self, joint, states, u, cand):
        q = self._candq(joint, states, u, cand)
        if self._in_actor and q.shape[1] >= 2:
            top = q.topk(2, dim=1).values.double().cpu().numpy()
            ok = np.isfinite(top).all(axis=1)
            if ok.any():
                g = _ulps(top[ok, 0] - top[ok, 1], np.abs(top[ok]).max(axis=1))
                self.argmax_gap_ulps = min(self.argmax_gap_ulps, float(g.min()))
        return q


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b != 0 else (0.0 if a == b else np.inf)


def _evaluation_with_flip(trainer, tie: Tie | None) -> float:
    """Mean evaluation return of the current policy, the master's decision at ``tie`` ranked the
    other way. Draws nothing from the run's random streams."""
    env, table, learner = trainer.eval_env, trainer.eval_table, trainer.learner
    obs = env.reset(table=table)
    ret = np.zeros(env.num_envs)
    for t in range(trainer.cfg.env.max_steps):
        act = learner.act(obs, explore=False)
        h = act.hybrid
        if tie is not None and t == tie.step:
            sel = act.selected.copy()
            sel[tie.env] = tie.alt
            h = hybrid_action(sel, act.actor)
        obs, r, _, _ = env.step(h)
        ret += r
    return float(ret.mean())


@dataclass
class TrajectoryResult:
    eval_ours: list[float]
    train_ours: list[float]
    eval_status: list[str]  # "ok", "resolved: ...", or "differs: ..."
    train_status: list[str]


def replay(g: dict, rtol: float = TRAJ_RTOL) -> TrajectoryResult:
    """Run the trainer on the file's settings, comparing (within ``rtol`` relative) and probing
    episode by episode."""
    from .experiment.runner import Trainer

    cfg = trajectory_config(g)
    golden_eval = [float(v) for v in g["eval_returns"]]
    golden_train = [float(v) for v in g["train_returns"]]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, progress=False, quiet=True)
        trainer.device = "cpu"
        trainer._build()
        probe = _Probe(trainer.learner)
        base_eval = trainer.evaluate
        res = TrajectoryResult([], [], [], [])
        ep_probe: dict = {}

        def evaluate() -> dict:
            rec = probe.current = EpisodeProbe()
            probe.step = 0
            out = base_eval()
            probe.current = None
            k = len(res.eval_ours)
            ours = out["eval_return"]
            res.eval_ours.append(ours)
            if k < len(golden_eval):
                res.eval_status.append(_judge_eval(trainer, rec, ours, golden_eval[k], rtol))
            return out

        trainer.evaluate = evaluate
        orig_act = trainer.learner.act
        episode = [0]

        def act(states, explore=False, epsilon=0.0):
            if explore and probe.current is None:  # the training episode's selections
                probe.current = ep_probe.setdefault(episode[0], EpisodeProbe())
                try:
                    return orig_act(states, explore, epsilon)
                finally:
                    probe.current = None
            return orig_act(states, explore, epsilon)

        trainer.learner.act = act
        argmax_before = np.inf
        for ep in range(cfg.training.episodes):
            episode[0], probe.step = ep, 0
            probe.argmax_gap_ulps = np.inf
            row = trainer.episode(ep)
            if ep < len(golden_train):
                rec = ep_probe.get(ep, EpisodeProbe())
                ours, gold = float(row["train_return"]), golden_train[ep]
                res.train_ours.append(ours)
                r = _rel(ours, gold)
                res.train_status.append(
                    "ok"
                    if r <= rtol
                    else f"differs: rel {r:.2g}; {_verdict(rec, argmax_before)}; in this episode the smallest "
                    f"ranking gap {rec.rank_gap_ulps:.3g} ulp, smallest |u0| {rec.min_abs_u0:.2g}; the actor "
                    f"loss's max in the training step before it: best - second {argmax_before:.3g} ulp"
                )
            argmax_before = probe.argmax_gap_ulps
    return res


U0_TIE = 1e-6  # |u_0| below this: the proposal could go either way in float32


def _verdict(rec: EpisodeProbe, argmax_gap: float) -> str:
    causes = []
    if rec.rank_gap_ulps <= TIE_ULPS:
        causes.append("a near-tie in the master's ranking")
    if rec.min_abs_u0 <= U0_TIE:
        causes.append("an actor output at the proposal threshold")
    if argmax_gap <= TIE_ULPS:
        causes.append("a near-tie in the actor loss's argmax")
    return "possible cause: " + " or ".join(causes) if causes else "no near-tie found: not float32 noise"


def _judge_eval(trainer, rec: EpisodeProbe, ours: float, gold: float, rtol: float = TRAJ_RTOL) -> str:
    r = _rel(ours, gold)
    if r <= rtol:
        return "ok"
    for tie in sorted(rec.ties, key=lambda t: t.ulps)[:MAX_FLIPS]:
        flipped = _evaluation_with_flip(trainer, tie)
        if _rel(flipped, gold) <= rtol:
            return (
                f"resolved: rel {r:.2g}; a near-tie in the master's ranking ({tie.ulps:.3g} ulp, evaluation "
                f"episode {tie.env}, step {tie.step}) ranked the other way gives {flipped:.6f} (rel "
                f"{_rel(flipped, gold):.2g})"
            )
    return (
        f"differs: rel {r:.2g}; no single near-tie flip reproduces it ({_verdict(rec, np.inf)}); smallest ranking gap "
        f"{rec.rank_gap_ulps:.3g} ulp ({len(rec.ties)} within {TIE_ULPS:g}), smallest |u0| {rec.min_abs_u0:.2g}"
    )
