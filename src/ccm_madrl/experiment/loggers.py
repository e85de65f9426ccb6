"""Weights & Biases and MLflow as trainer callbacks (``logging:`` in the experiment config; optional
extra ``loggers``). Nothing is imported unless a logger is enabled.

::

    logging:
      wandb: {project: ccm_madrl, mode: offline}        # any of entity, mode, dir, tags
      mlflow: {tracking_uri: "file:///abs/path/mlruns"}   # or http://host:5000; experiment: NAME

Both loggers:

- identify the run by the config id (``ExperimentConfig.id()``): the W&B run id *is* the config id,
  the MLflow run carries it as tag ``ccm_madrl.config_id`` and is found by it; so a resumed run (the
  same config into the same or another run directory) continues the same W&B / MLflow run;
- group runs by the config's ``name`` (a sweep gives its runs the sweep's name): the W&B ``group``,
  the MLflow experiment (unless ``experiment`` is set);
- log the resolved config (W&B config; MLflow params, dotted keys) and ``provenance.json`` (W&B config
  key ``provenance``; MLflow artifact ``provenance.json`` and tags ``ccm_madrl.commit`` /
  ``ccm_madrl.version``);
- log every finite number of each episode's metrics row (the trainer's columns and the monitor's
  summary scalars: ``actors_changed``, ``actor_grad_norm``, ``actor_sat_exact_frac``, ...) at step =
  episode;
- every ``monitor.histogram_every`` episodes (the TensorBoard histograms' cadence), the distributions
  the monitor measured in that episode (:func:`monitor_distributions`): over the agents of each role,
  ``grad_norm``, ``max_abs_change``, ``frac_sat_exact``, and each role's last output pre-activations.
  W&B gets them as ``wandb.Histogram`` under ``hist/<role>/<quantity>``; MLflow as per-quantile
  metrics ``hist/<role>/<quantity>/p0|p10|p50|p90|p100`` (queryable, plotted like any metric).

The run's name in both is the run directory's name. With ``logging:`` left out nothing changes; the
field is not part of the run id (adding a logger to a finished or interrupted run keeps its id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from ..config.imports import import_object
from ..config.loggers import LoggingConfig, MLflowConfig, WandbConfig  # noqa: F401 - the section's config
from .hooks import Callback

if TYPE_CHECKING:
    from .runner import Trainer

QUANTILES = (0, 10, 50, 90, 100)
HIST_QUANTITIES = ("grad_norm", "max_abs_change", "frac_sat_exact")


def episode_scalars(row: dict) -> dict[str, float]:
    """The finite numbers of a metrics row (bools as 0/1), without the episode index."""
    out = {}
    for k, v in row.items():
        if k == "episode" or isinstance(v, str) or v is None:
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            out[k] = f
    return out


def monitor_distributions(trainer: Trainer, episode: int) -> dict[str, np.ndarray]:
    """What the monitor measured in ``episode``, as distributions: per role, the agents' values of
    :data:`HIST_QUANTITIES`, and the role's last output pre-activations. Empty when the monitor is
    off or did not measure this episode. It reads the monitor's rows not yet written to Parquet, so a
    logger must come before ``Checkpointing`` in the callback list (as in ``default_callbacks``)."""
    monitors = (getattr(cb, "monitor", None) for cb in trainer.callbacks)  # MonitorCallback's run monitor
    mon = next((m for m in monitors if hasattr(m, "pending") and hasattr(m, "mon")), None)
    if mon is None:
        return {}
    rows = [r for r in mon.pending if r.get("episode") == episode]  # this episode's, not yet flushed
    if not rows:
        return {}
    out: dict[str, np.ndarray] = {}
    for role in dict.fromkeys(r["role"] for r in rows):
        for q in HIST_QUANTITIES:
            vals = np.array([r.get(q, np.nan) for r in rows if r["role"] == role], dtype=float)
            vals = vals[np.isfinite(vals)]
            if vals.size:
                out[f"hist/{role}/{q}"] = vals
    for role in mon.mon.roles.values():
        if role.last_z is not None:
            out[f"hist/{role.name}/preactivation"] = role.last_z.float().cpu().numpy().ravel()
    return out


def _flat(d: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


class _LoggerCallback(Callback):
    """What both loggers share: the config, the provenance, the histogram cadence."""

    histograms = True

    def provenance(self, trainer: Trainer) -> dict:
        return trainer.rd.provenance()

    def histogram_due(self, trainer: Trainer, episode: int) -> bool:
        mc = trainer.cfg.monitor
        return self.histograms and mc.histograms and episode % mc.histogram_every == 0


class WandbCallback(_LoggerCallback):
    """Weights & Biases: one W&B run per config id (``resume="allow"``), group = the config's name."""

    def __init__(self, cfg: WandbConfig):
        self.cfg, self.run, self.histograms = cfg, None, cfg.histograms

    def on_run_start(self, trainer: Trainer, start: int) -> None:
        import wandb

        c = self.cfg
        self.run = wandb.init(
            id=trainer.cfg.id(),
            resume="allow",
            project=c.project,
            entity=c.entity,
            group=trainer.cfg.name,
            name=trainer.run_dir.name,
            mode=c.mode,
            dir=c.dir,
            tags=list(c.tags) or None,
            config=trainer.cfg.model_dump(mode="json"),
        )
        self.run.config.update({"provenance": self.provenance(trainer)}, allow_val_change=True)
        # the episode is the x axis: a resumed run re-logs the episodes after its checkpoint
        self.run.define_metric("episode")
        self.run.define_metric("*", step_metric="episode")

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        import wandb

        ep = int(row["episode"])
        data: dict = {"episode": ep, **episode_scalars(row)}
        if self.histogram_due(trainer, ep):
            for k, v in monitor_distributions(trainer, ep).items():
                data[k] = wandb.Histogram(v)
        self.run.log(data)
        return True

    def on_run_end(self, trainer: Trainer) -> dict:
        self.run.summary["episodes_done"] = trainer.episodes_done
        self.run.finish(exit_code=0)
        self.run = None
        return {}

    def close(self) -> None:
        if self.run is not None:  # an error or an interrupt: the run can be resumed
            self.run.finish(exit_code=1)
            self.run = None


CONFIG_ID_TAG = "ccm_madrl.config_id"


def _experiment_id(client, name: str) -> str:
    """The MLflow experiment ``name``, created if absent (another run of the sweep may create it at
    the same moment)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        return client.get_experiment_by_name(name).experiment_id


class MLflowCallback(_LoggerCallback):
    """MLflow: one MLflow run per config id (found by tag ``ccm_madrl.config_id``), in the experiment
    named by ``experiment`` or the config's name. Uses ``MlflowClient`` (no global active run)."""

    def __init__(self, cfg: MLflowConfig):
        self.cfg, self.client, self.run_id, self.histograms = cfg, None, None, cfg.histograms

    def on_run_start(self, trainer: Trainer, start: int) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=self.cfg.tracking_uri)
        name = self.cfg.experiment or trainer.cfg.name
        exp_id = _experiment_id(client, name)
        cid = trainer.cfg.id()
        found = client.search_runs([exp_id], filter_string=f"tags.`{CONFIG_ID_TAG}` = '{cid}'", max_results=1)
        prov = self.provenance(trainer)
        if found:
            self.run_id = found[0].info.run_id
            client.update_run(self.run_id, status="RUNNING")
        else:
            run = client.create_run(
                exp_id,
                run_name=trainer.run_dir.name,
                tags={CONFIG_ID_TAG: cid, "ccm_madrl.version": str(prov.get("version"))},
            )
            self.run_id = run.info.run_id
            params = [
                Param(k, json.dumps(v) if isinstance(v, list) else str(v))
                for k, v in _flat(trainer.cfg.model_dump(mode="json"))
            ]
            for i in range(0, len(params), 100):  # MLflow's batch limit
                client.log_batch(self.run_id, params=params[i : i + 100])
        client.set_tag(self.run_id, "ccm_madrl.commit", str(prov.get("commit")))
        client.log_dict(self.run_id, prov, "provenance.json")

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        from mlflow.entities import Metric

        ep, now = int(row["episode"]), int(time.time() * 1000)
        values = episode_scalars(row)
        if self.histogram_due(trainer, ep):
            for k, v in monitor_distributions(trainer, ep).items():
                for q, x in zip(QUANTILES, np.percentile(v, QUANTILES)):
                    values[f"{k}/p{q}"] = float(x)
        metrics = [Metric(k, v, now, ep) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        return True

    def on_run_end(self, trainer: Trainer) -> dict:
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.run_id = None
        return {}

    def close(self) -> None:
        if self.run_id is not None:  # an error or an interrupt: the run can be resumed
            self.client.set_terminated(self.run_id, status="KILLED")
            self.run_id = None


def logger_callbacks(trainer: Trainer) -> list[Callback]:
    """The loggers ``trainer.cfg.logging`` enables (none by default)."""
    lc = trainer.cfg.logging
    cbs: list[Callback] = []
    if lc.wandb is not None:
        cbs.append(WandbCallback(lc.wandb))
    if lc.mlflow is not None:
        cbs.append(MLflowCallback(lc.mlflow))
    cbs.extend(import_object(path, "logger")(trainer.cfg) for path in lc.custom)
    return cbs
