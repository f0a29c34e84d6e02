"""The run file (HDF5) and the checkpoint beside it.

Layout of ``RUN.h5`` (schema 2; the full layout, recordings included, is in
``docs/file-format.md``):

``/`` attributes
    ``schema_version``, ``spikefa_version``, ``numpy_version``, ``numba_version``,
    ``config`` (the full resolved config as JSON), ``seed``, ``model_name``,
    ``created``, ``command``, ``git_commit`` (see :func:`source_revision`),
    ``total_steps``, ``steps_done``, ``resumes`` (one entry per resume), ``complete``
    (False until the very last write of a finished run).
``/test/``
    one row per test pass, 1-D resizable datasets: ``step`` (training steps done,
    int64), ``images`` (training images seen), ``epoch``, ``error`` (with the config's
    read-out), ``error_last``, ``error_sum``, ``error_prob`` (every read-out, from the same test run),
    ``n_test``, ``wall_s`` (training wall time so far).
``/final/{h1,h2,...,out}/``
    ``W`` (effective forward weights into the layer, shape ``(n_pre, n_post)``), ``b``,
    ``B`` (effective feedback matrix into the layer, ``(n_l, n_src)``; hidden layers
    with feedback only), and the state ``V``, ``U`` at the end of training.
``/record/``, ``/rates/``, ``/angles/``
    What :mod:`spikefa.record` recorded (spikes, traces, firing rates, alignment angles).
``/progress/``
    ``steps_done`` (the latest checkpoint), ``steps_recorded`` (recordings flushed
    through this step) and ``test_steps_recorded`` (test-pass recordings flushed through
    this recorded test step), updated while the file is in SWMR mode, when attributes cannot be.

Files are written with the latest HDF5 format. Outside the training loop the file is
opened for each write and closed straight after. During the loop :class:`RunWriter` keeps
it open in SWMR (single writer, multiple readers) mode: readers may open it at any time
(:class:`Run` does so with ``swmr=True`` and without file locks), and what has been
flushed stays readable even if the writer is killed. ``complete`` is written last.

``RUN.h5.ckpt`` holds everything needed to continue exactly (raw weights and decay
scales, learned feedback, state, the noise generator's state, the step); it is written
to a temporary file and renamed, so a run killed while checkpointing keeps the
previous checkpoint. ``RUN.h5.writer`` is locked by a run's process from before its first
write of the run file to after its last (:class:`WriterLock`), and removed after.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

import h5py
import numba
import numpy as np

from . import __version__
from .config import Config, ConfigError, config_from_dict, is_integer, layer_names

SCHEMA_VERSION = 2
log = logging.getLogger(__name__)

LOCK_RETRY_S = 60.0  # how long a writer waits for a reader that holds a file lock
# Writers fill whole chunks in their own buffers and never read them back, so HDF5's chunk
# cache would only hold memory: up to 8 MiB per dataset by HDF5 2.0's default, hundreds of
# MB for a run that records many populations.
WRITE_CHUNK_CACHE = 0
TEST_FIELDS = {
    "step": np.int64, "images": np.int64, "epoch": np.float64, "error": np.float64,
    "error_last": np.float64, "error_sum": np.float64, "error_prob": np.float64, "n_test": np.int64, "wall_s": np.float64,
}


# The tracked paths whose edits can change what a run computes: the package itself and the
# install files that pin its dependencies. The run's config is stored in full, so a model
# file or a README edited beside a run does not make it ``+dirty``.
SOURCE_PATHS = ("spikefa", "setup.cfg", "pyproject.toml")


def source_revision(root=None) -> str:
    """The git commit of the spikefa source that is running: 40 hex digits, with ``+dirty``
    appended when tracked files under :data:`SOURCE_PATHS` of that checkout differ from the
    commit, or ``""`` when the package is not run from a git checkout (an installed wheel)
    or git is not at hand. ``root`` (for tests) is the checkout; by default the one this
    module lies in."""
    root = Path(__file__).resolve().parent.parent if root is None else Path(root).resolve()
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return ""  # spikefa installed inside some other repository
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("+dirty" if dirty else "")


class RunFileError(OSError):
    """A run file cannot be written, or is not a spikefa run file."""


def h5_kind(path) -> str:
    """'checkpoint' for a checkpoint file, 'run' for a run file (by content, not by name)."""
    with _readable(path) as f:
        return "checkpoint" if "rng_state" in f.attrs else "run"


def checkpoint_path(path) -> Path:
    return Path(str(path) + ".ckpt")


def checkpoint_file(path) -> Path:
    """The checkpoint that ``path`` names: a ``.ckpt`` file itself, or a run file's own."""
    return Path(path) if str(path).endswith(".ckpt") else checkpoint_path(path)


# ------------------------------------------------------------------------- opening
_WRITERS: dict[str, h5py.File] = {}  # files this process holds open for writing (SWMR)
_PENDING: dict[str, dict] = {}  # attributes to write when a SWMR writer closes


def _key(path) -> str:
    return os.path.realpath(path)


def _open_for_write(path) -> h5py.File:
    """Open an existing run file for writing: waits for readers' locks, repairs a file left
    open by a killed writer."""
    deadline = time.monotonic() + LOCK_RETRY_S
    repaired = False
    while True:
        try:
            # "r+", not "a": a run file deleted under its run is not made anew, empty
            return h5py.File(path, "r+", libver="latest", rdcc_nbytes=WRITE_CHUNK_CACHE)
        except OSError as exc:
            msg = str(exc)
            if "already open for write" in msg and not repaired:
                recover(path)
                repaired = True
                continue
            if ("unable to lock" in msg or getattr(exc, "errno", None) == errno.EAGAIN) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise RunFileError(f"cannot write the run file {path}: {exc}") from None


def recover(path) -> None:
    """Make a run file whose writer was killed (SIGKILL, power loss) writable again.

    HDF5 marks a file open for writing in its superblock; a killed writer leaves the mark,
    and HDF5 then refuses to open the file for writing (``h5clear -s`` would clear it).
    What was flushed is intact and readable in SWMR mode, so it is copied into a fresh
    file that replaces the old one. Refuses if the writer is still alive on this host.

    A writer killed outside SWMR mode (while it wrote the final weights, or set the file
    up for a run) leaves a mark that SWMR readers refuse too; the file is then read as it
    was when it last left SWMR mode (:func:`_open_left_open`), and a part its writer was
    in the middle of writing, if damaged, is dropped (a resume writes it again).
    """
    path = Path(path)
    try:
        src = h5py.File(path, "r", swmr=True, locking=False)
    except OSError as exc:
        if _LEFT_OPEN not in str(exc):
            raise
        src = _open_left_open(path)
    with src as f:
        pid, host = _writer(f.attrs)
        if writer_state(path, pid, host) == "running":
            pid, _ = _named_writer(path, pid, host)
            raise RunFileError(f"{path} is being written by process {pid}; stop it first")
        tmp = path.with_name(path.name + ".recover")
        try:
            with h5py.File(tmp, "w", libver="latest") as g:
                g.attrs.update(f.attrs)
                for name in f:
                    try:
                        f.copy(f[name], g, name=name)
                    except (OSError, KeyError, RuntimeError, ValueError):
                        if name in g:
                            del g[name]
                        log.warning("spikefa: note: %s: dropped /%s, which its killed writer left unfinished",
                                    path, name)
        except BaseException:  # Ctrl-C, a full disk: no half copy left beside the file, which is untouched
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)


# h5py's message for a file marked open by a plain (not SWMR) writer, opened in SWMR mode
_LEFT_OPEN = "not already open for SWMR writing"


def _lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 hash (``hashlittle``), HDF5's metadata checksum."""
    M = 0xFFFFFFFF

    def rot(x, k):
        return ((x << k) | (x >> (32 - k))) & M

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & M
    i = 0
    while n > 12:
        x, y, z = struct.unpack_from("<3I", data, i)
        a, b, c = (a + x) & M, (b + y) & M, (c + z) & M
        a = (a - c) & M; a ^= rot(c, 4); c = (c + b) & M  # noqa: E702
        b = (b - a) & M; b ^= rot(a, 6); a = (a + c) & M  # noqa: E702
        c = (c - b) & M; c ^= rot(b, 8); b = (b + a) & M  # noqa: E702
        a = (a - c) & M; a ^= rot(c, 16); c = (c + b) & M  # noqa: E702
        b = (b - a) & M; b ^= rot(a, 19); a = (a + c) & M  # noqa: E702
        c = (c - b) & M; c ^= rot(b, 4); b = (b + a) & M  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    x, y, z = struct.unpack_from("<3I", data[i:] + bytes(12 - n))
    a, b, c = (a + x) & M, (b + y) & M, (c + z) & M
    c ^= b; c = (c - rot(b, 14)) & M  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & M  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & M  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & M  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & M  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & M  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & M  # noqa: E702
    return c


class _FlagsCleared(io.RawIOBase):
    """A read-only view of an HDF5 file whose superblock (version 2 or 3, what the latest
    format writes) reads with its status flags cleared, as ``h5clear -s`` would write it,
    without changing the file."""

    def __init__(self, path):
        self._f = open(path, "rb")
        head = bytearray(self._f.read(64))
        if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3):
            self._f.close()
            raise RunFileError(f"{path} was left open by a writer that was killed, in a format spikefa cannot "
                               "read past (h5clear -s, from the HDF5 tools, clears it)")
        n = 12 + 4 * head[9]  # signature, version, sizes, flags, then four addresses
        head[11] = 0
        struct.pack_into("<I", head, n, _lookup3(bytes(head[:n])))
        self._head = bytes(head[:n + 4])
        self._f.seek(0)

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, buf):
        pos = self._f.tell()
        got = self._f.readinto(buf)
        if got and pos < len(self._head):
            k = min(len(self._head) - pos, got)
            memoryview(buf)[:k] = self._head[pos:pos + k]
        return got

    def close(self):
        self._f.close()
        super().close()


def _open_left_open(path) -> h5py.File:
    """A run file whose plain (not SWMR) writer was killed, read as it was when that writer
    opened it (what was written after is not linked in until HDF5 flushes its metadata)."""
    return h5py.File(_FlagsCleared(path), "r")


def write_whole(path: Path, write) -> None:
    """Write ``path`` whole or not at all: ``write(f)`` into a temporary file beside it,
    then renamed over it (a stop or error in between leaves the old file as it was, and no
    temporary file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # a write into the open file (a full disk) names no file: name the one written
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise


def _writer(attrs) -> tuple[int, str]:
    """The writer a run file's attributes name: ``writer_pid`` (-1: none) and ``writer_host``."""
    return int(attrs.get("writer_pid", -1)), str(attrs.get("writer_host", ""))


def writer_state(path, pid: int, host: str) -> str:
    """Whether the writer a run file names (``writer_pid``, ``writer_host``) still writes it:
    ``"running"`` (a run's process holds its :class:`WriterLock`, from before its first
    write of the file to after its last; or the writer is alive on this host and holds the
    file, or its checkpoint being written, open; for this process, while it holds the file
    open), ``"unknown"`` (another host: cannot be told here) or ``"stopped"``. A run stopped
    in a process that lives on (a notebook's kernel) still names that process, but has
    closed the file and let its lock go: stopped.

    Notes
    -----
    Asked by the thread that runs a run (a resume checking that the run it continues is not
    still written by another process), its own lock does not count: the answer is about
    the writer the file names."""
    owner = _LIVE.get(_key(path))
    if owner is None and _lock_holder(path) is not None:
        return "running"  # a run lives, between its writes (or not yet named in the file)
    if owner is not None and owner != threading.get_ident():
        return "running"  # a run in another thread of this process (a notebook's)
    if pid <= 0:
        return "stopped"
    if host and host != socket.gethostname():
        return "unknown"
    if pid == os.getpid():
        return "running" if _key(path) in _WRITERS else "stopped"
    if not pid_alive(pid):
        return "stopped"
    ck_tmp = Path(str(checkpoint_path(path)) + ".tmp")  # (at a run's end or stop, with the run file closed)
    return "running" if _held_open(path) or (ck_tmp.exists() and _held_open(ck_tmp)) else "stopped"


# ------------------------------------------------------------------------- the run's lock
_LIVE: dict[str, int] = {}  # run files that a run of this process writes: key -> the thread running it
_LOCK_FDS: dict[str, int] = {}  # their locks' open files


def lock_path(path) -> Path:
    """``RUN.h5.writer``, beside the file that ``path`` names (through a symbolic link): what a
    running run holds locked (:class:`WriterLock`)."""
    return Path(_key(path) + ".writer")


def _lock_holder(path) -> tuple[int, str] | None:
    """``(pid, host)`` of the process that holds ``path``'s :class:`WriterLock` now (``(0,
    "")`` if it has not written them yet), or None: none holds it. Asked without blocking,
    with a shared lock that is let go at once. None where it cannot be told (no lock file,
    a file system without locks, no ``fcntl``)."""
    named = _locked_by_another(lock_path(path))
    if named is None:
        return None
    pid, _, host = named.decode(errors="replace").strip().partition(" ")
    return (int(pid), host) if pid.isdigit() else (0, "")


def _locked_by_another(path) -> bytes | None:
    """The first KiB of ``path`` if another open file holds an exclusive ``flock`` on it,
    else None (none does, or it cannot be told: no such file, a file system without
    locks, no ``fcntl``). Asked without blocking, with a shared lock let go at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return os.read(fd, 1024)
    except OSError:
        return None
    finally:
        os.close(fd)  # (and with it the shared lock, if it was granted)
    return None


class WriterLock:
    """Held by a run from before its first write of the run file to after its last.

    Outside the training loop a run opens its file for each write and closes it after (its
    setup at the start of a run, resume or branch; its final weights, attributes and
    ``complete`` at the end; the attributes a stop keeps until the loop's file is closed).
    Between those writes neither the open file nor its checkpoint showed that the writer
    was alive, and :func:`writer_state` said "stopped" of a run about to write again (a
    resume's, not named in the file yet, for as long as its setup took). The lock covers
    the whole of it: an exclusive ``flock`` on :func:`lock_path`, a file that names the
    process. The kernel lets the lock go when the process dies, so a killed run holds
    none; a run that returns, stops or fails lets it go and removes the file, so that a
    run stopped in a process that lives on (a notebook's kernel) reads "stopped".

    Raises :class:`RunFileError` if another run holds it (a second run with the same
    ``--out``). Where locks cannot be taken (a file system without them, a folder that
    cannot be written), the run goes on without one, as before it had one.
    """

    def __init__(self, path):
        self.key, self.path, self.thread = _key(path), lock_path(path), threading.get_ident()
        if self.key in _LIVE:
            raise RunFileError(f"{path} is being written by process {os.getpid()} (this one, in another "
                               "thread); stop it first, or give this run another --out")
        try:
            import fcntl
        except ImportError:  # not POSIX
            fcntl = None
        while fcntl is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)  # (a run's new folder)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                break  # not for the lock to judge: the run file's own writes say what is wrong
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid, _ = _lock_holder(path) or (0, "")
                who = f"process {pid}" if pid else "another process"
                raise RunFileError(f"{path} is being written by {who}; stop it first (Ctrl-C, or kill -INT "
                                   f"{pid or 'PID'}), or give this run another --out") from None
            except OSError:
                os.close(fd)
                break
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if not same:  # removed by the run that held it, between the open and the lock: again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            _LOCK_FDS[self.key] = fd
            break
        _LIVE[self.key] = self.thread

    def release(self) -> None:
        """Let the lock go and remove its file (the run will not write its file again)."""
        if _LIVE.get(self.key) != self.thread:
            return  # let go already
        del _LIVE[self.key]
        fd = _LOCK_FDS.pop(self.key, None)
        if fd is None:
            return
        try:
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):  # (still its own file)
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _forget_locks_in_child() -> None:
    # a process forked during a run shares its lock's open file: closed here, so that the
    # child does not keep the run "running" after the run lets the lock go
    for fd in _LOCK_FDS.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _LOCK_FDS.clear()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_in_child)


def _named_writer(path, pid: int, host: str) -> tuple[int, str]:
    """The process that writes a run: the one that holds its :class:`WriterLock` (a resume's
    before it names itself in the file), else ``(pid, host)``, the one the file names."""
    holder = _lock_holder(path) if _key(path) not in _LIVE else None
    return holder if holder is not None and holder[0] > 0 else (pid, host)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_holds_lock(path) -> bool:
    """Whether a live process holds ``path`` open for writing outside SWMR mode, by HDF5's
    file lock: the exclusive ``flock`` a writer takes when it opens the file (before it
    marks the file open for writing) and keeps until it closes it or starts SWMR mode,
    which lets it go (a SWMR writer is told by its mark, not by this). The kernel releases
    it when its process dies, so a killed writer holds none. Asked without blocking, with
    a shared lock that is let go at once. False where it cannot be told: HDF5's file
    locking turned off (``HDF5_USE_FILE_LOCKING=FALSE``), a file system without locks, no
    ``fcntl``."""
    return _locked_by_another(path) is not None


@contextmanager
def _writable(path):
    """The file for writing: this process's open writer if there is one, else opened here."""
    f = _WRITERS.get(_key(path))
    if f is not None:
        yield f
        f.flush()
        return
    f = _open_for_write(path)
    try:
        yield f
    finally:
        f.close()


_READING: dict[str, int] = {}  # run files that _readable holds open now (nested reads), by key
_NOTED_SHARED: set[str] = set()  # run files noted as held open by another h5py.File of this process


@contextmanager
def _readable(path):
    """The file for reading: SWMR mode without locks, so that a running writer is never
    blocked; retried briefly if a (non-SWMR) writer is in the middle of a write."""
    f = _WRITERS.get(_key(path))
    if f is not None:
        yield f
        return
    if Path(path).is_dir():
        raise RunFileError(f"{path} is a folder, not a run file or checkpoint")
    if not Path(path).exists():
        raise RunFileError(f"{path}: no such run file or checkpoint")
    _refuse_truncated(path)
    for attempt in range(20):
        try:
            f = _open_read(path)
            break
        except OSError as exc:
            if _LEFT_OPEN in str(exc):
                # marked open by a plain writer: one that is finishing or starting a run
                # (wait for it), or one that was killed there (read what it left)
                f = None
                try:
                    f = _open_left_open(path)
                    pid, host = _writer(f.attrs)
                except Exception as exc2:  # noqa: BLE001 - h5py raises OSError, RuntimeError, KeyError...
                    # its writer is in the middle of writing the very bytes read here: wait
                    # (a torn read is any of h5py's errors: 'len not positive after adjustment
                    # for EOA' is an OSError, 'wrong fractal heap header signature' a RuntimeError)
                    if f is not None:
                        f.close()
                    if attempt == 19:
                        if _writer_holds_lock(path):
                            raise RunFileError(f"cannot read {path} now: another process is writing it outside "
                                               "SWMR mode (starting or finishing a run); try again in a moment") from None
                        why = " ".join(str(exc2).split())
                        raise RunFileError(f"cannot read {path}: it is being written outside SWMR mode "
                                           f"(starting or finishing a run), or is damaged ({why})") from None
                    time.sleep(0.1)
                    continue
                # The pid read here is the one on disk when the writer opened the file: a
                # writer that is creating the file, or has not flushed its own pid yet, is
                # not named. HDF5's lock says whether a live writer holds the file.
                running = writer_state(path, pid, host) == "running"
                if not running and not _writer_holds_lock(path):
                    break  # killed there: read what it left
                f.close()
                if attempt == 19:
                    who = f"process {pid}" if running else "another process"
                    raise RunFileError(f"cannot read {path} now: {who} is writing it outside SWMR mode "
                                       "(starting or finishing a run); try again in a moment") from None
                time.sleep(0.1)
                continue
            if attempt == 19 or not Path(path).exists():
                if Path(path).exists() and _writer_holds_lock(path):
                    # a writer creating the file: older HDF5 (h5py 3.8's 1.12) calls the file
                    # it has begun 'truncated' here rather than marked open for writing
                    raise RunFileError(f"cannot read {path} now: another process is writing it outside "
                                       "SWMR mode (starting or finishing a run); try again in a moment") from None
                why = " ".join(str(exc).split())  # h5py's messages span lines
                if "file signature not found" in why:
                    raise RunFileError(f"{path} is not an HDF5 file, so not a spikefa run file or checkpoint") from None
                raise RunFileError(f"cannot read {path}: {why}") from None
            time.sleep(0.1)
    opened = _stat_key(path)
    key = _key(path)
    with f:
        _READING[key] = _READING.get(key, 0) + 1
        if (h5py.h5f.get_obj_count(f.id, h5py.h5f.OBJ_FILE) > _READING[key] and key not in _NOTED_SHARED
                and key not in _LIVE and not f.attrs.get("complete", False)):
            # HDF5 gives this open the file that is open already (_open_read falls back to its
            # flags): that handle's view of it, which a running run has moved past
            _NOTED_SHARED.add(key)
            log.warning("spikefa: note: this process holds %s open in another h5py.File, and HDF5 shares "
                        "that file's view with every read here: rows a running run wrote since it was "
                        "opened are not seen; close it to read the run as it is now", path)
        try:
            yield f
        except RunFileError:
            raise
        except (KeyError, OSError, RuntimeError) as exc:
            # readers take no lock: a process that writes the file outside SWMR mode (a run
            # resuming from its checkpoint, or finishing) while this one has it open changes
            # the bytes under it, and a later read fails ('len not positive after adjustment
            # for EOA', 'addr overflow'): a changed file, not a damaged one
            if _stat_key(path) != opened or _writer_holds_lock(path):
                raise RunFileError(f"{path} changed while it was read: another process wrote it (a run starting, "
                                   f"resuming or finishing); read it again ({' '.join(str(exc).split())})") from None
            if isinstance(exc, RuntimeError):
                raise
            if isinstance(exc, KeyError):
                # h5py's "object 'test' doesn't exist": the file lacks a part every run file has
                raise RunFileError(f"{path} is damaged or not a complete spikefa file: "
                                   f"{exc.args[0] if exc.args else exc}") from None
            # h5py's "Can't synchronously read data (filter returned failure during read)":
            # a part of the file's bytes is damaged; say which file (and, where known, what)
            raise RunFileError(f"{path} is damaged: a read failed{getattr(exc, 'spikefa_what', '')} "
                               f"({' '.join(str(exc).split())})") from None
        finally:
            _READING[key] -= 1


def _stat_key(path):
    """What changes when a file is written or replaced: inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


# A file this process has open already (a notebook's own h5py.File) opens again only with the
# same SWMR and locking flags; spikefa's own choice first: SWMR, no locks
_READ_FLAGS = (dict(swmr=True, locking=False), dict(swmr=True), dict(locking=False), {})
_FLAGS_DIFFER = ("flag values don't match", "SWMR read access flag not the same")


def _open_read(path, flags=_READ_FLAGS) -> h5py.File:
    """``h5py.File(path, "r")`` with the first of ``flags`` that HDF5 accepts here."""
    for i, kw in enumerate(flags):
        try:
            return h5py.File(path, "r", **kw)
        except OSError as exc:
            if i + 1 == len(flags) or not any(m in str(exc) for m in _FLAGS_DIFFER):
                raise


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def _refuse_truncated(path) -> None:
    """A truncated HDF5 file is an error here. (Opened in SWMR mode, HDF5 does not check
    the end of file, and its reads of the missing bytes retry for many minutes, deaf to
    Ctrl-C.) A plain read-only open checks it; it is refused while a SWMR writer has the
    file open, and then the file is not truncated but growing. A file that a plain writer
    is in the middle of writing can look truncated for an instant: asked again for a
    second before it is called truncated, and not called so while a writer holds its lock."""
    for attempt in range(10):
        try:
            _open_read(path, _READ_FLAGS[2:]).close()  # not SWMR: that open checks the end of file
            return
        except OSError as exc:
            found = _TRUNCATED.search(str(exc))
            if not found:
                return  # not for this check to judge: the SWMR open below says what is wrong
        time.sleep(0.1)
    if _writer_holds_lock(path):
        # still being written (a large setup, a slow disk, a loaded machine): not truncated;
        # the SWMR open below finds it marked open by that writer and waits for it
        return
    have, want = (int(x) for x in found.groups())
    raise RunFileError(f"{path} is truncated: {have:,} of its {want:,} bytes are there "
                       "(a copy cut short, or a full disk?)")


class RunWriter:
    """Holds the run file open for the training loop, in SWMR mode.

    Parameters
    ----------
    path : path
        An existing run file.
    setup : callable, optional
        ``setup(h5file)`` creates datasets before SWMR starts (in SWMR mode no new objects
        or attributes can be made; datasets can only grow, shrink and be written).

    Notes
    -----
    While it is open, this module's writers (:func:`append_test`, :func:`set_attrs`, ...)
    use its handle; :func:`set_attrs` keeps attributes until :meth:`close` (and writes
    ``steps_done`` to ``/progress``). Readers in other processes open the file with
    ``swmr=True``. Files of schema 1 (not in the latest format) are written without SWMR.
    """

    def __init__(self, path, setup=None):
        self.path = Path(path)
        self.key = _key(path)
        if self.key in _WRITERS:
            raise RunFileError(f"{path} is already open for writing in this process")
        f = _open_for_write(path)
        try:
            f.attrs.update(writer_pid=os.getpid(), writer_host=socket.gethostname())
            for name in ("steps_done", "steps_recorded"):
                if f"progress/{name}" not in f:
                    f.create_dataset(f"progress/{name}", data=np.int64(f.attrs.get("steps_done", 0)))
            if "progress/test_steps_recorded" not in f:
                # (a file from before it, resumed: what its last writer left on disk; a
                # recorder's attach sets it, after cutting the recordings back, straight after)
                st = f.get("record/test/stimulus/step")
                f.create_dataset("progress/test_steps_recorded",
                                 data=np.int64(st[st.shape[0] - 1] + 1 if st is not None and st.shape[0] else 0))
            if setup is not None:
                setup(f)
            f.flush()
            try:
                f.swmr_mode = True
            except (ValueError, OSError, RuntimeError):
                pass  # an old-format file: written without SWMR, readers wait for the lock
        except BaseException:
            f.close()
            raise
        self.file = f
        _WRITERS[self.key] = f
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)

    def still_there(self) -> bool:
        """Whether the path still names the file this writer writes (not deleted, not
        replaced by another file)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def close(self) -> None:
        f = _WRITERS.pop(self.key, None)
        if f is None:
            return
        there = self.still_there()
        f.close()
        pending = _PENDING.pop(self.key, None)
        if pending and there:  # (never into a file that took the deleted one's name)
            with _writable(self.path) as g:
                g.attrs.update(pending)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _refuse_live_writer(path) -> None:
    """Refuse to replace a file that is not a spikefa run file (a mistyped --out), or a run
    file that another process on this host is still writing.
    (Truncated under its SWMR writer, the file is corrupted, and the writer, the new run
    and readers after them hang in HDF5's retries.) A file that is no HDF5 file, or whose
    attributes cannot be read, has no writer to protect."""
    if path.stat().st_size and not h5py.is_hdf5(path):
        raise RunFileError(f"{path} is not a spikefa run file (not even HDF5), so --overwrite (overwrite=True) "
                           "will not replace it: give the run another --out, or remove the file yourself")
    try:
        try:
            f = _open_read(path, _READ_FLAGS[2:])  # not SWMR: that open checks the end of file
        except OSError as exc:
            if _TRUNCATED.search(str(exc)):
                return  # cut short (SWMR reads of it would retry for minutes): nothing to protect
            f = h5py.File(path, "r", swmr=True, locking=False)  # open for writing, by a writer alive or killed
        with f:
            if "schema_version" not in f.attrs and "rng_state" not in f.attrs:
                raise RunFileError(f"{path} is an HDF5 file but not a spikefa run file, so --overwrite "
                                   "(overwrite=True) will not replace it: give the run another --out, or remove "
                                   "the file yourself")
            if bool(f.attrs.get("complete", False)):
                return
            pid, host = _writer(f.attrs)
    except RunFileError:
        raise
    except (OSError, ValueError, TypeError):
        return
    if writer_state(path, pid, host) == "running":
        pid, _ = _named_writer(path, pid, host)
        raise RunFileError(f"{path} is being written by process {pid}; stop it first (Ctrl-C, or "
                           f"kill -INT {pid}), or give this run another --out")


def _held_open(path) -> bool:
    """Whether a writer holds ``path`` open now: a plain read-only open (not SWMR, with
    locks) is refused while it does (the superblock's open-for-write mark, or its lock)."""
    try:
        h5py.File(path, "r").close()
    except OSError:
        return True  # held, or left marked by a killed writer: the writer's pid decides
    return False


def create_run_file(path, cfg: Config, *, total_steps: int, overwrite: bool = False) -> Path:
    """Create ``path`` with the run's metadata and empty test curve; ``complete`` = False."""
    path = Path(path)
    if path.is_dir():
        raise RunFileError(f"{path} is a folder: give a run file's name, such as {path / 'run.h5'}")
    exists = (f"{path} exists; pass --resume (in Python, resume=True) to continue it or "
              "--overwrite (overwrite=True) to start again")
    if path.exists() and not overwrite:
        raise RunFileError(exists)
    if path.exists():
        _refuse_live_writer(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # without overwrite, created exclusively: of two runs started at once with the same
        # --out, the second is refused instead of truncating the file under the first. With
        # overwrite, written beside it and renamed over it: truncated in place, the old file
        # changed under every reader that had it open (a sweep restarting a killed run, a
        # notebook or `spikefa plot` reading it), whose next read met the new file's bytes
        # ("bad object header version number"); renamed, they go on reading the old one
        if overwrite:  # (through a symbolic link: the file it names is replaced)
            real = Path(os.path.realpath(path))
            tmp = real.with_name(f".{real.name}.{os.getpid()}.new")
        with h5py.File(tmp or path, "w" if overwrite else "x", libver="latest") as f:
            f.attrs.update(
                schema_version=SCHEMA_VERSION, spikefa_version=__version__,
                numpy_version=np.__version__, numba_version=numba.__version__,
                config=cfg.to_json(), seed=cfg.run.seed, model_name=cfg.name,
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), command=invocation(),
                git_commit=source_revision(), total_steps=int(total_steps), steps_done=0, complete=False,
            )
            g = f.create_group("test")
            for name, dt in TEST_FIELDS.items():
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(256,))
        if tmp is not None:
            os.replace(tmp, real)
            tmp = None
    except FileExistsError as exc:
        if exc.filename is None and path.is_file():  # h5py's exclusive create, not mkdir's
            raise RunFileError(exists) from None
        if exc.filename is not None:  # mkdir of a folder on the way: it was "[Errno 17] File exists: 'DIR'"
            raise RunFileError(f"cannot write the run file {path}: {exc.filename} is a file, not a folder") from None
        raise RunFileError(f"cannot write the run file {path}: it exists, and is not a file (a broken link?)") from None
    except NotADirectoryError as exc:
        raise RunFileError(f"cannot write the run file {path}: a part of that path is a file, not a folder "
                           f"({exc.filename})") from None
    except OSError as exc:
        raise RunFileError(f"cannot write the run file {path}: {exc}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    checkpoint_path(path).unlink(missing_ok=True)
    return path


def append_test(path, row: dict) -> None:
    with _writable(path) as f:
        g = f["test"]
        n = g["step"].shape[0]
        for name in TEST_FIELDS:
            g[name].resize((n + 1,))
            g[name][n] = row[name]


def truncate_tests(path, n: int) -> None:
    """Drop test rows past ``n`` (written after the checkpoint a resumed run starts from)."""
    with _writable(path) as f:
        for name in TEST_FIELDS:
            f["test"][name].resize((n,))


def set_attrs(path, **attrs) -> None:
    f = _WRITERS.get(_key(path))
    if f is not None and f.swmr_mode:
        # attributes cannot change in SWMR mode: written when the writer closes
        _PENDING.setdefault(_key(path), {}).update(attrs)
        if "steps_done" in attrs and "progress/steps_done" in f:
            f["progress/steps_done"][()] = int(attrs["steps_done"])
            f.flush()
        return
    with _writable(path) as f:
        f.attrs.update(attrs)
        if "steps_done" in attrs and "progress/steps_done" in f:  # the two say the same
            f["progress/steps_done"][()] = int(attrs["steps_done"])


def invocation(argv=None) -> str:
    """The command line this process runs (or ``argv``), to record and replay: ``python -m
    spikefa ...`` when it runs as a module (``sys.argv[0]`` is then spikefa's ``__main__.py``,
    which cannot be run as a script)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "spikefa":
        argv[:1] = ["python", "-m", "spikefa"]
    return shlex.join(argv)


def append_resume(path, *, step: int, epoch: float, changed: list[str]) -> None:
    """Add one entry to the run file's ``resumes`` attribute (JSON list): a resume at ``step``
    that changed the settings ``changed`` (``"section.key: old -> new"``, empty if none), with
    the version, git commit (:func:`source_revision`), command line and time it ran at."""
    with _writable(path) as f:
        entries = json.loads(f.attrs.get("resumes", "[]"))
        entries.append(dict(step=int(step), epoch=round(float(epoch), 4), changed=list(changed),
                            spikefa=__version__, git_commit=source_revision(),
                            command=invocation(), time=time.strftime("%Y-%m-%dT%H:%M:%S%z")))
        f.attrs["resumes"] = json.dumps(entries)


def write_final(path, net) -> None:
    """Effective weights, feedback matrices and end state, one group per layer."""
    with _writable(path) as f:
        if "final" in f:
            del f["final"]
        g = f.create_group("final")
        for l in range(1, net.m + 1):
            gl = g.create_group(net.names[l])
            gl.create_dataset("W", data=net.weights(l), compression="gzip", compression_opts=1)
            gl.create_dataset("b", data=net.biases(l))
            sl = net.layer_slice(l)
            gl.create_dataset("V", data=net.state.psp[sl])
            gl.create_dataset("U", data=net.state.feedback_psp[sl])
            if l < net.m:
                B = net.feedback_matrix(l)
                if B is not None:
                    gl.create_dataset("B", data=B, compression="gzip", compression_opts=1)
                    gl.attrs["B_source"] = net.names[int(net.wiring.src[l - 1])]


def mark_complete(path, steps_done: int) -> None:
    """The last write of a finished run."""
    set_attrs(path, steps_done=int(steps_done), complete=True)


# ------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, net, *, rng, step: int, n_tests: int, wall_s: float, extra: dict | None = None) -> None:
    """Write ``path.ckpt`` atomically (temporary file, then rename).

    ``extra``: arrays that others need to continue exactly (the recorder's counters),
    given back by :func:`load_checkpoint` as ``extra``.
    """
    ck = checkpoint_path(path)
    tmp = Path(str(ck) + ".tmp")
    try:
        _write_checkpoint(tmp, net, rng=rng, step=step, n_tests=n_tests, wall_s=wall_s, extra=extra)
        os.replace(tmp, ck)
    except BaseException as exc:
        # a full disk, an error or a Ctrl-C in the middle of the write: the half-written
        # checkpoint goes (it held the space a resume needs, and it is no checkpoint to
        # continue); the previous one, if any, is untouched
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError):
            raise
        why = " ".join(str(exc).split())
        raise RunFileError(f"cannot write the checkpoint {ck} (a full disk, or a folder that cannot be "
                           f"written?): {why}") from None


def _write_checkpoint(tmp, net, *, rng, step, n_tests, wall_s, extra) -> None:
    with h5py.File(tmp, "w") as f:
        f.attrs.update(config=net.config.to_json(), step=int(step), n_tests=int(n_tests), wall_s=float(wall_s),
                       rng_state=json.dumps(rng.bit_generator.state), spikefa_version=__version__)
        for l in range(net.m):
            f.create_dataset(f"W/{l}", data=net.W[l])
            f.create_dataset(f"b/{l}", data=net.b[l])
        f.create_dataset("scale", data=net.scale)
        for k, F in enumerate(net.wiring.F):
            if net.wiring.learns[k]:
                f.create_dataset(f"F/{k}", data=F)
        for name, arr in net.state.arrays().items():
            f.create_dataset(f"state/{name}", data=arr)
        for name, arr in (extra or {}).items():
            f.create_dataset(f"extra/{name}", data=np.asarray(arr))


def checkpoint_config(path, *, with_step: bool = False):
    """The config a checkpoint was written with (to check a resume before loading it).

    ``path`` is a run file (its ``.ckpt`` is read) or a checkpoint file itself; with
    ``with_step`` the checkpoint's step comes too, as ``(config, step)``.
    """
    ck = checkpoint_file(path)
    try:
        with h5py.File(ck, "r") as f:
            cfg = config_from_dict(json.loads(f.attrs["config"]))
            return (cfg, int(f.attrs["step"])) if with_step else cfg
    except (OSError, KeyError) as exc:
        raise RunFileError(f"cannot read the checkpoint {ck}: {exc}") from None


def load_checkpoint(path, net, rng) -> dict:
    """Restore ``net`` and ``rng`` in place from ``path.ckpt``; returns a dict of ``step``,
    ``n_tests``, ``wall_s``, the checkpoint's ``config`` and the recorder's state ``extra``."""
    return read_checkpoint(checkpoint_path(path), net, rng)


# state arrays added after checkpoints were first written; one without them still resumes
LATER_STATE = ("fwd_cache", "fwd_age")
# the deferred updates; their shape follows run.deferred_steps, which a resume may change
PENDING_STATE = ("pend_spikes", "pend_g", "n_pend")


def read_checkpoint(ck, net, rng=None, *, strict: bool = True) -> dict:
    """Restore ``net`` (and ``rng``) from the checkpoint file ``ck`` itself.

    ``strict=False`` skips state arrays the file lacks or holds in another shape (a
    checkpoint of an older version), for looking at weights rather than resuming.
    """
    try:
        f = h5py.File(ck, "r")
    except OSError as exc:
        raise RunFileError(f"cannot read the checkpoint {ck}: {exc}") from None
    with f:
        for l in range(net.m):
            net.W[l][...] = f[f"W/{l}"][...]
            net.b[l][...] = f[f"b/{l}"][...]
        net.scale[...] = f["scale"][...]
        for k, F in enumerate(net.wiring.F):
            if net.wiring.learns[k]:
                F[...] = f[f"F/{k}"][...]
        skipped = []
        st = net.state
        other_K = "state/pend_spikes" in f and f["state/pend_spikes"].shape[0] != st.pend_spikes.shape[0]
        for name, arr in st.arrays().items():
            key = f"state/{name}"
            if name in PENDING_STATE and other_K:
                continue  # another run.deferred_steps: applied below
            if (not strict or name in LATER_STATE) and (key not in f or f[key].shape != arr.shape):
                skipped.append(name)
                continue
            arr[...] = f[key][...]
        if other_K:
            # the checkpoint's pending updates, written into the weights now, oldest first, as
            # its next flush would have done (exact: deferring only postpones the same writes);
            # apply_pending also marks the forward cache stale
            n_pend = int(f["state/n_pend"][0])
            net.apply_pending(f["state/pend_spikes"][:n_pend], f["state/pend_g"][:, :n_pend])
            st.n_pend[0] = 0
        if skipped:  # no cache in the file (an older one), or not one for this K
            net.invalidate_forward_cache()
        if rng is not None:
            rng.bit_generator.state = json.loads(f.attrs["rng_state"])
        extra = {name: ds[...] for name, ds in f["extra"].items()} if "extra" in f else {}
        return dict(step=int(f.attrs["step"]), n_tests=int(f.attrs["n_tests"]), wall_s=float(f.attrs["wall_s"]),
                    config=config_from_dict(json.loads(f.attrs["config"])), extra=extra)


# ------------------------------------------------------------------------- reading
class Spikes(NamedTuple):
    """Spike events: the unit ``index[k]`` (within its layer) spiked at step ``step[k]``."""

    step: np.ndarray  # int64
    index: np.ndarray  # int32


class Raster(NamedTuple):
    """``spikes[i, j]``: did unit ``neurons[j]`` spike at step ``step[i]``."""

    step: np.ndarray  # int64 (T,)
    neurons: np.ndarray  # int64 (R,)
    spikes: np.ndarray  # bool (T, R)


class Trace(NamedTuple):
    """``values[i, j]``: the trace of unit ``neurons[j]`` at step ``step[i]``."""

    step: np.ndarray
    neurons: np.ndarray
    values: np.ndarray


class Stimulus(NamedTuple):
    """What was shown at each recorded step: class ``label`` and training (or test) ``image``."""

    step: np.ndarray
    label: np.ndarray
    image: np.ndarray


def _row_range(ds, window, *columns) -> tuple[int, int]:
    """The rows of the sorted ``step`` column ``ds`` in ``window``, no further than the
    shortest of ``columns``, the other columns of its series. (A writer appends to a
    series column by column, resizing each before it fills it: a reader of a running run
    can find ``step`` a chunk longer than the columns after it, for an instant.)"""
    from .record import bisect_dataset

    n = min([ds.shape[0], *(c.shape[0] for c in columns)])
    if window is None:
        return 0, n
    a, b = int(window[0]), int(window[1])
    i0 = bisect_dataset(ds, a, hi=n)
    return i0, bisect_dataset(ds, b, lo=i0, hi=n)


_NOTED_OLD_CONFIG: set[str] = set()  # run files whose config failed a later check, noted once


def _rows_together(columns: dict) -> dict:
    """``columns`` (arrays, or dicts of them, one row per sample) cut to the rows that all
    of them hold. (The writer of a running run grows a table column by column: a reader
    can find one column a row, or a chunk, longer than another for an instant.)"""
    def lengths(d):
        for v in d.values():
            yield from (lengths(v) if isinstance(v, dict) else (v.shape[0],))

    n = min(lengths(columns), default=0)

    def cut(d):
        return {k: cut(v) if isinstance(v, dict) else v[:n] for k, v in d.items()}

    return cut(columns)


_RECORD_ADVICE = (" (record with spikefa train ... --record PROBE, e.g. --record fig4, or in Python "
                  "record={'probes': ['fig4']} in the config)")


class Run:
    """Read-only view of a run file: metadata at once, arrays only when asked for.

    Every method opens the file, reads the rows it was asked for (found by bisection on
    the sorted ``step`` columns) and closes it again, so a run that is still being written
    can be read at any time and the view sees what has been flushed so far.

    ``window`` arguments are ``(start, stop)`` steps (``start <= step < stop``), an integer
    ``i`` for the run's ``i``-th recording window (with ``phase="test"``: its ``i``-th
    recorded test pass), or None for everything. ``phase`` is ``"train"`` or ``"test"``
    (steps counted across test passes; see :meth:`test_passes`). A layer is ``"in"``,
    ``"h1"``, ... ``"out"`` (:attr:`layers`); a name the run does not have is an error.
    """

    def __init__(self, path):
        self.path = Path(path)
        try:
            with _readable(self.path) as f:
                if "schema_version" not in f.attrs:
                    if self.path.name.endswith(".ckpt"):  # what spikefa test and align take, but not this
                        raise RunFileError(f"{self.path} is a checkpoint, not a run file: pass its run file "
                                           f"{self.path.with_name(self.path.name[:-len('.ckpt')])}")
                    raise RunFileError(f"{self.path} is not a spikefa run file (no schema_version)")
                self.attrs = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in f.attrs.items()}
                self.windows = f["record"].attrs["windows"][...].reshape(-1, 2) if "record" in f else np.zeros((0, 2), np.int64)
        except RunFileError:
            raise
        except OSError as exc:  # a read inside the file failed
            raise RunFileError(f"cannot read the run file {self.path}: {' '.join(str(exc).split())}") from None
        if "config" not in self.attrs:
            raise RunFileError(f"{self.path} is damaged: it has no config attribute")
        stored = json.loads(self.attrs["config"])
        try:
            self.config = config_from_dict(stored)
        except ConfigError as exc:
            # written before a check this version makes (a run whose eta * gamma >= 1, say):
            # its results stay readable, as they were written; resuming it is still refused
            if _key(self.path) not in _NOTED_OLD_CONFIG:  # once per file and process (info a a, a plot's reads)
                _NOTED_OLD_CONFIG.add(_key(self.path))
                log.warning("spikefa: note: %s: its config fails a check of this spikefa version (%s); "
                            "read as written", self.path, exc)
            self.config = config_from_dict(stored, check=False)
        self.complete = bool(self.attrs.get("complete", False))
        self.layers = layer_names(self.config.n_layers)

    def test_curve(self) -> dict:
        """The test passes as a dict of 1-D arrays (see TEST_FIELDS)."""
        with _readable(self.path) as f:
            # (older files lack newer fields)
            return _rows_together({k: f["test"][k][...] for k in TEST_FIELDS if k in f["test"]})

    @property
    def resumes(self) -> list[dict]:
        """Every resume (``step``, ``epoch``, ``changed``: a list of ``"section.key: old -> new"``,
        empty if it changed nothing; ``spikefa``: the version; ``git_commit``, ``command``,
        ``time``, which older entries lack); ``config`` holds the last values. Older files
        list only the resumes that changed a setting."""
        return json.loads(self.attrs.get("resumes", "[]"))

    @property
    def test_error(self) -> float | None:
        curve = self.test_curve()
        return float(curve["error"][-1]) if curve["error"].size else None

    def final(self, layer: str, name: str) -> np.ndarray:
        """One final array, e.g. ``run.final('h1', 'W')``."""
        self._check_layer(layer, allow_input=False)
        with _readable(self.path) as f:
            if "final" not in f:
                raise RunFileError(f"{self.path} has no final weights yet (the run is not complete) and no "
                                   "checkpoint: a run checkpoints every run.checkpoint_minutes and when stopped")
            g = f["final"][layer]
            if name not in g:
                raise ValueError(f"{self.path}: {layer} has no final {name!r}; it has: {', '.join(g)}")
            try:
                return g[name][...]
            except OSError as exc:
                exc.spikefa_what = f" in /final/{layer}/{name}"
                raise

    def _check_layer(self, layer, *, allow_input: bool = True) -> None:
        names = self.layers if allow_input else self.layers[1:]
        if layer not in names:
            raise ValueError(f"unknown layer {layer!r}; this run's layers: {', '.join(names)}")

    @staticmethod
    def _check_phase(phase) -> None:
        if phase not in ("train", "test"):
            raise ValueError(f"phase = {phase!r}; valid: 'train', 'test'")

    def progress(self) -> dict:
        """How far the run got: ``steps_done`` (latest checkpoint), ``steps_recorded``
        (recordings flushed through this step), ``test_steps_recorded`` (test-pass
        recordings flushed through this recorded test step; None in files from before it),
        ``total_steps`` and ``complete``, as the file says now (also while it is being written)."""
        with _readable(self.path) as f:
            out = {k: int(f["progress"][k][()]) if "progress" in f and k in f["progress"] else None
                   for k in ("steps_done", "steps_recorded", "test_steps_recorded")}
            if out["steps_done"] is None or int(f.attrs.get("steps_done", 0)) > out["steps_done"]:
                out["steps_done"] = int(f.attrs.get("steps_done", 0))
            out.update(total_steps=int(f.attrs.get("total_steps", 0)), complete=bool(f.attrs.get("complete", False)))
        return out

    def summary(self) -> dict:
        """Where the run stands, from the file alone (also while it is being written):
        model, seed, feedback, steps and epochs done of the total (the furthest of the last
        checkpoint, test pass and flushed recording), ``state`` (``"complete"``,
        ``"running"`` while its writer process is alive on this host and holds the file open,
        ``"unknown"`` when it was written on another host, else ``"stopped"``),
        the checkpoint's step, the number of test passes, the last and the best pass (every
        read-out), wall time, and the resumes. What ``spikefa info`` prints."""
        cfg = self.config
        prog = self.progress()
        n_train = int(self.attrs.get("n_train", 0)) or None
        per_epoch = cfg.train.steps_per_image * n_train if n_train else None
        epochs = (lambda steps: round(steps / per_epoch, 4)) if per_epoch else (lambda steps: None)
        pid, host = _writer(self.attrs)
        state = "complete" if prog["complete"] else writer_state(self.path, pid, host)
        if state == "running":
            pid, host = _named_writer(self.path, pid, host)
        curve = self.test_curve()
        fields = [k for k in ("epoch", "step", "error", "error_last", "error_sum", "error_prob", "n_test") if k in curve]

        def row(i):
            return {k: (float(curve[k][i]) if curve[k].dtype.kind == "f" else int(curve[k][i])) for k in fields}

        n_pass = int(curve["step"].size)
        resumes = self.resumes
        ckpt = checkpoint_path(self.path)
        ckpt_step, ckpt_wall = None, 0.0
        if ckpt.exists():
            try:
                with _open_read(ckpt, _READ_FLAGS[2:]) as f:
                    ckpt_step = int(f.attrs["step"])
                    ckpt_wall = float(f.attrs.get("wall_s", 0.0))
            except (OSError, KeyError):
                ckpt_step = None  # being replaced right now, or not a checkpoint
        # how far it got: the checkpoint, or further where test passes or flushed recordings
        # show it (a running run checkpoints only every run.checkpoint_minutes)
        done = max([prog["steps_done"], prog["steps_recorded"] or 0] + ([int(curve["step"][-1])] if n_pass else []))
        if prog["total_steps"]:
            done = min(done, prog["total_steps"])
        return {
            "path": str(self.path), "model": self.attrs.get("model_name", cfg.name), "seed": int(cfg.run.seed),
            "description": cfg.description,
            "feedback": cfg.model.feedback, "layers": list(cfg.model.layers), "state": state,
            "writer": f"{pid}@{host}" if pid > 0 else "",
            "steps_done": done, "total_steps": prog["total_steps"],
            "epochs_done": epochs(done), "epochs_total": epochs(prog["total_steps"]),
            "checkpoint_step": ckpt_step, "test_passes": n_pass,
            "last": row(n_pass - 1) if n_pass else None,
            "best": row(int(np.nanargmin(curve["error"]))) if n_pass else None,
            # run time at the newest of the last test pass and the last checkpoint (whose
            # time reaches the attributes only when a running run's writer closes)
            "wall_s": max(float(curve["wall_s"][-1]) if n_pass and "wall_s" in curve else 0.0,
                          float(self.attrs.get("wall_s", 0.0)), ckpt_wall if ckpt_step is not None else 0.0),
            "created": str(self.attrs.get("created", "")),
            # the command it last ran with: the newest resume's, else the one that started it
            "command": str(([self.attrs.get("command", "")] + [r["command"] for r in resumes if r.get("command")])[-1]),
            "git_commit": str(self.attrs.get("git_commit", "")), "resumes": len(resumes),
            # a run started with --branch-from: the checkpoint and its step (None otherwise)
            "branched_from": str(self.attrs["branched_from"]) if "branched_from" in self.attrs else None,
            "branch_step": int(self.attrs["branch_step"]) if "branch_step" in self.attrs else None,
            **self._settings_changed(cfg),
        }

    @staticmethod
    def _settings_changed(cfg) -> dict:
        """What the run computed with that its model does not say: the keys of [model],
        [train] (but its length) and [test] that differ from the bundled model of the same
        name, or, for a model of its own, from the defaults of docs/model.md."""
        from .config import Config, ConfigError, available_models, load_config

        base_name = cfg.name if cfg.name in available_models() else None
        try:
            base = load_config(base_name) if base_name else Config()
        except ConfigError:
            base, base_name = Config(), None
        a, b = base.to_dict(), cfg.to_dict()
        changed = {f"{section}.{key}": [a[section][key], value]
                   for section in ("model", "train", "test") for key, value in b[section].items()
                   if value != a[section][key] and (section, key) != ("train", "epochs")}
        return {"settings_from": base_name or "defaults", "settings_changed": changed}

    # --------------------------------------------------------------------- recordings
    def recorded(self, phase: str = "train") -> dict:
        """``{layer: (kinds...)}`` of what the probes recorded in ``phase``."""
        from .record import KINDS

        self._check_phase(phase)  # recorded("val") was {}, read as "nothing recorded"
        with _readable(self.path) as f:
            g = f.get(f"record/{phase}")
            if g is None:
                return {}
            return {layer: tuple(k for k in KINDS if k in g[layer])
                    for layer in self.layers if layer in g}

    def _why_not_recorded(self, phase: str, advice: str = _RECORD_ADVICE) -> str:
        """Why the file holds no recordings of ``phase``: the run records them (its probes)
        but its writer has not set them up yet; or it records training only
        (``record.test = false``), where advice to add a probe would not help; else
        ``advice``, how to record."""
        rp = self.config.record
        probes = ", ".join(map(str, rp.probes))
        if rp.probes and phase == "test" and not rp.test:
            return (f" (the run records {probes} in training only, record.test = false: record test passes too "
                    f"with spikefa train ... --record-test, or plot --phase train)")
        if rp.probes and not self.complete:
            return (f"; the run records {probes} but has not set up its recordings in the file yet (it is "
                    f"starting: read it again in a moment; or it was stopped before that)")
        return advice

    def _window(self, window, phase: str = "train"):
        self._check_phase(phase)
        if window is None:
            return None
        if isinstance(window, (tuple, list, np.ndarray)):
            if len(window) != 2:
                raise ValueError(f"window = {window!r}: expected (start, stop) steps")
            # (0.5, 50.5) was cut to (0, 50) without a word, NaN "cannot convert float NaN to integer"
            if not all(is_integer(x) for x in window):
                raise ValueError(f"window = {tuple(window)!r}: expected (start, stop) steps, two integers")
            if int(window[1]) <= int(window[0]):
                raise ValueError(f"window = {tuple(window)!r}: stop must be after start")
            return window
        if isinstance(window, (bool, float)) or not isinstance(window, (int, np.integer)):
            raise ValueError(f"window = {window!r}: expected (start, stop) steps, a window number or None")
        if phase == "test":
            passes = self.test_passes()
            if not 0 <= window < passes["start"].size:
                n = passes["start"].size
                raise ValueError(f"window = {window}: the run recorded {n} test pass{'' if n == 1 else 'es'}"
                                 + (f" (0 to {n - 1})" if n > 1 else ""))
            return int(passes["start"][window]), int(passes["stop"][window])
        if not 0 <= window < len(self.windows):
            raise ValueError(f"window = {window}: the run has {len(self.windows)} recording windows "
                             f"(0 to {len(self.windows) - 1})")
        return tuple(self.windows[int(window)])

    def _group(self, f, phase, layer, kind):
        self._check_phase(phase)
        self._check_layer(layer)
        path = f"record/{phase}/{layer}/{kind}"
        if path not in f:
            have = ", ".join(f"{k} of {lay}" for lay, ks in self.recorded(phase).items() for k in ks)
            have = have or "nothing" + self._why_not_recorded(phase, _RECORD_ADVICE[:-1] + "; see spikefa train --help)")
            raise RunFileError(f"{self.path}: {kind} of {layer} ({phase}) were not recorded; recorded: {have}")
        return f[path]

    def spikes(self, layer: str, window=None, *, phase: str = "train") -> Spikes:
        """Spike events of the recorded units of ``layer`` (indices within the layer)."""
        with _readable(self.path) as f:
            g = self._group(f, phase, layer, "spikes")
            i0, i1 = _row_range(g["step"], self._window(window, phase),
                                g["index"] if g.attrs["format"] == "events" else g["bits"])
            steps = g["step"][i0:i1]
            if g.attrs["format"] == "events":
                return Spikes(steps, g["index"][i0:i1])
            neurons = g.attrs["neurons"][...]
            bits = np.unpackbits(g["bits"][i0:i1], axis=1, count=neurons.size).astype(bool)
            r, c = np.nonzero(bits)
            return Spikes(steps[r], neurons[c].astype(np.int32))

    def raster(self, layer: str, window=None, *, phase: str = "train") -> Raster:
        """Spikes of the recorded units of ``layer`` as a boolean matrix over the recorded steps."""
        with _readable(self.path) as f:
            g = self._group(f, phase, layer, "spikes")
            neurons = g.attrs["neurons"][...].astype(np.int64)
            window = self._window(window, phase)
            if g.attrs["format"] == "packed":
                i0, i1 = _row_range(g["step"], window, g["bits"])
                bits = np.unpackbits(g["bits"][i0:i1], axis=1, count=neurons.size).astype(bool)
                return Raster(g["step"][i0:i1], neurons, bits)
            st = f[f"record/{phase}/stimulus/step"]
            j0, j1 = _row_range(st, window)
            steps = st[j0:j1]
            steps = steps[steps % int(g.attrs["every"]) == 0]
            # Each series is flushed when its own buffer is full. While the run is written (or
            # after it was killed) stimulus rows can be there before their events: only the
            # steps through which every series was flushed together are shown. Events can
            # also reach past the stimulus steps there: their rows are not in the file yet.
            upto = self._flushed_through(f, phase)
            if upto is not None:
                steps = steps[steps < upto]
            i0, i1 = _row_range(g["step"], window, g["index"])
            ev_step, ev_index = g["step"][i0:i1], g["index"][i0:i1]
            held = ev_step <= (steps[-1] if steps.size else -1)
            ev_step, ev_index = ev_step[held], ev_index[held]
            out = np.zeros((steps.size, neurons.size), bool)
            out[np.searchsorted(steps, ev_step), np.searchsorted(neurons, ev_index)] = True
            return Raster(steps, neurons, out)

    def _flushed_through(self, f, phase: str) -> int | None:
        """The step (of ``phase``) before which every recorded series of a run not complete
        is on disk together, or None: the run is complete, or its file does not say."""
        name = "progress/steps_recorded" if phase == "train" else "progress/test_steps_recorded"
        if self.complete:
            return None
        if name in f:
            return int(f[name][()])
        return self._tested_through(f) if phase == "test" else None

    def _tested_through(self, f) -> int | None:
        """For a file from before /progress/test_steps_recorded: the end of the recorded test
        passes whose row in /test is written (the writer flushes a pass whole before its row).
        None where the file cannot say (no passes; no ``n_test`` column)."""
        g = f.get("record/test/passes")
        if g is None:
            return None
        passes = _rows_together(dict(train_step=g["train_step"][...], start=g["start"][...]))
        rows = _rows_together({k: f["test"][k][...] for k in ("step", "n_test") if k in f["test"]})
        tested = rows["step"]
        # both in training order, a pass and its row at the same step (a resume cuts both back)
        done = int(np.searchsorted(passes["train_step"], tested[-1], side="right")) if tested.size else 0
        if done < passes["start"].size:
            return int(passes["start"][done])
        if not done:
            return 0
        # the last pass listed is done, and the next one's rows can reach the file before its
        # entry in the passes table: the pass ran its row's n_test images, M steps each
        if "n_test" not in rows:
            return None
        row = min(int(np.searchsorted(tested, passes["train_step"][-1])), tested.size - 1)
        length = int(rows["n_test"][row]) * self.config.test.steps_per_image
        limit = int(f["record"].attrs.get("test_steps", 0))
        return int(passes["start"][-1]) + (min(length, limit) if limit else length)

    def trace(self, layer: str, kind: str = "psp", window=None, *, phase: str = "train") -> Trace:
        """A traced population (``psp``, ``feedback_psp`` or ``modulator``) of ``layer``."""
        from .record import ALIASES, TRACE_KINDS

        kind = ALIASES.get(kind, kind)
        if kind not in TRACE_KINDS:
            raise ValueError(f"kind = {kind!r}; a trace is one of psp (V), feedback_psp (U), modulator (m)")
        with _readable(self.path) as f:
            g = self._group(f, phase, layer, kind)
            i0, i1 = _row_range(g["step"], self._window(window, phase), g["values"])
            return Trace(g["step"][i0:i1], g.attrs["neurons"][...].astype(np.int64), g["values"][i0:i1])

    def stimulus(self, window=None, *, phase: str = "train") -> Stimulus:
        """Class and image shown at every recorded step (-1 where the recorder was not told)."""
        with _readable(self.path) as f:
            g = f.get(f"record/{phase}/stimulus")
            if g is None:
                raise RunFileError(f"{self.path}: nothing was recorded in phase {phase!r}"
                                   + self._why_not_recorded(phase))
            i0, i1 = _row_range(g["step"], self._window(window, phase), g["label"], g["image"])
            return Stimulus(g["step"][i0:i1], g["label"][i0:i1], g["image"][i0:i1])

    def test_passes(self) -> dict:
        """Recorded test passes: ``train_step`` (training steps done when tested) and the
        test steps ``start``, ``stop`` they occupy (use ``(start, stop)`` as a window)."""
        with _readable(self.path) as f:
            g = f.get("record/test/passes")
            if g is None:
                return dict(train_step=np.zeros(0, np.int64), start=np.zeros(0, np.int64), stop=np.zeros(0, np.int64))
            passes = _rows_together(dict(train_step=g["train_step"][...], start=g["start"][...]))
            start = passes["start"]
            if not start.size:  # (a run that records its test passes, before the first)
                return dict(passes, stop=np.zeros(0, np.int64))
            end = f["record/test/stimulus/step"]
            last = int(end[end.shape[0] - 1]) + 1 if end.shape[0] else 0
            stop = np.append(start[1:], max(last, int(start[-1])))
            # the last pass ends where its recorded steps end so far (none yet: it is empty);
            # in a run not complete, where every test series is on disk together so far
            # (stimulus rows can reach the file before the events of their steps)
            upto = self._flushed_through(f, "test")
            if upto is not None:
                stop = np.maximum(np.minimum(stop, upto), start)
            return dict(passes, stop=stop)

    def angles(self) -> dict:
        """Alignment angles in degrees over training: ``step`` (steps done), and per hidden
        layer ``weight[layer]`` (``W^{l+1}`` vs ``B^l``) and ``modulator[layer]``
        (``(W^{l+1})^T e`` vs ``B^l e``)."""
        with _readable(self.path) as f:
            if "angles" not in f:
                raise RunFileError(f"{self.path}: no angles were recorded (record.measure_every = 0)")
            g = f["angles"]
            return _rows_together(dict(step=g["step"][...], weight={k: v[...] for k, v in g["weight"].items()},
                                       modulator={k: v[...] for k, v in g["modulator"].items()}))

    def saturation(self) -> dict:
        """Saturation over training: ``step`` (steps done) and, per non-input layer,
        ``abs_psp[layer]`` (mean ``|V|``), ``slope[layer]`` (mean ``sigma'(V)``) and
        ``abs_weight[layer]`` (mean ``|W|`` into the layer), sampled with the angles."""
        with _readable(self.path) as f:
            if "saturation" not in f:
                raise RunFileError(f"{self.path}: no saturation measures were recorded "
                                   "(record.measure_every = 0, or a run file written before they were added)")
            g = f["saturation"]
            out = dict(step=g["step"][...])
            for what, group in g.items():  # the measures the file holds (spikefa.record.SATURATION_FIELDS)
                if what != "step":
                    out[what] = {k: v[...] for k, v in group.items()}
            return _rows_together(out)

    def rates(self, layer: str | None = None) -> dict:
        """Firing rates (spikes per step) over the ``span`` steps before each ``step``
        (steps done). With ``layer``: ``rates`` of every unit, shape (samples, units);
        without: ``mean[layer]`` over the units of each layer."""
        with _readable(self.path) as f:
            if "rates" not in f:
                raise RunFileError(f"{self.path}: no rates were recorded (record.measure_every = 0)")
            g = f["rates"]
            out = dict(step=g["step"][...], span=g["span"][...])
            if layer is not None:
                self._check_layer(layer)
                out["rates"] = g[layer][...]
            else:
                # a few thousand rows at a time: the per-unit table can be large
                out["mean"] = {name: np.concatenate([np.zeros(0, np.float32)] + [
                    g[name][i:i + 4096].mean(axis=1) for i in range(0, g[name].shape[0], 4096)]) for name in self.layers}
            return _rows_together(out)

    def __repr__(self):
        return f"Run({str(self.path)!r}, model={self.config.name!r}, complete={self.complete})"


def load(path) -> Run:
    """Open a saved run read-only: ``spikefa.load('run.h5')``."""
    return Run(path)
