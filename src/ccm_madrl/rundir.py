"""The on-disk format of runs and sweeps, in one place: file names, atomic writes, status states
(with the heartbeat's ``stale`` rule) and the metric definitions (final return). Every other module
reads and writes run and sweep directories through :class:`RunDir` and :class:`SweepDir`; the layout
is documented in ``docs/run_store.md``.

Every file of the run store is written through :func:`atomic_write`: a temporary file created
exclusively under a fresh name in the target's directory (``tempfile.mkstemp``: ``O_EXCL``, no link
followed), synced, then renamed over the target. A received run or sweep directory is data: a
target that is a symbolic link, or whose directory leads outside the run's (or sweep's) directory, is
refused (:class:`UnsafePath`), and :meth:`RunDir.check_safe` refuses a run directory holding any
symbolic link before a run writes into it.

Run directory::

    config.yaml        the resolved config          provenance.json   how it was made (every segment)
    learner.json       the learner's describe()
    metrics.parquet    one row per episode          monitor/          gradient-flow measurements
    checkpoint.pt      latest checkpoint            status.json       state and heartbeat
    checkpoint.prev.pt the one before it            tb/               TensorBoard events
    .lock              held (flock) by the process that trains the run, naming its pid and host

Sweep directory::

    sweep.yaml         the sweep file as resolved   manifest.json     one entry per run
    runs/<id>/         a run directory               .lock             held by the sweep process
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import jsonio

CONFIG = "config.yaml"
STATUS = "status.json"
METRICS = "metrics.parquet"
PROVENANCE = "provenance.json"
LEARNER = "learner.json"  # the learner's describe(): layer sizes, parameters, activations
CHECKPOINT = "checkpoint.pt"
PREV_CHECKPOINT = "checkpoint.prev.pt"
MONITOR = "monitor"
TENSORBOARD = "tb"
MANIFEST = "manifest.json"
SWEEP_FILE = "sweep.yaml"
RUNS = "runs"
LOCK = ".lock"  # held (flock) by the one process that writes a run or sweep directory

# status.json's "state" of a run while and after it runs; a reader also sees "stale" (see
# effective_state) and, for a run without status.json, "pending" (the manifest's word for a run to
# run) / "unknown". One vocabulary: the dry run, the manifest and docs/run_store.md use these words.
RUN_STATES = ("running", "interrupted", "failed", "diverged", "done")
# a manifest entry's "status": pending (to run), queued (handed to the backend), then a run's end state
MANIFEST_STATES = ("pending", "queued", "interrupted", "done", "diverged", "failed")
# end states that are results: a sweep does not run them again. "diverged": training stopped at a
# non-finite loss, priority or action; the run is deterministic given its config, so running it
# again diverges again. Its metrics and monitor data up to its last whole episode are kept.
FINISHED_STATES = ("done", "diverged")
STALE_AFTER_S = 60.0  # a 'running' status without a heartbeat for this long is a dead run
HEARTBEAT_EVERY_S = 5.0  # status.json's heartbeat is refreshed this often while a run is alive
FINAL_EPISODES = 100  # "final return": mean evaluation return over the last this many evaluations


# ------------------------------------------------------------------------------ file primitives
def read_json(path: Path) -> dict:
    """A JSON file's object; {} when it is absent or unreadable (a reader never fails on it)."""
    try:
        out = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


class UnsafePath(ValueError):
    """A path of the run store that is a symbolic link or leads outside its directory: refused."""


def check_inside(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` (a file to write) unless it is a symbolic link or, with ``root``, any directory
    between ``root`` and it is one, or it resolves outside ``root``: then :class:`UnsafePath`."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafePath(
            f"{path}: is a symbolic link; refused (files of a run or sweep directory must be regular files)"
        )
    if root is not None:
        root = Path(root)
        try:
            rel = path.parent.relative_to(root)
        except ValueError:
            rel = None
        for i in range(len(rel.parts) if rel is not None else 0):
            d = root.joinpath(*rel.parts[: i + 1])
            if d.is_symlink():
                raise UnsafePath(
                    f"{d}: is a symbolic link; refused (directories inside {root} must be real ones)"
                )
        if rel is None or not path.parent.resolve().is_relative_to(root.resolve()):
            raise UnsafePath(f"{path}: leads outside {root}; refused")
    return path


def write_staged(path: str | Path, write: Callable | bytes | str, root: str | Path | None = None) -> Path:
    """The first half of :func:`atomic_write`: ``write(f)`` (or the bytes or text given) into a
    temporary file created exclusively (``mkstemp``: a fresh name, ``O_EXCL``, no link followed) in
    ``path``'s directory and synced; returns it, for the caller to ``os.replace`` onto ``path``
    (removed again when writing fails). ``path`` must pass :func:`check_inside` (``root``: the run
    or sweep directory it belongs to)."""
    path = check_inside(path, root)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                f.write(write.encode() if isinstance(write, str) else write)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        discard(tmp)
        raise
    return Path(tmp)


def discard(tmp: str | Path) -> None:
    """Remove a temporary file of :func:`write_staged` (gone already: nothing to do)."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write(path: str | Path, write: Callable | bytes | str, root: str | Path | None = None) -> None:
    """Write ``path`` atomically and without following links: :func:`write_staged`, then
    ``os.replace`` onto ``path`` (a link there would be replaced, not followed; it is refused
    before that)."""
    tmp = write_staged(path, write, root)
    try:
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def write_text(path: str | Path, text: str, root: str | Path | None = None) -> None:
    """Text, atomically (:func:`atomic_write`)."""
    atomic_write(path, text, root)


def write_json(path: str | Path, obj, root: str | Path | None = None) -> None:
    """Strict JSON (``jsonio.dumps``), atomically (:func:`atomic_write`)."""
    atomic_write(path, jsonio.dumps(obj), root)


def write_parquet(path: str | Path, df: pd.DataFrame, root: str | Path | None = None, **kwargs) -> None:
    """A DataFrame as Parquet, atomically (:func:`atomic_write`); ``kwargs`` go to ``to_parquet``
    (e.g. ``compression="zstd"``)."""
    atomic_write(path, lambda f: df.to_parquet(f, index=False, **kwargs), root)


def inside(root: str | Path, name: str) -> Path:
    """``root / name`` (a run or sweep directory named by a label), refused (:class:`UnsafePath`)
    when it does not stay inside ``root`` (``..``, an absolute path, a link out)."""
    root = Path(root)
    path = root / name
    if (
        Path(name).is_absolute()
        or not path.resolve().is_relative_to(root.resolve())
        or path.resolve() == root.resolve()
    ):
        raise UnsafePath(f"{path}: leads outside {root}; refused (a name is a label, not a path)")
    return path


def links_in(root: str | Path) -> list[Path]:
    """The symbolic links anywhere inside the directory ``root`` (not following any)."""
    found = []
    for d, dirs, files in os.walk(root, followlinks=False):
        found += [Path(d) / n for n in sorted(dirs + files) if (Path(d) / n).is_symlink()]
    return found


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A Parquet file (only ``columns``, those of them it has, when given), or an empty DataFrame
    when it is absent."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    try:
        if columns is not None:
            import pyarrow.parquet as pq

            have = set(pq.read_schema(path).names)
            columns = [c for c in columns if c in have]
        return pd.read_parquet(path, columns=columns)
    except Exception as err:  # noqa: BLE001 - truncated, not Parquet, unreadable: name the file
        raise DamagedFile(
            f"{path}: not a readable Parquet file ({type(err).__name__}: {' '.join(str(err).split())[:160]})"
        ) from None


class DamagedFile(ValueError):
    """A file of the run store that cannot be read as what it should be (named in the message)."""


class DirBusy(ValueError):
    """Another live process holds the directory's lock (:func:`dir_lock`)."""


@contextmanager
def dir_lock(path: str | Path, what: str, busy: type[DirBusy] = DirBusy, hint: str = ""):
    """Hold the exclusive lock of the directory ``path`` (``fcntl.flock`` on ``path/.lock``, which
    records the holder's pid and host) while inside; the operating system releases it when the
    process ends, however it ends (a crash, SIGKILL). A second process is refused at once:
    ``busy`` naming the holder's pid and host (``what``: "run directory", "sweep directory")."""
    path = Path(path)
    lock = check_inside(path / LOCK, path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_json(lock)
            who = (
                f"pid {holder.get('pid')} on host {holder.get('host')}"
                if holder
                else "another process (starting now)"
            )
            raise busy(f"{what} {path}: in use by {who}{hint}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ definitions
def effective_state(status: dict, now: float | None = None) -> str:
    """A run's state from its ``status.json``: ``stale`` for a 'running' run whose process is gone
    (same host, no such process) or whose heartbeat is older than :data:`STALE_AFTER_S`."""
    state = status.get("state", "unknown")
    beat = status.get("heartbeat_unix")
    if state != "running" or beat is None:
        return state
    if status.get("host") == socket.gethostname() and status.get("pid") is not None:
        try:
            os.kill(int(status["pid"]), 0)
            if _zombie(int(status["pid"])):  # killed, not yet reaped (an orphan whose init does not reap)
                return "stale"
        except ProcessLookupError:
            return "stale"
        except (PermissionError, OSError, ValueError):
            pass
    return "stale" if (now or time.time()) - float(beat) > STALE_AFTER_S else state


def _zombie(pid: int) -> bool:
    """Whether process ``pid`` has exited but is not reaped yet (Linux: state Z in /proc; elsewhere
    False)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def final_return(df: pd.DataFrame, last: int = FINAL_EPISODES, column: str = "eval_return") -> float:
    """The mean of the last ``last`` finite values of ``column`` (NaN when there are none)."""
    ev = df[column].dropna() if column in df else pd.Series(dtype=float)
    return float(ev.tail(last).mean()) if len(ev) else float("nan")


class LiveStatus:
    """A running process's status.json: each state written with its pid, host and a heartbeat that
    :meth:`beating` refreshes from a thread (also during a long episode or library call), so that a
    run killed without a chance to write its end state stops beating and reads as ``stale``."""

    def __init__(self, rundir: RunDir):
        self.rundir = rundir
        self._lock = threading.Lock()
        self._last: dict | None = None

    def set(self, state: str, **fields) -> None:
        self._last = {"state": state, **fields, "pid": os.getpid(), "host": socket.gethostname()}
        self.beat()

    def beat(self) -> None:
        """(Re)write status.json with a fresh heartbeat."""
        with self._lock:
            if self._last is None:
                return
            now = time.time()
            iso = datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")
            self.rundir.write_status(dict(self._last, heartbeat=iso, heartbeat_unix=now))

    @contextmanager
    def beating(self, every_s: float = HEARTBEAT_EVERY_S):
        done = threading.Event()

        def beat() -> None:
            while not done.wait(every_s):
                self.beat()

        t = threading.Thread(target=beat, name="ccm-madrl-heartbeat", daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()


# ------------------------------------------------------------------------------ directories
class RunDir:
    """One run directory: its paths and its files, read tolerantly and written atomically."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / CONFIG)
    status_path = property(lambda self: self.path / STATUS)
    metrics_path = property(lambda self: self.path / METRICS)
    provenance_path = property(lambda self: self.path / PROVENANCE)
    checkpoint = property(lambda self: self.path / CHECKPOINT)
    prev_checkpoint = property(lambda self: self.path / PREV_CHECKPOINT)
    monitor_dir = property(lambda self: self.path / MONITOR)
    tensorboard_dir = property(lambda self: self.path / TENSORBOARD)

    def is_run(self) -> bool:
        return self.config_path.exists()

    def status(self) -> dict:
        return read_json(self.status_path)

    def write_status(self, status: dict) -> None:
        write_json(self.status_path, status, self.path)

    def live_status(self) -> LiveStatus:
        """The status writer of the process running this directory's run (heartbeat included)."""
        return LiveStatus(self)

    def state(self, now: float | None = None) -> str:
        """The run's effective state; ``pending`` (not started) without a status.json."""
        st = self.status()
        return effective_state(st, now) if st else "pending"

    def trained_elsewhere(self) -> str | None:
        """Who trains this run now, when another live process does ("pid P on host H, heartbeat
        T"): its status says running, with a heartbeat younger than :data:`STALE_AFTER_S` and, on
        this host, a process that exists. None otherwise (not running, stale, or this process)."""
        st = self.status()
        if not st or effective_state(st) != "running":
            return None
        if st.get("host") == socket.gethostname() and st.get("pid") == os.getpid():
            return None
        return f"pid {st.get('pid')} on host {st.get('host')}, heartbeat {st.get('heartbeat')}"

    def is_done(self, config_id: str) -> bool:
        """Whether this directory holds the finished run of the experiment ``config_id``."""
        st = self.status()
        return st.get("state") == "done" and st.get("config_id") == config_id

    def finished_state(self, config_id: str) -> str | None:
        """The end state (``FINISHED_STATES``: done or diverged) of the experiment ``config_id`` in
        this directory; None while it is not finished."""
        st = self.status()
        state = st.get("state")
        return state if state in FINISHED_STATES and st.get("config_id") == config_id else None

    def metrics(self, columns: list[str] | None = None) -> pd.DataFrame:
        return read_parquet(self.metrics_path, columns)

    def write_metrics(self, df: pd.DataFrame) -> None:
        write_parquet(self.metrics_path, df, self.path)

    def provenance(self) -> dict:
        return read_json(self.provenance_path)

    def write_provenance(self, prov: dict) -> None:
        write_json(self.provenance_path, prov, self.path)

    def learner(self) -> dict:
        """The learner's ``describe()`` as the run wrote it ({} for runs from before 0.2.0)."""
        return read_json(self.path / LEARNER)

    def write_learner(self, description: dict) -> None:
        write_json(self.path / LEARNER, description, self.path)

    def write_config(self, text: str) -> None:
        write_text(self.config_path, text, self.path)

    def check_safe(self) -> None:
        """Refuse (:class:`UnsafePath`, naming it) a run directory holding a symbolic link anywhere:
        a received run directory could point a file the run writes at any file of the user."""
        links = links_in(self.path) if self.path.is_dir() else []
        if links:
            more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
            raise UnsafePath(
                f"{links[0]}: is a symbolic link{more}; refused (a run directory must hold regular files only)"
            )


class SweepDir:
    """One sweep directory: its sweep file, its manifest and its run directories."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    manifest_path = property(lambda self: self.path / MANIFEST)
    sweep_file = property(lambda self: self.path / SWEEP_FILE)
    runs_dir = property(lambda self: self.path / RUNS)

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs_dir / run_id)

    def run_dirs(self) -> Iterator[RunDir]:
        """The run directories it holds (``runs/<id>``, or runs directly inside it), sorted."""
        root = self.runs_dir if self.runs_dir.is_dir() else self.path
        for d in sorted(root.iterdir()):
            if d.is_dir() and RunDir(d).is_run():
                yield RunDir(d)

    def manifest(self) -> dict:
        return read_json(self.manifest_path)

    def write_manifest(self, name: str, runs: list[dict]) -> None:
        write_json(self.manifest_path, {"sweep": name, "runs": runs}, self.path)

    def write_file(self, name: str, write: Callable | bytes | str) -> Path:
        """A file of the sweep (``name`` relative to it: ``sweep.yaml``, ``jobs.json``), atomically."""
        atomic_write(self.path / name, write, self.path)
        return self.path / name

    def check_safe(self) -> None:
        """Refuse (:class:`UnsafePath`) a sweep directory whose own files, ``runs/`` or any run
        directory in it is a symbolic link (each run's files are checked by its run:
        :meth:`RunDir.check_safe`)."""
        if not self.path.is_dir():
            return
        entries = [self.path / n for n in os.listdir(self.path)]
        if self.runs_dir.is_dir() and not self.runs_dir.is_symlink():
            entries += [self.runs_dir / n for n in os.listdir(self.runs_dir)]
        for p in entries:
            if p.is_symlink():
                raise UnsafePath(f"{p}: is a symbolic link; refused (a sweep directory must hold no links)")
