"""A learner's description (``learner.json``: layer sizes, parameters, activations), written by the
training side: a run writes it when it starts; for a run written before 0.2.0, which has none,
:func:`write_missing_descriptions` builds the learner from the run's config and writes it (the
report reads it and never builds a learner; ``scripts/describe_learners.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..agents import make_learner
from ..config.experiment import ExperimentConfig, load_yaml, stored_config
from ..mec.rng import RunRNG
from ..rundir import RunDir
from ..store import Store


def describe_learner(cfg: ExperimentConfig) -> dict:
    """``describe()`` of the learner ``cfg`` names, built with a replay of one transition."""
    a = cfg.agent
    small = a.model_copy(update={"replay": a.replay.model_copy(update={"capacity": 1})})
    return make_learner(cfg.model_copy(update={"agent": small}), RunRNG("independent", 0, 0)).describe()


def write_missing_descriptions(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Write ``learner.json`` into every run (of the sweep or run directories ``paths``) that has
    none and whose learner is a built-in one (a 'module:factory' named by stored data is not
    imported; a cross run has another library's networks); the run directories written."""
    written = []
    for _, rd in Store(paths).run_dirs:
        run = RunDir(rd)
        if run.learner() or not run.config_path.exists():
            continue
        cfg = stored_config(load_yaml(run.config_path), str(run.config_path))
        if cfg.kind == "cross" or ":" in cfg.agent.algorithm:
            continue
        run.write_learner(describe_learner(cfg))
        written.append(Path(rd))
    return written
