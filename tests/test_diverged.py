"""A run whose training diverges ends ``diverged``: a result with its episodes before the
divergence, not a failure. A sweep does not run it again, the archive keeps it, the report counts
it in its Table 1 cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ccm_madrl.archive import ArchiveStore, archive_sweep
from ccm_madrl.cli import main
from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.report.tables import table1
from ccm_madrl.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# SGD at learning rate 10: the critic's TD errors overflow in episode 20 (priorities not finite)
TINY = {
    "env": {"n_agents": 6, "max_steps": 4},
    "agent": {"batch_size": 8, "critic_hidden": [16, 8], "optimizer": "sgd", "actor_lr": 10.0,
              "critic_lr": 10.0, "episodes_before_train": 2},
    "training": {"episodes": 30, "eval_episodes": 2, "checkpoint_every": 7, "tensorboard": False},
    "monitor": {"enabled": True},
}  # fmt: skip
DIVERGES_IN = 20


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def test_a_diverging_run_ends_diverged_with_its_episodes_before(tmp_path):
    cfg = build_config(TINY)
    s = Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    assert (s.state, s.episodes_done) == ("diverged", DIVERGES_IN) and np.isnan(s.final_return)
    st = status(tmp_path / "r")
    assert st["state"] == "diverged" and st["episodes_done"] == DIVERGES_IN
    assert (
        st["error"].startswith(f"training diverged in episode {DIVERGES_IN}") and "not finite" in st["error"]
    )
    # the episodes before, although the last checkpoint was after episode 14; the monitor's too
    m = pd.read_parquet(tmp_path / "r" / "metrics.parquet")
    assert m["episode"].tolist() == list(range(DIVERGES_IN))
    agents = pd.read_parquet(tmp_path / "r" / "monitor" / "agents.parquet")
    assert agents["episode"].max() == DIVERGES_IN - 1
    assert st["stops"]["threshold"] == cfg.monitor.stop_threshold
    # a result: running it again does not train
    again = Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    assert (again.state, again.wall_time_s) == ("diverged", 0.0)


def test_non_finite_actions_of_a_single_run_are_a_divergence(tmp_path, monkeypatch):
    """NaN actor weights: the run ends diverged (not an environment error on a bad action)."""
    cfg = build_config({**TINY, "agent": {"batch_size": 8, "critic_hidden": [16, 8]}})
    real = Trainer.episode

    def poisoned(self, ep):
        if ep == 4:
            with torch.no_grad():
                for p in self.learner.actors.parameters():
                    p.fill_(float("nan"))
        return real(self, ep)

    monkeypatch.setattr(Trainer, "episode", poisoned)
    s = Trainer(cfg, tmp_path / "r", progress=False, quiet=True).run()
    assert (s.state, s.episodes_done) == ("diverged", 4)
    assert "actions not finite" in status(tmp_path / "r")["error"]


def test_cli_train_says_where_a_run_diverged(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(f), "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"training diverged in episode {DIVERGES_IN}" in err[0]
        and "state diverged" in err[0]
    )


def test_a_sweep_keeps_a_diverged_run_and_the_report_counts_it(tmp_path):
    spec = {"name": "div", "base": TINY, "axes": {"agent.critic_lr": [10.0, 1e-3]}}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(spec))
    res = run_sweep(f, tmp_path / "sw", workers=1, progress=False)
    assert (res.total, res.done, res.diverged, res.failed) == (2, 1, 1, 0)
    man = {
        e["overrides"]["agent.critic_lr"]: e
        for e in json.loads((tmp_path / "sw" / "manifest.json").read_text())["runs"]
    }
    assert man[10.0]["status"] == "diverged" and "diverged in episode" in man[10.0]["error"]
    again = run_sweep(f, tmp_path / "sw", workers=1, progress=False)  # nothing run again
    assert (again.done, again.diverged, again.skipped, again.failed) == (1, 1, 2, 0)
    # the archive keeps it, with its episodes; no final return
    out = tmp_path / "arch"
    assert archive_sweep(tmp_path / "sw", out, baselines=False)["archived"] == 2
    a = ArchiveStore(out)
    runs = a.runs.set_index("cfg.agent.critic_lr")
    assert runs.at[10.0, "status"] == "diverged" and np.isnan(runs.at[10.0, "final_return"])
    assert runs.at[10.0, "episodes_done"] == DIVERGES_IN
    ep = a.metrics.groupby("run_id")["episode"].max()
    assert ep[runs.at[10.0, "run_id"]] == DIVERGES_IN - 1
    nums, _ = table1(a)
    cell = nums.set_index("master_lr")
    assert cell.at[10.0, "diverged"] == 1 and cell.at[10.0, "seeds"] == 0
    assert cell.at[1e-3, "diverged"] == 0 and cell.at[1e-3, "seeds"] == 1
