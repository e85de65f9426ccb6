"""Networks: all N client actors as ONE batched module, and the master critic.

Layout convention of the batched actor: inside the module tensors are agent-major,
``(N, M, features)``; its public ``forward`` takes and returns ``(..., N, features)``. Forward hooks on
its sub-modules (``fc1``, ``act1``, ``fc2``, ``act2``, ``fc3``, ``out_act``) therefore see
``(N, M, features)`` tensors, with the agent in dimension 0.

The master critic's first layer is linear in the concatenation ``[S, U, s_i, u_i]``, so it is
evaluated as ``W_joint [S, U] + b`` (once per sample) plus ``W_own [s_i, u_i]`` (once per row). Its
parameters keep the published layout (``fc1.weight`` is (hidden, N*7 + N*3 + 7 + 3)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..config.imports import Registry


class ScaledSigmoid(nn.Module):
    """``2 * sigmoid(x) - 1``: a bounded output in (-1, 1) with a slower-saturating derivative."""

    bounded = True  # the monitor measures its saturation (monitor/core.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.sigmoid(x) - 1


class StraightThroughClip(nn.Module):
    """A linear output clipped to the action bounds [-1, 1] in value, with the identity's gradient
    (a straight-through estimator): the actions are bounded as tanh's are, but no input saturates
    the gradient. The control for the claim that tanh's saturation stops the actors (``hardtanh``
    clips with a zero gradient outside the bounds, which saturates like tanh)."""

    bounded = True  # the monitor measures its outputs (its derivative is 1: never saturated)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the clipped value exactly (x - x.detach() is 0 in value, 1 in gradient); NOT
        # x + (clamp(x) - x).detach(), whose rounding gives +-2 for |x| ~ 1e8 in float32
        return x.clamp(-1.0, 1.0).detach() + (x - x.detach())


# architecture.activation -> the actors' output activation (a module class); a registry of
# agents/parts.py, so the config accepts every name here
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = Registry({
    "tanh": nn.Tanh,
    "softsign": nn.Softsign,
    "hardtanh": nn.Hardtanh,
    "scaled_sigmoid": ScaledSigmoid,
    "linear_clip": StraightThroughClip,
}, "activation")


def _tanh_scaled(q: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * torch.tanh(q / scale)


# architecture.critic_output -> the critic's output as a function of its last layer's value q and
# architecture.critic_output_scale (published: linear, q itself); a registry of agents/parts.py
CRITIC_OUTPUTS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = Registry({
    "linear": lambda q, scale: q,
    "tanh_scaled": _tanh_scaled,  # bounded to (-scale, scale), ~linear well inside
}, "critic output")


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: unknown output activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class _RowsBaddbmm(torch.autograd.Function):
    """``bias + x @ weight^T`` batched over networks (dimension 0), exactly as ``torch.baddbmm``,
    with a backward that computes the matrix products of the input and weight gradients for the
    networks ``rows`` only: the others get exact zeros instead of their true gradients (their bias
    gradient stays the true one of what reaches the layer: cheap, and summed by autograd). For a loss
    whose gradient is used for ``rows`` only (the sequential actor step updates one actor per run),
    the gradients of ``rows`` are bit-identical to autograd's of the plain ``baddbmm``: the same
    products of the same operands (a gathered slice has the layout of the full operand's slice; CPU
    batched GEMMs compute each matrix on its own; a test pins the identity), and the bias gradient
    takes autograd's own path (the engine sums the broadcast gradient). On a GPU the library may
    pick another GEMM kernel for fewer matrices: equal in exact arithmetic, not pinned bit for bit."""

    @staticmethod
    def forward(ctx, bias, x, weight, rows):  # noqa: D102
        ctx.save_for_backward(x, weight, rows)
        return torch.baddbmm(bias, x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        x, weight, rows = ctx.saved_tensors
        gr = g[rows]
        gx = gw = None
        if ctx.needs_input_grad[1]:
            gx = g.new_zeros(x.shape)
            gx[rows] = gr.bmm(weight[rows])
        if ctx.needs_input_grad[2]:  # baddbmm's batch2 gradient (n, in, out), then its transpose's
            gw = g.new_zeros(weight.shape[0], weight.shape[2], weight.shape[1])
            gw[rows] = x[rows].transpose(1, 2).bmm(gr)
            gw = gw.transpose(1, 2)
        return (g if ctx.needs_input_grad[0] else None), gx, gw, None


class BatchedLinear(nn.Module):
    """N independent linear layers applied as one batched matmul: (N, M, in) -> (N, M, out).

    ``grad_rows`` (a long tensor of network indices, or None: all) restricts the backward's matrix
    products to those networks (:class:`_RowsBaddbmm`); set it through
    :meth:`BatchedActor.gradients_for`."""

    grad_rows: torch.Tensor | None = None

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.n, self.in_features, self.out_features = n, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))
        bound = 1 / math.sqrt(in_features)
        with torch.no_grad():  # PyTorch's default Linear init, per agent
            for i in range(n):
                nn.init.kaiming_uniform_(self.weight[i], a=math.sqrt(5))
            self.bias.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_rows is not None and torch.is_grad_enabled():
            return _RowsBaddbmm.apply(self.bias.unsqueeze(1), x, self.weight, self.grad_rows)
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"n={self.n}, in_features={self.in_features}, out_features={self.out_features}"


def set_bounds(module: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> None:
    lo = torch.as_tensor(lo, dtype=torch.float32)
    span = torch.as_tensor(hi, dtype=torch.float32) - lo
    if (span <= 0).any():
        raise ValueError("input bounds: every upper bound must exceed its lower bound")
    module.in_lo, module.in_span = lo, span


class BatchedLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a per-agent affine transform: (N, M, d) -> (N, M, d)."""

    def __init__(self, n: int, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n, d))
        self.bias = nn.Parameter(torch.zeros(n, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return x * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class BatchedActor(nn.Module):
    """All N client actors: in -> h1 -> h2 -> out, ReLU hidden, bounded output activation.

    ``layernorm=True`` inserts a per-agent LayerNorm (affine, per agent) before the output activation.
    ``stochastic=True`` makes each actor a squashed Gaussian: the last layer outputs a mean and a
    log-std per action dimension (log-std clamped to [-5, 2]); :meth:`forward` returns the
    deterministic action ``tanh(mean)`` and :meth:`sample` a reparameterised sample with its exact
    log-probability (tanh change of variables).
    ``shared=True`` gives all N agents ONE network (parameter sharing, as the published repository's
    code builds its actors): parameters then have 1 in dimension 0 and the hooks see
    ``(1, M * N, features)`` tensors.
    """

    def __init__(
        self,
        n_agents: int,
        state_dim: int = 7,
        action_dim: int = 3,
        hidden: Sequence[int] = (64, 32),
        activation: str = "tanh",
        init_w: float = 3e-3,
        layernorm: bool = False,
        stochastic: bool = False,
        shared: bool = False,
    ):
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"actor hidden sizes: need two layers, got {list(hidden)}")
        if stochastic and activation != "tanh":
            raise ValueError("a stochastic (squashed Gaussian) actor needs activation 'tanh'")
        self.n_agents, self.state_dim, self.action_dim = n_agents, state_dim, action_dim
        self.shared = shared
        self.n_nets = 1 if shared else n_agents  # networks actually held (dimension 0 of every parameter)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation_name = activation
        self.init_w = init_w
        self.stochastic = stochastic
        self.out_dim = 2 * action_dim if stochastic else action_dim
        self.fc1 = BatchedLinear(self.n_nets, state_dim, self.hidden[0])
        self.act1 = nn.ReLU()
        self.fc2 = BatchedLinear(self.n_nets, self.hidden[0], self.hidden[1])
        self.act2 = nn.ReLU()
        self.fc3 = BatchedLinear(self.n_nets, self.hidden[1], self.out_dim)
        self.norm = BatchedLayerNorm(self.n_nets, action_dim) if layernorm else None
        self.out_act = make_activation(activation)
        self.register_buffer("in_lo", None)
        self.register_buffer("in_span", None)
        with torch.no_grad():
            self.fc3.weight.uniform_(-init_w, init_w)
            self.fc3.bias.uniform_(-init_w, init_w)

    def reset_parameters_reference(self) -> None:
        """Initialise exactly as the published code does with the current torch RNG state: for each
        agent in order, ``Linear(in, h1)``, ``Linear(h1, h2)``, ``Linear(h2, out)`` with default init,
        then the last layer's weight and bias re-drawn from U(-init_w, init_w) (a shared actor: one
        network drawn once)."""
        with torch.no_grad():
            for i in range(self.n_nets):
                l1 = nn.Linear(self.state_dim, self.hidden[0])
                l2 = nn.Linear(self.hidden[0], self.hidden[1])
                l3 = nn.Linear(self.hidden[1], self.out_dim)
                l3.weight.uniform_(-self.init_w, self.init_w)
                l3.bias.uniform_(-self.init_w, self.init_w)
                for dst, src in ((self.fc1, l1), (self.fc2, l2), (self.fc3, l3)):
                    dst.weight[i].copy_(src.weight)
                    dst.bias[i].copy_(src.bias)

    def set_input_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Scale every state feature to [0, 1] by known bounds before the first layer."""
        set_bounds(self, lo, hi)

    def _agent_major(self, states: torch.Tensor) -> torch.Tensor:
        if self.in_lo is not None:
            states = (states - self.in_lo) / self.in_span
        if self.shared:  # one network: every (sample, agent) row is a sample of it
            return states.reshape(1, -1, self.state_dim)
        return states.reshape(-1, self.n_agents, self.state_dim).transpose(0, 1)

    def _batch_major(self, t: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        if self.shared:
            return t.reshape(*lead, self.n_agents, t.shape[-1])
        return t.transpose(0, 1).reshape(*lead, self.n_agents, t.shape[-1])

    def forward_with_preactivation(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions, output pre-activations z), both (..., N, action_dim); deterministic."""
        lead = states.shape[:-2]
        z = self._z(self._agent_major(states))
        if self.stochastic:
            z = z[..., : self.action_dim]
        return self._batch_major(self.out_act(z), lead), self._batch_major(z, lead)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """states (..., N, state_dim) -> actions (..., N, action_dim) (the mean action if stochastic)."""
        return self.forward_with_preactivation(states)[0]

    def sample(
        self, states: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Squashed-Gaussian sample: (actions (..., N, a), log-probability (..., N))."""
        if not self.stochastic:
            raise RuntimeError("sample() needs a stochastic actor")
        lead = states.shape[:-2]
        out = self._z(self._agent_major(states))
        mean, log_std = (
            out[..., : self.action_dim],
            out[..., self.action_dim :].clamp(LOG_STD_MIN, LOG_STD_MAX),
        )
        std = log_std.exp()
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + std * eps
        a = self.out_act(z)
        log_prob = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - z - F.softplus(-2 * z))).sum(-1)  # log |d tanh / dz|
        return self._batch_major(a, lead), log_prob.transpose(0, 1).reshape(*lead, self.n_agents)

    def _unhooked(self) -> bool:
        """No forward hook or pre-hook on this module, its sub-modules or globally (nothing reads
        the activations of a forward)."""
        from torch.nn.modules import module as nn_module

        if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
            return False
        return not any(m._forward_hooks or m._forward_pre_hooks for m in self.modules())

    def _z(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() and self._unhooked():  # acting: the ReLUs in place, same values
            h = self.fc2(self.fc1(x).relu_()).relu_()
        else:
            h = self.act2(self.fc2(self.act1(self.fc1(x))))
        z = self.fc3(h)
        if self.norm is not None:
            z = (
                torch.cat([self.norm(z[..., : self.action_dim]), z[..., self.action_dim :]], -1)
                if self.stochastic
                else self.norm(z)
            )
        return z

    def agent_nets(self, agent: int, device: torch.device | None = None) -> torch.Tensor:
        """The networks of agent ``agent`` (a pack: agent ``agent`` of every run), indices into
        dimension 0 of every parameter."""
        runs = self.n_nets // self.n_agents
        dev = self.fc1.weight.device if device is None else device
        return torch.arange(runs, device=dev) * self.n_agents + agent

    def agent_parameters(self, agent: int) -> dict[str, torch.Tensor]:
        """Agent ``agent``'s parameters (:meth:`agent_nets` of every parameter, by name), detached
        copies that require gradients: leaves for :meth:`forward_agent`'s ``params``, whose
        gradients are those of the networks' slices without the full-size zero gradients of the
        others."""
        nets = self.agent_nets(agent)
        return {nm: p.detach()[nets].requires_grad_() for nm, p in self.named_parameters()}

    # the sub-modules of one actor's forward, in order (without ``norm`` when there is none)
    CHAIN = ("fc1", "act1", "fc2", "act2", "fc3", "norm", "out_act")

    def hooks_fed(self) -> bool:
        """Whether :meth:`forward_agent` can feed this module's forward hooks with full-layout
        activations (:meth:`activations`): plain forward hooks on the sub-modules of :data:`CHAIN`
        only (no pre-hooks, no hooks with keyword arguments, no global hooks)."""
        from torch.nn.modules import module as nn_module

        if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
            return False
        chain = {getattr(self, nm) for nm in self.CHAIN if getattr(self, nm) is not None}
        return not any(
            m._forward_pre_hooks or m._forward_hooks_with_kwargs or (m._forward_hooks and m not in chain)
            for m in self.modules()
        )

    @torch.no_grad()
    def activations(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every network's activations on ``states`` (..., N, state_dim), agent-major (n_nets, M,
        features), without gradient and without calling hooks: ``"input"`` (the scaled states) and
        the output of each sub-module of :data:`CHAIN`, the values of :meth:`forward`. What
        :meth:`forward_agent` keeps up to date and hands to the forward hooks (``kept``)."""
        if self.stochastic or self.shared:
            raise ValueError("activations: deterministic, independent networks only")
        kept = {"input": self._agent_major(states)}
        h = kept["input"]
        for nm in self.CHAIN:
            m = getattr(self, nm)
            if m is not None:
                h = kept[nm] = m.forward(h)
        return kept

    def forward_agent(
        self,
        states: torch.Tensor,
        agent: int,
        params: dict[str, torch.Tensor] | None = None,
        kept: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Agent ``agent``'s actions alone: states (..., N, state_dim) -> (..., action_dim), at the
        cost of its own networks only (a pack: agent ``agent`` of every run, rows run-major). Bit for
        bit ``forward(states)[..., agent, :]`` (each network's batched GEMM is computed on its own)
        for the output activations tanh, softsign, hardtanh and linear_clip; ``scaled_sigmoid``
        differs in the last bits (torch's sigmoid rounds differently in its kernels' vector body
        and scalar tail, so an element's rounding depends on its place in the tensor); a test pins
        both. Independent (not shared) networks only. ``params``: the agent's parameters given
        (:meth:`agent_parameters`, the same values), instead of gathered from the networks'.

        Forward hooks (the monitor's) see the ``(N, M, features)`` layout of every agent: with
        ``kept`` (:meth:`activations` of the same states, kept by the caller), the agent's slices
        are written into it and each hooked sub-module's hooks are called with its full-layout
        input and output (:meth:`_agent_chain`); without ``kept``, in a pass with gradients while
        hooks are registered, the full forward instead."""
        if self.shared:
            raise ValueError("forward_agent: a shared network serves every agent; use forward")
        if kept is None and torch.is_grad_enabled() and any(m._forward_hooks for m in self.modules()):
            return self.forward(states)[..., agent, :]
        runs = self.n_nets // self.n_agents
        nets = self.agent_nets(agent, states.device)
        if params is None:
            params = {nm: p[nets] for nm, p in self.named_parameters()}
        x = states[..., agent, :]
        if self.in_lo is not None:
            x = (x - self.in_lo) / self.in_span
        lead = x.shape[:-1]
        out = self._agent_chain(x.reshape(runs, -1, self.state_dim), params, nets, kept)
        return out.reshape(*lead, self.action_dim)

    def _agent_chain(
        self,
        x: torch.Tensor,
        params: dict[str, torch.Tensor],
        nets: torch.Tensor,
        kept: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        """:meth:`forward_agent`'s networks on their inputs x (runs, P, state_dim). With ``kept``,
        each sub-module's output slice is written into ``kept[name]`` (rows ``nets``), and a hooked
        sub-module's hooks get ``(kept[previous],)`` and ``kept[name]``; the output activation's
        output is handed over as a new full-layout tensor in the graph (its slice the returned
        actions), so that a hook's gradient hook on it sees the full-layout gradient, and its input
        as a copy (a hook may keep it beyond the step). The hidden layers' are the kept tensors
        themselves, valid until the agent's next :meth:`forward_agent`: a hook must not keep them."""
        h, prev = x, "input"
        for nm in self.CHAIN:
            m = getattr(self, nm)
            if m is None:
                continue
            if nm.startswith("fc"):
                w, b = params[f"{nm}.weight"], params[f"{nm}.bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
                h = h[..., : self.action_dim] if nm == "fc3" else h
            elif nm == "norm":
                h = F.layer_norm(h, h.shape[-1:], eps=m.eps)
                h = h * params["norm.weight"].unsqueeze(1) + params["norm.bias"].unsqueeze(1)
            else:
                h = torch.relu(h) if nm.startswith("act") else m.forward(h)
            if kept is None:
                continue
            kept[nm].index_copy_(0, nets, h.detach())
            if m._forward_hooks:
                last = nm == "out_act"
                full_in = kept[prev].clone() if last else kept[prev]
                full = kept[nm].index_put((nets,), h) if last and h.requires_grad else kept[nm]
                for hook in list(m._forward_hooks.values()):
                    if hook(m, (full_in,), full) is not None:
                        raise RuntimeError("forward_agent: a forward hook that replaces the output")
                h = full[nets] if full.requires_grad else h
            prev = nm
        return h

    @contextmanager
    def gradients_for(self, nets: int | torch.Tensor | None):
        """Within: the backward computes the parameter gradients of the networks ``nets`` (an index
        or indices into dimension 0) and exact zeros for the others' weights, skipping their matrix
        products; outputs and the gradients of ``nets`` are unchanged, bit for bit. For a loss
        whose gradient is applied to ``nets`` only. ``None``, or a shared network: no restriction."""
        if nets is None or self.n_nets == 1 or self.shared:
            yield
            return
        rows = torch.as_tensor(nets, dtype=torch.long, device=self.fc1.weight.device).reshape(-1)
        layers = (self.fc1, self.fc2, self.fc3)
        for layer in layers:
            layer.grad_rows = rows
        try:
            yield
        finally:
            for layer in layers:
                layer.grad_rows = None

    def agent_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Actor ``i``'s parameters in the published per-agent layout (``fc1.weight`` ...); with a
        shared network, the one network's for every ``i``."""
        i = 0 if self.shared else i
        return {
            f"{layer}.{p}": getattr(getattr(self, layer), p)[i].detach().clone()
            for layer in ("fc1", "fc2", "fc3")
            for p in ("weight", "bias")
        }

    def load_agent_state_dict(self, i: int, sd: dict[str, torch.Tensor]) -> None:
        i = 0 if self.shared else i
        with torch.no_grad():
            for layer in ("fc1", "fc2", "fc3"):
                for p in ("weight", "bias"):
                    getattr(getattr(self, layer), p)[i].copy_(torch.as_tensor(sd[f"{layer}.{p}"]))


class MasterCritic(nn.Module):
    """The master critic Q(S, U, s_i, u_i): (N*s + N*a + s + a) -> h1 -> h2 -> 1, ReLU hidden.

    ``(s_i, u_i) = (0, 0)`` is the "fake agent" scored when nobody offloads.
    ``per_agent=False`` gives the vanilla MADDPG critic Q(S, U) (no per-agent input).
    """

    def __init__(
        self,
        n_agents: int,
        state_dim: int = 7,
        action_dim: int = 3,
        hidden: Sequence[int] = (512, 128),
        init_w: float = 3e-3,
        per_agent: bool = True,
        output: str = "linear",
        output_scale: float = 1.0,
    ):
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"critic hidden sizes: need two layers, got {list(hidden)}")
        if output not in CRITIC_OUTPUTS:
            raise ValueError(f"critic_output: unknown {output!r}; allowed: {', '.join(CRITIC_OUTPUTS)}")
        self.n_agents, self.state_dim, self.action_dim = n_agents, state_dim, action_dim
        self.per_agent = per_agent
        self.output, self.output_scale = output, float(output_scale)
        self.joint_dim = n_agents * (state_dim + action_dim)
        in_dim = self.joint_dim + (state_dim + action_dim if per_agent else 0)
        self.hidden = tuple(int(h) for h in hidden)
        self.fc1 = nn.Linear(in_dim, self.hidden[0])
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(self.hidden[0], self.hidden[1])
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(self.hidden[1], 1)
        with torch.no_grad():
            self.fc3.weight.uniform_(-init_w, init_w)
            self.fc3.bias.uniform_(-init_w, init_w)
        self.register_buffer("in_lo", None)
        self.register_buffer("in_span", None)

    def set_input_bounds(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        """Scale every state feature (joint and own) to [0, 1] by known bounds. The fake agent's
        all-zero input stays zero."""
        set_bounds(self, lo, hi)

    def _scale(self, states: torch.Tensor) -> torch.Tensor:
        return states if self.in_lo is None else (states - self.in_lo) / self.in_span

    def joint(
        self, states: torch.Tensor, actions: torch.Tensor, sample: torch.Tensor | None = None
    ) -> torch.Tensor:
        """First-layer pre-activation of the joint part incl. bias: (B, N, s), (B, N, a) -> (B, H1).
        ``sample`` (here and in ``own``/``head``): the sample index of each row, which a pack of
        critics (:class:`PackedCritic`) needs to find each row's run; one critic ignores it."""
        b = states.shape[0]
        x = torch.cat([self._scale(states).reshape(b, -1), actions.reshape(b, -1)], dim=-1)
        return F.linear(x, self.fc1.weight[:, : self.joint_dim], self.fc1.bias)

    def joint_state(self, states: torch.Tensor) -> torch.Tensor:
        """The state part of ``joint`` incl. bias, ``W_S S + b``: (B, N, s) -> (B, H1). With
        :meth:`joint_actions`, ``joint`` in two products (another float32 summation order: the state
        and action sums are rounded apart)."""
        b, k = states.shape[0], self.n_agents * self.state_dim
        return F.linear(self._scale(states).reshape(b, -1), self.fc1.weight[:, :k], self.fc1.bias)

    def joint_actions(self, actions: torch.Tensor, agent: int | None = None) -> torch.Tensor:
        """The action part of ``joint``, ``W_U U``: (B, N, a) -> (B, H1); with ``agent``, the part of
        that agent's action columns alone: (B, a) -> (B, H1)."""
        w = self.fc1.weight[:, self._action_columns(agent)]
        return F.linear(actions.reshape(actions.shape[0], -1), w)

    def joint_actions_grad(self, g: torch.Tensor, agent: int) -> torch.Tensor:
        """The gradient of ``(g * joint_actions(u, agent)).sum()`` with respect to ``u`` (B, a): the
        product autograd's backward of :meth:`joint_actions` computes (``g @ W_U[:, cols]``), the
        same operands and the same call, without the forward."""
        return g.mm(self.fc1.weight[:, self._action_columns(agent)])

    def _action_columns(self, agent: int | None) -> slice:
        k, a = self.n_agents * self.state_dim, self.action_dim
        return slice(k, self.joint_dim) if agent is None else slice(k + agent * a, k + (agent + 1) * a)

    def own_rows(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The own first-layer part of every row (sample b, agent j): (B, N, s), (B, N, a) ->
        (B, N, H1), as the actor loss's maximum computes it (``argmax.own_part``: row-invariant)."""
        from .argmax import own_inputs, own_part

        x = own_inputs(self, states, actions)
        return own_part(self, x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def own(
        self, states: torch.Tensor, actions: torch.Tensor, sample: torch.Tensor | None = None
    ) -> torch.Tensor:
        """First-layer contribution of the scored agent: (..., s), (..., a) -> (..., H1)."""
        return F.linear(
            torch.cat([self._scale(states), actions], dim=-1), self.fc1.weight[:, self.joint_dim :]
        )

    def out(self, q: torch.Tensor) -> torch.Tensor:
        """The critic's output from its last layer's value (``CRITIC_OUTPUTS``; published: q)."""
        return q if self.output == "linear" else CRITIC_OUTPUTS[self.output](q, self.output_scale)

    def head(self, h1_pre: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        """From the first layer's pre-activation to Q: (..., H1) -> (...)."""
        return self.out(self.fc3(self.act2(self.fc2(self.act1(h1_pre)))).squeeze(-1))

    def rows_q(
        self,
        joint: torch.Tensor,
        rows: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        sample: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Q of scored rows: row m is sample ``rows[m]``'s joint part (``joint`` (B, H1)) plus the
        first-layer contribution of its scored agent (``states`` (M, s), ``actions`` (M, a)), through
        the head; (M,). ``sample``: as in ``joint``."""
        return self.head(joint[rows] + self.own(states, actions, sample), sample)

    def proposer_q(
        self,
        joint: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        bi: torch.Tensor,
        ji: torch.Tensor,
    ) -> torch.Tensor:
        """Q of the rows (sample ``bi``, agent ``ji``) of a batch (``states`` (B, N, s), ``actions``
        (B, N, a), ``joint`` its joint part): the own parts of the whole batch, then the rows'."""
        return self.head(joint[bi] + self.own(states, actions)[bi, ji], bi)

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        own_state: torch.Tensor | None = None,
        own_action: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Q for each sample: states (B, N, s), actions (B, N, a), own_* (B, s)/(B, a) or None for
        the fake agent (per-agent critic) -> (B,)."""
        h = self.joint(states, actions)
        if self.per_agent and own_state is not None:
            h = h + self.own(own_state, own_action)
        return self.head(h)


class PackedActor(BatchedActor):
    """The actors of R runs as ONE batched module: R x N independent actors (R networks when each
    run shares one network among its N agents). Batches are run-major: ``(R * P, N, state_dim)``
    holds run 0's P samples, then run 1's, ...; inside, agent-major ``(R * N, P, features)`` (shared:
    ``(R, P * N, features)``), so each network computes exactly the rows it computes alone."""

    def __init__(self, runs: int, n_agents: int, **kw):
        shared = kw.get("shared", False)
        super().__init__(n_agents if shared else runs * n_agents, **kw)
        self.runs, self.n_agents = runs, n_agents
        self.n_nets = runs if shared else runs * n_agents
        if shared:  # one network per run
            for layer in (self.fc1, self.fc2, self.fc3):
                w, b = layer.weight, layer.bias
                layer.weight = nn.Parameter(w.detach().repeat(runs, 1, 1))
                layer.bias = nn.Parameter(b.detach().repeat(runs, 1))
                layer.n = runs
            if self.norm is not None:
                self.norm.weight = nn.Parameter(self.norm.weight.detach().repeat(runs, 1))
                self.norm.bias = nn.Parameter(self.norm.bias.detach().repeat(runs, 1))

    @property
    def nets_per_run(self) -> int:
        return self.n_nets // self.runs

    def _agent_major(self, states: torch.Tensor) -> torch.Tensor:
        if self.in_lo is not None:
            states = (states - self.in_lo) / self.in_span
        r, n, d = self.runs, self.n_agents, self.state_dim
        x = states.reshape(r, -1, n, d)
        if self.shared:
            return x.reshape(r, -1, d)
        return x.transpose(1, 2).reshape(r * n, -1, d)

    def _batch_major(self, t: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        r, n, k = self.runs, self.n_agents, t.shape[-1]
        if self.shared:
            return t.reshape(*lead, n, k)
        return t.reshape(r, n, -1, k).transpose(1, 2).reshape(*lead, n, k)

    def sample(self, states, generator=None):  # noqa: D102
        raise NotImplementedError("a pack of runs does not support stochastic actors (actor_reg: entropy)")


def grouped_rows(x: torch.Tensor, run: torch.Tensor, runs: int, fn) -> torch.Tensor:
    """Apply ``fn`` (a batched map (R, L, d) -> (R, L, k), run r's weights on slice r) to rows ``x``
    (M, d) of the runs ``run`` (M,): the rows are padded into one (R, L, d) batch (L the most rows of
    one run), so all runs' rows are one batched matmul. In a pass with gradients (the monitor's) a
    run's padding rows repeat its first row, so that a unit active on none of its rows stays inactive
    on the batch; otherwise (and for a run without rows) they are zeros. Their outputs are dropped."""
    m = x.shape[0]
    counts = torch.bincount(run, minlength=runs)
    width = int(counts.max()) if m else 0
    starts = torch.cumsum(counts, 0) - counts
    ordered = m == 0 or bool((run[1:] >= run[:-1]).all())  # rows picked by nonzero() come sorted
    order = None if ordered else torch.argsort(run, stable=True)
    rs = run if ordered else run[order]
    xs = x if ordered else x[order]
    pos = torch.arange(m, device=x.device) - starts[rs]
    padded = x.new_zeros((runs, width, *x.shape[1:]))
    padded[rs, pos] = xs
    pad = torch.arange(width, device=x.device) >= counts[:, None]  # (R, L) padding positions
    if m and torch.is_grad_enabled() and bool(pad.any()):  # what the monitor sees: a training pass
        first = xs[starts.clamp(max=m - 1)] * (counts > 0).reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        padded = torch.where(pad.reshape(runs, width, *([1] * (x.dim() - 1))), first.unsqueeze(1), padded)
    out = fn(padded)[rs, pos]
    if ordered:
        return out
    return out.new_empty(out.shape).index_put((order,), out)


def run_slices(counts: list[int]):
    """(run, slice) of each run's rows in rows sorted by run, ``counts[r]`` rows of run r; runs
    without a row are left out."""
    start = 0
    for r, c in enumerate(counts):
        if c:
            yield r, slice(start, start + c)
            start += c


class PackedCritic(nn.Module):
    """The master critics of R runs as ONE module: every layer a :class:`BatchedLinear` over the runs
    (run r's critic is slice r of every parameter, in :class:`MasterCritic`'s layout). Batches are
    run-major with the same number P of samples per run (``joint`` learns P from the batch it sees);
    rows picked from them carry their sample index (``sample``), whose run is ``sample // P``."""

    def __init__(self, runs: int, critic: MasterCritic):
        super().__init__()
        self.runs = runs
        self.n_agents, self.state_dim, self.action_dim = critic.n_agents, critic.state_dim, critic.action_dim
        self.per_agent, self.joint_dim, self.hidden = critic.per_agent, critic.joint_dim, critic.hidden
        self.fc1 = BatchedLinear(runs, critic.fc1.in_features, self.hidden[0])
        self.act1 = nn.ReLU()
        self.fc2 = BatchedLinear(runs, self.hidden[0], self.hidden[1])
        self.act2 = nn.ReLU()
        self.fc3 = BatchedLinear(runs, self.hidden[1], 1)
        self.register_buffer("in_lo", critic.in_lo)
        self.register_buffer("in_span", critic.in_span)
        self.output, self.output_scale = critic.output, critic.output_scale
        self.per = 1  # samples per run of the current batch (set by joint, or by the learner)

    _scale = MasterCritic._scale
    out = MasterCritic.out

    def _runs_of(self, sample: torch.Tensor) -> torch.Tensor:
        return torch.div(sample, self.per, rounding_mode="floor")

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, sample) -> torch.Tensor:
        """x (M, ..., d) with M = R * P run-major (sample None) or rows of the samples ``sample``."""

        def fn(xr: torch.Tensor) -> torch.Tensor:
            flat = xr.reshape(self.runs, -1, xr.shape[-1])
            out = (
                torch.bmm(flat, w.transpose(1, 2))
                if b is None
                else torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
            )
            return out.reshape(*xr.shape[:-1], w.shape[1])

        if sample is None:
            return fn(x.reshape(self.runs, -1, *x.shape[1:])).reshape(*x.shape[:-1], w.shape[1])
        return grouped_rows(x, self._runs_of(sample), self.runs, fn)

    def joint(
        self, states: torch.Tensor, actions: torch.Tensor, sample: torch.Tensor | None = None
    ) -> torch.Tensor:
        b = states.shape[0]
        if sample is None:
            if b % self.runs:
                raise ValueError(f"a pack of {self.runs} critics needs a run-major batch, got {b} samples")
            self.per = b // self.runs
        x = torch.cat([self._scale(states).reshape(b, -1), actions.reshape(b, -1)], dim=-1)
        w = self.fc1.weight[:, :, : self.joint_dim]
        counts = None if sample is None else self._counts_by_run(sample)
        if counts is not None:
            return self._linear_by_run(x, w, self.fc1.bias, counts)
        return self._linear(x, w, self.fc1.bias, sample)

    def _counts_by_run(self, sample: torch.Tensor) -> list[int] | None:
        """Each run's row count when the rows of the samples ``sample`` go through their runs'
        slices one run at a time (as :meth:`rows_q` does; None: the padded batch): without gradient
        on a CPU, the rows grouped by run, every run with rows having at least ``MIN_ROWS`` of them
        (GEMMs that give each row the value it has in the padded batch; fewer rows sum otherwise)."""
        from .argmax import MIN_ROWS

        if not sample.numel() or torch.is_grad_enabled() or sample.device.type != "cpu":
            return None
        if not bool((sample[1:] >= sample[:-1]).all()):
            return None
        counts = torch.bincount(self._runs_of(sample), minlength=self.runs).tolist()
        return counts if min(c for c in counts if c) >= MIN_ROWS else None

    @staticmethod
    def _linear_by_run(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """``x @ w[r]^T + b[r]`` of each run r's rows (``counts[r]`` of them, grouped by run), one
        GEMM per run, no padded (R, L, d) batch (on a CPU its gathers and zero fill cost more than
        one batched call saves)."""
        out = x.new_empty((x.shape[0], w.shape[1]))
        for r, sl in run_slices(counts):
            torch.addmm(b[r], x[sl], w[r].t(), out=out[sl])
        return out

    _action_columns = MasterCritic._action_columns

    def joint_state(self, states: torch.Tensor) -> torch.Tensor:
        """:meth:`MasterCritic.joint_state` of every run (a run-major batch)."""
        b, k = states.shape[0], self.n_agents * self.state_dim
        if b % self.runs:
            raise ValueError(f"a pack of {self.runs} critics needs a run-major batch, got {b} samples")
        self.per = b // self.runs
        x = self._scale(states).reshape(b, -1)
        return self._linear(x, self.fc1.weight[:, :, :k], self.fc1.bias, None)

    def joint_actions(self, actions: torch.Tensor, agent: int | None = None) -> torch.Tensor:
        """:meth:`MasterCritic.joint_actions` of every run (a run-major batch)."""
        w = self.fc1.weight[:, :, self._action_columns(agent)]
        return self._linear(actions.reshape(actions.shape[0], -1), w, None, None)

    def joint_actions_grad(self, g: torch.Tensor, agent: int) -> torch.Tensor:
        """:meth:`MasterCritic.joint_actions_grad` of every run (a run-major batch): autograd's
        backward of the batched product (``g_r @ W_U,r[:, cols]``, run by run in one ``bmm``)."""
        w = self.fc1.weight[:, :, self._action_columns(agent)]
        return g.reshape(self.runs, -1, g.shape[-1]).bmm(w).reshape(g.shape[0], -1)

    def own_rows(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """:meth:`MasterCritic.own_rows` of every run (a run-major batch), each run's rows with its
        own critic slice, one run at a time (as :meth:`rows_q` scores them on a CPU)."""
        from .argmax import own_inputs, own_part

        x = own_inputs(self, states, actions)
        per = x.reshape(self.runs, -1, x.shape[-1])
        w = self.fc1.weight[:, :, self.joint_dim :]
        out = torch.stack([own_part(self, per[r], w[r]) for r in range(self.runs)])
        return out.reshape(*x.shape[:-1], -1)

    def own(
        self, states: torch.Tensor, actions: torch.Tensor, sample: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = torch.cat([self._scale(states), actions], dim=-1)
        return self._linear(x, self.fc1.weight[:, :, self.joint_dim :], None, sample)

    def _head(self, h: torch.Tensor) -> torch.Tensor:  # (R, L, H1) -> (R, L)
        return self.out(self.fc3(self.act2(self.fc2(self.act1(h)))).squeeze(-1))

    def head(self, h1_pre: torch.Tensor, sample: torch.Tensor | None = None) -> torch.Tensor:
        if sample is None:
            lead = h1_pre.shape[:-1]
            return self._head(h1_pre.reshape(self.runs, -1, h1_pre.shape[-1])).reshape(lead)
        return grouped_rows(h1_pre, self._runs_of(sample), self.runs, self._head)

    def forward(self, states, actions, own_state=None, own_action=None) -> torch.Tensor:
        h = self.joint(states, actions)
        if self.per_agent and own_state is not None:
            h = h + self.own(own_state, own_action)
        return self.head(h)

    def rows_q(
        self,
        joint: torch.Tensor,
        rows: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        sample: torch.Tensor | None = None,
        own: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`MasterCritic.rows_q` for the runs' rows (``sample``: each row's sample index, hence
        its run). Without gradients on the CPU, when the rows come grouped by run (as ``nonzero``
        gives them), each run's rows go through its own critic slice one run at a time (the run
        alone's operations): the rows of all runs padded into one batch are R times the memory
        traffic, which on a CPU costs more than the batched matmul saves (measured in
        ``benchmarks/README.md``). Elsewhere: the padded batch (:func:`grouped_rows`). ``own``: the
        rows' own first-layer parts (M, H1) when computed already (:meth:`own_rows`)."""
        run = None if sample is None else self._runs_of(sample)
        one_run_at_a_time = (
            run is not None
            and rows.numel() > 0
            and not torch.is_grad_enabled()
            and joint.device.type == "cpu"
            and bool((run[1:] >= run[:-1]).all())
        )
        if not one_run_at_a_time:
            own = self.own(states, actions, sample) if own is None else own
            return self.head(joint[rows] + own, sample)
        from .argmax import MIN_ROWS, hidden_rows

        counts = torch.bincount(run, minlength=self.runs).tolist()
        w1, b2, w2, b3, w3 = (
            self.fc1.weight[:, :, self.joint_dim :],
            self.fc2.bias,
            self.fc2.weight,
            self.fc3.bias,
            self.fc3.weight,
        )
        x = torch.cat([self._scale(states), actions], dim=-1)
        q = x.new_empty(x.shape[0])
        for r, sl in run_slices(counts):
            if sl.stop - sl.start < MIN_ROWS:  # a GEMM of so few rows sums by their layout: kept as computed before
                h = joint[rows[sl]] + (F.linear(x[sl], w1[r]) if own is None else own[sl])
                a = F.linear(h.relu_(), w2[r], b2[r]).relu_()
            else:  # the hidden layers in cache-sized chunks, the own parts' product chunk by chunk
                src, w_own = (x[sl], w1[r]) if own is None else (own[sl], None)
                a = hidden_rows(src, None, joint, rows[sl], w2[r], b2[r], own_weight=w_own)
            q[sl] = F.linear(a, w3[r], b3[r]).squeeze(-1)
        return self.out(q)

    @torch.no_grad()
    def rows_q_kept(
        self, joint: torch.Tensor, rows: torch.Tensor, own: torch.Tensor, own_index: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`rows_q` of rows whose own first-layer parts are kept (``own`` (K, H1), row m's
        being ``own[own_index[m]]``), the rows sorted by sample (as ``nonzero`` gives them), without
        gradient: each run's rows through its own critic slice, the hidden layers in cache-sized
        chunks (:func:`~ccm_madrl.agents.argmax.hidden_rows`), the output layer over all the run's
        rows at once as in :meth:`rows_q`. The same values as :meth:`rows_q` on a CPU, bit for bit
        (``tests/test_pack.py``), without its (M, H1) gathers."""
        from .argmax import hidden_rows

        counts = torch.bincount(self._runs_of(rows), minlength=self.runs).tolist()
        q = own.new_empty(rows.shape[0])
        for r, sl in run_slices(counts):
            a = hidden_rows(own, own_index[sl], joint, rows[sl], self.fc2.weight[r], self.fc2.bias[r])
            q[sl] = F.linear(a, self.fc3.weight[r], self.fc3.bias[r]).squeeze(-1)
        return self.out(q)

    def proposer_q(
        self,
        joint: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        bi: torch.Tensor,
        ji: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`MasterCritic.proposer_q`, with the own parts of the scored rows only
        (:meth:`rows_q`): a pack's whole (R x B, N, H1) own part is R times the memory traffic."""
        return self.rows_q(joint, bi, states[bi, ji], actions[bi, ji], bi)


def describe_networks(actors: BatchedActor, critic: MasterCritic, learner: str) -> dict:
    """A learner's networks in plain values (``describe()``): per role the layer sizes, the networks
    held, the parameters of one network and of all, the activations."""
    per_actor = sum(p[0].numel() for p in actors.parameters())
    crit = sum(p.numel() for p in critic.parameters())
    return {
        "learner": learner,
        "actors": {
            "layers": [actors.state_dim, *actors.hidden, actors.out_dim],
            "n_agents": actors.n_agents,
            "state_dim": actors.state_dim,
            "action_dim": actors.action_dim,
            "shared": actors.shared,
            "stochastic": actors.stochastic,
            "networks": actors.n_nets,
            "parameters_per_network": per_actor,
            "parameters": per_actor * actors.n_nets,
            "hidden_activation": "relu",
            "output_activation": actors.activation_name,
            "layernorm": actors.norm is not None,
        },
        "critic": {
            "layers": [critic.fc1.in_features, *critic.hidden, 1],
            "n_agents": critic.n_agents,
            "state_dim": critic.state_dim,
            "action_dim": critic.action_dim,
            "networks": 1,
            "parameters_per_network": crit,
            "parameters": crit,
            "hidden_activation": "relu",
            "output_activation": critic.output
            if critic.output == "linear"
            else f"{critic.output} (scale {critic.output_scale:g})",
            "per_agent_input": critic.per_agent,
        },
    }
