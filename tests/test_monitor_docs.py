"""The SB3 and BenchMARL examples of docs/monitor.md run as written; the callbacks finish by
themselves, write a run that ``ccm-madrl report`` and ``ccm-madrl archive`` read like any other,
and forward the monitor's summary to the host library's logger (issue #36, item 1)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

DOC = Path(__file__).parent.parent / "docs" / "monitor.md"
BLOCKS = re.findall(r"```(python|bash)\n(.*?)```", DOC.read_text(), re.S)
SRC = Path(__file__).parent.parent / "src"

pytestmark = [pytest.mark.cross, pytest.mark.usefixtures("one_torch_thread")]


def block(lang: str, word: str) -> str:
    (code,) = [b for kind, b in BLOCKS if kind == lang and word in b]
    return code


def run_documented(code: str, cwd: Path) -> None:
    """The block as a script of its own (its atexit hooks run at its exit), from ``cwd``."""
    env = {"PYTHONPATH": f"{SRC}:{':'.join(p for p in sys.path if p)}", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def check_run_like_any_other(tmp_path: Path, run: str) -> None:
    from ccm_madrl.cli import main
    from ccm_madrl.store import load

    rd = tmp_path / "runs" / run
    for name in ("config.yaml", "status.json", "provenance.json", "metrics.parquet", "monitor/summary.json"):
        assert (rd / name).exists(), name
    st = json.loads((rd / "status.json").read_text())
    assert st["state"] == "done" and st["config_id"] and st["timesteps"] > 0
    s = load(rd)
    assert list(s.runs["status"]) == ["done"] and s.runs["cfg.kind"].iloc[0] == "cross"
    assert len(s.monitor) > 0
    for line in block("bash", "ccm-madrl report").strip().splitlines():  # the documented commands
        argv = line.split()[1:]
        argv[1] = str(tmp_path / argv[1].replace("td3", run))
        argv[3] = str(tmp_path / argv[3])
        assert main(argv) == 0, line
    assert (tmp_path / "reports" / "td3" / "report.html").exists()
    assert len(pd.read_parquet(tmp_path / "archives" / "runs" / "runs.parquet")) == 1


def test_the_sb3_example_writes_a_run_that_report_and_archive_read(tmp_path):
    pytest.importorskip("stable_baselines3", reason="the cross extra (stable-baselines3) is not installed")
    run_documented(block("python", "integrations.sb3"), tmp_path)
    check_run_like_any_other(tmp_path, "td3")


def test_the_sb3_callback_forwards_its_scalars_to_sb3s_logger(tmp_path):
    pytest.importorskip("stable_baselines3", reason="the cross extra (stable-baselines3) is not installed")
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import configure

    from ccm_madrl.integrations.sb3 import MonitorCallback

    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0)
    model.set_logger(configure(str(tmp_path / "log"), ["csv"]))
    cb = MonitorCallback(run_dir=tmp_path / "run")
    model.learn(400, callback=cb, log_interval=1)  # Pendulum's episodes: 200 steps, one dump each
    log = pd.read_csv(tmp_path / "log" / "progress.csv")
    assert (
        log["monitor/actor_grad_norm"].notna().any() and (log["monitor/critic_grad_norm"].dropna() > 0).all()
    )
    rows = [r for r in cb.session.rows if r["role"] == "critic" and r["timesteps"] <= 400]
    assert log["monitor/critic_grad_norm"].dropna().iloc[-1] in {r["grad_norm"] for r in rows}


def test_an_sb3_run_that_does_not_end_is_finished_at_exit(tmp_path):
    """learn() raises half-way (no on_training_end): the interpreter's exit writes the tables and
    status ``interrupted``."""
    pytest.importorskip("stable_baselines3", reason="the cross extra (stable-baselines3) is not installed")
    code = """
from stable_baselines3 import TD3
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from ccm_madrl.integrations.sb3 import MonitorCallback
class Boom(BaseCallback):
    def _on_step(self):
        if self.num_timesteps == 150:
            raise RuntimeError("boom")
        return True
model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=100, seed=0)
try:
    model.learn(300, callback=CallbackList([MonitorCallback(run_dir="runs/td3"), Boom()]))
except RuntimeError:
    pass
"""
    run_documented(code, tmp_path)
    rd = tmp_path / "runs" / "td3"
    st = json.loads((rd / "status.json").read_text())
    assert st["state"] == "interrupted" and st["timesteps"] == 150
    assert (rd / "monitor" / "summary.json").exists() and (rd / "metrics.parquet").exists()


def test_the_benchmarl_example_writes_a_run_that_report_and_archive_read(tmp_path):
    pytest.importorskip("benchmarl", reason="the cross extra (benchmarl) is not installed")
    run_documented(block("python", "integrations.benchmarl"), tmp_path)
    check_run_like_any_other(tmp_path, "maddpg")
    logged = list(tmp_path.rglob("monitor_critic_grad_norm*"))  # BenchMARL's csv logger: one file per key
    assert logged, "no monitor scalar reached BenchMARL's logger"


@pytest.mark.loggers
def test_a_cross_run_with_a_logging_section_is_refused_in_one_line(tmp_path):
    from ccm_madrl.config.experiment import stored_config
    from ccm_madrl.experiment.cross import refuse_logging

    cross = {"library": "sb3", "algo": "td3", "env": "Pendulum-v1", "total_steps": 10, "actor_lr": 1e-3}
    refuse_logging(stored_config({"kind": "cross", "cross": cross}))  # no logging section: accepted
    pytest.importorskip("mlflow")
    cfg = stored_config({"kind": "cross", "cross": cross, "logging": {"mlflow": {}}})
    with pytest.raises(ValueError, match=r"^logging\.mlflow: a kind: cross run does not log") as err:
        refuse_logging(cfg)
    assert "\n" not in str(err.value)
