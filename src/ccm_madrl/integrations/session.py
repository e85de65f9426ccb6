"""What the integrations share: the monitor session of another library's loop
(:class:`ccm_madrl.monitor.integration.MonitorSession`, the one session of every loop, re-exported
here) and :class:`LibraryRun`, the run directory files of a callback used on its own, so that
``ccm-madrl report`` and ``ccm-madrl archive`` read its run like any other."""

from __future__ import annotations

import atexit
import time
import weakref
from pathlib import Path

import numpy as np
import yaml

from ..config.cross import FINAL_EVALS
from ..monitor.core import summarize
from ..monitor.integration import MonitorSession
from ..rundir import RunDir, final_return

__all__ = ["LibraryRun", "MonitorSession", "library_versions", "scalars"]

LIBRARIES = {
    "sb3": ["stable-baselines3", "gymnasium", "mujoco", "gymnasium-robotics"],
    "benchmarl": ["benchmarl", "torchrl", "tensordict", "vmas"],
}


def library_versions(library: str) -> dict:
    """The installed versions of a library and the packages its runs depend on (None: absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for n in LIBRARIES[library]:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            out[n] = None
    return {"libraries": out}


def scalars(rows: list[dict]) -> dict[str, float]:
    """A measured unit's summary (``monitor.core.summarize``) as ``monitor/<name>`` scalars for
    the host library's logger (finite numbers only)."""
    out = {}
    for k, v in summarize(rows).items():
        v = float(v)
        if np.isfinite(v):
            out[f"monitor/{k}"] = v
    return out


def _config_id(cfg: dict) -> str | None:
    from ..config.experiment import stored_config

    try:
        return stored_config(cfg).id()
    except Exception:  # noqa: BLE001 - a config of another task or algorithm than kind: cross knows: kept as written
        return None


class LibraryRun:
    """The run directory of a library callback used on its own (a ``kind: cross`` run writes its
    own, ``experiment/cross.py``): ``start`` writes ``config.yaml`` (a ``kind: cross`` config of
    what the callback sees of the library's run), ``provenance.json`` and ``status.json``
    (``running``, with its heartbeat); ``end`` writes the final status (``done``, or the state
    given: ``interrupted`` when the interpreter exits before the library's run ended). If the
    run is not ended when the interpreter exits, ``end_at_exit`` is called then (atexit, through a
    weak reference: a callback that is gone is not kept alive)."""

    def __init__(self, run_dir: str | Path, library: str):
        self.rd = RunDir(run_dir)
        self.library = library
        self.config_id: str | None = None
        self.t0 = 0.0
        self.ended = False
        self._live = None

    def start(self, cfg: dict, end_at_exit) -> None:
        from ..provenance import collect

        self.rd.check_safe()  # a received run directory: no link for a write to follow
        self.rd.path.mkdir(parents=True, exist_ok=True)
        self.config_id = _config_id(cfg)
        self.rd.write_config(yaml.safe_dump(cfg, sort_keys=False))
        prov = collect()
        prov.update(
            seed=cfg.get("seed"), config_id=self.config_id, kind="cross", **library_versions(self.library)
        )
        self.rd.write_provenance(prov)
        self._live = self.rd.live_status()
        self._live.set("running", config_id=self.config_id, episodes_done=0)
        self.t0 = time.perf_counter()
        ref = weakref.WeakMethod(end_at_exit)
        atexit.register(lambda: (m := ref()) is not None and m())

    def end(self, metrics, state: str = "done", **fields) -> None:
        """The final status: ``episodes_done`` (training episodes in ``metrics``), the final return
        (mean of the last :data:`~ccm_madrl.config.cross.FINAL_EVALS` evaluations), the wall time
        and ``fields`` (stops, timesteps, early_stopped)."""
        if self.ended or self._live is None:
            return
        self.ended = True
        n_ep = int(metrics["train_return"].notna().sum()) if "train_return" in metrics else 0
        self._live.set(
            state,
            config_id=self.config_id,
            episodes_done=n_ep,
            final_return=final_return(metrics, FINAL_EVALS) if "eval_return" in metrics else float("nan"),
            wall_time_s=time.perf_counter() - self.t0,
            **fields,
        )
