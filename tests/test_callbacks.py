"""Each trainer callback on its own, and a callback written here stopping a run."""

from __future__ import annotations

import json

import torch

from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.callbacks import (
    Callback,
    Checkpointing,
    MonitorCallback,
    ProgressLines,
    TensorBoardCallback,
    default_callbacks,
)

SMALL = {
    "env": {"n_agents": 4, "max_steps": 2},
    "agent": {"batch_size": 4, "critic_hidden": [16, 8], "episodes_before_train": 1},
    "training": {"episodes": 5, "eval_episodes": 1, "checkpoint_every": 2, "tensorboard": False},
    "monitor": {"enabled": False},
}


class StopAfter(Callback):
    """Asks to stop once ``n`` episodes are done; records what it saw."""

    def __init__(self, n: int):
        self.n, self.seen = n, []

    def on_episode_end(self, trainer, row):
        self.seen.append(int(row["episode"]))
        return trainer.episodes_done < self.n


def test_a_callback_stops_the_run_and_the_checkpoint_follows(tmp_path):
    stop = StopAfter(3)
    saved = []

    class Spy(Checkpointing):
        def on_episode_end(self, trainer, row):
            before = trainer.rd.checkpoint.stat().st_mtime_ns if trainer.rd.checkpoint.exists() else None
            super().on_episode_end(trainer, row)
            now = trainer.rd.checkpoint.stat().st_mtime_ns if trainer.rd.checkpoint.exists() else None
            if now != before:
                saved.append(trainer.episodes_done)
            return True

    s = Trainer(build_config(SMALL), tmp_path / "r", progress=False, callbacks=lambda t: [stop, Spy(2)]).run()
    assert stop.seen == [0, 1, 2] and s.episodes_done == 3
    assert saved == [2, 3]  # every 2 episodes, and at the stop
    st = json.loads((tmp_path / "r" / "status.json").read_text())
    assert st["state"] == "done" and st["early_stopped"] is True and st["stops"] is None


def test_checkpointing_every_and_at_the_end(tmp_path):
    seen = []

    class Count(Trainer):
        def checkpoint(self):
            seen.append(self.episodes_done)
            super().checkpoint()

    Count(build_config(SMALL), tmp_path / "r", progress=False).run()
    assert seen == [2, 4, 5]


def test_progress_lines_print_first_and_last_episode(tmp_path, capsys):
    cb = ProgressLines(total=5, label="r", every_s=1e9)
    Trainer(build_config(SMALL), tmp_path / "r", progress=False, callbacks=lambda t: [cb]).run()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("r: episode")]
    assert [ln.split(",")[0] for ln in lines] == ["r: episode 1/5", "r: episode 5/5"]
    assert "ETA 0 s" in lines[-1]


def test_tensorboard_callback_writes_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cb = TensorBoardCallback(tmp_path / "tb")
    Trainer(build_config(SMALL), tmp_path / "r", progress=False, callbacks=lambda t: [cb]).run()
    assert cb.writer is None  # closed
    ea = EventAccumulator(str(tmp_path / "tb"))
    ea.Reload()
    assert [e.step for e in ea.Scalars("charts/train_return")] == [0, 1, 2, 3, 4]
    assert [e.step for e in ea.Scalars("charts/eval_return")] == [1, 2, 3, 4]  # eval from ebt on


def test_monitor_callback_measures_times_and_checkpoints_its_state(tmp_path):
    cfg = build_config(SMALL, ["monitor.enabled=true", "monitor.interval=1"])
    t = Trainer(cfg, tmp_path / "r", progress=False)
    t.run()
    assert [type(cb) for cb in t.callbacks] == [MonitorCallback, Checkpointing]
    ck = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=False)
    assert ck["monitor"] is not None and "monitor" in ck
    rows = t.rows
    assert all(r["time_monitor_s"] > 0 for r in rows)
    assert (tmp_path / "r" / "monitor" / "summary.json").exists()
    assert json.loads((tmp_path / "r" / "status.json").read_text())["stops"] is not None


def test_default_callbacks_follow_the_config(tmp_path):
    cfg = build_config(SMALL, ["monitor.enabled=true", "training.tensorboard=true"])
    t = Trainer(cfg, tmp_path / "r", progress=True, quiet=True)
    t.device = torch.device("cpu")
    t.run_dir.mkdir()
    t._build()
    kinds = [type(cb).__name__ for cb in default_callbacks(t)]
    assert kinds == ["MonitorCallback", "TensorBoardCallback", "Checkpointing"]  # quiet: no progress
    t.quiet = False
    assert [type(cb).__name__ for cb in default_callbacks(t)][2] == "ProgressLines"  # not a terminal
