"""The Ray backend on a real multi-node cluster started on this machine (``ray.cluster_utils.Cluster``:
a head and a second node, 1 CPU each; a third node joins to be killed mid-sweep), and its options
(resources per task, the package shipped to the nodes, run directories resolved on the driver)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")

from ccm_madrl.experiment import Trainer  # noqa: E402
from ccm_madrl.sweep import (  # noqa: E402
    BackendOptions,
    RayTasks,
    expand,
    load_sweep,
    plan_sweep,
    run_sweep,
)

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
NON_TIME = lambda df: df[[c for c in df.columns if not c.startswith("time_")]]  # noqa: E731
LOCAL = BackendOptions(ship_package=False)  # the nodes share this machine's interpreter and path


def manifest(out: Path) -> dict:
    return {e["id"]: e for e in json.loads((out / "manifest.json").read_text())["runs"]}


def test_task_options_request_what_each_run_needs(monkeypatch, tmp_path):
    """GPU requests are checked on the options handed to ``ray.remote`` (no GPU needed)."""
    opts = RayTasks(None, options=BackendOptions(cpus_per_run=2, gpus_per_run=0.5)).task_options()
    assert opts == {"num_cpus": 2, "num_gpus": 0.5, "max_retries": 3, "retry_exceptions": False}
    # connecting to a cluster ships the package by default (runtime_env py_modules), a local one does not
    shipped = RayTasks("ray://head:10001").runtime_env()["py_modules"]
    assert len(shipped) == 1 and (Path(shipped[0]) / "sweep" / "run.py").exists()  # the package itself
    assert RayTasks("ray://head:10001", options=LOCAL).runtime_env() is None
    assert RayTasks(None).runtime_env() is None
    seen = {}

    def remote(**kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ray, "remote", remote)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    opts = BackendOptions(cpus_per_run=4, gpus_per_run=1)
    with pytest.raises(RuntimeError, match="stop here"):
        run_sweep(SMOKE, tmp_path / "out", backend="ray", progress=False, backend_options=opts)
    assert seen["num_gpus"] == 1 and seen["num_cpus"] == 4


def test_run_directories_are_absolute_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = expand(*load_sweep(SMOKE))
    plan = plan_sweep(runs, Path("rel/out"), "ray", None)
    assert all(
        Path(j.run_dir).is_absolute() and Path(j.run_dir).parent.parent == tmp_path / "rel" / "out"
        for j in plan.jobs
    )


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_two_nodes_share_a_sweep_and_workers_limits_tasks_in_flight(cluster, tmp_path):
    out = tmp_path / "both"
    res = run_sweep(
        SMOKE, out, backend="ray", address=cluster.address, progress=False, seeds="1", backend_options=LOCAL
    )
    assert (res.done, res.failed) == (2, 0)
    man = manifest(out)
    assert len({e["node"] for e in man.values()}) == 2  # one 1-CPU task per node, at the same time
    assert all(e["gpus"] == [] for e in man.values())  # no GPU asked: `device: auto` stays on the CPU
    # --workers 1: one task in flight at a time; --ship-package: the nodes import the shipped copy
    out = tmp_path / "one"
    res = run_sweep(
        SMOKE,
        out,
        backend="ray",
        address=cluster.address,
        workers=1,
        progress=False,
        seeds="1",
        backend_options=BackendOptions(ship_package=True),
    )
    assert (res.done, res.failed) == (2, 0)
    spans = sorted((e["started_at"], e["started_at"] + e["wall_time_s"]) for e in manifest(out).values())
    assert spans[0][1] <= spans[1][0]
    assert all("runtime_resources" in e["package"] for e in manifest(out).values())


def test_stopping_the_sweep_stops_its_ray_tasks_through_their_tokens(cluster, tmp_path):
    """The sweep's stop token requested (as SIGINT / SIGTERM to the sweep would): each running task
    is cancelled, which flags its run's token; the run checkpoints and ends interrupted."""
    from ccm_madrl.experiment.stop import StopToken

    out = tmp_path / "out"
    stop = StopToken()

    def request_when_both_checkpointed():
        deadline = time.time() + 300
        while time.time() < deadline and len(list(out.glob("runs/*/checkpoint.pt"))) < 2:
            time.sleep(0.2)
        stop.request()

    threading.Thread(target=request_when_both_checkpointed, daemon=True).start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            SMOKE,
            out,
            backend="ray",
            address=cluster.address,
            progress=False,
            seeds="1",
            set_=["training.episodes=100000"],
            backend_options=LOCAL,
            stop=stop,
        )
    assert time.time() - t0 < 240
    for e in manifest(out).values():
        st = json.loads((out / e["run_dir"] / "status.json").read_text())
        assert e["status"] == st["state"] == "interrupted" and 2 <= st["episodes_done"] < 100000
        assert (out / e["run_dir"] / "checkpoint.pt").exists()


def test_a_node_killed_mid_sweep_its_run_resumes_elsewhere(cluster, tmp_path):
    """Three runs on three 1-CPU nodes; once the run on the third node has checkpointed (its
    provenance names the node) and while it still runs, that node is removed (its processes killed).
    Ray runs the lost task again on a surviving node, where it resumes from its checkpoint: every run
    ends done, and the resumed one equals an uninterrupted run."""
    base = yaml.safe_load(SMOKE.read_text())["base"]
    base["training"].update(episodes=40, checkpoint_every=2)
    f = tmp_path / "kill.yaml"
    f.write_text(
        yaml.safe_dump({"name": "kill", "base": base, "axes": {"agent.actor_lr": [1e-4, 1e-2, 1e-1]}})
    )
    out = tmp_path / "out"
    victim = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    killed = {}

    def victims_run() -> Path | None:
        for prov in out.glob("runs/*/provenance.json"):
            try:
                if json.loads(prov.read_text())["segments"][0]["ray_node"] == victim.node_id:
                    return prov.parent
            except (ValueError, KeyError):  # being written
                pass
        return None

    def kill_once_the_victims_run_checkpointed():
        deadline = time.time() + 300
        while time.time() < deadline:
            d = victims_run()
            if d is not None and (d / "checkpoint.pt").exists():
                killed["state"] = json.loads((d / "status.json").read_text())
                cluster.remove_node(victim)
                killed["run"] = d.name
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_once_the_victims_run_checkpointed, daemon=True)
    t.start()
    res = run_sweep(f, out, backend="ray", address=cluster.address, progress=False, backend_options=LOCAL)
    t.join()
    assert killed.get("run"), "no run started on the victim node, or it never checkpointed"
    assert killed["state"]["state"] == "running", killed  # it was killed mid-run
    assert (res.total, res.done, res.failed) == (3, 3, 0)
    man = manifest(out)
    resumed = [
        rid
        for rid in man
        if any(
            s["resumed_from_episode"] > 0
            for s in json.loads((out / "runs" / rid / "provenance.json").read_text())["segments"]
        )
    ]
    assert resumed == [killed["run"]]
    segs = json.loads((out / "runs" / killed["run"] / "provenance.json").read_text())["segments"]
    assert segs[0]["ray_node"] == victim.node_id != segs[-1]["ray_node"]  # resumed on another node
    assert all(json.loads((out / "runs" / rid / "status.json").read_text())["state"] == "done" for rid in man)
    by_id = {r.id: r for r in expand(*load_sweep(f))}
    ref = tmp_path / "ref"
    Trainer(by_id[resumed[0]].config, ref, progress=False).run()
    got = pd.read_parquet(out / "runs" / resumed[0] / "metrics.parquet")
    pd.testing.assert_frame_equal(NON_TIME(got), NON_TIME(pd.read_parquet(ref / "metrics.parquet")))
    again = run_sweep(f, out, backend="ray", address=cluster.address, progress=False, backend_options=LOCAL)
    assert again.skipped == 3  # nothing finished is lost or run again
