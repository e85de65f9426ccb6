"""Gradient-flow monitor for any PyTorch actor-critic.

Attach networks by *role* (``"actors"``, ``"critic"``, ...). A role is a plain ``nn.Module`` (one
network) or a batched ensemble whose parameters stack the agents in dimension 0 (reported per
agent). The monitor only reads: forward hooks keep detached copies of activations of *training*
forward passes (those run with gradients enabled), a tensor hook keeps the gradient arriving at the
output activation, and an optimiser step pre-hook takes the step's measurements; nothing it does
changes training (a run with and without it gives identical weights).

Usage::

    mon = GradientFlowMonitor()
    mon.attach("actors", actor, optimizer=actor_opt, per_agent=True, lr=1e-4)
    mon.attach("critic", critic, optimizer=critic_opt, lr=1e-3)
    for episode in range(E):
        mon.start_episode(episode)
        ...                       # training: forward, backward, optimizer.step()
        rows = mon.end_episode(episode)   # None on episodes that are not sampled
    mon.detach()

Measurements of a sampled episode (one row per role and agent; see ``docs/monitor.md``):
weight change (exact: did any weight change; and max |change|, update L2, weight L2; per layer too),
per-layer gradient L2 norms (mean over the episode's optimiser steps), output pre-activation
statistics (mean, std, min, max, fraction |z| > 2, fraction |out| > 0.9, fraction exactly saturated:
the activation's float32 derivative is 0, fraction nearly saturated: derivative below 1e-3 of its
value at 0 — for any output activation, computed by autograd through it), output mean, dead (never active on the batch) and dormant
ReLU units per hidden layer, and the cause attribution of each output element's gradient:
``flowing``, ``saturated`` (derivative 0), ``dead`` (every unit feeding the output layer is zero for
that sample, so only the output bias can learn from it) or ``no_path`` (the loss does not depend on
the output: its gradient there is exactly 0) — fractions that sum to one. And the plasticity
measures (``monitor.plasticity``): per hidden activation, the fraction of active units, feature norm
and variance of each agent's last training batch of the episode, and its stable and effective rank
(on every ``rank_interval``-th measured episode); per layer, the weights' RMS magnitude and RMS
distance from the weights at attach.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from . import plasticity
from .plasticity import FEATURES, RANKS

BOUNDED = (nn.Tanh, nn.Softsign, nn.Hardtanh, nn.Sigmoid)
DORMANT_TAU = 0.025  # a unit is dormant when its mean |activation| <= tau x the layer's mean

MEAN_STATS = (
    "z_mean",
    "z_std",
    "frac_abs_z_gt2",
    "frac_out_gt09",
    "frac_sat_exact",
    "frac_sat_near",
    "out_mean",
)
NEAR_SATURATION = 1e-3  # "nearly saturated": derivative below this fraction of the derivative at 0
ATTRIBUTION = ("frac_flowing", "frac_saturated", "frac_dead", "frac_no_path")
# the ranks need one SVD per hidden layer and measured episode: on every k-th measured episode only
# (the cost that sets this default: benchmarks/README.md, "Monitor"; config.MonitorConfig.rank_interval)
RANK_INTERVAL = 50


def _is_bounded_activation(m: nn.Module) -> bool:
    """torch's bounded activations, and any module that declares ``bounded = True`` (it saturates)."""
    return isinstance(m, BOUNDED) or getattr(m, "bounded", False) is True


def _output_names(
    role: str,
    named: dict[str, nn.Module],
    output: str | None,
    output_layer: str | None,
    output_fn: Callable | None,
) -> tuple[str | None, str | None]:
    """The output activation's and the output layer's sub-module names (``attach``'s ``"auto"``
    resolved, names checked)."""
    if output_fn is not None:
        if output in ("auto", None):
            raise ValueError("output: with output_fn, name the sub-module producing the pre-activation")
        if output_layer == "auto":
            output_layer = output
    if output == "auto":
        bounded = [n for n, m in named.items() if n and _is_bounded_activation(m)]
        output = bounded[-1] if bounded else None
    if output is not None and output not in named:
        raise ValueError(f"output: {role!r} has no sub-module named {output!r}")
    if output_layer == "auto":
        names = list(named)
        stop_at = names.index(output) if output is not None else len(names)
        weighted = [
            n
            for n in names[:stop_at]
            if n
            and isinstance(getattr(named[n], "weight", None), torch.Tensor)
            and not isinstance(named[n], nn.LayerNorm)
        ]
        output_layer = weighted[-1] if weighted else None
    if output_layer is not None and output_layer not in named:
        raise ValueError(f"output_layer: {role!r} has no sub-module named {output_layer!r}")
    return output, output_layer


def _layers(role: str, module: nn.Module, per_agent: bool) -> tuple[dict, list[nn.Parameter], int]:
    """The module's parameters by owning layer, all of them in that order, and the agent count."""
    layers: dict[str, list[tuple[str, nn.Parameter]]] = {}
    for pname, p in module.named_parameters():
        owner = pname.rsplit(".", 1)[0] if "." in pname else "(root)"
        layers.setdefault(owner, []).append((pname, p))
    params = [p for ps in layers.values() for _, p in ps]
    if not params:
        raise ValueError(f"role {role!r}: the module has no parameters")
    n_agents = params[0].shape[0] if per_agent else 1
    if per_agent and any(p.shape[0] != n_agents for p in params):
        raise ValueError(
            f"role {role!r}: per_agent=True needs every parameter to stack agents in dimension 0"
        )
    return layers, params, n_agents


@dataclass
class _Role:
    name: str
    module: nn.Module
    per_agent: bool
    n_agents: int
    agent_dim: int
    output: str | None
    output_layer: str | None
    hidden: list[str]
    layers: dict[str, list[tuple[str, nn.Parameter]]]
    lr: float | None
    actor: bool
    params: list[nn.Parameter] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)
    captured: dict[str, torch.Tensor] = field(default_factory=dict)
    snapshot: list[torch.Tensor] | None = None
    last_z: torch.Tensor | None = None
    d0: float | None = None
    act_module: nn.Module | None = None
    output_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    acc: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: torch.Tensor | None = None
    features: dict[str, nn.Module] = field(default_factory=dict)  # hidden activations: name -> module
    init: list[torch.Tensor] = field(default_factory=list)  # the weights when attached
    feat: dict[str, _Stash] = field(default_factory=dict)


def _sel(r: _Role, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The stepping agents' slice of a captured tensor, agent first: (agents, ...)."""
    return t.movedim(r.agent_dim, 0)[idx.to(t.device)] if r.per_agent else t.unsqueeze(0)


@dataclass
class _Stash:
    """Each agent's features of its last optimiser step in the episode: the hidden activation's
    input (its output for an in-place activation) ``x`` (agents, rows, units) and the number of rows
    ``rows`` (agents,) (0: the agent did not step)."""

    x: torch.Tensor
    rows: torch.Tensor

    def put(self, idx: torch.Tensor, x: torch.Tensor) -> None:
        m, have = x.shape[1], self.x.shape[1]
        if m > have or x.shape[2] != self.x.shape[2]:
            grown = self.x.new_zeros((self.x.shape[0], m, x.shape[2]))
            if x.shape[2] == self.x.shape[2]:
                grown[:, :have] = self.x
            else:
                self.rows.zero_()
            self.x = grown
        self.x[idx, :m] = x.to(self.x.dtype)
        self.rows[idx] = m


def _grown(ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The record ``ref`` of a parameter that has grown to ``w``'s shape since (plasticity injection
    widens a head in place, its old entries the leading block): ``ref`` in the leading block, the
    new entries their current values (they count from when they appeared)."""
    if ref.dim() != w.dim() or any(a > b for a, b in zip(ref.shape, w.shape)):
        raise ValueError(f"monitor: a parameter changed shape from {tuple(ref.shape)} to {tuple(w.shape)}")
    out = w.clone()
    out[tuple(slice(0, s) for s in ref.shape)] = ref
    return out


class GradientFlowMonitor:
    """See the module docstring. ``interval``: measure every k-th episode; ``rank_interval``:
    compute the feature ranks on every k-th measured episode (default :data:`RANK_INTERVAL`)."""

    def __init__(
        self,
        interval: int = 1,
        stop_threshold: float = 1e-8,
        warn: Callable[[str], None] | None = None,
        rank_interval: int | None = None,
    ):
        if interval < 1:
            raise ValueError(f"interval: must be >= 1, got {interval}")
        rank_interval = RANK_INTERVAL if rank_interval is None else rank_interval
        if rank_interval < 1:
            raise ValueError(f"rank_interval: must be >= 1, got {rank_interval}")
        self.interval = int(interval)
        self.rank_interval = int(rank_interval)
        self.stop_threshold = float(stop_threshold)
        self.warn = warn
        self.roles: dict[str, _Role] = {}
        self._active = False
        self._episode: int | None = None
        self.first_stop: dict[str, dict[str, np.ndarray]] = {}
        self.all_actors_stopped_streak = 0

    # ------------------------------------------------------------------ attach / detach
    def attach(
        self,
        role: str,
        module: nn.Module,
        optimizer: Any | None = None,
        per_agent: bool = False,
        agent_dim: int = 0,
        output: str | None = "auto",
        output_layer: str | None = "auto",
        lr: float | None = None,
        actor: bool | None = None,
        output_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> GradientFlowMonitor:
        """Watch ``module`` under the name ``role``.

        per_agent: parameters stack agents in dimension 0; activations seen by hooks have the agent
            in ``agent_dim``.
        output: name of the output activation sub-module (``"auto"``: the last bounded activation,
            e.g. ``nn.Tanh``; ``None`` for a linear output such as a critic's).
        output_layer: name of the layer producing the pre-activation (``"auto"``: the last sub-module
            with a weight before the output).
        optimizer: a ``torch.optim`` optimiser or a ``BatchedOptimizer``; its step pre-hook records
            gradients. Without one, call :meth:`record_step` after ``backward()``.
        actor: counts as an actor for the summary and stop events (default: it has a bounded output).
        output_fn: the bounded activation when it is applied outside any sub-module (a squashing
            distribution's ``torch.tanh``): ``output`` then names the sub-module whose *output* is
            the pre-activation (e.g. the last ``nn.Linear``); it is also the ``output_layer``.
        """
        if role in self.roles:
            raise ValueError(f"role {role!r} is already attached")
        named = dict(module.named_modules())
        output, output_layer = _output_names(role, named, output, output_layer, output_fn)
        layers, params, n_agents = _layers(role, module, per_agent)
        hidden = [n for n, m in named.items() if n and isinstance(m, nn.ReLU)]
        features = {
            n: m for n, m in named.items() if n and n != output and plasticity.activation_kind(m) is not None
        }
        r = _Role(
            role,
            module,
            per_agent,
            n_agents,
            agent_dim,
            output,
            output_layer,
            hidden,
            layers,
            lr,
            actor if actor is not None else output is not None,
            params,
        )
        r.output_fn = output_fn
        r.features = features
        r.init = [p.detach().clone() for p in params]
        self._register_hooks(r, named, optimizer)
        self.roles[role] = r
        self.first_stop[role] = {"exact": np.full(n_agents, -1), "threshold": np.full(n_agents, -1)}
        return self

    def set_initial(self, role: str, weights: Sequence[torch.Tensor]) -> None:
        """The weights that ``role``'s ``weight_difference`` counts from (default: those at attach),
        one tensor per parameter in the order of the module's ``parameters()``."""
        r = self.roles[role]
        order = {id(p): i for i, p in enumerate(r.module.parameters())}
        if len(weights) != len(order):
            raise ValueError(f"role {role!r}: {len(order)} parameters, got {len(weights)} initial weights")
        init = [weights[order[id(p)]].detach().to(p.device, p.dtype).clone() for p in r.params]
        for p, w in zip(r.params, init):
            if w.shape != p.shape:
                raise ValueError(
                    f"role {role!r}: initial weight of shape {tuple(w.shape)} for {tuple(p.shape)}"
                )
        r.init = init

    def detach(self) -> None:
        for r in self.roles.values():
            for h in r.handles:
                h.remove()
            r.handles.clear()
        self.roles.clear()

    def _want(self) -> bool:
        """Whether a forward pass is a measured training one (hooks keep what it computes)."""
        return self._active and torch.is_grad_enabled()

    def _register_hooks(self, r: _Role, named: dict[str, nn.Module], optimizer: Any | None) -> None:
        self._output_hooks(r, named)
        want = self._want
        for hname in dict.fromkeys([*r.hidden, *r.features]):
            relu, feat = hname in r.hidden, hname in r.features
            inplace = getattr(named[hname], "inplace", False) is True

            def relu_hook(mod, inputs, output, r=r, hname=hname, relu=relu, feat=feat, inplace=inplace):
                if want():
                    if relu:
                        r.captured[f"relu:{hname}"] = output.detach()
                    if feat:  # the features are recomputed from the input when measured
                        r.captured[f"pre:{hname}"] = (output if inplace else inputs[0]).detach()

            r.handles.append(named[hname].register_forward_hook(relu_hook))
        if optimizer is not None:
            self._optimizer_hook(r, optimizer)

    def _output_hooks(self, r: _Role, named: dict[str, nn.Module]) -> None:
        """Forward hooks keeping the output pre-activation, output and its gradient, and the input
        of the output layer (the last hidden features)."""
        want = self._want
        if r.output is not None and r.output_fn is not None:

            def pre_out_hook(mod, inputs, output, r=r):
                if not want():
                    return
                r.captured["z"] = output.detach()
                r.captured["out"] = r.output_fn(output.detach())
                r.captured.pop("dz", None)
                if output.requires_grad:
                    output.register_hook(lambda g, r=r: r.captured.__setitem__("dz", g.detach()))

            r.handles.append(named[r.output].register_forward_hook(pre_out_hook))
        elif r.output is not None:

            def out_hook(mod, inputs, output, r=r):
                if not want():
                    return
                r.captured["z"] = inputs[0].detach()
                r.captured["out"] = output.detach()
                r.captured.pop("dout", None)
                if output.requires_grad:
                    output.register_hook(lambda g, r=r: r.captured.__setitem__("dout", g.detach()))

            r.handles.append(named[r.output].register_forward_hook(out_hook))
        if r.output_layer is not None:

            def last_hidden_hook(mod, inputs, output, r=r):
                if want():
                    r.captured["h_last"] = inputs[0].detach()

            r.handles.append(named[r.output_layer].register_forward_hook(last_hidden_hook))

    def _optimizer_hook(self, r: _Role, optimizer: Any) -> None:
        """The optimiser's step pre-hook: the step's measurements (:meth:`_record`)."""
        ids = {id(p): i for i, p in enumerate(r.params)}
        if isinstance(optimizer, torch.optim.Optimizer):

            def pre(opt, args, kwargs, r=r):
                if self._active:
                    self._record(r, [p.grad for p in r.params], None)

            r.handles.append(optimizer.register_step_pre_hook(pre))
        else:  # BatchedOptimizer: grads are passed to step(), aligned with optimizer.params

            def pre_b(opt, grads, agent, r=r, ids=ids):
                if self._active:
                    by = [None] * len(r.params)
                    for p, g in zip(opt.params, grads):
                        if id(p) in ids:
                            by[ids[id(p)]] = g
                    self._record(r, by, agent)

            r.handles.append(optimizer.register_step_pre_hook(pre_b))

    # ------------------------------------------------------------------ episode bracket
    def sampled(self, episode: int) -> bool:
        return episode % self.interval == 0

    def start_episode(self, episode: int) -> bool:
        """Begin an episode; returns whether it is measured."""
        self._episode = episode
        self._active = self.sampled(episode)
        if self._active:
            for r in self.roles.values():
                r.snapshot = [p.detach().clone() for p in r.params]
                r.acc = {}
                r.steps = torch.zeros(r.n_agents, dtype=torch.float64)
                r.captured.clear()
                r.feat = {}
        return self._active

    def record_step(self, role: str, agents: int | None = None) -> None:
        """Record the current ``.grad`` of ``role`` as one optimiser step (for roles attached
        without an optimiser)."""
        r = self.roles[role]
        if self._active:
            self._record(r, [p.grad for p in r.params], agents)

    # ------------------------------------------------------------------ per-step measurements
    def _agent_index(self, r: _Role, agents: int | None) -> torch.Tensor:
        if not r.per_agent:
            return torch.zeros(1, dtype=torch.long)
        if isinstance(agents, torch.Tensor):  # several agents stepping at once (a pack of runs)
            return agents.cpu()
        return torch.arange(r.n_agents) if agents is None else torch.tensor([agents])

    def _per_agent(self, r: _Role, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows of the stepping agents, each flattened: (len(idx), -1)."""
        if r.per_agent:
            t = t.movedim(r.agent_dim, 0)[idx.to(t.device)]
            return t.reshape(t.shape[0], -1)
        return t.reshape(1, -1)

    def _add(
        self,
        r: _Role,
        key: str,
        idx: torch.Tensor,
        v: torch.Tensor,
        how: str = "mean",
        keep_nan: bool = False,
    ) -> None:
        """Accumulate a per-step statistic; NaN counts as 0 unless ``keep_nan`` (a gradient norm:
        a non-finite gradient must not read as a zero one). The accumulators live on the device of
        the statistic (a GPU run's stay on the GPU until the episode's end: no transfer per step)."""
        v = v.detach().double()
        idx = idx.to(v.device)
        if key not in r.acc:
            init = {"mean": 0.0, "min": math.inf, "max": -math.inf}[how]
            r.acc[key] = torch.full((r.n_agents,), init, dtype=torch.float64, device=v.device)
        a = r.acc[key]
        if how == "mean":
            a[idx] += v if keep_nan else torch.nan_to_num(v, nan=0.0)
        elif how == "min":
            a[idx] = torch.minimum(a[idx], v)
        else:
            a[idx] = torch.maximum(a[idx], v)

    @torch.no_grad()
    def _record(self, r: _Role, grads: Sequence[torch.Tensor | None], agents: int | None) -> None:
        idx = self._agent_index(r, agents)
        r.steps[idx] += 1
        idx = idx.to(r.params[0].device)  # once per step: every statistic below indexes on the device
        self._grad_norms(r, grads, idx)
        self._hidden_stats(r, idx)
        cap = r.captured
        for name in r.features:
            x = cap.get(f"pre:{name}")
            if x is not None:
                self._stash(r, name, idx, _sel(r, x, idx))
        if r.output is not None and "z" in cap:
            self._output_stats(r, idx)
        cap.clear()

    def _grad_norms(self, r: _Role, grads: Sequence[torch.Tensor | None], idx: torch.Tensor) -> None:
        """Gradient L2 norm per layer and in total (per agent), on the parameters' device."""
        dev = r.params[0].device
        total = torch.zeros(len(idx), dtype=torch.float64, device=dev)
        k = 0
        for layer, ps in r.layers.items():
            sq = torch.zeros(len(idx), dtype=torch.float64, device=dev)
            for _ in ps:
                g = grads[k]
                k += 1
                if g is not None:
                    sq += self._per_agent(r, g, idx).double().pow(2).sum(1)
            self._add(r, f"grad_norm.{layer}", idx, sq.sqrt(), keep_nan=True)
            total += sq
        self._add(r, "grad_norm", idx, total.sqrt(), keep_nan=True)

    def _hidden_stats(self, r: _Role, idx: torch.Tensor) -> None:
        """Dead and dormant fractions of each hidden ReLU layer's units on the step's batch."""
        for hname in r.hidden:
            h = r.captured.get(f"relu:{hname}")
            if h is None:
                continue
            hs = _sel(r, h, idx)
            hs = hs.reshape(hs.shape[0], -1, hs.shape[-1]).abs()  # (agents, samples, units)
            self._add(r, f"dead.{hname}", idx, (hs.amax(1) == 0).double().mean(1))
            score = hs.mean(1)
            layer_mean = score.mean(1, keepdim=True).clamp_min(torch.finfo(score.dtype).tiny)
            self._add(r, f"dormant.{hname}", idx, (score / layer_mean <= DORMANT_TAU).double().mean(1))

    def _output_stats(self, r: _Role, idx: torch.Tensor) -> None:
        """The output pre-activation's statistics, saturation and the gradient's cause attribution."""
        cap = r.captured
        z, out = cap["z"], cap["out"]
        r.last_z = z
        z_sel = _sel(r, z, idx)
        n_sel = z_sel.shape[0]
        ds = self._derivative(r, z_sel).reshape(n_sel, -1)  # elementwise: only the stepping agents
        zs, os_ = z_sel.reshape(n_sel, -1).double(), _sel(r, out, idx).reshape(n_sel, -1).double()
        self._add(r, "z_mean", idx, zs.mean(1))
        self._add(r, "z_std", idx, zs.std(1, unbiased=False))
        self._add(r, "z_min", idx, zs.amin(1), "min")
        self._add(r, "z_max", idx, zs.amax(1), "max")
        self._add(r, "frac_abs_z_gt2", idx, (zs.abs() > 2).double().mean(1))
        self._add(r, "frac_out_gt09", idx, (os_.abs() > 0.9).double().mean(1))
        self._add(r, "frac_sat_exact", idx, (ds == 0).double().mean(1))
        if r.d0 is None:  # the derivative at 0, the activation's steepest slope
            r.d0 = abs(self._derivative(r, torch.zeros((), dtype=z.dtype, device=z.device)).item())
        self._add(r, "frac_sat_near", idx, (ds.abs() < NEAR_SATURATION * r.d0).double().mean(1))
        self._add(r, "out_mean", idx, os_.mean(1))
        if cap.get("dout") is not None or cap.get("dz") is not None:
            self._attribution(r, idx, ds, z.shape[-1])

    def _attribution(self, r: _Role, idx: torch.Tensor, ds: torch.Tensor, k_out: int) -> None:
        """Each output element's gradient as flowing, saturated, dead or no_path (fractions)."""
        cap, n_sel = r.captured, ds.shape[0]
        dout, dz = cap.get("dout"), cap.get("dz")
        if dout is not None:
            dout = _sel(r, dout, idx).reshape(n_sel, -1)
            no_path = dout == 0
            saturated = ~no_path & (ds == 0)
        else:  # only dL/dz is seen (functional activation): a zero derivative counts as saturated
            saturated = ds == 0
            no_path = ~saturated & (_sel(r, dz, idx).reshape(n_sel, -1) == 0)
        h = cap.get("h_last")
        if h is not None:
            # (agents, samples): every unit feeding the output layer is zero for that sample
            dead_sample = (_sel(r, h, idx) == 0).all(-1)
            dead = ~no_path & ~saturated & dead_sample.reshape(len(idx), -1).repeat_interleave(k_out, dim=1)
        else:
            dead = torch.zeros_like(no_path)
        flowing = ~(no_path | saturated | dead)
        for key, m in zip(ATTRIBUTION, (flowing, saturated, dead, no_path)):
            self._add(r, key, idx, m.double().mean(1))

    @staticmethod
    def _stash(r: _Role, name: str, idx: torch.Tensor, x: torch.Tensor) -> None:
        """Keep the stepping agents' features (their last step's are measured at the episode's end)."""
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        s = r.feat.get(name)
        if s is None:
            s = r.feat[name] = _Stash(
                x.new_zeros((r.n_agents, *x.shape[1:])),
                torch.zeros(r.n_agents, dtype=torch.long, device=x.device),
            )
        s.put(idx.to(x.device), x)

    def _derivative(self, r: _Role, z: torch.Tensor) -> torch.Tensor:
        """The output activation's derivative at z, as backward computes it (float32). Calls
        ``forward`` directly so that the monitor's own hooks do not fire."""
        if r.output_fn is not None:
            fn = r.output_fn
        else:
            if r.act_module is None:
                r.act_module = dict(r.module.named_modules())[r.output]
            fn = r.act_module.forward
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(zz).sum(), zz)
        return g

    # ------------------------------------------------------------------ episode end
    @torch.no_grad()
    def end_episode(self, episode: int, extra: dict | None = None) -> list[dict] | None:
        """Finish an episode. Returns one row per role and agent (None if not measured)."""
        if not self._active:
            return None
        self._active = False
        rows: list[dict] = []
        ranks = (episode // self.interval) % self.rank_interval == 0
        for r in self.roles.values():
            rows.extend(self._role_rows(r, episode, ranks))
        self._stop_streak(episode, rows)
        if extra:
            for row in rows:
                row.update(extra)
        return rows

    def _role_rows(self, r: _Role, episode: int, ranks: bool) -> list[dict]:
        """One role's rows of a measured episode (one per agent); its first stops noted."""
        changed, max_change, upd_sq, w_sq, weights = self._weights(r)
        steps = r.steps
        n = torch.where(steps > 0, steps, torch.nan)
        stats = {}
        for key, a in r.acc.items():
            a = a.cpu()
            if key in ("z_min", "z_max"):
                stats[key] = torch.where(torch.isfinite(a), a, torch.nan)
            else:
                stats[key] = a / n
        self._first_stops(r, episode, changed, max_change)
        # one row per agent, from Python lists (indexing a tensor element by element costs
        # microseconds per value: seconds per episode for a pack's thousands of agents)
        columns = {
            "steps": steps.tolist(),
            "changed": changed.tolist(),
            "max_abs_change": max_change.tolist(),
            "update_l2": upd_sq.sqrt().tolist(),
            "weight_l2": w_sq.sqrt().tolist(),
            **weights,
            **{key: v.tolist() for key, v in stats.items()},
            **self._features(r, ranks),
        }
        rows = []
        for i in range(r.n_agents):
            row = {"episode": episode, "role": r.name, "agent": i, "is_actor": r.actor}
            row.update({key: col[i] for key, col in columns.items()})
            if r.lr is not None:
                row["lr"] = r.lr
            rows.append(row)
        return rows

    def _first_stops(self, r: _Role, episode: int, changed: torch.Tensor, max_change: torch.Tensor) -> None:
        """Note the agents that stop for the first time (exact and by threshold); warn of actors."""
        fs = self.first_stop[r.name]
        if float(r.steps.sum()) == 0:  # no optimiser step this episode: nothing to judge
            fs = {"exact": np.zeros(r.n_agents), "threshold": np.zeros(r.n_agents)}
        stopped_thr = (max_change < self.stop_threshold).numpy()
        for kind, stopped in (("exact", (~changed).numpy()), ("threshold", stopped_thr)):
            newly = stopped & (fs[kind] < 0)
            if kind == "exact" and newly.any() and self.warn is not None and r.actor:
                who = np.flatnonzero(newly)
                self.warn(
                    f"episode {episode}: {r.name} {who.tolist()[:10]}{'...' if len(who) > 10 else ''} stopped changing (exact)"
                )
            fs[kind][newly] = episode

    def _stop_streak(self, episode: int, rows: list[dict]) -> None:
        """Count the measured training episodes in a row in which every actor stopped (threshold)."""
        actor_roles = [r for r in self.roles.values() if r.actor]
        if actor_roles and all(float(r.steps.sum()) > 0 for r in actor_roles):  # only training episodes count
            all_stopped = all(bool((~self._changed_now(rows, r.name)).all()) for r in actor_roles)
            all_thr = all(
                bool((self._max_change_now(rows, r.name) < self.stop_threshold).all()) for r in actor_roles
            )
            self.all_actors_stopped_streak = self.all_actors_stopped_streak + 1 if all_thr else 0
            if all_stopped and self.warn is not None and self.all_actors_stopped_streak == 1:
                self.warn(f"episode {episode}: every actor's weights stopped changing")

    def _weights(self, r: _Role) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Per agent: any weight changed, max |change|, squared update and weight L2 norms over the
        episode; and the per-layer columns: ``update_l2.<layer>``, ``weight_magnitude[.<layer>]``
        (RMS of the weights) and ``weight_difference[.<layer>]`` (RMS distance from the weights at
        attach)."""
        n = r.n_agents
        changed = torch.zeros(n, dtype=torch.bool)
        max_change = torch.zeros(n, dtype=torch.float64)
        upd_sq, w_sq, init_sq = (torch.zeros(n, dtype=torch.float64) for _ in range(3))
        cols: dict[str, list] = {}
        k, size = 0, 0
        all_idx = torch.arange(n) if r.per_agent else torch.zeros(1, dtype=torch.long)
        for layer, ps in r.layers.items():
            lsq, lw, li = (torch.zeros(n, dtype=torch.float64) for _ in range(3))
            lsize = 0
            for _, p in ps:
                w = p.detach()
                if r.snapshot[k].shape != w.shape:  # a parameter grown (plasticity injection)
                    r.snapshot[k] = _grown(r.snapshot[k], w)
                if r.init[k].shape != w.shape:
                    r.init[k] = _grown(r.init[k], w)
                d = self._per_agent(r, w - r.snapshot[k], all_idx)
                changed |= (d != 0).any(1).cpu()
                max_change = torch.maximum(max_change, d.abs().amax(1).double().cpu())
                lsq += d.double().pow(2).sum(1).cpu()
                lw += self._per_agent(r, w, all_idx).double().pow(2).sum(1).cpu()
                li += self._per_agent(r, w - r.init[k], all_idx).double().pow(2).sum(1).cpu()
                lsize += d.shape[1]
                k += 1
            cols[f"update_l2.{layer}"] = lsq.sqrt().tolist()
            cols[f"weight_magnitude.{layer}"] = (lw / lsize).sqrt().tolist()
            cols[f"weight_difference.{layer}"] = (li / lsize).sqrt().tolist()
            upd_sq, w_sq, init_sq, size = upd_sq + lsq, w_sq + lw, init_sq + li, size + lsize
        cols["weight_magnitude"] = (w_sq / size).sqrt().tolist()
        cols["weight_difference"] = (init_sq / size).sqrt().tolist()
        return changed, max_change, upd_sq, w_sq, cols

    @staticmethod
    def _features(r: _Role, ranks: bool) -> dict[str, list]:
        """Per hidden activation, the plasticity measures of each agent's features on its last
        training batch of the episode (``monitor.plasticity``; NaN for an agent that did not step,
        and for the ranks on episodes that do not compute them)."""
        cols: dict[str, list] = {}
        for name, mod in r.features.items():
            s = r.feat.get(name)
            keys = (*FEATURES, *RANKS)
            if s is None:
                cols.update({f"{key}.{name}": [math.nan] * r.n_agents for key in keys})
                continue
            inplace = getattr(mod, "inplace", False) is True
            valid = torch.arange(s.x.shape[1], device=s.x.device) < s.rows.unsqueeze(1)
            if r.per_agent and not inplace:
                valid &= ~plasticity.padding_rows(s.x)
            h = s.x if inplace else mod.forward(s.x)  # forward: the monitor's own hooks do not fire
            kind = plasticity.activation_kind(mod)
            vals = plasticity.feature_stats(h, valid, kind)
            if ranks:
                vals.update(plasticity.ranks(h, valid))
            stepped = (s.rows > 0).cpu()
            for key in keys:
                v = vals[key].cpu() if key in vals else torch.full((r.n_agents,), math.nan)
                cols[f"{key}.{name}"] = torch.where(stepped, v, math.nan).tolist()
        return cols

    @staticmethod
    def _changed_now(rows: list[dict], role: str) -> np.ndarray:
        return np.array([row["changed"] for row in rows if row["role"] == role])

    @staticmethod
    def _max_change_now(rows: list[dict], role: str) -> np.ndarray:
        return np.array([row["max_abs_change"] for row in rows if row["role"] == role])

    # ------------------------------------------------------------------ state (for resume)
    def state_dict(self) -> dict:
        return {
            "first_stop": {k: {kk: vv.copy() for kk, vv in v.items()} for k, v in self.first_stop.items()},
            "streak": self.all_actors_stopped_streak,
        }

    def load_state_dict(self, sd: dict) -> None:
        for k, v in sd["first_stop"].items():
            if k in self.first_stop:
                self.first_stop[k] = {kk: np.asarray(vv).copy() for kk, vv in v.items()}
        self.all_actors_stopped_streak = int(sd["streak"])


def summarize(rows: list[dict]) -> dict:
    """Episode-level summary of one measured episode's rows (for the metrics table)."""
    out: dict = {}
    actors = [r for r in rows if r["is_actor"]]
    critics = [r for r in rows if not r["is_actor"]]

    def mean(rs, key):
        vals = [r[key] for r in rs if key in r and r[key] == r[key]]
        return float(np.mean(vals)) if vals else float("nan")

    if actors:
        out["actors_changed"] = sum(r["changed"] for r in actors)
        out["actor_max_abs_change"] = max(r["max_abs_change"] for r in actors)
        out["actor_grad_norm"] = mean(actors, "grad_norm")
        out["actor_sat_exact_frac"] = mean(actors, "frac_sat_exact")
        out["actor_out_gt09_frac"] = mean(actors, "frac_out_gt09")
        zs = [max(abs(r.get("z_min", np.nan)), abs(r.get("z_max", np.nan))) for r in actors]
        zs = [z for z in zs if z == z]
        out["actor_z_absmax"] = max(zs) if zs else float("nan")
        for key in ATTRIBUTION:
            out[f"actor_{key}"] = mean(actors, key)
    if critics:
        out["critic_changed"] = all(r["changed"] for r in critics)
        out["critic_max_abs_change"] = max(r["max_abs_change"] for r in critics)
        out["critic_grad_norm"] = mean(critics, "grad_norm")
    if actors and critics and out["critic_grad_norm"] > 0:
        out["grad_ratio"] = out["actor_grad_norm"] / out["critic_grad_norm"]
    return out
