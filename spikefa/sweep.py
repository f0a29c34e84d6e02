"""Sweeps over seeds, feedback variants and model keys, run on Dask, and their summary.

The paper's figures are means over 20 simulations with new random feedback each time
(Lillicrap et al. 2016, Fig. 3a: "error bars are +-1 s.d."). A sweep runs such a set:
every point of a grid (or list) of conditions is an ordinary spikefa run
(:func:`spikefa.train.train`) writing its own run file into the sweep folder, executed
as one task on a ``dask.distributed`` cluster, a local one sized to the machine by
default, or an existing one given by its scheduler address.

Sweep file (TOML)::

    name = "small-variants"        # optional; default: the file's stem
    base = "small"                 # bundled model name or path to a model file
    out = "runs/sweep-small"       # sweep folder (relative to the working directory)
    epochs = 10                    # optional: train.epochs for every run
    workers = 2                    # optional: local cluster size (default: the cores we may use)

    [set]                          # optional: keys fixed for every run
    "test.readout" = "sum"

    [grid]                         # every combination of these lists
    seed = [1, 2, 3, 4, 5]         # shorthand for run.seed
    "model.feedback" = ["fa", "transport", "dfa", "shallow"]

    [[runs]]                       # optional: a list of points, each crossed with the grid
    "model.eta" = 1e-3
    [[runs]]
    "model.eta" = 5e-3
    base = "tiny"                  # a point may change the base model

Keys are the model file's dotted keys (``section.key``); ``seed`` stands for
``run.seed``; nested tables (``[grid.model]``) are the same as dotted keys. Precedence:
a point's ``[[runs]]`` and ``[grid]`` keys over ``[set]`` (a key in both ``[[runs]]`` and
``[grid]`` is an error).

The sweep folder holds

``{name}-{feedback}-seed{seed}-{hash}.h5``
    one run file per point; ``hash`` is the first 12 hex digits of the SHA-256 of the
    resolved config less its `[record]` table and execution-only run keys, so a run is identified by what it
    computes, not by where it sits in the sweep file.
``sweep.json``
    the manifest: the sweep definition and one entry per point (id, file, overrides,
    status ``done``/``pending``/``running``/``failed``, error and traceback, test
    error, wall time, worker).
``sweep-log.jsonl``
    one JSON line per event (session start and end, run started, finished, failed,
    re-used, stopped, and the notes a run logged on its worker, which the sweep also
    prints above its progress bar), appended across sessions.

A run counts as done when its file exists, is ``complete`` and holds the same resolved
config (same hash), or that config as a resume changed it (a point extended with ``spikefa
train --resume --epochs``: ``sweep-report`` lists it in a row of its own length); done runs
are never run again, so a stopped sweep is resumed by starting it again, and points added
to the sweep file later only run what is new. A
run that was cut off is continued from its checkpoint when it has one, else restarted.
A point whose keys do not make a valid model (:class:`ConfigError`) or whose run raises
is recorded as failed with its error; the others go on.

Notes
-----
Each local worker is a process with one thread, started with ``NUMBA_NUM_THREADS=1``:
one run per core, no oversubscription. Workers of an existing cluster must see the
sweep folder (a shared file system) and should be started with ``NUMBA_NUM_THREADS=1``
and ``--nthreads 1``. Stopping a sweep (Ctrl-C, SIGTERM) stops its running runs through a
file in the sweep folder (``.stop-SESSION``): each writes its checkpoint at the end of its
block and is continued from there when the sweep is started again. A run file is locked
while it is written (``RUN.h5.lock``), so a restarted sweep reports a run that some worker
still writes as busy instead of writing the same file twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback as tb_module
import uuid
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .config import Config, ConfigError, flat_keys, load_config
from .interrupt import StopFile, StopRequest
from .runfile import RunFileError, pid_alive, write_whole

MANIFEST = "sweep.json"
LOG = "sweep-log.jsonl"
LOCK = "sweep.lock"
SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
CURVES_PNG = "error-curves.png"
HASH_LEN = 12
SWEEP_KEYS = ("name", "description", "base", "out", "epochs", "workers", "data_dir", "set", "grid", "runs")


class SweepError(ConfigError):
    """A sweep file that cannot be read as a whole (as opposed to one bad point)."""


class RunLockedError(RunFileError):
    """A run file is being written by another live process."""


# ------------------------------------------------------------------------- the sweep file
@dataclass(frozen=True)
class Sweep:
    """A sweep definition: a base model and the points to run (see the module docstring)."""

    name: str = "sweep"
    description: str = ""
    base: str = "small"
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    runs: tuple = ()
    out: str | None = None
    workers: int | None = None
    data_dir: str | None = None

    def points(self) -> list[dict]:
        """Every point as a flat dict of overrides (``base`` and dotted keys), in file order.

        The grid varies fastest in its last key, so ``seed`` first and ``model.feedback``
        second lists the variants of seed 1, then those of seed 2, ... The ``[[runs]]``
        entries form the outer loop.
        """
        keys = list(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        out = []
        for entry in self.runs or ({},):
            for combo in combos:
                point = {"base": self.base, **self.fixed, **entry, **combo}
                out.append(point)
        return out

    def to_dict(self) -> dict:
        d = dict(name=self.name, description=self.description, base=self.base, set=dict(self.fixed),
                 grid={k: list(v) for k, v in self.grid.items()}, runs=[dict(r) for r in self.runs])
        for key in ("out", "workers", "data_dir"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d


def _flatten(table: dict, prefix: str = "") -> dict:
    """``{"model": {"feedback": x}}`` -> ``{"model.feedback": x}``; ``seed`` -> ``run.seed``."""
    flat = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, full + "."))
            continue
        if full == "seed":
            full = "run.seed"
        if full in flat:
            raise SweepError(f"key {full!r} is given twice (seed is run.seed)")
        flat[full] = value
    return flat


def load_sweep(source) -> Sweep:
    """Read a sweep file (path) or a dict with the same layout into a :class:`Sweep`.

    Raises
    ------
    SweepError
        The file cannot be read, has an unknown top-level key, or its tables do not have
        the expected shape. Keys that do not make a valid model are *not* checked here:
        they fail their own points when the sweep runs.
    """
    if isinstance(source, Sweep):
        return source
    default_name = "sweep"
    if isinstance(source, dict):
        d = dict(source)
    else:
        import tomllib

        path = Path(source)
        default_name = path.stem
        try:
            with open(path, "rb") as fh:
                d = tomllib.load(fh)
        except FileNotFoundError:
            raise SweepError(f"sweep file {str(path)!r} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{path}: not valid TOML: {exc}") from None
    unknown = [k for k in d if k not in SWEEP_KEYS]
    if unknown:
        raise SweepError(f"unknown sweep key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(SWEEP_KEYS)} "
                         "(model keys go in [set], [grid] or [[runs]] as \"section.key\")")
    base = d.get("base", "small")
    if not isinstance(base, str):
        raise SweepError(f"base = {base!r}: expected a bundled model name or a path to a model file")
    fixed = _flatten(_table(d, "set"))
    if "epochs" in d:
        if "train.epochs" in fixed:
            raise SweepError("epochs and [set] train.epochs both given; keep one")
        fixed["train.epochs"] = d["epochs"]
    grid = _flatten(_table(d, "grid"))
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"[grid] {key} = {values!r}: expected a non-empty list of values")
    runs = d.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise SweepError("runs must be a list of tables ([[runs]] entries)")
    runs = tuple(_flatten(r) for r in runs)
    for i, entry in enumerate(runs):
        both = sorted(set(entry) & set(grid))
        if both:
            raise SweepError(f"[[runs]] entry {i + 1} sets {', '.join(both)}, which [grid] also varies")
    if "base" in fixed:
        raise SweepError("put base at the top of the sweep file, not in [set]")
    workers = d.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"workers = {workers!r}: expected a positive integer")
    out = d.get("out")
    if out is not None and not isinstance(out, str):
        raise SweepError(f"out = {out!r}: expected a folder path")
    return Sweep(name=str(d.get("name", default_name)), description=str(d.get("description", "")), base=base,
                 fixed=fixed, grid=grid, runs=runs, out=out, workers=workers, data_dir=d.get("data_dir"))


def _table(d: dict, key: str) -> dict:
    value = d.get(key, {})
    if not isinstance(value, dict):
        raise SweepError(f"{key} must be a table ([{key}])")
    return value


def resolve(point: dict) -> Config:
    """The config of one point: its base model with its dotted keys applied.

    Raises
    ------
    ConfigError
        Unknown base model, a key that is not ``section.key`` of a model file, or a bad value.
    """
    sections: dict[str, dict] = {}
    top = {}
    for key, value in point.items():
        if key == "base":
            continue
        if key in ("name", "description"):
            top[key] = value
            continue
        section, dot, name = key.partition(".")
        if not dot or not name:
            raise ConfigError(f"sweep key {key!r} is not a model key; use section.key (model.feedback) or seed")
        sections.setdefault(section, {})[name] = value
    return load_config(point.get("base", "small")).replace(**top, **sections)


# keys that change how a run is executed or what it records, never what it computes
NOT_IDENTITY = {("run", "block_steps"), ("run", "checkpoint_minutes"), ("run", "backend")}

# keys added after sweeps were first run, with the value that reproduces the runs made before
# them: left out of the hash at that value, so earlier sweep folders keep their run names
LATER_KEYS = {("model", "feedback_storage"): "float", ("run", "forward_pass"): "full"}


def _what_it_computes(cfg: Config) -> dict:
    """The resolved config as a dict without the ``[record]`` table and the run keys that
    cannot change a run's results (NOT_IDENTITY): what both a run's hash and its sweep
    condition are made of."""
    d = cfg.to_dict()
    d.pop("record", None)
    for section, key in NOT_IDENTITY:
        d[section].pop(key, None)
    return d


def config_hash(cfg: Config) -> str:
    """Short content hash of what a run computes (:func:`_what_it_computes`), less the
    keys added later at the value that reproduces older runs (LATER_KEYS), so that earlier
    sweep folders keep their run names."""
    d = _what_it_computes(cfg)
    for (section, key), old in LATER_KEYS.items():
        if d[section].get(key) == old:
            del d[section][key]
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:HASH_LEN]


def run_file_name(cfg: Config) -> str:
    stem = re.sub(r"[^\w.-]+", "_", f"{cfg.name}-{cfg.model.feedback}-seed{cfg.run.seed}")
    return f"{stem}-{config_hash(cfg)}.h5"


# ------------------------------------------------------------------------- planning
@dataclass
class SweepRun:
    """One point of a sweep and what became of it."""

    id: str
    overrides: dict
    file: str | None = None
    status: str = "pending"  # pending | running | done | failed
    error: str | None = None
    traceback: str | None = None
    test_error: float | None = None
    wall_s: float | None = None
    worker: str | None = None
    ran_in: str | None = None  # session that finished it (None: re-used from an earlier one)

    def label(self) -> str:
        """The point's keys, its seed last (a failed point has no file name to carry it)."""
        parts = [f"{k}={v}" for k, v in self.overrides.items() if k != "run.seed"]
        if "run.seed" in self.overrides:
            parts.append(f"seed={self.overrides['run.seed']}")
        return ", ".join(parts) or "base"


def same_point(run_cfg: Config, expected_hash: str, planned: Config | None = None) -> bool:
    """Whether a run file's config is the run of the point with this hash: the same config,
    or, given the point's ``planned`` config, one that a resume made of it (the keys a
    resume may change, e.g. ``train.epochs`` raised by ``spikefa train --resume --epochs``,
    as the README suggests for extending a point)."""
    if config_hash(run_cfg) == expected_hash:
        return True
    if planned is None or config_hash(planned) != expected_hash:
        return False
    from .train import RESUMABLE_KEYS

    reset: dict[str, dict] = {}
    for section, key in RESUMABLE_KEYS:
        reset.setdefault(section, {})[key] = getattr(getattr(planned, section), key)
    try:
        return config_hash(run_cfg.replace(**reset)) == expected_hash
    except ConfigError:
        return False


def is_done(path, expected_hash: str, planned: Config | None = None) -> bool:
    """Whether ``path`` is a complete run file of the config with this hash (or, given the
    point's ``planned`` config, of that config resumed with other resumable keys: see
    :func:`same_point`)."""
    from .runfile import Run

    path = Path(path)
    if not path.is_file():
        return False
    try:
        run = Run(path)
    except (RunFileError, ConfigError, KeyError, ValueError):
        return False
    return run.complete and same_point(run.config, expected_hash, planned)


def plan(sweep: Sweep, out) -> list[SweepRun]:
    """Resolve every point and look at the sweep folder: what is done, what is left.

    A point that does not resolve to a valid model comes back ``failed`` with its error.
    Points that resolve to the same config are run once (a warning names them).
    """
    from .runfile import Run

    out = Path(out)
    runs: list[SweepRun] = []
    seen: dict[str, int] = {}
    for i, point in enumerate(sweep.points()):
        overrides = {k: v for k, v in point.items() if k != "base" or v != sweep.base}
        try:
            cfg = resolve(point)
        except ConfigError as exc:
            pid = "invalid-" + hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:8]
            runs.append(SweepRun(id=pid, overrides=overrides, status="failed", error=f"ConfigError: {exc}"))
            continue
        h = config_hash(cfg)
        if h in seen:
            warnings.warn(f"sweep point {i + 1} ({overrides}) is the same model as point {seen[h] + 1}; it runs once",
                          stacklevel=2)
            continue
        seen[h] = i
        r = SweepRun(id=h, overrides=overrides, file=run_file_name(cfg))
        if is_done(out / r.file, h, cfg):
            r.status = "done"
            run = Run(out / r.file)
            r.test_error = run.test_error
            r.wall_s = float(run.attrs.get("wall_s", float("nan")))
        runs.append(r)
    return runs


# ------------------------------------------------------------------------- locks, manifest
@contextmanager
def file_lock(path, what: str):
    """Hold ``path`` (created exclusively) while the block runs; take over stale ones.

    A lock is stale when its holder was on this host and that process is gone (a sweep
    or worker killed with SIGKILL). A lock held on another host cannot be checked from
    here and counts as live.
    """
    path = Path(path)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                host, pid = path.read_text().split()
                pid = int(pid)
            except (OSError, ValueError):
                host, pid = socket.gethostname(), -1  # unreadable: half-written by a killed process
            if host == socket.gethostname() and (pid < 0 or not pid_alive(pid)):
                path.unlink(missing_ok=True)
                continue
            raise RunLockedError(f"{what} is in use by process {pid} on {host} (lock {path}); "
                                 "if no such process runs, delete the lock file") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise RunLockedError(f"could not take the lock {path}")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _write_json(path: Path, data) -> None:
    write_whole(path, lambda f: f.write(json.dumps(data, indent=1, default=str).encode()))


def _log(out: Path, session: str, event: str, **fields) -> None:
    row = dict(time=time.strftime("%Y-%m-%dT%H:%M:%S"), t=time.time(), session=session, event=event, **fields)
    with open(out / LOG, "a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


def read_log(sweep_dir) -> list[dict]:
    """The events of ``sweep-log.jsonl``, oldest first."""
    path = Path(sweep_dir) / LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_manifest(sweep_dir) -> dict:
    path = Path(sweep_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{path} not found: not a sweep folder (run spikefa sweep first)") from None


# ------------------------------------------------------------------------- the task
class _TaskNotes(logging.Handler):
    """On a worker, sends the notes spikefa logs while a sweep's run is trained in this
    thread (``spikefa: note: ...``) to the sweep as events: it logs them and prints them
    above its progress bar. On a worker's stderr they printed over that bar (a local
    cluster) or went where the sweep's user does not look (an existing cluster's worker
    log). Records of other threads are printed as Python prints those of a logger with no
    handler, since this handler, on the ``spikefa`` logger, takes that place."""

    tasks: dict = {}  # thread id -> (worker, topic, run file name)
    _install = threading.Lock()

    @classmethod
    @contextmanager
    def forwarded(cls, worker, topic: str, file: str):
        logger = logging.getLogger("spikefa")
        with cls._install:
            if not any(isinstance(h, cls) for h in logger.handlers):
                logger.addHandler(cls())
        ident = threading.get_ident()
        cls.tasks[ident] = (worker, topic, file)
        try:
            yield
        finally:
            cls.tasks.pop(ident, None)

    def emit(self, record):
        task = self.tasks.get(record.thread)
        if task is None:
            logger = logging.getLogger(record.name)
            while logger is not None:  # another handler on the way to the root: it prints the record
                if any(h is not self for h in logger.handlers):
                    return
                logger = logger.parent if logger.propagate else None
            if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)
            return
        worker, topic, file = task
        try:
            worker.log_event(topic, {"event": "note", "file": file, "message": record.getMessage()})
        except Exception:  # noqa: BLE001 - a note must never fail the run
            self.handleError(record)


def _run_task(cfg_json: str, path: str, data_dir, topic: str, stop_path: str | None = None) -> dict:
    """One run, on a Dask worker: train into ``path`` (or continue its checkpoint).

    ``stop_path``: the file whose existence asks the run to stop at the end of its block
    with a checkpoint, as a Ctrl-C stops ``spikefa train``; the task then returns
    ``stopped=True`` (a task that begins after the stop returns at once)."""
    import numba
    from numba.core import config as numba_config

    # A spawned worker re-imports the parent's __main__ (spikefa.cli imports numba) before the nanny
    # sets NUMBA_NUM_THREADS=1, so numba's config may still hold the core count. Re-read it before
    # the thread pool starts, else numba's next compile finds the two disagree and raises.
    numba_config.reload_config()
    numba.set_num_threads(1)  # one run per worker thread, whatever the worker's environment
    worker = socket.gethostname()
    t0, cpu0 = time.perf_counter(), time.thread_time()
    stop = StopFile(stop_path) if stop_path else None
    if stop is not None and stop.requested:  # queued when the sweep was stopped
        return dict(stopped=True, steps_done=None, worker=worker, resumed=False, task_s=0.0, cpu_s=0.0)
    try:
        from distributed import get_worker

        w = get_worker()
        worker = w.address
        w.log_event(topic, {"event": "started", "file": Path(path).name, "worker": worker})
    except (ImportError, ValueError):
        return _train_task(cfg_json, path, data_dir, stop, worker, t0, cpu0)
    with _TaskNotes.forwarded(w, topic, Path(path).name):
        return _train_task(cfg_json, path, data_dir, stop, worker, t0, cpu0)


def _train_task(cfg_json, path, data_dir, stop, worker, t0, cpu0) -> dict:
    """The body of :func:`_run_task`, once the sweep knows that the run began."""
    from .config import config_from_dict
    from .runfile import Run, checkpoint_config, checkpoint_path
    from .train import train

    cfg = config_from_dict(json.loads(cfg_json))
    path = Path(path)
    with file_lock(path.with_name(path.name + ".lock"), f"run file {path.name}"):
        if is_done(path, config_hash(cfg), cfg):  # finished by a task that outlived an earlier sweep
            run = Run(path)
            return dict(test_error=run.test_error, wall_s=float(run.attrs.get("wall_s", 0.0)), worker=worker,
                        resumed=False, task_s=time.perf_counter() - t0, cpu_s=time.thread_time() - cpu0)
        resume = path.exists() and checkpoint_path(path).exists()
        if resume:
            try:
                checkpoint_config(path)
            except RunFileError:
                resume = False  # an unreadable checkpoint (cut short by a kill): start again
        # an error inside train() propagates: a resumed run's progress is never thrown away
        try:
            res = train(cfg, out=path, data_dir=data_dir, resume=resume, overwrite=not resume, progress=False,
                        stop=stop)
        except KeyboardInterrupt:
            if stop is None or not stop.requested:
                raise
            # stopped by the sweep: train() wrote its checkpoint, from which the next sweep goes on
            steps = Run(path).attrs.get("steps_done") if path.exists() else None
            return dict(stopped=True, steps_done=None if steps is None else int(steps), worker=worker,
                        resumed=resume, task_s=time.perf_counter() - t0, cpu_s=time.thread_time() - cpu0)
    # cpu_s against task_s shows how much of a core the run had (a loaded or oversubscribed machine)
    return dict(test_error=res.test_error, wall_s=res.wall_s, worker=worker, resumed=resume,
                task_s=time.perf_counter() - t0, cpu_s=time.thread_time() - cpu0)


# ------------------------------------------------------------------------- running
@dataclass
class SweepResult:
    """What :func:`run_sweep` did."""

    out: Path
    runs: list
    session: str
    wall_s: float
    n_workers: int

    @property
    def ran(self) -> list:
        """Runs finished in this session."""
        return [r for r in self.runs if r.status == "done" and r.ran_in == self.session]

    @property
    def reused(self) -> list:
        return [r for r in self.runs if r.status == "done" and r.ran_in != self.session]

    @property
    def failed(self) -> list:
        return [r for r in self.runs if r.status == "failed"]

    @property
    def complete(self) -> bool:
        return all(r.status == "done" for r in self.runs)


def default_workers() -> int:
    """Cores this process may use (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(scheduler=None, n_workers=None, dashboard_address=":8787"):
    """A Client of the given scheduler (address or Client), else of a new LocalCluster.

    The local cluster has ``n_workers`` single-threaded worker processes (default: the
    cores we may use) started with ``NUMBA_NUM_THREADS=1``, and is closed on exit.
    """
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # a Client the caller owns
        return
    if scheduler is not None:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    threads = {k: "1" for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    # silence_logs: a task's exception is the sweep's to report (with its traceback in sweep.json), not the
    # worker's to print across the progress bar
    # worker processes ignore SIGINT (they inherit that from their start): Ctrl-C in a terminal
    # goes to the whole process group, and the sweep, not each worker, stops the tasks; a
    # worker that heard it printed a page of asyncio tracebacks over the sweep's message
    # (so a Ctrl-C while the cluster starts, a second or two, is not heard.) A SIGTERM then
    # is held until the cluster stands, and then stops it: raised inside LocalCluster() it
    # left a half-built cluster to Dask's exit handlers, which printed a page of tracebacks.
    quiet = threading.current_thread() is threading.main_thread()
    held = []
    if quiet:
        before = signal.signal(signal.SIGINT, signal.SIG_IGN)
        before_term = signal.signal(signal.SIGTERM, lambda signum, frame: held.append(signum))
    try:
        cluster = LocalCluster(n_workers=n_workers or default_workers(), threads_per_worker=1, processes=True,
                               env=threads, dashboard_address=dashboard_address, silence_logs=logging.CRITICAL)
    finally:
        if quiet:
            signal.signal(signal.SIGINT, before)
            signal.signal(signal.SIGTERM, before_term)
    try:
        if held:  # delivered now to the handler that was there (the CLI's raises KeyboardInterrupt)
            signal.raise_signal(held[0])
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _fmt_s(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _eta(pending: int, running_since: list, durations: list, slots: int) -> float | None:
    """Seconds left: the mean run so far, for the runs not begun and the rest of those running."""
    if not durations:
        return None
    mean = float(np.mean(durations))
    now = time.time()
    work = pending * mean + sum(max(mean - (now - t), 0.0) for t in running_since)
    return work / max(slots, 1)


def sweep_dir(sweep: Sweep, out=None) -> Path:
    """The sweep folder: ``out``, else the file's ``out``, else ``runs/sweep-{name}``."""
    if out is not None:
        return Path(out)
    return Path(sweep.out) if sweep.out is not None else Path("runs") / f"sweep-{sweep.name}"


def describe(runs) -> str:
    """One line per run: status, file (or id) and the point's keys."""
    width = max((len(r.file or r.id) for r in runs), default=0)
    lines = [f"{r.status:8s} {(r.file or r.id):{width}s}  {r.label()}" + (f"  {r.error}" if r.error else "")
             for r in runs]
    return "\n".join(lines)


def run_sweep(sweep, *, out=None, workers=None, scheduler=None, data_dir=None, progress=True,
              dashboard_address=":8787") -> SweepResult:
    """Run every point of a sweep that is not done yet, on Dask; the call behind ``spikefa sweep``.

    Parameters
    ----------
    sweep : path, dict or Sweep
        The sweep file (see the module docstring).
    out : path, optional
        Sweep folder; default the file's ``out``, else ``runs/sweep-{name}``.
    workers : int, optional
        Size of the local cluster (default the file's ``workers``, else the cores we may
        use, never more than the runs left).
    scheduler : str or distributed.Client, optional
        Run on this existing cluster (``tcp://host:8786``) instead of a local one.
    data_dir : path, optional
        Folder of the MNIST files, as seen from the workers (dataset ``mnist``).
    progress : bool
        Show a progress bar over runs (done, running, failed, time left) and the
        dashboard link.
    dashboard_address : str or None
        Where the local cluster serves its dashboard (``":0"``: any free port).

    Returns
    -------
    SweepResult
        ``.ran``, ``.reused`` and ``.failed`` list the runs; failed ones carry their error.

    Notes
    -----
    A first Ctrl-C or SIGTERM (in the main thread) stops the sweep without losing work:
    runs not begun are cancelled, and each running run stops at the end of its block (or
    test pass) and writes its checkpoint, as ``spikefa train`` does at a Ctrl-C; the
    manifest is written and KeyboardInterrupt raised. Starting the sweep again continues
    those runs from their checkpoints. A second Ctrl-C (or a KeyboardInterrupt from
    elsewhere) cancels at once: a running run then continues from its last periodic
    checkpoint (``run.checkpoint_minutes``), else starts again; on an existing cluster,
    whose workers go on, it still stops at the end of its block with a checkpoint (the
    stop file ``.stop-SESSION`` is left in the sweep folder for it). While a local cluster
    starts (a second or two) Ctrl-C is not heard, since its workers must inherit ignoring
    it; a SIGTERM then stops the sweep once the cluster stands.
    """
    sweep = load_sweep(sweep)
    out = sweep_dir(sweep, out)
    data_dir = data_dir if data_dir is not None else sweep.data_dir
    out.mkdir(parents=True, exist_ok=True)
    session = time.strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
    t_start = time.time()
    with file_lock(out / LOCK, f"sweep folder {out}"):
        runs = plan(sweep, out)

        def save():
            _write_json(out / MANIFEST, dict(
                schema_version=1, spikefa_version=__version__, name=sweep.name, sweep=sweep.to_dict(),
                updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), session=session,
                counts={s: sum(r.status == s for r in runs) for s in ("done", "running", "pending", "failed")},
                runs=[r.__dict__ for r in runs]))

        todo = [r for r in runs if r.status == "pending"]
        _log(out, session, "session-start", n_runs=len(runs), n_done=sum(r.status == "done" for r in runs),
             n_todo=len(todo), argv=sys.argv)
        for r in runs:
            if r.status == "done":
                _log(out, session, "reused", id=r.id, file=r.file)
            elif r.status == "failed":
                _log(out, session, "failed", id=r.id, overrides=r.overrides, error=r.error)
        save()
        n_workers = 0
        if todo:
            n_local = min(workers or sweep.workers or default_workers(), len(todo))
            stop_file = out / f".stop-{session}"  # its existence stops the running runs (StopFile)
            stop = StopRequest(notice="stopping the sweep: runs not begun are cancelled, and each running run stops "
                                      "at the end of its block (or test pass) and writes its checkpoint, from "
                                      "which the sweep continues it when started again")
            # (installed before the cluster starts and until it has closed: a Ctrl-C while it
            # closes after the last run asks nothing more of a finished sweep; one that came as
            # it started, a SIGTERM held by dask_client, stops it before any run begins)
            stop.install()
            try:
                with dask_client(scheduler, n_local, dashboard_address) as client:
                    n_workers = _execute(client, sweep, out, runs, todo, session, data_dir, progress, save,
                                         stop, stop_file)
            finally:
                stop.uninstall()
            stop_file.unlink(missing_ok=True)
        _log(out, session, "session-end", n_ran=sum(r.ran_in == session for r in runs),
             n_failed=sum(r.status == "failed" for r in runs), wall_s=time.time() - t_start)
        save()
    return SweepResult(out=out, runs=runs, session=session, wall_s=time.time() - t_start, n_workers=n_workers)


def _held_by_workers(client) -> set:
    """Keys of the tasks that workers hold (running, or in a worker's queue)."""
    try:
        return {k for keys in client.processing().values() for k in keys}
    except Exception:  # noqa: BLE001 - a scheduler that cannot say: cancel what the sweep has not seen begin
        return set()


def _execute(client, sweep, out, runs, todo, session, data_dir, progress, save, stop=None, stop_file=None) -> int:
    """Submit ``todo`` to ``client`` and follow the futures until all are done or failed,
    or, once ``stop.requested``, until the running runs have stopped (``stop_file``)."""
    topic = f"spikefa-sweep-{session}"
    events: list = []
    client.subscribe_topic(topic, events.append)  # called on the client's thread; list.append is atomic
    by_file = {r.file: r for r in todo}
    futures = {}
    for r in todo:
        cfg = resolve({"base": sweep.base, **r.overrides})
        fut = client.submit(_run_task, cfg.to_json(), str((out / r.file).resolve()), data_dir, topic,
                            None if stop_file is None else str(Path(stop_file).resolve()),
                            key=f"spikefa-run-{r.id}", pure=False, retries=0)
        futures[fut] = r

    def slots():
        try:
            return sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        except Exception:  # noqa: BLE001 - only for the time estimate
            return 1

    n_slots = slots()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        info = client.scheduler_info()
        if "dashboard" in info.get("services", {}):
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
        bar = tqdm(total=len(runs), initial=sum(r.status == "done" for r in runs), unit="run", desc=f"sweep {sweep.name}",
                   dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs "
                                                  "[{elapsed}{postfix}]")
    started: dict[str, float] = {}
    durations: list[float] = []
    n_seen = 0
    last_slots = time.time()
    last_text, last_draw = "", 0.0
    pending = dict(futures)
    stopping = False
    try:
        while pending:
            changed = False
            if stop is not None and stop.requested and not stopping:
                stopping = changed = True
                if stop_file is not None:
                    Path(stop_file).touch()
                # a run's 'started' comes up to a poll after it begins, and a cancel leaves a begun
                # task running (on an existing cluster to its end, long after the stop file is
                # gone): cancel only tasks that no worker holds; a held one not begun yet sees
                # the stop file when it begins and returns at once
                held = _held_by_workers(client)
                not_begun = [f for f, r in pending.items() if r.status != "running" and f.key not in held]
                client.cancel(not_begun)
                _log(out, session, "stopping", n_running=len(pending) - len(not_begun), n_cancelled=len(not_begun))
            for fut in [f for f in pending if f.done()]:
                r = pending.pop(fut)
                changed = True
                started.pop(r.id, None)
                if fut.status == "cancelled" and stopping:
                    r.status = "pending"
                elif fut.status == "cancelled":  # e.g. by another client of a shared scheduler
                    r.status, r.error = "failed", "CancelledError: the task was cancelled"
                    _log(out, session, "failed", id=r.id, file=r.file, overrides=r.overrides, error=r.error)
                elif fut.status == "finished" and fut.result().get("stopped"):
                    res = fut.result()
                    r.status = "pending"
                    if res["steps_done"] is not None:  # (None: stopped before it began)
                        _log(out, session, "stopped", id=r.id, file=r.file, steps_done=res["steps_done"],
                             task_s=res["task_s"], cpu_s=res["cpu_s"], resumed=res["resumed"], worker=res["worker"])
                elif fut.status == "finished":
                    res = fut.result()
                    r.status, r.ran_in = "done", session
                    r.test_error, r.wall_s, r.worker = res["test_error"], res["wall_s"], res["worker"]
                    durations.append(res["task_s"])
                    _log(out, session, "finished", id=r.id, file=r.file, test_error=r.test_error, wall_s=r.wall_s,
                         task_s=res["task_s"], cpu_s=res["cpu_s"], resumed=res["resumed"], worker=r.worker)
                else:
                    exc = fut.exception()
                    r.status = "failed"
                    r.error = f"{type(exc).__name__}: {exc}"
                    r.traceback = "".join(tb_module.format_exception(type(exc), exc, fut.traceback()))
                    _log(out, session, "failed", id=r.id, file=r.file, overrides=r.overrides, error=r.error)
                    if bar is not None:
                        bar.write(f"failed: {r.file} ({r.label()}): {r.error}")
            while n_seen < len(events):
                _, msg = events[n_seen]
                n_seen += 1
                r = by_file.get(msg.get("file"))
                if msg.get("event") == "note":  # logged by a run on its worker (_TaskNotes)
                    _log(out, session, "note", id=None if r is None else r.id, file=msg.get("file"),
                         message=msg.get("message"))
                    text = msg.get("message", "")
                    text += "" if msg.get("file", "") in text else f" (run {msg.get('file')})"
                    if bar is not None:
                        bar.write(text, file=sys.stderr)
                    else:
                        print(text, file=sys.stderr)
                    continue
                if r is not None and r.status == "pending" and any(x is r for x in pending.values()):
                    r.status, r.worker = "running", msg.get("worker")
                    started[r.id] = time.time()
                    _log(out, session, "started", id=r.id, file=r.file, worker=r.worker)
            if changed:
                save()
            if time.time() - last_slots > 10:
                n_slots, last_slots = slots(), time.time()
            if bar is not None:
                n_pend = sum(r.status == "pending" for r in runs)
                eta = _eta(n_pend, list(started.values()), durations, n_slots)
                text = (f"done {sum(r.status == 'done' for r in runs)}, running {sum(r.status == 'running' for r in runs)}, "
                        f"failed {sum(r.status == 'failed' for r in runs)}, "
                        + ("stopping" if stopping else f"left ~{_fmt_s(eta)}"))
                if text != last_text and (changed or time.time() - last_draw >= 1.0):
                    bar.n = sum(r.status in ("done", "failed") for r in runs)
                    bar.set_postfix_str(text, refresh=True)
                    last_text, last_draw = text, time.time()
            if pending:
                time.sleep(0.25)
        if stopping:
            if stop_file is not None:
                Path(stop_file).unlink(missing_ok=True)  # (every task has returned)
            _log(out, session, "interrupted", n_left=sum(r.status == "pending" for r in runs))
            save()
            raise KeyboardInterrupt
    except BaseException:
        if stopping and not pending:
            raise  # (the stop above, with everything written)
        if stop_file is not None:
            # a cancel does not stop a task that has begun: on an existing cluster it would
            # train on to its end unattended; the stop file, left in place, stops it at the
            # end of its block with a checkpoint (a local cluster's workers close with it)
            with suppress(OSError):  # (not to hide what is being raised)
                Path(stop_file).touch()
        client.cancel(list(pending))
        for r in pending.values():
            if r.status == "running":
                r.status = "pending"
        _log(out, session, "interrupted", n_left=len(pending))
        save()
        raise
    finally:
        if bar is not None:
            bar.close()
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # noqa: BLE001 - the client may already be closing
            pass
    return n_slots


# ------------------------------------------------------------------------- summary
@dataclass
class Condition:
    """The runs of one condition (same config up to the seed), finished ones only in ``runs``."""

    values: dict  # dotted key -> value, the keys that differ between conditions
    runs: list = field(default_factory=list)  # spikefa.Run, complete
    n_failed: int = 0
    n_incomplete: int = 0

    @property
    def label(self) -> str:
        return ", ".join(f"{v}" for v in self.values.values()) or "all"

    def final_errors(self) -> np.ndarray:
        return np.array([r.test_error for r in self.runs], dtype=float)

    def curves(self) -> dict:
        """Test curves of the runs, cut to the test passes they all have: arrays (n_runs, n_tests)."""
        curves = [r.test_curve() for r in self.runs]
        if not curves:
            return {}
        n = min(c["step"].size for c in curves)
        steps = curves[0]["step"][:n]
        n = next((i for i in range(n) if any(c["step"][i] != steps[i] for c in curves)), n)
        return {k: np.stack([c[k][:n] for c in curves]) for k in curves[0]}


def _condition_keys(cfg: Config) -> dict:
    """What makes a condition: the config's dotted keys less ``run.seed``, the ``[record]``
    table and the run keys that cannot change results (NOT_IDENTITY), as for the config
    hash: runs of a sweep whose ``run.checkpoint_minutes``, say, was edited between sessions
    are the same condition, not two rows."""
    flat = flat_keys(_what_it_computes(cfg))
    flat.pop("run.seed")
    return flat


def collect(sweep_dir) -> tuple[list[Condition], list[SweepRun]]:
    """Group the sweep's run files by condition (config without ``run.seed``, ``[record]``
    and the run keys that do not change results).

    Returns the conditions in the order the sweep lists them, and the points that could
    not be resolved to a model at all (they belong to no condition).
    """
    from .runfile import Run

    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    entries = [SweepRun(**e) for e in manifest["runs"]]
    invalid = [e for e in entries if e.file is None]
    groups: dict[str, Condition] = {}
    flats: dict[str, dict] = {}
    sweep = load_sweep(manifest["sweep"])
    for e in entries:
        if e.file is None:
            continue
        path = sweep_dir / e.file
        try:
            planned = resolve({"base": sweep.base, **e.overrides})
        except ConfigError:  # (the bundled base model changed since the sweep ran)
            planned = None
        try:
            run = Run(path)
            # a point extended with spikefa train --resume --epochs is complete, as its own condition
            cfg, complete = run.config, run.complete and same_point(run.config, e.id, planned)
        except RunFileError:
            if planned is None:
                raise
            run, cfg, complete = None, planned, False
        flat = _condition_keys(cfg)
        key = json.dumps(flat, sort_keys=True, default=str)
        cond = groups.setdefault(key, Condition(values={}))
        flats[key] = flat
        if complete:
            cond.runs.append(run)
        elif e.status == "failed":
            cond.n_failed += 1
        else:
            cond.n_incomplete += 1
    varying = [k for k in next(iter(flats.values()), {}) if len({json.dumps(f[k], default=str) for f in flats.values()}) > 1]
    for key, cond in groups.items():
        cond.values = {k: flats[key][k] for k in varying}
    return list(groups.values()), invalid


def summarize(sweep_dir) -> list[dict]:
    """One row per condition: the keys that differ, n, and final test error mean, s.d., s.e.m., min, max.

    The final test error is the last test pass of each complete run (the config's
    read-out); the s.d. is the sample one (ddof=1; NaN for n < 2).
    """
    conditions, _ = collect(sweep_dir)
    return [_row(c) for c in conditions]


def _row(c: Condition) -> dict:
    e = c.final_errors()
    n = e.size
    sd = float(np.std(e, ddof=1)) if n > 1 else float("nan")
    epochs = [float(r.test_curve()["epoch"][-1]) for r in c.runs]
    walls = [float(r.attrs.get("wall_s", float("nan"))) for r in c.runs]
    return dict(condition=c.label, **c.values, n=n,
                error_mean=float(e.mean()) if n else float("nan"), error_sd=sd,
                error_sem=sd / math.sqrt(n) if n > 1 else float("nan"),
                error_min=float(e.min()) if n else float("nan"), error_max=float(e.max()) if n else float("nan"),
                epochs=float(np.mean(epochs)) if epochs else float("nan"),
                wall_s_mean=float(np.mean(walls)) if walls else float("nan"),
                n_failed=c.n_failed, n_incomplete=c.n_incomplete)


def plot_error_curves(conditions, ax=None, *, x="epoch"):
    """Test error (%) against training, mean +- 1 s.d. over seeds per condition (cf. Fig. 3a).

    Parameters
    ----------
    conditions : list of Condition
        From :func:`collect`.
    ax : matplotlib Axes, optional
    x : {"epoch", "images", "step"}

    Returns
    -------
    matplotlib Axes
    """
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(6.0, 3.5)).add_subplot()  # outside pyplot, as spikefa.plots does
    for c in conditions:
        cur = c.curves()
        if not cur or cur["step"].shape[1] == 0:
            continue
        err = 100 * cur["error"]
        n = err.shape[0]
        sd = err.std(axis=0, ddof=1) if n > 1 else np.zeros(err.shape[1])
        ax.errorbar(cur[x].mean(axis=0), err.mean(axis=0), yerr=sd, capsize=3, marker="o", markersize=3,
                    label=f"{c.label} (n={n})")
    ax.set_xlabel({"epoch": "epochs", "images": "training images", "step": "training steps"}[x])
    ax.set_ylabel("test error (%)")
    if ax.get_legend_handles_labels()[1]:
        ax.legend(frameon=False)
    else:  # (a sweep with no finished run yet; matplotlib warned of an empty legend)
        ax.text(0.5, 0.5, "no finished runs yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_title("mean \u00b1 1 s.d. over seeds")
    return ax


def _fmt_pct(v) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.2f}"


def sweep_report(sweep_dir, out=None) -> dict:
    """Write the sweep's table (CSV and Markdown) and error-curve figure; ``spikefa sweep-report``.

    Parameters
    ----------
    sweep_dir : path
        A folder written by :func:`run_sweep`.
    out : path, optional
        Where to write ``summary.csv``, ``summary.md`` and ``error-curves.png``
        (default: the sweep folder).

    Returns
    -------
    dict
        ``rows`` (as :func:`summarize`), ``markdown`` (the table's text) and the paths
        ``csv``, ``md``, ``figure``.
    """
    from matplotlib.figure import Figure

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(sweep_dir)
    conditions, invalid = collect(sweep_dir)
    rows = [_row(c) for c in conditions]

    fields = list(dict.fromkeys(k for row in rows for k in row))
    table = io.StringIO(newline="")
    w = csv.DictWriter(table, fieldnames=fields)
    w.writeheader()
    for row in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    # each file whole or not at all: a report stopped half-way leaves the last one as it was
    write_whole(out / SUMMARY_CSV, lambda f: f.write(table.getvalue().encode()))

    keys = [k for k in (conditions[0].values if conditions else {})]
    head = (keys or ["condition"]) + ["n", "test error % (mean \u00b1 s.d.)", "min", "max", "epochs", "failed", "incomplete"]
    lines = [f"| {' | '.join(head)} |", "|" + "|".join(" --- " for _ in head) + "|"]
    for row in rows:
        cells = [str(row[k]) for k in keys] or [row["condition"]]
        cells += [str(row["n"]), f"{_fmt_pct(row['error_mean'])} \u00b1 {_fmt_pct(row['error_sd'])}",
                  _fmt_pct(row["error_min"]), _fmt_pct(row["error_max"]),
                  f"{row['epochs']:g}" if math.isfinite(row["epochs"]) else "n/a",
                  str(row["n_failed"]), str(row["n_incomplete"])]
        lines.append(f"| {' | '.join(cells)} |")
    readout = {c.runs[0].config.test.readout for c in conditions if c.runs}
    n_test = {int(c.runs[0].test_curve()["n_test"][-1]) for c in conditions if c.runs}
    text = [f"# Sweep {manifest['name']}", "",
            f"Final test error of each complete run (last test pass; read-out {', '.join(sorted(readout)) or '?'}, "
            f"{', '.join(map(str, sorted(n_test))) or '?'} test images), mean and sample s.d. over seeds; "
            f"base model `{manifest['sweep'].get('base')}`.", "", *lines, ""]
    if invalid:  # they belong to no condition, so no row counts them
        text += [f"Not in the table: {len(invalid)} point{'s' if len(invalid) > 1 else ''} whose settings make "
                 "no valid model (under Failed runs).", ""]
    failed = [SweepRun(**e) for e in manifest["runs"] if e["status"] == "failed"]
    if failed:
        text += ["## Failed runs", ""] + [f"- `{r.file or r.id}` ({r.label()}): {r.error}" for r in failed] + [""]
    markdown = "\n".join(text)
    write_whole(out / SUMMARY_MD, lambda f: f.write(markdown.encode()))

    fig = Figure(figsize=(6, 4), layout="constrained")
    plot_error_curves(conditions, fig.subplots())
    write_whole(out / CURVES_PNG, lambda f: fig.savefig(f, format="png", dpi=150))
    return dict(rows=rows, markdown=markdown, csv=out / SUMMARY_CSV, md=out / SUMMARY_MD, figure=out / CURVES_PNG,
                invalid=invalid)
