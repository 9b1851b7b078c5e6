"""Errors and warnings raised by apocal.

Every error a user can meet names what is wrong and, where a file is
involved, which file.
"""

from __future__ import annotations

import os

from astropy.utils.exceptions import AstropyUserWarning

__all__ = [
    "ApocalError",
    "FrameError",
    "UnknownInstrumentError",
    "CalibrationError",
    "ApocalWarning",
]


class ApocalError(Exception):
    """Base class of every error apocal raises on purpose."""


class FrameError(ApocalError):
    """A frame (usually a file) cannot be used; the message names it.

    Parameters
    ----------
    source : str, path-like or None
        The file (or a description of an in-memory frame) that is at fault.
    problem : str
        What is wrong with it, in words a user can act on.
    """

    def __init__(self, source: str | os.PathLike | None, problem: str) -> None:
        self.source = os.fspath(source) if source is not None else None
        self.problem = problem
        where = self.source if self.source is not None else "<in-memory frame>"
        super().__init__(f"{where}: {problem}")


class UnknownInstrumentError(FrameError):
    """No built-in instrument recognises the header of a frame."""


class CalibrationError(ApocalError):
    """Calibration frames are missing, inconsistent or unusable."""


class ApocalWarning(AstropyUserWarning):
    """Something looks wrong but the work can go on (e.g. non-linear arc lines)."""
