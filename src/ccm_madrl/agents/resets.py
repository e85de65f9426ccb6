"""Resets against the loss of plasticity, for the three-layer networks of this package (the client
actors, batched over agents or runs, and the master critic), as the literature compares them first:

- **ReDo** (Sokar et al. 2023, "The dormant neuron phenomenon in deep RL"): a hidden unit is
  tau-dormant when its score ``s_j = E|h_j| / mean_k E|h_k|`` over a batch of inputs (per network,
  over that layer's units) is ``<= tau``. Each dormant unit is recycled: its incoming weights and
  bias re-drawn from the layer's initial distribution, its outgoing weights set to zero (the
  network's output is unchanged at the moment of the reset), and the optimiser's moment estimates
  of those entries zeroed.
- **Shrink-and-Perturb** (Ash and Adams 2020): every parameter ``theta <- lambda * theta + sigma *
  theta_0'``, with ``theta_0'`` a fresh draw from the initial distribution; the moments are kept.

The initial distributions are the networks' own: PyTorch's default ``Linear`` init for the hidden
layers (weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))), the last layer U(-init_w, init_w)
(actors and critic alike; init_w = 3e-3 unless the network says otherwise). Every draw comes from the generator
given (seeded from the run's seed and the episode by the caller), so a resumed run draws what the
uninterrupted one drew. Parameters are ``(n, out, in)`` stacks (``BatchedLinear``: one network
per agent, or per run of a pack) or plain ``(out, in)`` ``nn.Linear`` layers (one network).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .utils import hard_update

LAYERS = ("fc1", "fc2", "fc3")
INIT_W = 3e-3  # the last layer's init bound of the actors and the critic (networks.py)


@dataclass
class Layer:
    """One linear layer as ``(n, out, in)`` / ``(n, out)`` views of its parameters, with the bound
    of its initial uniform distribution."""

    weight: torch.Tensor
    bias: torch.Tensor
    params: tuple[nn.Parameter, nn.Parameter]
    bound: float  # of the weights and the biases alike


def layers_of(net: nn.Module) -> list[Layer]:
    """The ``fc1 -> fc2 -> fc3`` chain of an actor or critic module; the last layer's bound is the
    network's ``init_w`` (or :data:`INIT_W`)."""
    out = []
    for k, name in enumerate(LAYERS):
        w, b = getattr(net, name).weight, getattr(net, name).bias
        bound = float(getattr(net, "init_w", INIT_W)) if k == len(LAYERS) - 1 else 1 / math.sqrt(w.shape[-1])
        wv, bv = (w, b) if w.dim() == 3 else (w.unsqueeze(0), b.unsqueeze(0))
        out.append(Layer(wv, bv, (w, b), bound))
    return out


def dormant(features: torch.Tensor, tau: float) -> torch.Tensor:
    """Boolean ``(n, units)``: the tau-dormant units of features ``(n, batch, units)`` (or
    ``(batch, units)`` for one network)."""
    f = features if features.dim() == 3 else features.unsqueeze(0)
    score = f.abs().mean(dim=1)
    return score / (score.mean(dim=1, keepdim=True) + 1e-9) <= tau


def _uniform(like: torch.Tensor, bound: float, generator: torch.Generator) -> torch.Tensor:
    fresh = torch.empty(like.shape, dtype=like.dtype, device=generator.device)
    return fresh.uniform_(-bound, bound, generator=generator).to(like.device)


class Moments:
    """The optimiser's per-entry state of a parameter (Adam's moments, RMSprop's square average),
    for this package's ``BatchedOptimizer`` and for ``torch.optim`` optimisers alike."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def of(self, param: nn.Parameter) -> list[torch.Tensor]:
        opt = self.optimizer
        if opt is None:
            return []
        if hasattr(opt, "params") and hasattr(opt, "m"):  # BatchedOptimizer
            k = next((i for i, p in enumerate(opt.params) if p is param), None)
            if k is None:
                return []
            return [t[k] for t in (opt.m, opt.v) if t]
        state = opt.state.get(param, {})
        return [t for t in state.values() if isinstance(t, torch.Tensor) and t.shape == param.shape]

    def zero(self, param: nn.Parameter, mask: torch.Tensor) -> None:
        for t in self.of(param):
            t.masked_fill_(mask.reshape(t.shape), 0)  # an nn.Linear's (1, ...) view of the mask


@torch.no_grad()
def redo(
    net: nn.Module,
    features: Sequence[torch.Tensor],
    tau: float,
    generator: torch.Generator,
    optimizer=None,
) -> torch.Tensor:
    """Recycle the tau-dormant units of the hidden layers (``features``: the post-activation
    outputs of fc1 and fc2 on a batch, ``(n, batch, units)``). Returns the number of units
    recycled per network, ``(n,)``."""
    layers, moments = layers_of(net), Moments(optimizer)
    if len(features) != len(layers) - 1:
        raise ValueError(f"redo: need the features of {len(layers) - 1} hidden layers, got {len(features)}")
    count = torch.zeros(layers[0].weight.shape[0], dtype=torch.long)
    for k, feats in enumerate(features):
        mask = dormant(feats, tau)  # (n, units)
        if not bool(mask.any()):
            continue
        count += mask.sum(dim=1).cpu()
        inc, nxt = layers[k], layers[k + 1]
        rows = mask.unsqueeze(-1).expand_as(inc.weight)
        inc.weight.copy_(torch.where(rows, _uniform(inc.weight, inc.bound, generator), inc.weight))
        inc.bias.copy_(torch.where(mask, _uniform(inc.bias, inc.bound, generator), inc.bias))
        cols = mask.unsqueeze(1).expand_as(nxt.weight)
        nxt.weight.masked_fill_(cols, 0.0)
        moments.zero(inc.params[0], rows)
        moments.zero(inc.params[1], mask)
        moments.zero(nxt.params[0], cols)
    return count


@torch.no_grad()
def shrink_perturb(net: nn.Module, shrink: float, sigma: float, generator: torch.Generator) -> None:
    """``theta <- shrink * theta + sigma * theta_0'`` for every weight and bias of the chain."""
    for layer in layers_of(net):
        layer.weight.mul_(shrink).add_(_uniform(layer.weight, layer.bound, generator), alpha=sigma)
        layer.bias.mul_(shrink).add_(_uniform(layer.bias, layer.bound, generator), alpha=sigma)


# ----------------------------------------------------------------------------- plasticity injection
def _set(param: nn.Parameter, value: torch.Tensor) -> None:
    """Give ``param`` a new value of another shape in place: the same ``Parameter`` object, so that
    the optimiser's parameter lists and the monitor's references stay valid."""
    param.data = value.contiguous()


@torch.no_grad()
def widen(net: nn.Module, fresh: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> int:
    """Turn the head (fc2, fc3) of ``net`` into the three heads of a plasticity injection, side by
    side in the same layers: fc2's units ``[theta | new | new0]`` (weights ``[W2; V2; V2]``, biases
    ``[b2; c2; c2]``), fc3's inputs ``[W3, V3, -V3]`` and its bias kept, so that the output is
    ``h_theta(x) + h_new(x) - h_new0(x)`` (the output bias being ``b3 + c3 - c3_0``, one trainable
    bias equals it: ``c3 = c3_0`` at the injection). ``fresh``: ``(V2, c2, V3)`` (None: zeros, the
    shape only, for a target or a checkpoint's values to be copied in). Returns the old head's
    width H2."""
    fc2, fc3 = net.fc2, net.fc3
    h2 = fc2.weight.shape[-2]
    v2, c2, v3 = fresh if fresh is not None else (
        torch.zeros_like(fc2.weight), torch.zeros_like(fc2.bias), torch.zeros_like(fc3.weight)
    )
    _set(fc2.weight, torch.cat([fc2.weight, v2, v2], dim=-2))
    _set(fc2.bias, torch.cat([fc2.bias, c2, c2], dim=-1))
    _set(fc3.weight, torch.cat([fc3.weight, v3, -v3], dim=-1))
    fc2.out_features, fc3.in_features = 3 * h2, 3 * h2
    net.hidden = (*tuple(net.hidden)[:-1], 3 * h2)
    return h2


@torch.no_grad()
def inject(net: nn.Module, generator: torch.Generator) -> int:
    """Plasticity injection (Nikishin et al. 2023) into the head of ``net``: a fresh head ``(V2, c2,
    V3)`` drawn from the initial distributions (fc2's U(-1/sqrt(H1), 1/sqrt(H1)), fc3's
    U(-init_w, init_w)), added with its frozen copy subtracted (:func:`widen`). Returns H2."""
    layers = layers_of(net)
    fc2, fc3 = layers[1], layers[2]
    fresh = tuple(
        _uniform(t, layer.bound, generator).reshape(t.shape)
        for t, layer in ((net.fc2.weight, fc2), (net.fc2.bias, fc2), (net.fc3.weight, fc3))
    )
    return widen(net, fresh)


def injection_masks(net: nn.Module, h2: int, encoder: str) -> list[torch.Tensor]:
    """The gradient masks of an injected network, one per parameter of ``net.parameters()``
    (broadcastable to it): 1 on the new head (fc2's units H2..2H2, fc3's inputs H2..2H2 and its
    bias), on fc1 when ``encoder`` is ``"train"``; 0 on the old head, the frozen copy and anything
    else (a LayerNorm's affine)."""
    masks = []
    for name, p in net.named_parameters():
        m = torch.zeros(p.shape, dtype=p.dtype, device=p.device)
        if name.startswith("fc1."):
            m.fill_(1.0 if encoder == "train" else 0.0)
        elif name == "fc2.weight":
            m[..., h2 : 2 * h2, :] = 1.0
        elif name == "fc2.bias":
            m[..., h2 : 2 * h2] = 1.0
        elif name == "fc3.weight":
            m[..., h2 : 2 * h2] = 1.0
        elif name == "fc3.bias":
            m.fill_(1.0)
        masks.append(m)
    return masks


def fresh_optimizer_state(optimizer) -> None:
    """A fresh state for an optimiser whose parameters changed shape: this package's
    ``BatchedOptimizer`` (moments zero, step counts 0) or a ``torch.optim`` optimiser (state cleared,
    re-created at its next step)."""
    if hasattr(optimizer, "params") and hasattr(optimizer, "m"):
        optimizer.m = [torch.zeros_like(p) for p in optimizer.params] if optimizer.m else []
        optimizer.v = [torch.zeros_like(p) for p in optimizer.params] if optimizer.v else []
        optimizer.steps[:] = 0
    else:
        optimizer.state.clear()


def _networks(learner, name: str):
    return getattr(learner, name), getattr(learner, f"{name}_target"), getattr(learner, f"{'actor' if name == 'actors' else 'critic'}_opt")


def inject_learner(learner, name: str, generator: torch.Generator, encoder: str) -> None:
    """Inject ``learner``'s ``actors`` or ``critic``: the network (:func:`inject`), its target (the
    same values), a fresh optimiser state, the gradient masks the learner applies before each step
    (``learner.grad_masks``) and what a checkpoint needs to rebuild the shapes
    (``learner.injection``)."""
    net, target, opt = _networks(learner, name)
    h2 = inject(net, generator)
    widen(target)
    hard_update(target, net)
    fresh_optimizer_state(opt)
    learner.injection[name] = {"head": h2, "encoder": encoder}
    learner.grad_masks[name] = injection_masks(net, h2, encoder)


def restore_injection(learner, injection: dict) -> None:
    """The shapes of the injected networks of a checkpoint (``learner.injection`` as saved), before
    its values are loaded; the masks as at the injection."""
    for name, spec in injection.items():
        net, target, opt = _networks(learner, name)
        if name in learner.injection:
            continue
        widen(net)
        widen(target)
        fresh_optimizer_state(opt)
        learner.injection[name] = dict(spec)
        learner.grad_masks[name] = injection_masks(net, int(spec["head"]), spec["encoder"])


def reset_generator(seed: int, episode: int, network: str) -> torch.Generator:
    """The generator of one reset: a function of the run's seed, the episode and the network, so
    that a resumed run draws what the uninterrupted one drew (no state to checkpoint)."""
    salt = {"actors": 1, "critic": 2}[network]
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(episode)) * 4 + salt)


# ----------------------------------------------------------------------------- on a learner
def recent(replay, n: int) -> dict[str, torch.Tensor]:
    """The ``n`` most recently stored transitions (newest first), drawn without any random stream,
    so that a reset does not move the run's replay sampling."""
    k = min(len(replay), int(n))
    slots = (replay.tree.write - 1 - torch.arange(k)) % replay.capacity
    return {f: t[slots.to(t.device)] for f, t in replay.data.items()}


def _chain(net: nn.Module, h1_pre: torch.Tensor) -> list[torch.Tensor]:
    """The post-ReLU outputs of fc1 and fc2 from fc1's pre-activation, by the layers' weights (no
    module is called, so no hook of the monitor sees these passes)."""
    h1 = torch.relu(h1_pre)
    w, b = net.fc2.weight, net.fc2.bias
    h2 = torch.relu(torch.baddbmm(b.unsqueeze(1), h1, w.transpose(1, 2)) if w.dim() == 3 else F.linear(h1, w, b))
    return [h1, h2]


def actor_features(actors: nn.Module, states: torch.Tensor) -> list[torch.Tensor]:
    """Hidden features ``(networks, rows, units)`` of the actors on states ``(B, N, s)``."""
    x = actors._agent_major(states)  # the layout forward() computes in, without calling a module
    w, b = actors.fc1.weight, actors.fc1.bias
    return _chain(actors, torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)))


def critic_features(learner, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Hidden features ``(rows, units)`` of the master critic on the rows it trains on (the
    learner's ``critic_inputs``)."""
    rows, _ = learner.critic_inputs(batch["states"], batch["actions"], batch["selected"])
    return _chain(learner.critic, rows)


@torch.no_grad()
def apply(learner, episode: int) -> dict[str, float]:
    """The reset of ``agent.mitigations`` due after episode ``episode``'s training step, on the
    networks it names (``reset_networks``); returns what it did (``reset_units_<network>``: units
    recycled by ReDo, summed over the networks; ``reset_applied``: 1 for Shrink-and-Perturb) or {}."""
    mit = learner.cfg.mitigations
    due = episode + 1 == mit.inject_at if mit.reset == "inject" else (episode + 1) % mit.reset_every == 0
    if mit.reset == "none" or not due:
        return {}
    nets = {"actors": (learner.actors, learner.actor_opt), "critic": (learner.critic, learner.critic_opt)}
    which = ["actors", "critic"] if mit.reset_networks == "both" else [mit.reset_networks]
    batch = recent(learner.replay, learner.batch_size) if mit.reset == "redo" else None
    out: dict[str, float] = {}
    for name in which:
        net, opt = nets[name]
        gen = reset_generator(learner.rng.seed, episode, name)
        if mit.reset == "inject":  # the target is widened and copied by inject_learner
            inject_learner(learner, name, gen, mit.inject_encoder)
            out[f"reset_applied_{name}"] = 1.0
            continue
        if mit.reset == "shrink_perturb":
            shrink_perturb(net, mit.sp_shrink, mit.sp_sigma, gen)
            out[f"reset_applied_{name}"] = 1.0
            continue
        feats = actor_features(net, batch["states"]) if name == "actors" else critic_features(learner, batch)
        out[f"reset_units_{name}"] = float(redo(net, feats, mit.redo_tau, gen, opt).sum())
    for name in which:  # the targets follow, as after an optimiser step (published: hard updates)
        hard_update(getattr(learner, f"{name}_target"), nets[name][0])
    return out


__all__ = [
    "Layer",
    "Moments",
    "apply",
    "dormant",
    "fresh_optimizer_state",
    "inject",
    "inject_learner",
    "injection_masks",
    "layers_of",
    "recent",
    "redo",
    "reset_generator",
    "restore_injection",
    "shrink_perturb",
    "widen",
]
