"""Replay a golden file produced by the published implementation and compare, quantity by quantity.

File formats: see ``tests/data/GOLDEN_FORMAT.md`` (a copy of the study's golden README).
- *env files* hold, per mode prefix (``H2_``, ``TOBM_``), construction draws, the states after a
  seeded reset and after each step of given actions, rewards, dones and penalty fractions;
- *agent files* hold initial weights, greedy selection cases, one replay batch and the gradients,
  priority errors and weights after one sequential training step.

Criteria: construction draws and states equal (float64); rewards within 1e-9 relative; dones and
penalty fractions equal; selections equal; gradients and priority errors within 1e-4 relative
(norm-wise); weights after the step within 1e-6 absolute, except elements whose golden gradient is
~0 (|g| < 1e-6, where Adam's normalised step amplifies float32 summation-order noise), which must stay
within 2.5 x lr (at most one Adam step apart); they are a row of their own, with their number.

Every check records the tolerance it was held to (:class:`Tolerance`: kind ``rtol``, compared with
the max relative error, or ``atol``, with the max absolute error; ``None`` for exact equality) and its
margin, the error divided by the tolerance (> 1: beyond it). ``check_file(path, rtol=..., atol=...)``
replaces the relative (absolute) tolerances for one call, e.g. on a machine whose float summation
order differs; ``None`` keeps the strict defaults. Exact checks stay exact.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .agents.ccm import CCMLearner
from .agents.config import AgentConfig
from .mec.config import MECConfig
from .mec.env import MECEnv
from .mec.rng import RunRNG

GRAD_RTOL = 1e-4
AFTER_ATOL = 1e-6
TINY_GRAD = 1e-6
REWARD_RTOL = 1e-9
SELECT_ATOL = 1e-6  # float32 actor outputs
ADAM_STEPS = 2.5  # an element with a ~0 golden gradient may move by up to this many learning rates


@dataclass(frozen=True)
class Tolerance:
    """What a check was held to: ``kind`` "rtol" (the max relative error, :attr:`Check.max_rel`) or
    "atol" (the max absolute error, :attr:`Check.max_abs`) at most ``value``; ``default`` is the
    strict value this check has without ``--rtol``/``--atol``."""

    kind: str
    value: float
    default: float

    def __post_init__(self) -> None:
        if self.kind not in ("rtol", "atol"):
            raise ValueError(f"tolerance kind {self.kind!r}: expected 'rtol' or 'atol'")

    @property
    def is_default(self) -> bool:
        return self.value == self.default

    def __str__(self) -> str:
        return f"{self.kind} {self.value:g}"


@dataclass
class Check:
    quantity: str
    max_abs: float
    max_rel: float
    passed: bool
    note: str = ""
    tolerance: Tolerance | None = None  # None: exact equality

    @property
    def error(self) -> float:
        """The error the tolerance is compared with (max rel for rtol, max abs for atol)."""
        if self.tolerance is None:
            return float("nan")
        return self.max_rel if self.tolerance.kind == "rtol" else self.max_abs

    @property
    def margin(self) -> float:
        """Error / tolerance (> 1: beyond it); NaN for an exact check."""
        if self.tolerance is None:
            return float("nan")
        return self.error / self.tolerance.value


@dataclass
class ParityReport:
    path: str
    kind: str
    checks: list[Check] = field(default_factory=list)
    rtol: float | None = None  # the --rtol override of this call (None: the strict defaults)
    atol: float | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def tolerance_summary(self) -> str:
        """One line: the tolerances used, per kind, and whether they are the strict defaults."""
        parts = []
        for kind in ("rtol", "atol"):
            tols = sorted({c.tolerance for c in self.checks if c.tolerance and c.tolerance.kind == kind},
                          key=lambda t: (t.default, t.value))  # fmt: skip
            if tols:
                items = [f"{t.value:g}" + ("" if t.is_default else f" (default {t.default:g})") for t in tols]
                parts.append(f"{kind} {', '.join(items)}")
        if any(c.tolerance is None for c in self.checks):
            parts.append("the other quantities exact")
        flags = [f"--{k} {v:g}" for k, v in (("rtol", self.rtol), ("atol", self.atol)) if v is not None]
        which = "the strict defaults" if not flags else " ".join(flags) + " (not the defaults)"
        return f"tolerances: {which}: " + "; ".join(parts)


def _tol(kind: str, default: float, override: float | None) -> Tolerance:
    return Tolerance(kind, default if override is None else override, default)


def check_tolerance(value: float | None, name: str) -> float | None:
    """``value`` must be None or a finite number > 0; a ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r}: expected a number > 0, e.g. {name} 1e-5") from None
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name}: must be a finite number > 0 (got {value})")
    return x


def _abs_rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0, 0.0
    d = np.abs(a - b)
    denom = np.abs(b)
    rel = np.where(denom > 0, d / np.where(denom > 0, denom, 1), np.where(d > 0, np.inf, 0.0))
    return float(d.max()), float(rel.max())


def _norm_rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    nd = np.linalg.norm(a - b)
    return float(nd / nb) if nb > 0 else (0.0 if nd == 0 else float("inf"))


def file_kind(keys: list[str]) -> str:
    if any(k.endswith("_states") for k in keys) and "env_seed" in keys:
        return "env"
    if any(k.startswith("init/actor") for k in keys) and any(k.startswith("grad/") for k in keys):
        return "agent"
    raise ValueError(
        "parity: unrecognised golden file (expected an env file with '<MODE>_states' arrays or an "
        "agent file with 'init/actor*' and 'grad/*' arrays)"
    )


FORMATS = {
    "env": "per mode prefix <MODE>_ (H2_, TOBM_): states, actions, rewards, dones, energy_penalty_frac, "
    "time_penalty_frac (and optionally power, initial_energy, gain, res); scalars env_seed, eval_seed",
    "agent": "init/actor<i>.fc{1,2,3}.{weight,bias}, init/critic.*, batch/{states,actor_actions,"
    "critic_actions,rewards,next_states,dones}/<b>, batch/is_weights, grad/critic.*, grad/actor<i>.*, "
    "priority_errors, after/critic.*, after/actor<i>.*",
}


def _load_npz(path: Path) -> dict:
    """The arrays of a golden file; a file that is not an ``.npz`` archive of plain arrays is an
    error saying so (object arrays are never unpickled)."""
    if path.is_dir():
        raise ValueError(f"parity: {path}: is a directory, expected a golden .npz file")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(
            f"parity: {path} is not a NumPy .npz archive of plain arrays (expected a golden file written "
            f"with numpy.savez, format in tests/data/GOLDEN_FORMAT.md; {type(err).__name__})"
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"parity: {path} holds a single .npy array, expected a golden .npz archive")
    try:
        with z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as err:
        what = "object arrays (refused: never unpickled)" if "pickle" in str(err) else type(err).__name__
        raise ValueError(f"parity: {path}: an array cannot be read ({what})") from None


def check_file(path: str | Path, rtol: float | None = None, atol: float | None = None) -> ParityReport:
    """Replay one golden file. ``rtol``/``atol`` replace every relative/absolute tolerance of its
    checks (None: the strict defaults, ``REWARD_RTOL``, ``GRAD_RTOL``, ``TRAJ_RTOL``, ``SELECT_ATOL``,
    ``AFTER_ATOL``)."""
    rtol = check_tolerance(rtol, "rtol")
    atol = check_tolerance(atol, "atol")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parity: no such file: {path}")
    if path.suffix.lower() == ".json":
        return check_trajectory(path, rtol=rtol)
    data = _load_npz(path)
    try:
        kind = file_kind(list(data))
    except ValueError as err:
        raise ValueError(str(err).replace("parity: ", f"parity: {path}: ", 1)) from None
    report = ParityReport(str(path), kind, rtol=rtol, atol=atol)
    try:
        if kind == "env":
            _check_env(data, report)
        else:
            _check_agent(data, report)
    except KeyError as err:
        raise ValueError(
            f"parity: {path} ({kind} file) lacks the array {err.args[0]!r}; an {kind} file holds "
            f"{FORMATS[kind]} (tests/data/GOLDEN_FORMAT.md)"
        ) from None
    return report


# ---------------------------------------------------------------------------------------- env
def _check_env(d: dict, rep: ParityReport) -> None:
    modes = sorted({k[: -len("_states")] for k in d if k.endswith("_states")})
    for mode in modes:
        if mode not in ("H2", "TOBM"):
            raise ValueError(f"parity: unknown mode prefix {mode!r} in env file (allowed: H2, TOBM)")
        states = d[f"{mode}_states"]
        dones = d[f"{mode}_dones"].astype(bool)
        n_agents = states.shape[1]
        max_steps = int(np.argmax(dones) + 1) if dones.any() else 10
        cfg = MECConfig(mode=mode, n_agents=n_agents, max_steps=max_steps)
        env = MECEnv(cfg, stream=np.random.RandomState(), env_seed=int(d["env_seed"]))
        for name in ("power", "initial_energy", "gain", "res"):
            key = f"{mode}_{name}"
            if key in d:
                got = getattr(env.devices, name)
                a, r = _abs_rel(got, d[key])
                rep.checks.append(
                    Check(f"{mode} construction {name}", a, r, bool(np.array_equal(got, d[key])))
                )
        obs = [env.reset(seed=int(d["eval_seed"]))[0]]
        rewards, dn, ef, tf = [], [], [], []
        for act in d[f"{mode}_actions"]:
            o, rw, done, info = env.step(act)
            obs.append(o[0])
            rewards.append(np.full(n_agents, rw[0]))
            dn.append(done)
            ef.append(info["energy_penalty_frac"][0])
            tf.append(info["time_penalty_frac"][0])
        obs = np.array(obs)
        a, r = _abs_rel(obs, states)
        rep.checks.append(Check(f"{mode} states", a, r, bool(np.array_equal(obs, states))))
        gr = d[f"{mode}_rewards"]
        gr = gr if gr.ndim == 2 else np.repeat(gr[:, None], n_agents, axis=1)
        a, r = _abs_rel(np.array(rewards), gr)
        tol = _tol("rtol", REWARD_RTOL, rep.rtol)
        rep.checks.append(Check(f"{mode} rewards", a, r, r <= tol.value, tolerance=tol))
        rep.checks.append(Check(f"{mode} dones", 0.0, 0.0, bool(np.array_equal(np.array(dn), dones))))
        for name, got in (("energy_penalty_frac", ef), ("time_penalty_frac", tf)):
            a, r = _abs_rel(np.array(got), d[f"{mode}_{name}"])
            rep.checks.append(
                Check(f"{mode} {name}", a, r, bool(np.array_equal(np.array(got), d[f"{mode}_{name}"])))
            )


# -------------------------------------------------------------------------------------- agent
_LAYERS = ("fc1", "fc2", "fc3")
_PARAMS = tuple(f"{layer}.{p}" for layer in _LAYERS for p in ("weight", "bias"))


def _scalar(d: dict, key: str, default):
    return type(default)(d[key]) if key in d else default


def golden_batch(d, batch_size: int) -> dict[str, torch.Tensor]:
    """The recorded replay batch of an agent golden file as the learner's ``train_step`` takes it."""

    def stack(name: str) -> torch.Tensor:
        return torch.tensor(
            np.stack([d[f"batch/{name}/{b}"] for b in range(batch_size)]), dtype=torch.float32
        )

    rewards = stack("rewards")
    return {
        "states": stack("states"),
        "actions": stack("actor_actions"),
        "selected": stack("critic_actions"),
        "reward": rewards[:, 0] if rewards.ndim == 2 else rewards,
        "next_states": stack("next_states"),
        "done": stack("dones").reshape(batch_size),
    }


def _golden_learner(d: dict) -> tuple[CCMLearner, AgentConfig, int, int]:
    """The learner of an agent golden file, with its initial weights loaded: (learner, its agent
    config, the number of agents, the batch size)."""
    n = 1 + max(int(m.group(1)) for k in d if (m := re.match(r"init/actor(\d+)\.", k)))
    batch_size = 1 + max(int(m.group(1)) for k in d if (m := re.match(r"batch/states/(\d+)$", k)))
    env_cfg = MECConfig(n_agents=n, mode=str(d["mode"]) if "mode" in d else "H2")
    cfg = AgentConfig(
        actor_lr=_scalar(d, "actor_lr", 1e-4),
        critic_lr=_scalar(d, "critic_lr", 1e-3),
        gamma=_scalar(d, "gamma", 0.99),
        replay={"batch_size": batch_size},
        variant={"actor_update": "sequential"},
    )
    learner = CCMLearner(
        env_cfg, cfg, RunRNG("reference", _scalar(d, "torch_seed", 0), _scalar(d, "env_seed", 37))
    )
    for i in range(n):
        learner.actors.load_agent_state_dict(i, {p: d[f"init/actor{i}.{p}"] for p in _PARAMS})
    learner.critic.load_state_dict({p: torch.as_tensor(d[f"init/critic.{p}"]) for p in _PARAMS})
    learner.actors_target.load_state_dict(learner.actors.state_dict())
    learner.critic_target.load_state_dict(learner.critic.state_dict())
    return learner, cfg, n, batch_size


def _check_selections(d: dict, learner: CCMLearner, rep: ParityReport) -> None:
    """The greedy selection cases ``select<k>/*``: actor actions, master decisions, hybrid actions."""
    sel_tol = _tol("atol", SELECT_ATOL, rep.atol)
    k = 0
    while f"select{k}/state" in d:
        s = d[f"select{k}/state"]
        act = learner.act(s[None], explore=False)
        a, r = _abs_rel(act.actor[0], d[f"select{k}/actor_action"])
        rep.checks.append(
            Check(f"select{k} actor action", a, r, a <= sel_tol.value, "float32 outputs", sel_tol)
        )
        same = bool(np.array_equal(act.selected[0], d[f"select{k}/critic_action"]))
        rep.checks.append(Check(f"select{k} master decision", 0.0, 0.0, same))
        a, r = _abs_rel(act.hybrid[0], d[f"select{k}/hybrid_action"])
        rep.checks.append(Check(f"select{k} hybrid action", a, r, a <= sel_tol.value, tolerance=sel_tol))
        k += 1


def _check_gradients(d: dict, learner: CCMLearner, rep: ParityReport, n: int, batch_size: int) -> None:
    """One sequential training step on the recorded batch: the critic's and every actor's gradients
    (caught before their optimiser steps) and the priority errors."""
    grad_tol = _tol("rtol", GRAD_RTOL, rep.rtol)
    batch = golden_batch(d, batch_size)
    grads: dict = {}
    names = [nm for nm, _ in learner.actors.named_parameters()]
    learner.critic_opt.register_step_pre_hook(
        lambda opt, args, kw: grads.__setitem__(
            "critic", {nm: p.grad.detach().clone() for nm, p in learner.critic.named_parameters()}
        )
    )
    learner.actor_opt.register_step_pre_hook(
        lambda opt, gr, agent: grads.__setitem__(
            agent, {nm: g[agent].detach().clone() for nm, g in zip(names, gr)}
        )
    )
    stats = learner.train_step(batch, d["batch/is_weights"])

    worst = max((_norm_rel(grads["critic"][p], d[f"grad/critic.{p}"]), p) for p in _PARAMS)
    rep.checks.append(
        Check(
            "critic gradients",
            float("nan"),
            worst[0],
            worst[0] < grad_tol.value,
            f"worst {worst[1]}; norm-wise",
            grad_tol,
        )
    )
    worst = max((_norm_rel(grads[i][p], d[f"grad/actor{i}.{p}"]), i, p) for i in range(n) for p in _PARAMS)
    rep.checks.append(
        Check(
            f"actor gradients ({n} actors, sequential)",
            float("nan"),
            worst[0],
            worst[0] < grad_tol.value,
            f"worst actor{worst[1]}.{worst[2]}; norm-wise",
            grad_tol,
        )
    )
    a, r = _abs_rel(stats["errors"], d["priority_errors"])
    rep.checks.append(Check("priority errors", a, r, r < grad_tol.value, tolerance=grad_tol))


def _after(d: dict, got: dict, prefix: str, after_tol: Tolerance) -> tuple[float, float, int, int]:
    """Worst |diff| of the elements held to ``after_tol`` and of the exempt ones (golden |grad| <
    TINY_GRAD), the number of exempt elements, and how many of them are beyond ``after_tol``."""
    worst, worst_tiny, n_tiny, n_beyond = 0.0, 0.0, 0, 0
    for p in _PARAMS:
        diff = np.abs(np.asarray(got[p], dtype=np.float64) - d[f"after/{prefix}.{p}"])
        tiny = np.abs(d[f"grad/{prefix}.{p}"]) < TINY_GRAD
        worst = max(worst, float(diff[~tiny].max(initial=0.0)))
        worst_tiny = max(worst_tiny, float(diff[tiny].max(initial=0.0)))
        n_tiny += int(tiny.sum())
        n_beyond += int((diff[tiny] > after_tol.value).sum())
    return worst, worst_tiny, n_tiny, n_beyond


def _after_rows(label: str, results: list, lr: float, after_tol: Tolerance) -> list[Check]:
    """The two checks of the weights after the step (:func:`_after` of each network)."""
    worst = max(r[0] for r in results)
    worst_tiny = max(r[1] for r in results)
    n_tiny, n_beyond = sum(r[2] for r in results), sum(r[3] for r in results)
    # the exempt elements: one Adam step (ADAM_STEPS x lr), or the absolute tolerance if looser
    tiny_tol = Tolerance("atol", max(after_tol.value, ADAM_STEPS * lr), max(AFTER_ATOL, ADAM_STEPS * lr))
    return [
        Check(
            f"weights after step: {label}",
            worst,
            float("nan"),
            worst <= after_tol.value,
            f"elements with |grad| >= {TINY_GRAD:g}",
            after_tol,
        ),
        Check(
            f"weights after step: {label}, |grad| < {TINY_GRAD:g}",
            worst_tiny,
            float("nan"),
            worst_tiny <= tiny_tol.value,
            f"{n_tiny} element(s), {n_beyond} beyond {after_tol.value:g}; bound {ADAM_STEPS:g} x lr",
            tiny_tol,
        ),
    ]


def _check_agent(d: dict, rep: ParityReport) -> None:
    learner, cfg, n, batch_size = _golden_learner(d)
    _check_selections(d, learner, rep)
    _check_gradients(d, learner, rep, n, batch_size)
    after_tol = _tol("atol", AFTER_ATOL, rep.atol)
    critic_sd = {p: v.numpy() for p, v in learner.critic.state_dict().items()}
    checks = _after_rows("critic", [_after(d, critic_sd, "critic", after_tol)], cfg.critic_lr, after_tol)
    actors = [_after(d, learner.actors.agent_state_dict(i), f"actor{i}", after_tol) for i in range(n)]
    checks += _after_rows(f"{n} actors", actors, cfg.actor_lr, after_tol)
    rep.checks.extend(checks)


# --------------------------------------------------------------------------------- trajectory
def check_trajectory(path: str | Path, rtol: float | None = None) -> ParityReport:
    """Replay a trajectory file (``parity_trajectory``) and compare its returns episode by episode,
    within ``rtol`` relative (None: ``TRAJ_RTOL``)."""
    from .parity_trajectory import TRAJ_RTOL, load_trajectory, preset_for, replay

    rtol = check_tolerance(rtol, "rtol")
    tol = _tol("rtol", TRAJ_RTOL, rtol)
    g = load_trajectory(path)
    preset = preset_for(g["code_commit"])
    rep = ParityReport(str(path), f"trajectory, published code {str(g['code_commit'])[:7]}", rtol=rtol)
    res = replay(g, rtol=tol.value)
    label = f"published_code: {preset}" if preset else "default system"
    for name, ours, gold, status, where in (
        ("eval", res.eval_ours, g["eval_returns"], res.eval_status, "evaluation before episode {k1}"),
        ("train", res.train_ours, g["train_returns"], res.train_status, "training episode {k}"),
    ):
        n = len(gold)
        a, r = _abs_rel(np.asarray(ours[:n]), np.asarray(gold, dtype=np.float64))
        bad = [k for k, st in enumerate(status) if st != "ok"]
        failed = [k for k in bad if not status[k].startswith("resolved")]
        if not bad:
            note = f"all {n} within rtol {tol.value:g} ({label})"
        else:
            k = bad[0]
            note = f"first beyond rtol {tol.value:g}: {name}_returns[{k}], " + where.format(k=k, k1=k + 1)
            note += f"; {len(failed)} unresolved, {len(bad) - len(failed)} resolved as near-ties"
        rep.checks.append(Check(f"{name} returns ({n} episodes)", a, r, not failed, note, tol))
        for k in bad[:10]:
            a, r = _abs_rel(np.asarray([ours[k]]), np.asarray([gold[k]], dtype=np.float64))
            rep.checks.append(
                Check(
                    f"  {name}_returns[{k}] ({where.format(k=k, k1=k + 1)})",
                    a,
                    r,
                    status[k].startswith("resolved"),
                    f"ours {ours[k]:.6f}, golden {gold[k]:.6f}; {status[k]}",
                    tol,
                )
            )
    return rep
