"""Hyper-parameters of the learners (validated, immutable), in sub-configs: ``replay``,
``exploration``, ``architecture``, ``mitigations`` and ``variant`` (what the published code does
differently from the spec). Defaults are the published ones. This module imports no training code.

Every option that names a part (an optimiser, an activation, an update schedule, an actor objective,
a regulariser, ...) accepts exactly the keys of that part's registry (``agents/parts.py``), looked up
when the config is validated: a part added to a registry is a valid config value with no other edit.
The registries live on the training side, which hands them to this module when it is imported
(:func:`provide`: ``agents/parts.py`` its registries, ``agents/__init__.py`` ``LEARNERS``); every
config that starts a run is built there (``experiment.config.build_config``). A process that loads
no training code (the run store, the report) reads stored configs, whose names were checked when the
run started: it checks their form only.

Configs written before the sub-configs existed keep loading: each old flat key (``agent.actor_update``,
``agent.replay_capacity``, ...) is moved to its place by :data:`FLAT_KEYS` (rendered in
``docs/config.md``), and the run id is computed from the flat layout (:meth:`AgentConfig.id_fields`),
so every run id stays what it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .imports import IMPORT_PATH, import_object, is_import_path

# 'module:attribute' naming a learner factory: dotted identifiers, nothing else
FACTORY = IMPORT_PATH
# the validation context under which a 'module:attribute' (a learner factory, a part) is imported
# and checked (``ExperimentConfig.model_validate(data, context=RESOLVE)``): a config the user gives to
# start a run. Without it (a stored config: a run directory's config.yaml, an archive, a sweep
# directory) validation imports nothing; the object is imported when a run starts.
RESOLVE = {"import_factories": True}


def import_factory(path: str):
    """The object named by ``'module:attribute'`` (a learner factory); ValueError naming it if absent.
    This imports the module, running its code: only for a config the user gave to start a run."""
    return import_object(path, "learner factory")


# registry name -> the training side's registry (the same mapping object, so that an entry added
# later is seen): agents/parts.py's registries and agents.LEARNERS, handed over by provide()
REGISTRIES: dict[str, Mapping[str, Any]] = {}


def provide(**registries: Mapping[str, Any]) -> None:
    """Hand the training side's registries to the config (called when ``agents`` is imported)."""
    REGISTRIES.update(registries)


def registry(name: str) -> Mapping[str, Any] | None:
    """The registry ``name`` (``agents.parts.<name>``, or ``LEARNERS``); None where no training code
    is loaded (a reader of stored configs)."""
    return REGISTRIES.get(name)


def learners() -> Mapping[str, Any] | None:
    """The built-in learners (``agents.LEARNERS``, built from the learner classes and the heuristic
    and baseline registries): the allowed values of ``agent.algorithm`` besides 'module:factory';
    None where no training code is loaded."""
    return registry("LEARNERS")


def needs_stochastic_actor(name: str) -> bool:
    """Whether the regulariser ``name`` samples from squashed-Gaussian actors (False where the
    registries are not loaded)."""
    regs = registry("ACTOR_REGULARISERS")
    return bool(regs is not None and name in regs and getattr(regs[name], "stochastic_actor", False))


class PartName:
    """Validator of an option naming a part: the value must be a key of ``parts.<registry>`` at the
    time of validation, or ``'module:attribute'`` (a part defined anywhere importable; imported and
    checked under the context :data:`RESOLVE`, a config given to start a run)."""

    def __init__(self, registry: str):
        self.registry = registry

    def allowed(self) -> list[str] | None:
        reg = registry(self.registry)
        return None if reg is None else list(reg)

    def __call__(self, value: str, info: ValidationInfo) -> str:
        if ":" in value:
            if not is_import_path(value):
                raise ValueError(f"{value!r}: expected a part's name or 'module:attribute' (dotted identifiers)")
            if (info.context or {}).get("import_factories"):
                import_object(value, "part")
            return value
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            expected = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value


def Part(registry: str) -> Any:  # noqa: N802 - a type
    """``str`` restricted to the keys of the registry ``agents.parts.<registry>``."""
    return Annotated[str, AfterValidator(PartName(registry))]


def part_registry(field) -> PartName | None:
    """The :class:`PartName` of a model field naming a part, else None."""
    for meta in field.metadata:
        if isinstance(getattr(meta, "func", None), PartName):
            return meta.func
    return None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ReplayConfig(_Section):
    """The prioritised replay and the batches drawn from it."""

    capacity: int = Field(10_000, ge=1, description="transitions kept (oldest dropped first)")
    batch_size: int = Field(64, ge=1, description="transitions sampled per training step")
    per_alpha: float = Field(0.6, ge=0, description="priority = (|TD error| + per_eps) ** per_alpha")
    per_eps: float = Field(0.01, gt=0, description="added to every |TD error| in the priority")
    per_beta0: float = Field(0.4, ge=0, le=1, description="initial importance-weight exponent beta")
    per_beta_increment: float = Field(0.001, ge=0, description="beta's increase per sampled batch, up to 1")
    episodes_before_train: int = Field(
        1, ge=0, description="training starts after episode episodes_before_train + 1 (published: 1)"
    )


class ExplorationConfig(_Section):
    """Exploration while training: epsilon scales the Gaussian noise added to the actors' actions and
    is CCM-MADRL's probability of a random selection by the master; it decays from epsilon_start to
    epsilon_end as exp(-episode / epsilon_decay)."""

    epsilon_start: float = Field(1.0, ge=0, le=1, description="epsilon at episode 0")
    epsilon_end: float = Field(0.01, ge=0, le=1, description="epsilon's limit")
    epsilon_decay: float | None = Field(
        None, gt=0, description="episodes; None = the run's number of episodes (published)"
    )


class ArchitectureConfig(_Section):
    """The networks (published: actors 7 -> 64 -> 32 -> 3, critic -> 512 -> 128 -> 1)."""

    actor_hidden: tuple[int, int] = Field((64, 32), description="the actors' two hidden layer sizes")
    critic_hidden: tuple[int, int] = Field((512, 128), description="the critic's two hidden layer sizes")
    activation: Part("ACTIVATIONS") = Field(
        "tanh",
        description="the actors' bounded output activation (linear_clip: a linear output clipped to "
        "[-1, 1] with the identity's gradient, the control without saturation)",
    )
    critic_output: Part("CRITIC_OUTPUTS") = Field(
        "linear",
        description="the critic's output: linear (published) or tanh_scaled, critic_output_scale * "
        "tanh(q / critic_output_scale) (the control with a bounded critic)",
    )
    critic_output_scale: float = Field(
        400.0, gt=0, description="the bound of a tanh_scaled critic output (|Q| <= this)"
    )

    @field_validator("actor_hidden", "critic_hidden")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if any(h < 1 for h in v):
            raise ValueError(f"hidden sizes must be >= 1, got {list(v)}")
        return v


class MitigationsConfig(_Section):
    """Changes against the actors' loss of learning; all off by default (the published algorithm)."""

    reward_scale: float = Field(1.0, gt=0, description="reward multiplier in the TD target (published: 1)")
    reward_norm: Part("REWARD_SIGNALS") = Field(
        "none",
        description="running: rewards in the TD target are standardised by the running mean/std of every "
        "reward observed so far (updated with each episode's rewards, Chan's parallel update)",
    )
    actor_output_lr_scale: float = Field(
        1.0, gt=0, description="layer-wise lr: the actors' output layer learns at this fraction of actor_lr"
    )
    actor_grad_clip: float | None = Field(
        None, gt=0, description="clip each actor's gradient to this global L2 norm"
    )
    critic_grad_clip: float | None = Field(
        None, gt=0, description="clip the critic's gradient to this global L2 norm"
    )
    actor_reg: Part("ACTOR_REGULARISERS") = Field(
        "none",
        description="anti-saturation term in the actor loss: preact = coef * mean(z^2) of the output "
        "pre-activations; entropy = squashed-Gaussian actors and coef * log pi (maximum entropy)",
    )
    actor_reg_coef: float = Field(0.0, ge=0, description="coefficient of actor_reg")
    actor_layernorm: bool = Field(
        False, description="per-agent LayerNorm before the actors' output activation"
    )
    input_norm: bool = Field(
        False,
        description="scale every state feature to [0, 1] by the environment's bounds before the actors' "
        "and the critic's first layers (published: raw states, e.g. cycles of 300-737)",
    )

    reset: Literal["none", "redo", "shrink_perturb", "inject"] = Field(
        "none",
        description="resets against the loss of plasticity (agents.resets), after every reset_every-th "
        "episode's training step. redo: recycle the tau-dormant hidden units (Sokar et al. 2023: incoming "
        "weights re-drawn from the init distribution, outgoing weights and their optimiser moments zeroed), "
        "scored on the replay's newest batch_size transitions; shrink_perturb: theta <- sp_shrink * theta + "
        "sp_sigma * fresh init (Ash and Adams 2020); inject: plasticity injection (Nikishin et al. 2023), once, "
        "after episode inject_at's training step: the head (fc2, fc3) frozen, the output h_theta + h_new - "
        "h_new0 with h_new fresh and trainable, h_new0 its frozen copy (reset_every unused)",
    )
    reset_every: int = Field(100, ge=1, description="episodes between two resets (the first after this many)")
    reset_networks: Literal["actors", "critic", "both"] = Field("both", description="the networks reset")
    redo_tau: float = Field(
        0.1, ge=0, description="ReDo's threshold: a unit is dormant when E|h| / (layer mean of E|h|) <= tau"
    )
    sp_shrink: float = Field(0.8, gt=0, le=1, description="Shrink-and-Perturb's shrink factor lambda")
    sp_sigma: float = Field(0.01, ge=0, description="Shrink-and-Perturb's noise scale sigma (times a fresh init)")
    inject_at: int = Field(
        1000, ge=1, description="plasticity injection: after the training step of the episode with this number "
        "(1-based: the inject_at-th episode), once"
    )
    inject_encoder: Literal["train", "freeze"] = Field(
        "train",
        description="plasticity injection: the first layer (the encoder below the injected head) keeps learning "
        "(train, as in Nikishin et al. 2023) or is frozen with the old head (freeze: only the new head learns)",
    )

    @model_validator(mode="after")
    def _coefficient(self) -> MitigationsConfig:
        if self.actor_reg != "none" and self.actor_reg_coef <= 0:
            raise ValueError(f"actor_reg_coef: must be > 0 when actor_reg is {self.actor_reg!r}")
        return self


class VariantConfig(_Section):
    """How the actors are built and updated: the spec's way (the golden vectors; the defaults) or the
    published repository's first commit (``published_code: 44fba1b`` sets all four)."""

    actor_sharing: Part("ACTOR_SHARING") = Field(
        "independent",
        description="independent: one actor network per client (the golden vectors, the spec); shared: ONE "
        "actor network for all clients, as the published repository's code builds it ([ActorNetwork()] * N)",
    )
    actor_update: Part("UPDATE_SCHEDULES") = Field(
        "sequential",
        description="the actor optimiser steps of one training step, whatever actor_sharing is. "
        "sequential: N steps (N = clients), step k on a loss recomputed after step k-1; with independent "
        "actors step k updates client k's actor only (published), with a shared actor every step updates "
        "the one network (N steps of one optimiser state: the published first commit's loop). "
        "simultaneous: ONE step on one loss that updates every actor (or the shared one) together "
        "(~N times cheaper)",
    )
    actor_objective: Part("ACTOR_CANDIDATES") = Field(
        "proposers",
        description="CCM-MADRL actor loss: -w * max of Q over the agents whose current action proposes "
        "(proposers: the golden vectors, the spec) or over the agents the master selected in the stored "
        "transition (selected: the published repository's code); the fake agent when there are none",
    )
    actor_joint_states: Part("JOINT_STATES") = Field(
        "current",
        description="joint state S fed to the critic in the actor loss: the sampled transition's current "
        "joint states (current: the golden vectors, the spec) or its NEXT joint states (next: the published "
        "repository's first commit 44fba1b, in CCM-MADRL and in the MADDPG benchmarks); the actions U, the "
        "own state s_j and own action u_j always come from the current states",
    )


# Old flat key of AgentConfig (before the sub-configs) -> its place now (relative to ``agent``). A key
# that stayed where it was maps to itself. Configs, --set overrides and sweep axes may use either
# name; the run id is computed from the old flat layout (AgentConfig.id_fields). docs/config.md
# renders this table (tests/test_config_migration.py keeps the two equal).
FLAT_KEYS: dict[str, str] = {
    "algorithm": "algorithm",
    "actor_lr": "actor_lr",
    "critic_lr": "critic_lr",
    "gamma": "gamma",
    "optimizer": "optimizer",
    "rejected": "rejected",
    "batch_size": "replay.batch_size",
    "replay_capacity": "replay.capacity",
    "per_alpha": "replay.per_alpha",
    "per_eps": "replay.per_eps",
    "per_beta0": "replay.per_beta0",
    "per_beta_increment": "replay.per_beta_increment",
    "episodes_before_train": "replay.episodes_before_train",
    "epsilon_start": "exploration.epsilon_start",
    "epsilon_end": "exploration.epsilon_end",
    "epsilon_decay": "exploration.epsilon_decay",
    "actor_hidden": "architecture.actor_hidden",
    "critic_hidden": "architecture.critic_hidden",
    "activation": "architecture.activation",
    "reward_scale": "mitigations.reward_scale",
    "reward_norm": "mitigations.reward_norm",
    "actor_output_lr_scale": "mitigations.actor_output_lr_scale",
    "actor_grad_clip": "mitigations.actor_grad_clip",
    "critic_grad_clip": "mitigations.critic_grad_clip",
    "actor_reg": "mitigations.actor_reg",
    "actor_reg_coef": "mitigations.actor_reg_coef",
    "actor_layernorm": "mitigations.actor_layernorm",
    "input_norm": "mitigations.input_norm",
    "actor_sharing": "variant.actor_sharing",
    "actor_update": "variant.actor_update",
    "actor_objective": "variant.actor_objective",
    "actor_joint_states": "variant.actor_joint_states",
}


def nest_flat_keys(agent: dict) -> dict:
    """A copy of an ``agent`` mapping with every old flat key moved to its sub-config (FLAT_KEYS);
    ValueError when an old and a new key give different values for one option."""
    out = dict(agent)
    for old, new in FLAT_KEYS.items():
        if old == new or old not in out:
            continue
        section, field = new.split(".")
        node = out.get(section, {})
        if not isinstance(node, dict):
            continue  # the section's own validation reports it
        value = out.pop(old)
        if field in node and node[field] != value:
            raise ValueError(
                f"agent.{old} (the old name of agent.{new}) is {value!r} but agent.{new} is {node[field]!r}; "
                "give one of the two"
            )
        out[section] = {**node, field: value}
    return out


def canonical_key(key: str) -> str:
    """A dotted config key with an old flat agent key replaced by its place now
    (``agent.actor_update`` -> ``agent.variant.actor_update``); any other key unchanged."""
    section, _, rest = key.partition(".")
    return f"agent.{FLAT_KEYS[rest]}" if section == "agent" and rest in FLAT_KEYS else key


class AgentConfig(_Section):
    algorithm: str = Field(
        "ccm_madrl",
        description="learner: ccm_madrl, a MADDPG benchmark, a non-learning baseline, or 'module:factory', "
        "a learner factory f(cfg, rng, device) importable by every worker (docs/architecture.md)",
    )
    actor_lr: float = Field(1e-4, gt=0, description="client (actor) learning rate")
    critic_lr: float = Field(1e-3, gt=0, description="master (critic) learning rate")
    gamma: float = Field(0.99, ge=0, le=1, description="discount factor")
    optimizer: Part("OPTIMIZERS") = Field("adam", description="the actors' and the critic's optimiser")
    rejected: Part("REJECTED") = Field(
        "punish",
        description="heuristic-selection MADDPG: proposers not accepted are punished (x = 2, published) "
        "or compute locally; vanilla maddpg always punishes",
    )
    argmax_row_skip: bool = Field(
        False,
        description="actor loss's maximum over candidate rows in the sequential order: skip the rows whose "
        "Q provably cannot be the maximum (a Lipschitz bound of the change since their last exact value, "
        "with a float safety margin); exact: the same argmax, loss and gradients as the full pass (at one "
        "torch thread, the default `threads: 1`; with more threads the full pass is used). Off by "
        "default: measured not faster in the published setting late in training (benchmarks/README.md)",
    )
    replay: ReplayConfig = ReplayConfig()
    exploration: ExplorationConfig = ExplorationConfig()
    architecture: ArchitectureConfig = ArchitectureConfig()
    mitigations: MitigationsConfig = MitigationsConfig()
    variant: VariantConfig = VariantConfig()

    @model_validator(mode="before")
    @classmethod
    def _old_flat_keys(cls, data: Any) -> Any:
        return nest_flat_keys(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        reg, activation = self.mitigations.actor_reg, self.architecture.activation
        if needs_stochastic_actor(reg) and activation != "tanh":
            raise ValueError(
                f"mitigations.actor_reg {reg!r} (squashed-Gaussian actors) needs activation 'tanh' "
                f"(architecture.activation is {activation!r})"
            )
        if self.argmax_row_skip and self.architecture.critic_output != "linear":
            raise ValueError(
                "argmax_row_skip: its bounds are for a linear critic output (architecture.critic_output "
                f"is {self.architecture.critic_output!r}); set one of the two back"
            )
        mit, ebt = self.mitigations, self.replay.episodes_before_train
        if mit.reset == "inject" and mit.inject_at <= ebt:
            raise ValueError(
                f"mitigations.inject_at: must exceed replay.episodes_before_train ({ebt}): no training step "
                f"before it (got {mit.inject_at})"
            )
        if self.variant.actor_objective == "selected" and self.algorithm != "ccm_madrl":
            raise ValueError(
                f"variant.actor_objective: 'selected' applies to ccm_madrl only (algorithm is {self.algorithm!r})"
            )
        return self

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, v: str, info: ValidationInfo) -> str:
        """A built-in learner, or 'module:factory' (imported and checked only under the context
        :data:`RESOLVE`: a config given to start a run; a stored config never names code to run)."""
        algorithms = learners()
        if algorithms is None and ":" not in v:  # no training code loaded: a stored name, as written
            return v
        if algorithms is not None and v in algorithms:
            return v
        if ":" not in v:
            raise ValueError(
                f"unknown algorithm {v!r}; allowed: {', '.join(algorithms)}, or 'module:factory'"
            )
        if not FACTORY.fullmatch(v):
            raise ValueError(f"{v!r}: expected 'module:factory' (dotted identifiers)")
        if (info.context or {}).get("import_factories") and not callable(import_factory(v)):
            raise ValueError(f"{v!r} is not callable")
        return v

    def id_fields(self) -> dict[str, Any]:
        """The agent's part of the run id: every option under its old flat name (FLAT_KEYS), as the
        flat config of 0.1 dumped it; an option added since (no old name) under its dotted path, and
        only while it differs from its default (so that adding it kept every existing id)."""
        nested = self.model_dump(mode="json")
        default = type(self)().model_dump(mode="json")
        out = {old: _pop(nested, new) for old, new in FLAT_KEYS.items()}
        for path, value in _leaves(nested):
            if value != _get(default, path):
                out[path] = value
        return out


def _get(d: dict, path: str) -> Any:
    for p in path.split("."):
        d = d[p]
    return d


def _pop(d: dict, path: str) -> Any:
    *head, last = path.split(".")
    for p in head:
        d = d[p]
    return d.pop(last)


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


# ------------------------------------------------------------------------------ reference (docs)
SECTIONS = {
    "": AgentConfig,
    "replay": ReplayConfig,
    "exploration": ExplorationConfig,
    "architecture": ArchitectureConfig,
    "mitigations": MitigationsConfig,
    "variant": VariantConfig,
}
