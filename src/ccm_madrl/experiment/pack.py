"""Packed training: R compatible runs (:func:`pack_key`) trained as one program
(:mod:`ccm_madrl.agents.pack`), each written to its own run directory in exactly the format of a
run trained alone (config.yaml, metrics.parquet, monitor/, status.json, provenance.json with a
``pack`` field naming the pack's members, checkpoints in the single-run format).

Each run is a :class:`PackMember`, a :class:`~ccm_madrl.experiment.runner.Trainer` whose own
build, resume, checkpoint, status and provenance code is used as is; only the episode loop is the
pack's: the R training environments are one batch of R environments (each with its run's task
stream), the evaluation one batch of R x E environments, acting and training one packed learner.

- Resume: each run resumes from its own checkpoint; runs whose checkpoints stand at different
  episodes are trained as separate packs (one after the other).
- Failure isolation: a run whose critic loss or priority errors stop being finite is marked failed
  (status.json, with the error) and dropped from its pack; the others go on unchanged.
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
import pandas as pd

from ..agents.pack import PER_RUN_FIELDS, make_pack
from ..mec.env import EpisodeTable, MECEnv, StreamTasks
from ..provenance import resolve_device
from .callbacks import Callback, MonitorCallback, default_callbacks
from .config import ExperimentConfig
from .memory import run_bytes
from .runner import (
    EVAL_FIELDS,
    RunDirBusy,
    RunSummary,
    Trainer,
    diverged_error,
    final_return,
    finished_summary,
    run_lock,
    training_row,
)
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
    if cfg.training.eval_every != 1:
        return "training.eval_every > 1 (a pack evaluates before every episode)"
    if cfg.agent.argmax_row_skip:
        return (
            "agent.argmax_row_skip (the single run's row-invariant scoring; a pack scores rows its own way)"
        )
    from ..agents import BASELINES

    if cfg.agent.algorithm in BASELINES or ":" in cfg.agent.algorithm:
        return f"algorithm {cfg.agent.algorithm!r} is not an off-policy actor-critic"
    return None


class PackMember(Trainer):
    """One run of a pack: a Trainer whose learner is its slice of the pack."""

    pack = None
    index = 0

    def checkpoint(self) -> None:
        self.pack._get(self.index)  # the run's single-run learner holds its slice
        super().checkpoint()

    def build(self) -> None:
        """The run's streams, its own training environment (construction draws and the first reset,
        as alone), its single-run learner; then resume."""
        self._build()
        self.start, self.rows = self._resume()
        self.episodes_done = self.start


class _NoNetworks:
    def attach_monitor(self, monitor) -> None:  # the pack's monitor watches the networks
        pass


class PackRunMonitor(MonitorCallback):
    """A run's monitor in a pack: the pack's one :class:`GradientFlowMonitor` measures every run's
    networks; the run's rows (its slice) are handed to this run's writer (``take``), which writes its
    ``monitor/`` exactly as alone and keeps its own stop streak."""

    def __init__(self, cfg, run_dir):
        from ..monitor.integration import monitor_for

        self.monitor = monitor_for(_NoNetworks(), cfg, run_dir)
        self.threshold = cfg.monitor.stop_threshold

    def on_episode_start(self, trainer, episode: int) -> None:
        pass

    def on_episode_end(self, trainer, row: dict) -> bool:
        return not self.monitor.should_stop()

    def take(self, episode: int, rows: list[dict] | None, row: dict) -> None:
        mon = self.monitor.mon
        if rows is not None and row.get("trained"):
            actors = [r for r in rows if r["is_actor"]]
            if actors and all(r["steps"] > 0 for r in actors):
                stopped = all(r["max_abs_change"] < self.threshold for r in actors)
                mon.all_actors_stopped_streak = mon.all_actors_stopped_streak + 1 if stopped else 0
        row.update(self.monitor.take(episode, rows, row))


def _member_callbacks(trainer: Trainer) -> list[Callback]:
    """The defaults, with the run's monitor writer in place of a monitor of its own."""
    cbs = [cb for cb in default_callbacks(trainer) if not isinstance(cb, MonitorCallback)]
    if trainer.cfg.monitor.enabled:
        cbs.insert(0, PackRunMonitor(trainer.cfg, trainer.run_dir))
    return cbs


class PackTrainer:
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
        self.cfgs, self.run_dirs, self.quiet = list(cfgs), [Path(d) for d in run_dirs], quiet
        self.stop = stop or StopToken()  # Ctrl-C / SIGTERM, or the sweep's stop (experiment/stop.py)
        self.summaries: dict[Path, RunSummary] = {}
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
                    m.build()
                except Exception as err:  # noqa: BLE001 - this run cannot start: it fails alone
                    with contextlib.suppress(OSError):  # a full disk may refuse its status too
                        m._status("failed", 0, error=traceback.format_exc())
                    self.summaries[m.run_dir] = RunSummary(m.run_dir, "failed", 0, np.nan, 0.0)
                    members.remove(m)
                    if not self.quiet:
                        print(f"pack: run {m.run_dir} cannot start ({type(err).__name__}: {err})")
            by_start: dict[int, list[PackMember]] = {}
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
            m = PackMember(cfg, d, progress=False, quiet=True, callbacks=_member_callbacks)
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

    def _provenance(self, members: list[PackMember], start: int) -> None:
        names = [m.run_dir.name for m in members]
        for m in members:
            m._write_provenance(start)
            prov = m.rd.provenance()
            prov["pack"] = {"size": len(members), "members": names, "index": names.index(m.run_dir.name)}
            if prov.get("segments"):
                prov["segments"][-1]["pack"] = prov["pack"]
            m.rd.write_provenance(prov)

    def _train_pack(self, members: list[PackMember], start: int) -> None:
        self._provenance(members, start)
        self.members = members
        self._rebuild()
        self._envs(members)
        t_start = self.t_start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            for m in members:
                m._status("running", start)
                stack.enter_context(m.live.beating())
                for cb in m.callbacks:
                    cb.on_run_start(m, start)
            try:
                self._loop(start)
            except KeyboardInterrupt:
                raise
            except Exception:
                for m in self.members:
                    m._status("failed", m.episodes_done, error=traceback.format_exc())
                raise
            finally:
                for m in members:
                    for cb in m.callbacks:
                        cb.close()
        for m in self.members:
            self._finish(m, t_start)

    def _finish(self, m: PackMember, t_start: float) -> None:
        end: dict = {}
        for cb in m.callbacks:
            end.update(cb.on_run_end(m))
        ep = m.episodes_done
        m._status("done", ep, early_stopped=ep < m.total, stops=end.get("stops"))
        df = m.rd.metrics() if not m.rows else pd.DataFrame(m.rows)
        self.summaries[m.run_dir] = RunSummary(
            m.run_dir, "done", ep, final_return(df), time.perf_counter() - t_start
        )

    def _rebuild(self) -> None:
        """(Re)make the packed learner from the members' single-run learners."""
        self.pack = make_pack([m.learner for m in self.members])
        for i, m in enumerate(self.members):
            m.pack, m.index = self.pack, i
        mc = self.members[0].cfg.monitor
        self.monitor = None
        if mc.enabled:
            from ..monitor.core import GradientFlowMonitor

            self.monitor = GradientFlowMonitor(mc.interval, mc.stop_threshold)
            self.pack.attach_monitor(self.monitor)

    def _envs(self, members: list[PackMember]) -> None:
        """One training environment batch (each run's task stream) and one evaluation batch."""
        m0 = members[0]
        cfg = m0.cfg
        self.env = MECEnv(cfg.env, len(members), cfg.rng_mode, cfg.env_seed, devices=m0.env.devices)
        self.env.source = StreamTasks([m.env.source.streams[0] for m in members], len(members))
        self.eval_table = None
        if m0.eval_table is not None:
            t = m0.eval_table
            r = len(members)
            self.eval_table = EpisodeTable(
                np.tile(t.tasks, (r, 1, 1, 1)), np.tile(t.harvest, (r, 1, 1)), t.final_stream_state
            )
            self.eval_env = MECEnv(
                cfg.env, r * t.tasks.shape[0], cfg.rng_mode, cfg.env_seed, devices=m0.env.devices
            )

    def _drop(self, keep: list[int]) -> None:
        """Keep these members (indices into the current pack), rebuild the pack and environments."""
        for i in keep:
            self.pack._get(i)
        self.members = [self.members[i] for i in keep]
        if not self.members:
            return
        self._rebuild()
        self._envs(self.members)

    # ------------------------------------------------------------------ the loop
    def _loop(self, start: int) -> None:
        ep = start
        total = self.members[0].total
        while self.members and ep < total:
            for m in self.members:
                m._call("on_episode_start", ep)
            t0 = time.perf_counter()
            if self.monitor is not None:
                self.monitor.start_episode(ep)
            t_mon = time.perf_counter() - t0
            rows = self.episode(ep)
            if self.monitor is not None:
                t0 = time.perf_counter()
                measured = self.pack.split_monitor_rows(self.monitor.end_episode(ep))
                for m, row, mine in zip(self.members, rows, measured):
                    if not self.pack.diverged[m.index]:
                        m.callbacks[0].take(ep, mine, row)
                t_mon = (t_mon + time.perf_counter() - t0) / len(self.members)
            failed = [i for i in range(len(self.members)) if self.pack.diverged[i]]
            keep = []
            for i, (m, row) in enumerate(zip(self.members, rows)):
                if i in failed:
                    self._end_diverged(m)
                    continue
                row["time_monitor_s"] = t_mon if self.monitor is not None else 0.0
                m.rows.append(row)
                m.episodes_done = ep + 1
                for cb in m.callbacks:
                    m.early_stop = not cb.on_episode_end(m, row) or m.early_stop
                if m.early_stop and ep + 1 < total:
                    self._finish(m, time.perf_counter())
                    continue
                keep.append(i)
            if self.stop.requested:
                for i in keep:
                    self.members[i]._status("interrupted", self.members[i].episodes_done)
                raise KeyboardInterrupt
            if len(keep) < len(self.members):
                self._drop(keep)
            ep += 1

    def _end_diverged(self, m: PackMember) -> None:
        """Member ``m`` diverged in its current episode: its metrics and monitor data up to the
        episode before are written, its stop events computed, its status ``diverged``
        (``Trainer.end_diverged``); the loop then drops it from the pack."""
        end: dict = {}
        for cb in m.callbacks:
            end.update(cb.on_run_end(m))
            cb.close()
        what = (
            f"{self.pack.diverged_why[m.index]} ({m.learner.diverged_hint}); the run was dropped from its "
            "pack, the others went on"
        )
        self.summaries[m.run_dir] = m.end_diverged(diverged_error(what, m.episodes_done), end, self.t_start)

    def _finite_actions(self, hybrid: np.ndarray) -> np.ndarray:
        """The pack's hybrid actions (run-major environments) with every run whose actions are not
        finite marked diverged and given the all-local action (x 0, alpha = rho = 1) for the rest of
        this episode, so that the batched step goes on for the others; the loop then drops it."""
        r = len(self.members)
        per_run = hybrid.reshape(r, -1, *hybrid.shape[1:])
        bad = ~np.isfinite(per_run).reshape(r, -1).all(axis=1)
        if not bad.any():
            return hybrid
        per_run = per_run.copy()
        per_run[bad] = (0.0, 1.0, 1.0)
        self.pack.mark_diverged(bad, "actions not finite")
        return per_run.reshape(hybrid.shape)

    def evaluate(self) -> list[dict]:
        env, r = self.eval_env, len(self.members)
        obs = env.reset(table=self.eval_table)
        t_max = self.members[0].cfg.env.max_steps
        acc = np.zeros((4, env.num_envs))
        for _ in range(t_max):
            act = self.pack.act(obs, explore=False)
            obs, rew, _, info = env.step(self._finite_actions(act.hybrid))
            acc += [rew, act.exceeded, info["energy_penalty_frac"], info["time_penalty_frac"]]
        for m in self.members:
            m.rng.after_evaluation(self.eval_table.final_stream_state)
        ret, exc, pe, pt = (a.reshape(r, -1) for a in acc)
        return [
            {
                "eval_return": float(ret[i].mean()),
                "eval_return_std": float(ret[i].std()),
                "eval_constraint_frac": float((exc[i] / t_max).mean()),
                "eval_energy_penalty_frac": float((pe[i] / t_max).mean()),
                "eval_time_penalty_frac": float((pt[i] / t_max).mean()),
            }
            for i in range(r)
        ]

    def episode(self, ep: int) -> list[dict]:
        """One episode of every run of the pack (the single-run episode, batched over runs)."""
        cfg, pack, env, r = self.members[0].cfg, self.pack, self.env, len(self.members)
        t0 = time.perf_counter()
        ebt = cfg.agent.replay.episodes_before_train
        state = env.reset()
        if ep >= ebt and self.eval_table is not None:
            rows = [{"episode": ep, **e} for e in self.evaluate()]
        else:
            rows = [{"episode": ep, **dict.fromkeys(EVAL_FIELDS, np.nan)} for _ in range(r)]
        t_eval = time.perf_counter()
        eps = pack.epsilon(ep, cfg.training.episodes)
        t_max = cfg.env.max_steps
        buf = {k: np.zeros((r, t_max, *shape)) for k, shape in pack.transition_layout().items()}
        acc = np.zeros((4, r))
        for t in range(t_max):
            act = pack.act(state, explore=True, epsilon=eps)
            nxt, rew, done, info = env.step(self._finite_actions(act.hybrid))
            buf["states"][:, t] = state
            buf["actions"][:, t] = act.actor
            buf["selected"][:, t] = act.selected
            buf["reward"][:, t] = rew
            buf["next_states"][:, t] = nxt
            buf["done"][:, t] = float(done)
            acc += [rew, act.exceeded, info["energy_penalty_frac"], info["time_penalty_frac"]]
            state = nxt
        pack.observe(buf)
        t_act = time.perf_counter()
        stats = pack.train() if ep + 1 > ebt else [{} for _ in range(r)]
        t_train = time.perf_counter()
        sizes = pack.replay_size
        for i, row in enumerate(rows):
            row.update(
                training_row(acc[:, i], t_max, eps[i], stats[i], sizes[i], (t0, t_eval, t_act, t_train), r)
            )
        return rows


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


def pack_jobs(jobs: list, size: int | None, workers: int = 1) -> tuple[list, dict[str, list[str]]]:
    """Group a sweep's jobs ``(run id, config JSON, run dir)`` into packs of at most ``size``
    compatible runs (``size`` 0 or None: :func:`default_pack_size`). A pack job is
    ``("pack:<first id>+<k>", JSON list of configs, JSON list of run dirs)``; runs that cannot be
    packed stay single jobs. Runs resuming from different episodes would train one after another
    in their pack (:meth:`PackTrainer.run`), so a pack takes runs of one start episode (the episode
    their status.json records), the furthest first. Returns the jobs and each pack job's member
    run ids."""
    from ..rundir import RunDir
    from .config import build_config

    groups: dict[tuple[str, int], list] = {}
    out, members = [], {}
    for job in jobs:
        cfg = build_config(json.loads(job[1]))
        if packable(cfg):
            out.append(job)
        else:
            start = int(RunDir(job[2]).status().get("episodes_done") or 0)
            groups.setdefault((pack_key(cfg), start), []).append((job, cfg))
    for _, group in sorted(groups.items(), key=lambda kv: -kv[0][1]):
        r = size or default_pack_size(group[0][1], workers)
        for i in range(0, len(group), r):
            chunk = [job for job, _ in group[i : i + r]]
            if len(chunk) == 1:
                out.append(chunk[0])
                continue
            rid = f"pack:{chunk[0][0]}+{len(chunk) - 1}"
            members[rid] = [j[0] for j in chunk]
            out.append(
                (rid, json.dumps([json.loads(j[1]) for j in chunk]), json.dumps([j[2] for j in chunk]))
            )
    return out, members


def run_pack_job(cfgs: list[dict], run_dirs: list[str], t0: float, stop: StopToken | None = None) -> dict:
    """A sweep's pack job (called by ``sweep.run_one``): one result per member run under "pack"; a
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
