"""One validated schema for an experiment (a single training run), loaded from YAML and/or
``key=value`` overrides with dotted paths (``agent.actor_lr=0.1``).

Unknown keys, wrong types and impossible values raise :class:`ConfigError` (a ``ValueError``) that
names the field and what is allowed.

This module imports no training code: a config to start a run is built on the training side
(``experiment.config.build_config``, which also imports a 'module:factory' learner and checks the
part names against the registries); a stored config is read here (:func:`stored_config`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .agent import AgentConfig, canonical_key, nest_flat_keys
from .cross import CrossConfig
from .loggers import LoggingConfig
from .mec import MECConfig


class ConfigError(ValueError):
    """A configuration problem, with a message naming the field(s)."""


LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def _label(value: str) -> str:
    if not LABEL.fullmatch(value):
        raise PydanticCustomError(
            "label",
            "must be a label of at most 100 letters, digits, '.', '_' or '-', not starting with '.' "
            "(a name, not a path)",
        )
    return value


# a run's or sweep's name: a label that becomes one path component (runs/<name>-<id>, sweeps/<name>),
# never a path: no '/', no '..', not hidden
Label = Annotated[str, AfterValidator(_label)]


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    episodes: int = Field(2000, ge=1, description="training episodes (published: 2000)")
    eval_episodes: int = Field(
        50, ge=0, description="fixed evaluation episodes before each training episode (published: 50)"
    )
    eval_every: int = Field(
        1,
        ge=1,
        description="evaluate before every k-th training episode (published: 1, before every one); the "
        "other episodes record no evaluation (missing values). In reference RNG mode an evaluation re-seeds "
        "the shared legacy stream, so k > 1 also changes the training episodes' tasks and noise: no longer "
        "the published trajectory (docs/run_store.md)",
    )
    checkpoint_every: int = Field(
        10, ge=1, description="episodes between checkpoints (Ctrl-C and SIGTERM also checkpoint)"
    )
    tensorboard: bool = Field(True, description="write TensorBoard scalars")

    @field_validator("device_resident", mode="before")
    @classmethod
    def _on_off(cls, v: Any) -> Any:
        """YAML reads a bare on / off as a boolean: the same switch."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
    device_resident: Literal["auto", "on", "off"] = Field(
        "auto",
        description="the device-resident path of the episode loop (docs/device.md): the training and evaluation "
        "environments, the master's selection, the exploration and the episode's transitions as torch tensors on "
        "the run's device, the host's random draws copied once per episode; auto: on where the device is CUDA "
        "and the learner is ccm_madrl with deterministic actors, off otherwise; on: also on the CPU",
    )


class MonitorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    enabled: bool = Field(True, description="record gradient-flow measurements")
    interval: int = Field(1, ge=1, description="measure every k-th training episode")
    rank_interval: int = Field(
        50,
        ge=1,
        description="compute the features' stable and effective ranks on every k-th measured episode (one "
        "SVD per hidden layer and role costs about a training episode: benchmarks/README.md, 'Monitor'); the "
        "other plasticity measures are taken on every measured episode",
    )
    stop_threshold: float = Field(1e-8, ge=0, description="'stopped' = max |weight change| below this")
    histograms: bool = Field(True, description="TensorBoard histograms of pre-activations and grad norms")
    histogram_every: int = Field(50, ge=1, description="episodes between TensorBoard histograms")
    warn: bool = Field(False, description="print a console warning when an actor freezes")
    early_stop: bool = Field(False, description="end the run once every actor has stopped")
    early_stop_patience: int = Field(
        20, ge=1, description="episodes all actors must stay stopped before an early stop"
    )


PUBLISHED_CODE = {
    # The first commit of TesfayZ/CCM_MADRL_MEC, which produced the published CSVs: one actor network
    # shared by all clients ([ActorNetwork()] * N, also in the MADDPG benchmarks), stepped N times per
    # training step by one optimiser (the update loop reuses its loop variable), the CCM actor loss's
    # maximum over the stored selection with the NEXT joint states fed to the critic (the MADDPG
    # benchmarks' actor loss too), and no battery clip at reset (the S_enery typo).
    "44fba1b": {
        "agent.variant.actor_sharing": "shared",
        "agent.variant.actor_update": "sequential",
        "agent.variant.actor_objective": "selected",  # CCM-MADRL only: the benchmarks have no selection max
        "agent.variant.actor_joint_states": "next",
        "env.reset_energy_clip": False,
    },
}


def _preset_settings(name: str, algorithm: str) -> dict[str, Any]:
    settings = dict(PUBLISHED_CODE[name])
    if algorithm != "ccm_madrl":
        settings.pop("agent.variant.actor_objective")
    return settings


# Top-level fields left out of the run id while at their default, so that adding them kept the ids of
# every earlier run (its run directory stays resumable, a finished sweep run stays skipped): threads
# (added after 0.1.0), kind and cross (the run kinds). A new field that must not change existing ids
# goes here; any other field is part of the id (the published_code preset's fields deliberately are:
# CHANGELOG 0.2.0). A dotted name is a field of a section: training.eval_every (the evaluation
# schedule), monitor.rank_interval (added with the plasticity measures), training.device_resident (the
# device-resident path). The agent's options follow
# the same rule through AgentConfig.id_fields (an option added after 0.1.0, such as
# agent.argmax_row_skip, counts only while it differs from its default).
ID_NEUTRAL_AT_DEFAULT = (
    "threads",
    "kind",
    "cross",
    "training.eval_every",
    "monitor.rank_interval",
    "training.device_resident",
)


def device_resident_unsupported(cfg: ExperimentConfig) -> str | None:
    """What the device-resident path lacks for this config (None: it supports it): it implements the
    CCM-MADRL master's selection and deterministic actors of an MEC run."""
    if cfg.kind != "mec":
        return f"kind mec (got {cfg.kind!r})"
    if cfg.agent.algorithm != "ccm_madrl":
        return f"agent.algorithm ccm_madrl (got {cfg.agent.algorithm!r})"
    if cfg.agent.mitigations.actor_reg == "entropy":
        return "deterministic actors (got agent.mitigations.actor_reg 'entropy')"
    return None


class ExperimentConfig(BaseModel):
    """Everything that defines one run. ``id()`` is a stable hash of the resolved config."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Label = Field("ccm", description="a label for the run (letters, digits, '.', '_', '-'; not a path)")
    published_code: Literal["44fba1b"] | None = Field(
        None,
        description="preset reproducing a commit of the published repository (TesfayZ/CCM_MADRL_MEC): "
        "'44fba1b', its first commit, which produced the published CSVs, sets agent.variant.actor_sharing=shared, "
        "agent.variant.actor_update=sequential, agent.variant.actor_objective=selected (ccm_madrl), "
        "agent.variant.actor_joint_states=next and env.reset_energy_clip=false; a conflicting explicit value is an "
        "error. None (default): the system the golden vectors define (the repository's current code)",
    )
    seed: int = Field(0, ge=0, description="run seed: network init, replay, exploration, noise")
    env_seed: int = Field(37, ge=0, description="seed of the MEC system's device constants (published: 37)")
    rng_mode: Literal["reference", "independent"] = "reference"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(
        1,
        ge=1,
        description="torch threads of the run (set at its start, recorded in provenance.json); fixed per "
        "run so that a resumed run, or one run next to others, computes bit-identically to an "
        "uninterrupted one whatever the machine's thread setting",
    )
    env: MECConfig = MECConfig()
    agent: AgentConfig = AgentConfig()
    training: TrainingConfig = TrainingConfig()
    monitor: MonitorConfig = MonitorConfig()
    kind: Literal["mec", "cross"] = Field(
        "mec", description="mec: CCM-MADRL on the MEC system; cross: another library's agent (section cross)"
    )
    cross: CrossConfig | None = Field(None, description="kind cross: library, algo, env, budget, lrs")
    logging: LoggingConfig = Field(
        LoggingConfig(), description="W&B / MLflow loggers (experiment/loggers.py); not part of the id"
    )

    @model_validator(mode="after")
    def _kind(self) -> ExperimentConfig:
        if self.kind == "cross" and self.cross is None:
            raise ValueError("cross: required when kind is 'cross'")
        if self.kind == "mec" and self.cross is not None:
            raise ValueError("cross: only with kind: cross")
        why = device_resident_unsupported(self)
        if self.training.device_resident == "on" and why:
            raise ValueError(f"training.device_resident: 'on' needs {why}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _apply_published_code(cls, data: Any) -> Any:
        """Fill in the settings of a ``published_code`` preset; refuse explicit contradictions."""
        if not isinstance(data, dict) or data.get("published_code") not in PUBLISHED_CODE:
            return data
        data = json.loads(json.dumps(data))
        name = data["published_code"]
        if isinstance(data.get("agent"), dict):
            data["agent"] = nest_flat_keys(data["agent"])  # an old flat key names the same option
        agent = data.get("agent") if isinstance(data.get("agent"), dict) else {}
        for key, value in _preset_settings(name, agent.get("algorithm", "ccm_madrl")).items():
            *sections, field = key.split(".")
            node = data
            for section in sections:
                node = node.setdefault(section, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                continue  # the section's own validation reports it
            if field in node and node[field] != value:
                raise ValueError(
                    f"{key}: published_code {name} sets {value!r}; got {node[field]!r} (drop one of the two)"
                )
            node[field] = value
        return data

    def id(self) -> str:
        """Stable id derived from the resolved config (name and logging excluded; the agent's options
        under their flat names of 0.1: ``AgentConfig.id_fields``)."""
        d = self.model_dump(mode="json")
        d.pop("name", None)
        d.pop("logging", None)  # where a run is logged does not change what it computes
        d["agent"] = self.agent.id_fields()
        for key in ID_NEUTRAL_AT_DEFAULT:  # one rule: see ID_NEUTRAL_AT_DEFAULT
            *section, field = key.split(".")
            node, model = d, type(self)
            for part in section:
                node, model = node.get(part), model.model_fields[part].annotation
            if isinstance(node, dict) and field in node and node[field] == model.model_fields[field].default:
                node.pop(field)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------------------ loading
COMMAND_LINE = "the command line"


def _origin(loc: str, cli: Iterable[str], source: str) -> str:
    """Where the value at dotted ``loc`` came from: the command line when an override set it (or a
    section above or below it), else ``source`` (the file)."""
    loc = canonical_key(loc) if loc.startswith("agent.") else loc
    for key in cli:
        key = canonical_key(key)
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return COMMAND_LINE
    return source


def _format_validation_error(
    err: ValidationError, source: str, cli: Iterable[str] = (), where: str = ""
) -> str:
    """One line: ``invalid configuration [in SOURCE]: FIELD: PROBLEM (got VALUE); FIELD: ...``.
    ``cli``: the dotted keys the command line set (``override_keys``); a field they set is named
    as coming from the command line, not from ``source``. ``where``: added after the origin."""
    cli = list(cli)
    lines, origins = [], []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "value_error" and not e["loc"]:  # a model check naming its own field(s)
            lines.append(f"  {e['ctx']['error']}")
            origins.append(
                source if not cli else COMMAND_LINE if not source else f"{source} with {COMMAND_LINE}"
            )
            continue
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        got = e.get("input")
        origins.append(_origin(loc, cli, source))
        lines.append(
            f"{loc}: {msg}" + ("" if e["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})")
        )
    if len(set(origins)) > 1:  # the fields came from different places: each says where
        lines = [f"{line} [{o or 'defaults'}]" for line, o in zip(lines, origins)]
        origins = [""]
    origin = origins[0] if origins else source
    head = f" {'on' if origin == COMMAND_LINE else 'in'} {origin}" if origin else ""
    return f"invalid configuration{head}{f' {where}' if where else ''}: " + "; ".join(lines)


def parse_value(text: str) -> Any:
    """Parse an override value as YAML (numbers, bools, lists), falling back to the raw string.
    Numbers are read as YAML 1.2 reads them: ``1e-4`` is a float (YAML 1.1, a sweep file's reading,
    makes it a string that the config then converts; a value of the command line is stored typed)."""
    try:
        return parse_yaml(text, f"value {text!r}", _OverrideLoader)
    except yaml.YAMLError:
        return text


OVERRIDE_FORMS = "KEY=VALUE (or +KEY=VALUE, ++KEY=VALUE, ~KEY, ~KEY=VALUE)"


def split_override(item: str) -> tuple[str, str, str | None]:
    """An override as (operation, dotted key, value text or None): ``KEY=V`` -> ``('=', KEY, V)``;
    ``+KEY=V`` (add a key the file lacks) -> ``('+', ...)``; ``++KEY=V`` (add or set) -> ``('++', ...)``;
    ``~KEY`` / ``~KEY=V`` (remove the key, back to its default; with V only if it holds V) ->
    ``('~', KEY, None | V)``. ConfigError for anything else."""
    op = "++" if item.startswith("++") else item[:1] if item[:1] in "+~" else "="
    body = item[len(op) :] if op != "=" else item
    key, sep, text = body.partition("=")
    key = key.strip()
    if not sep and op != "~":
        raise ConfigError(
            f"override {item!r} on {COMMAND_LINE}: expected {OVERRIDE_FORMS}, e.g. agent.actor_lr=0.01"
        )
    parts = key.split(".")
    if not key or not all(parts):
        raise ConfigError(f"override {item!r} on {COMMAND_LINE}: empty key")
    return op, key, text if sep else None


def override_keys(overrides: Iterable[str]) -> list[str]:
    """The dotted keys that ``overrides`` set or remove (for naming the command line in errors)."""
    return [split_override(item)[1] for item in overrides]


_MISSING = object()


def _lookup(data: dict, parts: list[str]) -> Any:
    node: Any = data
    for p in parts:
        if not isinstance(node, dict) or p not in node:
            return _MISSING
        node = node[p]
    return node


def _remove(out: dict, item: str, parts: list[str], text: str | None, source: str) -> None:
    """``~KEY`` / ``~KEY=V``: drop the key (the schema's default applies)."""
    current = _lookup(out, parts)
    where = source or "the config (no file given)"
    if current is _MISSING:
        raise ConfigError(
            f"override {item!r} on {COMMAND_LINE}: {'.'.join(parts)} is not set in {where} (nothing to remove)"
        )
    if text is not None and current != parse_value(text):
        raise ConfigError(
            f"override {item!r} on {COMMAND_LINE}: {'.'.join(parts)} is {current!r} in {where}, not {parse_value(text)!r}"
        )
    del _lookup(out, parts[:-1])[parts[-1]]  # _lookup(out, []) is out


def apply_overrides(data: dict, overrides: Iterable[str], source: str = "") -> dict:
    """Apply overrides (:func:`split_override`) to a nested dict (copied). ``KEY=V`` and ``++KEY=V``
    set a key, creating it where ``data`` lacks it (every key of the schema has a default);
    ``+KEY=V`` refuses a key ``data`` (the file ``source``) already sets; ``~KEY`` removes one."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        op, key, text = split_override(item)
        parts = key.split(".")
        if op == "~":
            _remove(out, item, parts, text, source)
            continue
        if op == "+" and _lookup(out, parts) is not _MISSING:
            raise ConfigError(
                f"override {item!r} on {COMMAND_LINE}: {key} is already set in {source or 'the config'} "
                f"(+ adds a missing key; change it with {key}=... or ++{key}=...)"
            )
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r} on {COMMAND_LINE}: {p!r} is not a section")
            node = nxt
        node[parts[-1]] = parse_value(text)
    return out


def _validate(raw: dict, source: str, context: dict | None, cli: Iterable[str] = ()) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw, context=context)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source, cli)) from None


def stored_config(data: Mapping[str, Any], source: str = "") -> ExperimentConfig:
    """A stored config (a run directory's ``config.yaml``, an archive's ``configs.parquet``, a sweep
    directory's runs) validated without importing anything: a 'module:factory' algorithm is checked
    for its form only. Received run data never names code that reading it runs."""
    return _validate(apply_overrides(dict(data), []), source, None)


# ------------------------------------------------------------------------------ YAML
# Every YAML the package reads (config and sweep files, a run directory's config.yaml, a sweep
# directory's sweep.yaml, an archive's configs) goes through parse_yaml: plain values only, and a
# bounded size once its aliases are expanded (an alias bomb expands 0.5 KB to billions of values).
YAML_MAX_VALUES = 100_000  # values (scalars, lists, mappings) after expanding every alias
YAML_MAX_DEPTH = 64  # nesting of lists and mappings
YAML_MAX_BYTES = 1 << 20
_YAML = "tag:yaml.org,2002:"
_PLAIN_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}


class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader (the pure-Python one: a too deeply nested document is a RecursionError,
    not a crash), without timestamps (a date reads as its text) and with :func:`_check_document`
    run on the composed document before anything is constructed."""

    yaml_implicit_resolvers = {
        ch: [(tag, rx) for tag, rx in rs if tag != _YAML + "timestamp"]
        for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_document(self, node):
        _check_document(node, self.source)
        return super().construct_document(node)


class _OverrideLoader(_PlainLoader):
    """:class:`_PlainLoader` with YAML 1.2's floats: an exponent without a dot or without a sign
    (``1e-4``, ``2E5``, ``1.5e3``) is a float."""


_OverrideLoader.add_implicit_resolver(
    _YAML + "float", re.compile(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def _tag(tag: str) -> str:
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _check_document(root: yaml.Node, source: str) -> None:
    """Refuse (ConfigError naming ``source``) a tag other than the plain ones, a recursive alias, a
    document deeper than :data:`YAML_MAX_DEPTH` or larger than :data:`YAML_MAX_VALUES` values once
    its aliases are expanded; counted over the node graph (each shared node once), so an alias bomb
    is refused in time linear in its text."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, height)
    open_: set[int] = set()

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key not in memo:
            if node.tag not in _PLAIN_TAGS:
                raise ConfigError(f"{source}: tag {_tag(node.tag)} not allowed (plain values only)")
            if key in open_:
                raise ConfigError(f"{source}: a recursive YAML alias (refused)")
            if depth > YAML_MAX_DEPTH:
                raise ConfigError(f"{source}: nested deeper than {YAML_MAX_DEPTH} levels (refused)")
            open_.add(key)
            children = (
                node.value
                if isinstance(node, yaml.SequenceNode)
                else [n for kv in node.value for n in kv]
                if isinstance(node, yaml.MappingNode)
                else []
            )
            size, height = 1, 1
            for child in children:
                s, h = walk(child, depth + 1)
                size, height = size + s, max(height, h + 1)
                if size > YAML_MAX_VALUES:
                    raise ConfigError(
                        f"{source}: more than {YAML_MAX_VALUES} values once its YAML aliases are expanded "
                        "(refused: an alias bomb?)"
                    )
            open_.discard(key)
            memo[key] = (size, height)
        size, height = memo[key]
        if depth + height - 1 > YAML_MAX_DEPTH:
            raise ConfigError(f"{source}: nested deeper than {YAML_MAX_DEPTH} levels (refused)")
        return size, height

    walk(root, 1)


def parse_yaml(text: str, source: str, loader_class: type[yaml.SafeLoader] = _PlainLoader) -> Any:
    """YAML ``text`` (from ``source``, named in every error) as plain values: mappings, lists,
    strings, numbers, booleans and null. A tag (``!!python/object``, ...) is refused, and so is a
    document that its aliases expand beyond :data:`YAML_MAX_VALUES` values or :data:`YAML_MAX_DEPTH`
    levels (ConfigError); not valid YAML: ``yaml.YAMLError``."""
    if len(text) > YAML_MAX_BYTES:
        raise ConfigError(f"{source}: larger than {YAML_MAX_BYTES} bytes (refused)")
    loader = loader_class(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply (refused)") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    """A YAML file holding a mapping (a config, a sweep file, a stored config.yaml or sweep.yaml),
    read by :func:`parse_yaml`; ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a YAML file")
    try:
        data = parse_yaml(p.read_text(), str(p)) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {' '.join(str(err).split())}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot be read as a YAML file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of config sections")
    return data
