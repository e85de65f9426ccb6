"""W&B (offline mode) and MLflow (a local file store) as trainer callbacks: metrics, config,
provenance and monitor histograms logged; a resumed run continues the same tracker run."""

from __future__ import annotations

import json
import time

import pytest

from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.callbacks import Callback, default_callbacks
from ccm_madrl.experiment.config import ConfigError

SMALL = {
    "name": "logsweep",
    "env": {"n_agents": 3, "max_steps": 2},
    "agent": {"batch_size": 4, "critic_hidden": [16, 8], "episodes_before_train": 1},
    "training": {"episodes": 4, "eval_episodes": 1, "checkpoint_every": 2, "tensorboard": False},
    "monitor": {"histogram_every": 2},
}


def with_logging(logging: dict, **training) -> dict:
    return {**SMALL, "logging": logging, "training": {**SMALL["training"], **training}}


class Interrupt(Callback):
    """Acts like Ctrl-C after the second episode (the trainer checkpoints and stops)."""

    def on_episode_end(self, trainer, row):
        if trainer.episodes_done == 2:
            trainer.stop.request()
        return True


def interrupted_after_two_episodes(cfg, run_dir):
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            cfg, run_dir, progress=False, quiet=True, callbacks=lambda t: [Interrupt(), *default_callbacks(t)]
        ).run()


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    """A local MLflow file store (MLflow 3 keeps it behind MLFLOW_ALLOW_FILE_STORE)."""
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return f"file://{tmp_path / 'mlruns'}"


@pytest.mark.loggers
def test_logging_is_not_part_of_the_run_id():
    pytest.importorskip("mlflow")  # a logger config is checked against its package (loggers extra)
    assert build_config(SMALL).id() == build_config(with_logging({"mlflow": {}})).id()


def test_a_missing_logger_package_is_one_line_naming_the_field(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    with pytest.raises(ConfigError, match=r"logging\.wandb: .*needs the wandb package") as err:
        build_config(with_logging({"wandb": {"mode": "offline"}}))
    assert "\n" not in str(err.value)


@pytest.mark.loggers
def test_mlflow_file_store_metrics_params_histograms_provenance(tmp_path, file_store):
    import mlflow

    cfg = build_config(with_logging({"mlflow": {"tracking_uri": file_store}}))
    Trainer(cfg, tmp_path / "run", progress=False, quiet=True).run()
    client = mlflow.tracking.MlflowClient(tracking_uri=file_store)
    exp = client.get_experiment_by_name("logsweep")  # the config's name: a sweep's name
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["ccm_madrl.config_id"] == cfg.id() and run.info.run_name == "run"
    assert run.info.status == "FINISHED"
    assert run.data.params["env.n_agents"] == "3" and run.data.params["agent.algorithm"] == "ccm_madrl"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_return")] == [0, 1, 2, 3]
    # the monitor's summary scalars: measured in the training episodes (from episode 1 on)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "actor_grad_norm")] == [1, 2, 3]
    # the monitor's distributions as per-quantile metrics (every monitor.histogram_every episodes)
    for q in ("p0", "p50", "p100"):
        h = client.get_metric_history(run.info.run_id, f"hist/actors/grad_norm/{q}")
        assert [m.step for m in h] == [2] and h[0].value >= 0
    lo, hi = (
        client.get_metric_history(run.info.run_id, f"hist/actors/preactivation/{q}")[0].value
        for q in ("p0", "p100")
    )
    assert lo <= hi
    art = client.download_artifacts(run.info.run_id, "provenance.json", str(tmp_path))
    assert json.loads(open(art).read())["config_id"] == cfg.id()


@pytest.mark.loggers
def test_mlflow_an_interrupted_run_resumes_into_the_same_mlflow_run(tmp_path, file_store):
    import mlflow

    uri = file_store
    cfg = build_config(with_logging({"mlflow": {"tracking_uri": uri}}))
    interrupted_after_two_episodes(cfg, tmp_path / "r")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("logsweep").experiment_id])
    assert run.info.status == "KILLED"
    Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    (again,) = client.search_runs([client.get_experiment_by_name("logsweep").experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_return")] == [0, 1, 2, 3]


def wandb_records(path):
    """The protobuf records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header
    (``:W&B``, magic, version), then LevelDB-log blocks of 32 KiB, each record a 7-byte header
    (crc32, length, type 1 full / 2 first / 3 middle / 4 last) and its payload."""
    import struct

    buf = path.read_bytes()
    assert buf[:4] == b":W&B"
    pos, block, part = 7, 32768, b""
    while pos + 7 <= len(buf):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", buf[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        data, pos = buf[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield data
        elif kind in (2, 3):
            part += data
        elif kind == 4:
            yield part + data
            part = b""


def read_wandb_run(path) -> tuple:
    """(run record, config, history rows) of an offline W&B run's ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, config, run_rec = [], {}, None
    for data in wandb_records(path):
        rec = pb.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":  # a histogram's fields come as nested keys (name, field)
            h: dict = {}
            for i in rec.history.item:
                name, *sub = [i.key] if i.key else list(i.nested_key)
                value = json.loads(i.value_json)
                if sub:
                    h.setdefault(name, {})[sub[0]] = value
                else:
                    h[name] = value
            history.append(h)
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":  # the config given to wandb.init
            run_rec = rec.run
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    return run_rec, config, history


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "wandb"  # the config's dir too: W&B keeps its first settings per process


@pytest.mark.loggers
def test_wandb_offline_run_files_hold_config_provenance_metrics_histograms(tmp_path, wandb_offline):
    cfg = build_config(with_logging({"wandb": {"project": "p", "mode": "offline", "dir": str(tmp_path)}}))
    Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    (run_dir,) = wandb_offline.glob(f"offline-run-*-{cfg.id()}")  # the W&B run id: the config id
    run_rec, config, history = read_wandb_run(next(run_dir.glob("*.wandb")))
    assert run_rec.run_id == cfg.id() and run_rec.run_group == "logsweep" and run_rec.display_name == "r"
    assert [h["episode"] for h in history] == [0, 1, 2, 3]
    assert all("train_return" in h for h in history)
    assert "actor_grad_norm" in history[1] and "hist/actors/grad_norm" not in history[1]
    hist = history[2]["hist/actors/grad_norm"]  # every monitor.histogram_every (2) episodes
    assert hist["_type"] == "histogram" and sum(hist["values"]) == 3  # one value per actor
    assert history[2]["hist/actors/preactivation"]["_type"] == "histogram"
    assert config["env"]["n_agents"] == 3 and config["agent"]["algorithm"] == "ccm_madrl"
    assert config["provenance"]["config_id"] == cfg.id()


@pytest.mark.loggers
def test_wandb_a_resumed_run_continues_the_same_wandb_run(tmp_path, wandb_offline):
    cfg = build_config(with_logging({"wandb": {"project": "p", "mode": "offline", "dir": str(tmp_path)}}))
    interrupted_after_two_episodes(cfg, tmp_path / "r")
    time.sleep(1.1)  # W&B names an offline run's directory by the second it starts
    Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    files = sorted(wandb_offline.glob("offline-run-*/*.wandb"))
    assert len(files) == 2  # one file per process (offline); synced, they are one W&B run
    (first, _, h1), (second, _, h2) = (read_wandb_run(f) for f in files)
    assert first.run_id == second.run_id == cfg.id()
    assert [h["episode"] for h in h1] == [0, 1] and [h["episode"] for h in h2] == [2, 3]
