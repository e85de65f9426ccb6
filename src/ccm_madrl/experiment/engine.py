"""The one episode loop: R >= 1 runs of one architecture trained as one batched program.

Every MEC training run goes through :class:`Engine`: a run alone (``train``, :class:`SoloEngine`,
R = 1) and the runs of a pack (``sweep --pack``, :class:`~ccm_madrl.experiment.pack.PackTrainer`).
The engine owns what happens in an episode and between episodes, the same for every R:

- evaluation on the fixed evaluation episodes when the run's schedule asks (``Trainer.evaluates``:
  ``training.eval_every``), missing values (NaN) otherwise;
- one training episode with exploration, the transitions observed, one training step once
  ``episodes_before_train + 1`` episodes are done;
- the callbacks (monitor, TensorBoard, progress, loggers, checkpoints, early stop) of every run;
- divergence isolation: a run whose values stop being finite ends ``diverged`` alone, its metrics up to
  its last whole episode written, and the others go on;
- heartbeat and status, the stop token (Ctrl-C / SIGTERM: status ``interrupted`` after the episode's
  checkpoints, then KeyboardInterrupt).

A *member* is one run's context, a :class:`~ccm_madrl.experiment.runner.Trainer`: its config, run
directory, random streams, training environment (its task stream), callbacks, rows, status,
provenance and checkpoint. The loop talks to a *batched learner* for its R members:
:class:`SoloBatch` (R = 1: the run's own learner, unchanged, so ``ccm-madrl parity`` stays exact; any
learner: baselines, ``module:attr`` algorithms, stochastic actors) or :class:`PackedBatch` (R runs of a
packable config as one :func:`~ccm_madrl.agents.pack.make_pack` program with one gradient-flow
monitor for all). Both take and return arrays with a leading run axis (run-major environments).
"""

from __future__ import annotations

import contextlib
import time
import traceback

import numpy as np
import pandas as pd

from ..agents import resets
from ..agents.pack import make_pack
from ..mec.env import EpisodeTable, MECEnv, StreamTasks
from ..monitor.core import GradientFlowMonitor
from ..rundir import final_return
from .callbacks import PackRunMonitor
from .device import DevicePath
from .summary import RunSummary

EVAL_FIELDS = (
    "eval_return",
    "eval_return_std",
    "eval_constraint_frac",
    "eval_energy_penalty_frac",
    "eval_time_penalty_frac",
)  # an episode without evaluation has NaN in each


def check_actions(hybrid: np.ndarray) -> None:
    """Actions with a non-finite value come from a diverged actor: the run diverged (not a bad
    action handed to the environment)."""
    if not np.isfinite(hybrid).all():
        raise FloatingPointError(
            "actions not finite: the actors have diverged; try smaller learning rates or "
            "agent.mitigations (actor_grad_clip, input_norm, reward_scale)"
        )


def diverged_error(err: BaseException | str, episode: int) -> str:
    """The ``error`` of a diverged run's status: what was not finite, and in which episode."""
    what = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return f"training diverged in episode {episode} (its metrics end before it): {what}"


def training_row(acc, t_max: int, eps: float, stats: dict, replay_size: int, times, share: int = 1) -> dict:
    """The training part of an episode's metrics row: ``acc`` = (return, exceeded steps, energy and
    time penalty fractions summed over the steps), the train step's ``stats`` ({} when not trained),
    ``times`` = (start, after evaluation, after acting, after training) in seconds, divided by
    ``share`` (a pack of ``share`` runs: each run's share of the pack's time)."""
    ret, exceeded, pen_e, pen_t = acc
    t0, t_eval, t_act, t_train = times
    return dict(
        train_return=float(ret),
        train_constraint_frac=exceeded / t_max,
        train_energy_penalty_frac=pen_e / t_max,
        train_time_penalty_frac=pen_t / t_max,
        epsilon=float(eps),
        trained=bool(stats),
        critic_loss=stats.get("critic_loss", np.nan),
        actor_loss=stats.get("actor_loss", np.nan),
        q_mean=stats.get("q_mean", np.nan),
        target_mean=stats.get("target_mean", np.nan),
        batch_reward_abs=stats.get("batch_reward_abs", np.nan),
        replay_size=replay_size,
        time_eval_s=(t_eval - t0) / share,
        time_act_s=(t_act - t_eval) / share,
        time_train_s=(t_train - t_act) / share,
        time_episode_s=(t_train - t0) / share,
    )


# ------------------------------------------------------------------------------ batched learners
class SoloBatch:
    """One run's learner as a batch of one. The learner is used as it is (its own arithmetic and
    random streams): a non-finite value raises ``FloatingPointError`` in it or in
    :meth:`finite_actions` (``raises``), which the engine turns into this run's divergence. Its
    monitor, if any, is the run's own ``MonitorCallback``."""

    n_runs = 1
    raises = True  # a divergence is an exception (the whole batch is the one run)
    monitor = None

    def __init__(self, learner):
        self.learner = self.program = learner  # program: what acts (the device-resident path's)
        self.diverged = np.zeros(1, dtype=bool)
        self.diverged_why = [""]

    def act(self, states: np.ndarray, explore: bool = False, epsilon=0.0):
        eps = float(np.asarray(epsilon).reshape(-1)[0])
        return self.learner.act(states, explore=explore, epsilon=eps)

    def finite_actions(self, hybrid: np.ndarray) -> np.ndarray:
        check_actions(hybrid)
        return hybrid

    def not_finite(self, bad: np.ndarray) -> None:
        """The device-resident path's flags of runs whose actions were not finite: a divergence."""
        if bad[0]:
            check_actions(np.array([np.nan]))

    def observe(self, transitions: dict[str, np.ndarray]) -> None:
        self.learner.observe({k: v[0] for k, v in transitions.items()})

    def train(self) -> list[dict]:
        return [self.learner.train()]

    def plasticity_reset(self, episode: int) -> list[dict]:
        """The reset of ``agent.mitigations.reset`` due after this episode's training step ({}: none)."""
        has_resets = hasattr(getattr(self.learner, "cfg", None), "mitigations")  # not a baseline
        return [resets.apply(self.learner, episode) if has_resets else {}]

    def epsilon(self, episode: int, n_episodes: int) -> np.ndarray:
        return np.array([self.learner.epsilon(episode, n_episodes)])

    @property
    def replay_size(self) -> list[int]:
        return [self.learner.replay_size]

    def transition_layout(self) -> dict[str, tuple[int, ...]]:
        return self.learner.transition_layout()

    def mark_diverged(self, bad: np.ndarray, why: str) -> None:
        if bad[0] and not self.diverged[0]:
            self.diverged[0], self.diverged_why[0] = True, why

    def start_monitor(self, episode: int) -> None:
        pass

    def end_monitor(self, episode: int) -> None:
        return None

    def write_back(self, i: int) -> None:
        pass  # the learner is the run's own

    def diverged_what(self, i: int, member) -> str:
        return self.diverged_why[i]


class PackedBatch:
    """R single-run learners as one packed learner (:func:`~ccm_madrl.agents.pack.make_pack`;
    ``act``, ``observe``, ``train``, ``epsilon``, ``replay_size``, ``transition_layout``,
    ``diverged`` and ``mark_diverged`` are the pack's), with one gradient-flow monitor for every
    run's networks when the config enables it. A non-finite value marks its run diverged."""

    raises = False

    def __init__(self, members: list):
        self.pack = self.program = make_pack([m.learner for m in members])
        self.n_runs = len(members)
        mc = members[0].cfg.monitor
        self.monitor = None
        if mc.enabled:
            self.monitor = GradientFlowMonitor(mc.interval, mc.stop_threshold, rank_interval=mc.rank_interval)
            self.pack.attach_monitor(self.monitor)
            self._initial_weights(members)

    def _initial_weights(self, members: list) -> None:
        """Each run's own first weights (its :class:`PackRunMonitor`'s ``initial``) as the pack's
        monitor's initial weights, so that ``weight_difference`` counts from them as alone (not from
        the pack's attach: a resumed pack, or one made again after a run left), in the layout of the
        runs' slices of the packed networks (``PackMixin._put``)."""
        writers = [next((cb for cb in m.callbacks if isinstance(cb, PackRunMonitor)), None) for m in members]
        if any(w is None or not w.initial for w in writers):
            return
        k = self.pack.actors.nets_per_run
        for role, module in (("actors", self.pack.actors), ("critic", self.pack.critic)):
            packed = [p.detach().clone() for p in module.parameters()]
            for r, w in enumerate(writers):
                for p, q in zip(packed, w.initial[role]):
                    part = p[r * k : (r + 1) * k] if role == "actors" else p[r]
                    part.copy_(q.reshape(part.shape))
            self.monitor.set_initial(role, packed)

    def __getattr__(self, name: str):
        return getattr(self.pack, name)  # what the packed learner offers as is

    def finite_actions(self, hybrid: np.ndarray) -> np.ndarray:
        """The hybrid actions (run-major environments) with every run whose actions are not finite
        marked diverged and given the all-local action (x 0, alpha = rho = 1) for the rest of this
        episode, so that the batched step goes on for the others; the loop then drops it."""
        r = self.n_runs
        per_run = hybrid.reshape(r, -1, *hybrid.shape[1:])
        bad = ~np.isfinite(per_run).reshape(r, -1).all(axis=1)
        if not bad.any():
            return hybrid
        per_run = per_run.copy()
        per_run[bad] = (0.0, 1.0, 1.0)
        self.pack.mark_diverged(bad, "actions not finite")
        return per_run.reshape(hybrid.shape)

    def not_finite(self, bad: np.ndarray) -> None:
        """The device-resident path's flags of runs whose actions were not finite (they were given
        the all-local action on the device): marked diverged."""
        if bad.any():
            self.pack.mark_diverged(bad, "actions not finite")

    def plasticity_reset(self, episode: int) -> list[dict]:
        return [{} for _ in range(self.n_runs)]  # packable() keeps runs with resets out of packs

    def start_monitor(self, episode: int) -> None:
        if self.monitor is not None:
            self.monitor.start_episode(episode)

    def end_monitor(self, episode: int) -> list | None:
        """Each run's measured rows of the episode (None each: not measured); None: no monitor."""
        if self.monitor is None:
            return None
        return self.pack.split_monitor_rows(self.monitor.end_episode(episode))

    def write_back(self, i: int) -> None:
        self.pack._get(i)  # run i's single-run learner holds its slice (its checkpoint format)

    def diverged_what(self, i: int, member) -> str:
        return (
            f"{self.pack.diverged_why[i]} ({member.learner.diverged_hint}); the run was dropped from its "
            "pack, the others went on"
        )


def packed_envs(members: list) -> tuple:
    """One training environment batch (each run's task stream) and one evaluation batch of R x E
    environments (the fixed evaluation episodes once per run): (env, eval_env, eval_table)."""
    m0, r = members[0], len(members)
    cfg = m0.cfg
    env = MECEnv(cfg.env, r, cfg.rng_mode, cfg.env_seed, devices=m0.env.devices)
    env.source = StreamTasks([m.env.source.streams[0] for m in members], r)
    t = m0.eval_table
    if t is None:
        return env, None, None
    table = EpisodeTable(np.tile(t.tasks, (r, 1, 1, 1)), np.tile(t.harvest, (r, 1, 1)), t.final_stream_state)
    eval_env = MECEnv(cfg.env, r * t.tasks.shape[0], cfg.rng_mode, cfg.env_seed, devices=m0.env.devices)
    return env, eval_env, table


# ------------------------------------------------------------------------------ the loop
class Engine:
    """Trains its members (``attach``, then ``train``) with one batched learner; a subclass says
    which (``make_batch``) and on which environments (``make_envs``). ``summaries``: each finished
    member's :class:`RunSummary` by run directory."""

    def __init__(self):
        self.members: list = []
        self.batch = None
        self.summaries: dict = {}
        self.env = self.eval_env = self.eval_table = None
        self._device: DevicePath | bool | None = None  # built at first use; False: the host path
        self.t_start = time.perf_counter()

    def make_batch(self, members: list):
        return PackedBatch(members)

    def make_envs(self, members: list) -> tuple:
        return packed_envs(members)

    def attach(self, members: list) -> None:
        """(Re)make the batched learner and the environments of these members."""
        self.members = list(members)
        self.batch = self.make_batch(self.members)
        for i, m in enumerate(self.members):
            m.engine, m.index = self, i
        self.env, self.eval_env, self.eval_table = self.make_envs(self.members)
        self._device = None

    @property
    def device_path(self) -> DevicePath | None:
        """The device-resident path of these members (``training.device_resident``), None: the host's."""
        if self._device is None:
            self._device = DevicePath.make(self.members, self.batch.program) or False
        return self._device or None

    # ------------------------------------------------------------------ evaluation and one episode
    def evaluations(self) -> list[dict]:
        """Each member's evaluation row (the hook a one-run engine routes through its Trainer)."""
        return self.evaluate()

    def episodes(self, ep: int) -> list[dict]:
        """Each member's row of episode ``ep`` (the hook a one-run engine routes through its Trainer)."""
        return self.episode(ep)

    def evaluate(self) -> list[dict]:
        """Greedy policies on the fixed evaluation episodes, all runs' as one batch of environments."""
        env, r, table = self.eval_env, len(self.members), self.eval_table
        t_max = self.members[0].cfg.env.max_steps
        if self.device_path is not None:
            acc, bad = self.device_path.evaluate()
            self.batch.not_finite(bad)
        else:
            obs = env.reset(table=table)
            acc = np.zeros((4, env.num_envs))
            for _ in range(t_max):
                act = self.batch.act(obs, explore=False)
                obs, rew, _, info = env.step(self.batch.finite_actions(act.hybrid))
                acc += [rew, act.exceeded, info["energy_penalty_frac"], info["time_penalty_frac"]]
        for m in self.members:
            m.rng.after_evaluation(table.final_stream_state)
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
        """One episode of every member: its evaluation (when scheduled), one training episode of
        exploration observed by the learner, one training step; one metrics row per member."""
        m0, batch, env, r = self.members[0], self.batch, self.env, len(self.members)
        cfg = m0.cfg
        t0 = time.perf_counter()
        ebt = cfg.agent.replay.episodes_before_train
        device = self.device_path
        state = env.reset() if device is None else device.reset_train()
        if self.eval_env is not None and m0.evaluates(ep):
            rows = [{"episode": ep, **e} for e in self.evaluations()]
        else:
            rows = [{"episode": ep, **dict.fromkeys(EVAL_FIELDS, np.nan)} for _ in range(r)]
        t_eval = time.perf_counter()
        eps = batch.epsilon(ep, cfg.training.episodes)
        t_max = cfg.env.max_steps
        if device is not None:  # the same episode on the device (experiment/device.py)
            buf, acc, bad = device.train_episode(eps)
            batch.not_finite(bad)
        else:
            buf = {k: np.zeros((r, t_max, *shape)) for k, shape in batch.transition_layout().items()}
            acc = np.zeros((4, r))
            for t in range(t_max):
                act = batch.act(state, explore=True, epsilon=eps)
                nxt, rew, done, info = env.step(batch.finite_actions(act.hybrid))
                buf["states"][:, t] = state
                buf["actions"][:, t] = act.actor
                buf["selected"][:, t] = act.selected
                buf["reward"][:, t] = rew
                buf["next_states"][:, t] = nxt
                buf["done"][:, t] = float(done)
                acc += [rew, act.exceeded, info["energy_penalty_frac"], info["time_penalty_frac"]]
                state = nxt
        batch.observe(buf)
        t_act = time.perf_counter()
        stats = batch.train() if ep + 1 > ebt else [{} for _ in range(r)]  # published: after ebt episodes
        done_resets = batch.plasticity_reset(ep) if ep + 1 > ebt else [{} for _ in range(r)]
        t_train = time.perf_counter()
        sizes, times = batch.replay_size, (t0, t_eval, t_act, t_train)
        for i, row in enumerate(rows):
            row.update(training_row(acc[:, i], t_max, eps[i], stats[i], sizes[i], times, r), **done_resets[i])
        return rows

    # ------------------------------------------------------------------ the runs
    def train(self, start: int) -> None:
        """Episodes ``start`` ... of the attached members until each ends (the last episode, a
        callback's stop, a divergence); a signal ends them all (status ``interrupted``,
        KeyboardInterrupt); an error fails those still training (status ``failed``) and is raised."""
        members, self._left = list(self.members), set()
        self.t_start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            for m in members:
                m._status("running", start)
                stack.enter_context(m.live.beating())
            try:
                for m in members:
                    m._call("on_run_start", start)
                self._loop(start)
                for m in list(self.members):
                    self._leave(m)
            except Exception:
                for m in self.members:
                    if id(m) not in self._left:
                        m._status("failed", m.episodes_done, error=traceback.format_exc())
                raise
            finally:
                for m in members:
                    m.close_callbacks()

    def _loop(self, start: int) -> None:
        ep, total = start, self.members[0].total
        while self.members and ep < total:
            rows, t_mon = self._step(ep)
            keep = []
            for i, (m, row) in enumerate(zip(self.members, rows)):
                if self.batch.diverged[i]:
                    self._leave(m, self.batch.diverged_what(i, m))
                elif not self._record(m, ep, row, t_mon) and ep + 1 < total:
                    self._leave(m)  # a callback asked to stop (after its checkpoint)
                else:
                    keep.append(i)
            if any(m.stop.requested for m in self.members):
                for i in keep:
                    self.members[i]._status("interrupted", self.members[i].episodes_done)
                raise KeyboardInterrupt
            if len(keep) < len(self.members):
                self._drop(keep)
            ep += 1

    def _step(self, ep: int) -> tuple[list, float]:
        """Episode ``ep`` of every member with their callbacks' ``on_episode_start`` and the batch's
        monitor: (rows, each run's share of the monitor's time). A run alone whose learner raised
        ``FloatingPointError`` is marked diverged (its row: None)."""
        for m in self.members:
            m._call("on_episode_start", ep)
        t0 = time.perf_counter()
        self.batch.start_monitor(ep)
        t_mon = time.perf_counter() - t0
        try:
            rows = self.episodes(ep)
        except FloatingPointError as err:
            if not self.batch.raises:
                raise
            self.batch.mark_diverged(np.ones(1, dtype=bool), f"{type(err).__name__}: {err}")
            return [None], 0.0
        t0 = time.perf_counter()
        measured = self.batch.end_monitor(ep)
        if measured is None:
            return rows, 0.0
        for i, (m, row, mine) in enumerate(zip(self.members, rows, measured)):
            writer = next((cb for cb in m.callbacks if isinstance(cb, PackRunMonitor)), None)
            if writer is not None and not self.batch.diverged[i]:
                writer.take(ep, mine, row)
        return rows, (t_mon + time.perf_counter() - t0) / len(self.members)

    def _record(self, m, ep: int, row: dict, t_mon: float) -> bool:
        """Member ``m``'s row of episode ``ep`` kept and shown to its callbacks; False when one of
        them asks to stop."""
        row["time_monitor_s"] = t_mon  # a run's own monitor callback sets its own time
        m.rows.append(row)
        m.episodes_done = ep + 1
        for cb in m.callbacks:  # every callback sees the row; any of them may ask to stop
            m.early_stop = not cb.on_episode_end(m, row) or m.early_stop
        return not m.early_stop

    def _leave(self, m, diverged: str | None = None) -> None:
        """Member ``m`` ends: its callbacks' ``on_run_end`` (stop events), then status ``done``
        (early-stopped when before the last episode) or, with ``diverged`` (what was not finite),
        ``diverged`` with its metrics up to the episode before (``Trainer.end_diverged``)."""
        end: dict = {}
        for cb in m.callbacks:
            end.update(cb.on_run_end(m))
        m.close_callbacks()
        ep = m.episodes_done
        if diverged is not None:
            self.summaries[m.run_dir] = m.end_diverged(diverged_error(diverged, ep), end, self.t_start)
        else:
            m._status("done", ep, early_stopped=ep < m.total, stops=end.get("stops"))
            df = pd.DataFrame(m.rows) if m.rows else m.rd.metrics()
            wall = time.perf_counter() - self.t_start
            self.summaries[m.run_dir] = RunSummary(m.run_dir, "done", ep, final_return(df), wall)
        self._left.add(id(m))  # ended: an error after this does not make it failed

    def _drop(self, keep: list[int]) -> None:
        """Go on with these members only (indices into the current batch): their slices written back
        to their learners, the batch and environments made again for them."""
        for i in keep:
            self.batch.write_back(i)
        kept = [self.members[i] for i in keep]
        if kept:
            self.attach(kept)
        else:
            self.members = []


class SoloEngine(Engine):
    """The engine of one run alone (R = 1): its own learner (:class:`SoloBatch`) and environments.
    Episodes and evaluations go through the run's ``Trainer.episode`` / ``Trainer.evaluate``, so
    what wraps those (a test's fault injection, the parity probes) sees each of them."""

    def make_batch(self, members: list) -> SoloBatch:
        return SoloBatch(members[0].learner)

    def make_envs(self, members: list) -> tuple:
        m = members[0]
        return m.env, m.eval_env, m.eval_table

    def evaluations(self) -> list[dict]:
        return [self.members[0].evaluate()]

    def episodes(self, ep: int) -> list[dict]:
        return [self.members[0].episode(ep)]
