"""Ctrl-C and SIGTERM during training: a request to stop at the next block boundary.

Kept free of heavy imports, so that ``spikefa train`` can install it before it imports
the kernels, reads the data and compiles: a KeyboardInterrupt raised during that time can
be swallowed (when the signal lands in a weakref callback), and the run would go on to
its end.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


class StopRequest:
    """SIGINT/SIGTERM set :attr:`requested`, which the training loop honours at the end of
    its current block (the first, while it is still starting), so that the checkpoint is
    taken from a consistent state; a second Ctrl-C raises KeyboardInterrupt at once.

    One request serves a whole command: :func:`spikefa.train.train` takes over the one
    installed already (:meth:`installed`), as ``spikefa train`` installs it first, instead
    of making its own. :meth:`install` and :meth:`uninstall` nest; the outermost uninstall
    restores the handlers that were there before.
    """

    #: whether a stopped training run tells on stderr what it kept and how to continue it
    #: (a sweep, which continues its runs itself, says so in its own words)
    tell = True

    def __init__(self, notice: str | None = None):
        self.requested = False
        self._notice = notice  # said at the first signal (default: the training loop's)
        self._old: dict = {}
        self._depth = 0

    @staticmethod
    def installed() -> "StopRequest | None":
        """The request whose handler has SIGINT now, if any."""
        owner = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
        return owner if isinstance(owner, StopRequest) else None

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            # from now on Python's own handler: a third Ctrl-C stops whatever runs
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if _in_callback(frame):
                # an exception raised inside a weakref callback or __del__ is printed as
                # "Exception ignored in ..." and dropped: deliver this Ctrl-C again, to
                # Python's handler, a moment later, when that code has returned
                import _thread

                threading.Timer(0.05, _thread.interrupt_main).start()
                return
            raise KeyboardInterrupt
        if not self.requested:
            # a block of the full network takes seconds: say at once that the stop was heard
            hurry = ("Ctrl-C again stops without waiting" if signum == signal.SIGINT else
                     f"a SIGINT (Ctrl-C, or kill -INT {os.getpid()}) stops without waiting")
            notice = self._notice or ("stopping at the end of this block (the first, if training is still "
                                      "starting) to write a checkpoint (--resume continues from it)")
            print(f"\nspikefa: {signal.Signals(signum).name} received: {notice}; {hurry}", file=sys.stderr, flush=True)
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.signal(sig, self._handler)
            if not self._depth:
                self._old[sig] = old
        self._depth += 1

    def uninstall(self) -> None:
        if not self._depth or threading.current_thread() is not threading.main_thread():
            return  # (install did nothing there; signal.signal would raise)
        self._depth -= 1
        if not self._depth:
            for sig, old in self._old.items():
                signal.signal(sig, old)
            self._old.clear()


class StopFile(StopRequest):
    """A stop asked for by the existence of a file: how a sweep stops the runs its workers,
    other processes or hosts that see the sweep folder, are training. Training checks
    :attr:`requested` once per block (a ``stat``) and stops as for a Ctrl-C, writing its
    checkpoint; it installs no signal handlers and tells nothing (the sweep does)."""

    tell = False

    def __init__(self, path):
        super().__init__()
        self.path = os.fspath(path)

    @property
    def requested(self) -> bool:
        return self._requested or os.path.exists(self.path)

    @requested.setter
    def requested(self, value: bool) -> None:
        self._requested = bool(value)

    def install(self) -> None:
        pass

    def uninstall(self) -> None:
        pass


def _in_callback(frame) -> bool:
    """Whether a signal landed in code whose exceptions Python drops (a weakref callback, as
    in ``weakref.py``, or a ``__del__``)."""
    return frame is not None and (frame.f_code.co_name == "__del__" or frame.f_code.co_filename.endswith("weakref.py"))
