"""Named stages of a reduction, and a pause at one of them (for fault tests).

A night's reduction announces the stages below as it reaches them. Nothing
happens unless the environment variable ``APOCAL_PAUSE_AT`` names one: the
run then stops there and waits, so that a test can kill it (``kill -9``,
SIGINT, SIGTERM) at a known point, deterministically. This is the one
place where the hook is documented.

``APOCAL_PAUSE_AT=STAGE[@N]``
    Pause the N-th time (default: the first) a stage matching ``STAGE`` is
    reached. ``STAGE`` is a stage name, or ``name:detail`` to match one
    detail only (``written:master_bias.fits``).
``APOCAL_PAUSE_FILE=PATH``
    When paused, write ``"<stage> <pid>"`` into PATH (created; the tests
    wait for it). A line ``apocal: paused at <stage> (process <pid>)`` also
    goes to standard error.
``APOCAL_PAUSE_SECONDS=S``
    Give up waiting after S seconds (default 300) with an error, so a
    forgotten paused run does not wait for ever.

Stages (``detail`` after the colon):

``surveyed``
    The raw folder is surveyed and every frame checked; nothing written
    yet but ``run.json``, the lock and the log.
``written:<file name>``
    A file has just been written (under its final name) into the output
    folder: a master (``master_bias.fits``...), a calibrated frame
    (``<name>_cal.fits``), ``calibration_set.json``, ``summary.json``,
    a report figure...
``masters-built:<group>``
    A group's masters are complete in their temporary folder, which is not
    yet renamed to ``masters/<group>``.
``decompressing:<raw file name>``
    A temporary decompressed copy of a gzip-compressed raw file is half
    written.
``summary``
    Every group is reduced; ``summary.json`` is about to be written.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["reached", "PAUSE_VARIABLE"]

PAUSE_VARIABLE = "APOCAL_PAUSE_AT"

_counts: dict[str, int] = {}


def reached(stage: str, detail: str | None = None) -> None:
    """Announce that the run reached ``stage`` (pausing there if asked).

    Parameters
    ----------
    stage : str
        One of the stage names listed in this module's documentation.
    detail : str, optional
        What the stage is about (a file or group name).
    """
    wanted = os.environ.get(PAUSE_VARIABLE)
    if not wanted:
        return
    pattern, _, nth = wanted.partition("@")
    name, _, want_detail = pattern.partition(":")
    if name != stage or (want_detail and want_detail != detail):
        return
    _counts[pattern] = _counts.get(pattern, 0) + 1
    if _counts[pattern] != (int(nth) if nth else 1):
        return
    _pause(stage if detail is None else f"{stage}:{detail}")


def _pause(where: str) -> None:
    print(f"apocal: paused at {where} (process {os.getpid()})", file=sys.stderr, flush=True)
    marker = os.environ.get("APOCAL_PAUSE_FILE")
    if marker:
        with open(marker + ".tmp", "w") as handle:
            handle.write(f"{where} {os.getpid()}\n")
        os.replace(marker + ".tmp", marker)
    limit = float(os.environ.get("APOCAL_PAUSE_SECONDS", "300"))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.05)       # a signal interrupts the sleep
    from .exceptions import ApocalError

    raise ApocalError(f"paused at {where} for {limit:g} s ({PAUSE_VARIABLE}) and nobody came")
