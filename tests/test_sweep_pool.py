"""The local pool: a worker killed mid-run (SIGKILL: out of memory, a user) loses only its run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import yaml

from ccm_madrl.sweep import run_sweep

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def test_a_worker_killed_mid_run_is_replaced_and_its_run_recorded_failed(tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["base"]["training"].update(episodes=30, checkpoint_every=2)
    data["seeds"] = 1  # 2 runs, one worker: the second needs a new worker
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    killed = []

    def kill_the_first_worker():
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            for st in out.glob("runs/*/status.json"):
                status = json.loads(st.read_text())
                if status.get("state") == "running" and status.get("episodes_done", 0) >= 2:
                    os.kill(status["pid"], signal.SIGKILL)
                    killed.append(st.parent.name)
                    return
            time.sleep(0.2)

    t = threading.Thread(target=kill_the_first_worker, daemon=True)
    t.start()
    res = run_sweep(f, out, workers=1, progress=False)
    t.join()
    assert killed and (res.total, res.done, res.failed) == (2, 1, 1)
    man = {e["id"]: e for e in json.loads((out / "manifest.json").read_text())["runs"]}
    assert man[killed[0]]["status"] == "failed" and "worker process died" in man[killed[0]]["error"]
    again = run_sweep(f, out, workers=1, progress=False)  # the failed run resumes from its checkpoint
    assert (again.done, again.failed, again.skipped) == (2, 0, 1)
