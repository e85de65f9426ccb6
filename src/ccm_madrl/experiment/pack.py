"""Packed training: R compatible runs (:func:`pack_key`) trained as one program
(:mod:`ccm_madrl.agents.pack`), each written to its own run directory in exactly the format of a
run trained alone (config.yaml, metrics.parquet, monitor/, status.json, provenance.json with a
``pack`` field naming the pack's members, checkpoints in the single-run format).

Each run is a member of the pack, a :class:`~ccm_madrl.experiment.runner.Trainer` whose build,
resume, checkpoint, status and provenance code is that of a run alone; :class:`PackTrainer` is the
:class:`~ccm_madrl.experiment.engine.Engine` (the one episode loop, for every R) with the pack's
batched learner (:class:`~ccm_madrl.experiment.engine.PackedBatch`): the R training environments are
one batch of R environments (each with its run's task stream), the evaluation one batch of R x E
environments, acting and training one packed learner. Every feature of a run alone works the same
in a pack (``training.eval_every``, callbacks, checkpoints, the monitor and its stop detection).

- Resume: each run resumes from its own checkpoint; runs whose checkpoints stand at different
  episodes are trained as separate packs (one after the other).
- Divergence isolation: a run whose critic loss, priority errors or actions stop being finite ends
  ``diverged`` (status.json, with the error) and is dropped from its pack; the others go on unchanged.
- A run that is done is skipped; a run whose callback asks to stop leaves the pack after its
  checkpoint.
- ``metrics.parquet``'s times of a run in a pack are its share of the pack's time (pack time / R).
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..agents.pack import PER_RUN_FIELDS
from ..provenance import resolve_device
from .callbacks import PackRunMonitor, pack_member_callbacks  # noqa: F401 - PackRunMonitor: re-exported
from .config import ExperimentConfig
from .engine import Engine
from .memory import run_bytes
from .runner import RunDirBusy, RunSummary, Trainer, finished_summary, run_lock
from .stop import StopToken

# top-level fields that may differ between the runs of a pack (with PER_RUN_FIELDS of agent)
PER_RUN_TOP = ("name", "seed")


def pack_key(cfg: ExperimentConfig) -> str:
    """What must be equal for runs to share a pack: the config without its per-run fields."""
    d = cfg.model_dump(mode="json")
    for k in PER_RUN_TOP:
        d.pop(k, None)
    d["agent"] = cfg.agent.id_fields()  # the agent's options under their flat names
    for k in PER_RUN_FIELDS:
        d["agent"].pop(k, None)
    return json.dumps(d, sort_keys=True)


def packable(cfg: ExperimentConfig) -> str | None:
    """Why this run cannot be trained in a pack (None: it can)."""
    if cfg.kind != "mec":
        return f"kind {cfg.kind!r}"
    if cfg.agent.mitigations.actor_reg == "entropy":
        return "stochastic actors (actor_reg: entropy)"
    if cfg.agent.mitigations.reset != "none":
        return f"agent.mitigations.reset {cfg.agent.mitigations.reset!r} (resets are per single run)"
    if cfg.agent.argmax_row_skip:
        return (
            "agent.argmax_row_skip (the single run's row-invariant scoring; a pack scores rows its own way)"
        )
    from ..agents import BASELINES

    if cfg.agent.algorithm in BASELINES or ":" in cfg.agent.algorithm:
        return f"algorithm {cfg.agent.algorithm!r} is not an off-policy actor-critic"
    return None


class PackTrainer(Engine):
    """Trains the runs ``cfgs`` (compatible: same :func:`pack_key`) into ``run_dirs`` as packs."""

    def __init__(
        self,
        cfgs: Sequence[ExperimentConfig],
        run_dirs: Sequence[str | Path],
        quiet: bool = True,
        stop: StopToken | None = None,
    ):
        if len(cfgs) != len(run_dirs) or not cfgs:
            raise ValueError("pack: need one run directory per config, and at least one run")
        keys = {pack_key(c) for c in cfgs}
        if len(keys) > 1:
            raise ValueError(
                "pack: the runs differ in more than " + ", ".join((*PER_RUN_TOP, *PER_RUN_FIELDS))
            )
        for c in cfgs:
            why = packable(c)
            if why:
                raise ValueError(f"pack: run {c.name!r} cannot be packed: {why}")
        super().__init__()
        self.cfgs, self.run_dirs, self.quiet = list(cfgs), [Path(d) for d in run_dirs], quiet
        self.stop = stop or StopToken()  # Ctrl-C / SIGTERM, or the sweep's stop (experiment/stop.py)
        self.busy: dict[Path, str] = {}  # members another live process trains (skipped): who
        self._locks = contextlib.ExitStack()  # the members' run directory locks

    # ------------------------------------------------------------------ main
    def run(self) -> list[RunSummary]:
        import torch

        cfg0 = self.cfgs[0]
        device = resolve_device(cfg0.device)
        members = []
        try:
            self._members(device, members)
        except BaseException:
            self._locks.close()
            raise
        threads_before = torch.get_num_threads()
        torch.set_num_threads(cfg0.threads)
        try:
            for m in list(members):
                try:
                    m.prepare()
                except Exception as err:  # noqa: BLE001 - this run cannot start: it fails alone
                    with contextlib.suppress(OSError):  # a full disk may refuse its status too
                        m._status("failed", 0, error=traceback.format_exc())
                    self.summaries[m.run_dir] = RunSummary(m.run_dir, "failed", 0, np.nan, 0.0)
                    members.remove(m)
                    if not self.quiet:
                        print(f"pack: run {m.run_dir} cannot start ({type(err).__name__}: {err})")
            by_start: dict[int, list[Trainer]] = {}
            for m in members:
                by_start.setdefault(m.start, []).append(m)
            with self.stop.installed():
                for start in sorted(by_start):
                    self._train_pack(by_start[start], start)
        finally:
            torch.set_num_threads(threads_before)
            self._locks.close()
        return [self.summaries[d] for d in self.run_dirs if d in self.summaries]

    def _members(self, device, members: list) -> None:
        """The runs to train (done ones are summarised, busy ones left to their process), each
        with its run directory's lock held."""
        for cfg, d in zip(self.cfgs, self.run_dirs):
            m = Trainer(cfg, d, progress=False, quiet=True, callbacks=pack_member_callbacks)
            m.device = device
            m.stop = self.stop
            m.rd.check_safe()  # a received run directory: no link for a write to follow
            d.mkdir(parents=True, exist_ok=True)
            m._check_run_dir()
            finished = finished_summary(m.rd, cfg.id())
            if finished is not None:
                self.summaries[d] = finished
                continue
            who = m.rd.trained_elsewhere()
            if not who:
                try:  # held until the pack ends (one process per run directory)
                    self._locks.enter_context(run_lock(d))
                except RunDirBusy as err:
                    who = str(err).split("in use by ", 1)[-1].split(";", 1)[0]
            if who:  # another process trains it now (a second sweep): left to it, the others go on
                self.busy[d] = who
                continue
            m.rd.write_config(cfg.to_yaml())
            members.append(m)

    def _provenance(self, members: list[Trainer], start: int) -> None:
        names = [m.run_dir.name for m in members]
        for m in members:
            m._write_provenance(start)
            prov = m.rd.provenance()
            prov["pack"] = {"size": len(members), "members": names, "index": names.index(m.run_dir.name)}
            if prov.get("segments"):
                prov["segments"][-1]["pack"] = prov["pack"]
            m.rd.write_provenance(prov)

    def _train_pack(self, members: list[Trainer], start: int) -> None:
        self._provenance(members, start)
        self.attach(members)
        self.train(start)

    @property
    def pack(self):
        """The packed learner now training (:func:`~ccm_madrl.agents.pack.make_pack`)."""
        return self.batch.pack


# ------------------------------------------------------------------------------ sweeps
# runs per pack on a CPU: the fastest per run-episode of R in {1, 4, 16} in both update orders
# (benchmarks/README.md, "Per-run row scoring"; larger packs not measured)
CPU_MAX_PACK = 16
CUDA_MAX_PACK = 160  # on a GPU: the whole table1_s10 grid
MEMORY_FRACTION = 0.5  # of the memory available now, for the packs of all workers together


def default_pack_size(cfg: ExperimentConfig, workers: int = 1) -> int:
    """Runs per pack when ``--pack`` names no number: at most 16 on a CPU (160 on a GPU), and no
    more than fit in half the memory available now (split over ``workers``)."""
    import os

    from ..provenance import resolve_device

    cap = CUDA_MAX_PACK if resolve_device(cfg.device).type == "cuda" else CPU_MAX_PACK
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return cap
    return max(1, min(cap, int(MEMORY_FRACTION * avail / workers // run_bytes(cfg))))


def run_pack_job(cfgs: list[dict], run_dirs: list[str], t0: float, stop: StopToken | None = None) -> dict:
    """A sweep's pack job (called by ``sweep.control.run_one``): one result per member run under "pack"; a
    diverged run does not stop the others, and a member that another live process trains now is
    left to it (its result: ``queued``, not run here)."""
    from ..rundir import read_json
    from .config import build_config

    trainer = PackTrainer([build_config(c) for c in cfgs], run_dirs, stop=stop)
    summaries = trainer.run()
    res = {d.name: {"status": "queued", "busy": who} for d, who in trainer.busy.items()}  # not run here
    for s in summaries:
        st = s.run_dir / "status.json"
        r = {"status": s.state, "episodes_done": s.episodes_done, "wall_time_s": time.time() - t0}
        if s.state in ("failed", "diverged"):
            err = (read_json(st).get("error") or s.state).strip().splitlines()
            r["error"] = err[-1][:400] if err else s.state  # the exception's own line
        else:
            r["final_return"] = s.final_return
        res[s.run_dir.name] = r
    return {"status": "done", "pack": res, "wall_time_s": time.time() - t0}
