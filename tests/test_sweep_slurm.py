"""The SLURM backend through submitit's local executor (``--slurm-cluster local``): the same array
submission as on a cluster, run as local processes; re-submitting skips finished runs and resumes
interrupted ones from their checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slurm
pytest.importorskip("submitit")

from ccm_madrl.cli import main  # noqa: E402
from ccm_madrl.experiment import Trainer  # noqa: E402
from ccm_madrl.experiment.callbacks import Callback, default_callbacks  # noqa: E402
from ccm_madrl.experiment.stop import StopToken  # noqa: E402
from ccm_madrl.sweep import (  # noqa: E402
    BackendOptions,
    RunJob,
    SlurmArray,
    SlurmOptions,
    expand,
    load_sweep,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
NON_TIME = lambda df: df[[c for c in df.columns if not c.startswith("time_")]]  # noqa: E731


class StopAt(Callback):
    """Requests the run's stop token after ``n`` episodes (as a signal would)."""

    def __init__(self, n: int):
        self.n = n

    def on_episode_end(self, trainer, row) -> bool:
        if trainer.episodes_done == self.n:
            trainer.stop.request()
        return True


def test_slurm_array_runs_the_sweep_and_resumes_on_resubmit(tmp_path):
    out = tmp_path / "out"
    f = tmp_path / "s.yaml"
    data = yaml.safe_load(SMOKE.read_text())
    data["base"]["training"].update(episodes=8, checkpoint_every=2)
    data["seeds"] = 1
    f.write_text(yaml.safe_dump(data))
    runs = expand(*load_sweep(f))
    # one run was interrupted after 4 episodes (a time limit, scancel): it has a checkpoint
    first = runs[0]
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            first.config,
            out / "runs" / first.id,
            progress=False,
            callbacks=lambda t: [StopAt(4), *default_callbacks(t)],
        ).run()
    assert json.loads((out / "runs" / first.id / "status.json").read_text())["state"] == "interrupted"
    rc = main(
        ["sweep", str(f), "--out", str(out), "--backend", "slurm", "--slurm-cluster", "local"]
        + ["--no-progress"]
    )
    assert rc == 0
    man = {e["id"]: e for e in json.loads((out / "manifest.json").read_text())["runs"]}
    assert {e["status"] for e in man.values()} == {"done"} and len(man) == 2
    jobs = json.loads((out / "slurm" / "jobs.json").read_text())
    assert set(jobs) == set(man)  # one array task per run, its job id recorded
    segs = json.loads((out / "runs" / first.id / "provenance.json").read_text())["segments"]
    assert [s["resumed_from_episode"] for s in segs] == [0, 4]
    ref = tmp_path / "ref"
    Trainer(first.config, ref, progress=False).run()
    got = pd.read_parquet(out / "runs" / first.id / "metrics.parquet")
    pd.testing.assert_frame_equal(NON_TIME(got), NON_TIME(pd.read_parquet(ref / "metrics.parquet")))
    again = run_sweep(
        f, out, backend="slurm", progress=False, backend_options=BackendOptions(slurm=SlurmOptions(cluster="local"))
    )
    assert again.skipped == 2


def test_slurm_parameters_follow_the_options_and_the_sweep_file(tmp_path, monkeypatch):
    """On a SLURM cluster the array asks for what the options say; the sweep file's ``slurm:`` block
    fills in what the command line leaves out."""
    seen = {}

    class FakeExecutor:
        cluster = "slurm"

        def __init__(self, folder, cluster=None):
            seen["folder"] = folder

        def update_parameters(self, **kw):
            seen.update(kw)

    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # a cluster's login node
    opts = BackendOptions(
        cpus_per_run=4,
        gpus_per_run=1,
        slurm=SlurmOptions(partition="gpu", time_min=90, additional={"gres": "gpu:1"}),
    )
    SlurmArray(tmp_path, workers=8, options=opts).executor()
    assert seen["slurm_partition"] == "gpu" and seen["timeout_min"] == 90 and seen["cpus_per_task"] == 4
    assert seen["gpus_per_node"] == 1 and seen["slurm_array_parallelism"] == 8
    assert seen["slurm_additional_parameters"] == {"gres": "gpu:1"}
    data = yaml.safe_load(SMOKE.read_text())
    data["slurm"] = {"partition": "cpu", "account": "proj"}
    (tmp_path / "file.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setattr(SlurmArray, "run", lambda self, *a: seen.update(options=self.options))
    given = BackendOptions(slurm=SlurmOptions(partition="gpu"))
    run_sweep(tmp_path / "file.yaml", tmp_path / "o", backend="slurm", progress=False, backend_options=given)
    assert (seen["options"].slurm.partition, seen["options"].slurm.account) == ("gpu", "proj")
    data["slurm"] = {"partition": "cpu", "nope": 1}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    assert main(["sweep", str(tmp_path / "bad.yaml"), "--backend", "slurm", "--dry-run"]) == 2


def test_sigusr2_stops_a_slurm_token():
    """SLURM's warning before the time limit (SIGUSR2, as submitit asks) stops the run's token."""
    token = StopToken(signals=(signal.SIGINT, signal.SIGTERM, signal.SIGUSR2))
    before = signal.getsignal(signal.SIGUSR2)
    with token.installed():
        assert not token.requested
        os.kill(os.getpid(), signal.SIGUSR2)
        assert token.requested
    assert signal.getsignal(signal.SIGUSR2) == before  # the handler is put back


def test_backend_slurm_without_sbatch_is_one_line_unless_the_local_cluster_is_asked_for(tmp_path, monkeypatch, capsys):
    """No sbatch on the PATH: ``--backend slurm`` refuses in one line naming --slurm-cluster
    (exit 2, no sweep directory), instead of running local processes without a word."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "out"
    assert main(["sweep", str(SMOKE), "--out", str(out), "--backend", "slurm", "--slurm-partition", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "no sbatch" in err and "--slurm-cluster local" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(Exception, match="no sbatch"):
        run_sweep(SMOKE, out, backend="slurm", progress=False,
                  backend_options=BackendOptions(slurm=SlurmOptions(cluster="slurm")))  # fmt: skip


def test_the_local_executor_runs_at_most_workers_jobs_at_once(tmp_path, monkeypatch):
    """submitit's local executor starts every job it is handed: the backend hands it at most
    ``--workers`` at a time, the next as one ends."""
    import submitit

    live, peak = set(), [0]

    class Job:
        def __init__(self, i):
            self.job_id, self.polls = str(i), 0

        def done(self):
            self.polls += 1
            if self.polls >= 2:
                live.discard(self)
            return self.polls >= 2

        def result(self):
            return {"status": "done"}

        def cancel(self, check=False):
            pass

    class LocalExecutor:
        cluster = "local"

        def __init__(self, folder, cluster=None):
            self.n = 0

        def update_parameters(self, **kw):
            pass

        @contextlib.contextmanager
        def batch(self):
            yield

        def submit(self, fn, *args):
            self.n += 1
            job = Job(self.n)
            live.add(job)
            peak[0] = max(peak[0], len(live))
            return job

    monkeypatch.setattr(submitit, "AutoExecutor", LocalExecutor)
    jobs = [RunJob(f"r{i}", {}, str(tmp_path / f"r{i}")) for i in range(5)]
    got = []
    array = SlurmArray(tmp_path / "slurm", workers=2, options=BackendOptions(slurm=SlurmOptions(cluster="local")))
    array.run(jobs, lambda rid, res: got.append(rid), lambda: None, StopToken())
    assert sorted(got) == [f"r{i}" for i in range(5)] and peak[0] == 2
    assert json.loads((tmp_path / "slurm" / "jobs.json").read_text()) == {f"r{i}": str(i + 1) for i in range(5)}
    assert array.describe(5) == (
        "backend slurm: cluster local (submitit's local executor: processes on this machine), at most 2 at once"
    )
