"""SIGTERM and SIGHUP end a run the way Ctrl-C does: as an exception.

By default those signals end Python at once, so nothing is cleaned up (a
decompressed temporary copy of a raw frame stays behind). Within
`signals_as_exceptions` they raise `Terminated`, a `KeyboardInterrupt`, so
every ``finally`` runs: temporaries are removed, the log says the run was
stopped, and the rerun finishes the job. (``kill -9`` cannot be caught;
what it leaves, the next run removes.)
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["Terminated", "signals_as_exceptions"]

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                 if hasattr(signal, name))


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM or SIGHUP.

    Attributes
    ----------
    signal : int
        The signal number.
    """

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signal = signum


def _raise(signum, frame):
    raise Terminated(signum)


@contextmanager
def signals_as_exceptions():
    """Within the block, SIGTERM and SIGHUP raise `Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
