"""What is in a folder of raw frames: `survey` and `FrameInfo`.

Built on ccdproc's `~ccdproc.ImageFileCollection`, which lists the FITS
files and reads their headers; apocal adds, for every file, the instrument
that wrote it, the kind of frame, and the reason when a file cannot be used.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits
from astropy.table import Table
from ccdproc import ImageFileCollection

from .detection import instrument_for
from .exceptions import ApocalError, FrameError
from .instrument import Instrument
from .io import read_header

__all__ = ["FrameInfo", "survey", "survey_table"]


@dataclass
class FrameInfo:
    """One raw file as the night pipeline sees it.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    instrument : Instrument or None
        The instrument that wrote it (None when unknown).
    kind : str or None
        ``bias``, ``dark``, ``flat``, ``arc`` or ``science``.
    exptime : float or None
        Exposure time, seconds.
    binning : str
        ``"<x>x<y>"``.
    configuration : dict
        What must match between calibrations and science (binning
        excluded), e.g. grating, slit, filter.
    lamps : str
        Lamps that were on (arcs and flats).
    date : str
        Start of the exposure as written in the header.
    header : astropy.io.fits.Header or None
        The header, when it could be read.
    problem : str or None
        Why the file cannot be used; None when it can.
    """

    path: Path
    instrument: Instrument | None = None
    kind: str | None = None
    exptime: float | None = None
    binning: str = ""
    configuration: dict = field(default_factory=dict)
    lamps: str = ""
    date: str = ""
    header: fits.Header | None = field(default=None, repr=False)
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def usable(self) -> bool:
        return self.problem is None

    def describe_configuration(self) -> str:
        """The configuration as ``key=value`` words (empty values left out)."""
        return " ".join(f"{k}={v}" for k, v in self.configuration.items() if v)


def survey(raw_dir: str | os.PathLike, instrument: Instrument | None = None) -> list[FrameInfo]:
    """Describe every FITS file in ``raw_dir``.

    Parameters
    ----------
    raw_dir : str or path-like
        Folder of raw frames (not searched recursively). Nothing in it is
        written or modified.
    instrument : Instrument, optional
        Use this instrument for every file instead of recognising each
        file's own from its header.

    Returns
    -------
    list of FrameInfo
        Sorted by file name; unusable files carry a ``problem``.

    Raises
    ------
    ApocalError
        If ``raw_dir`` is not a readable folder.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ApocalError(f"{raw_dir}: not a folder")
    if not os.access(raw_dir, os.R_OK | os.X_OK):
        raise ApocalError(f"{raw_dir}: folder cannot be read")
    collection = _collection(raw_dir)
    headers = {}
    if len(collection.files):
        with _quiet():
            for header, name in collection.headers(return_fname=True):
                headers[name] = header
    infos = []
    for name in sorted(collection.files):
        path = raw_dir / name
        header = headers.get(name)
        infos.append(_describe(path, header, instrument))
    return infos


def survey_table(infos: list[FrameInfo]) -> Table:
    """The survey as an astropy Table (one row per file)."""
    rows = []
    for info in infos:
        rows.append({
            "file": info.name,
            "instrument": info.instrument.name if info.instrument else "",
            "kind": info.kind or "",
            "exptime": info.exptime if info.exptime is not None else float("nan"),
            "binning": info.binning,
            "configuration": info.describe_configuration(),
            "lamps": info.lamps,
            "date": info.date,
            "problem": info.problem or "",
        })
    names = ["file", "instrument", "kind", "exptime", "binning", "configuration", "lamps",
             "date", "problem"]
    table = Table(rows=[[row[n] for n in names] for row in rows], names=names) if rows else \
        Table(names=names, dtype=[str, str, str, float, str, str, str, str, str])
    table["exptime"].unit = "s"
    table["exptime"].format = "g"
    return table


def _collection(raw_dir: Path) -> ImageFileCollection:
    with _quiet():
        return ImageFileCollection(str(raw_dir), keywords="*")


class _quiet:
    """Silence ccdproc's and astropy's complaints about bad files: apocal
    reports each problem itself, once, with the file's name."""

    def __enter__(self):
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("ignore")
        self._loggers = [logging.getLogger(n) for n in ("ccdproc.image_collection", "astropy")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.CRITICAL)
        return self

    def __exit__(self, *exc):
        for lg, level in zip(self._loggers, self._levels):
            lg.setLevel(level)
        return self._warnings.__exit__(*exc)


def _describe(path: Path, header, instrument) -> FrameInfo:
    info = FrameInfo(path)
    try:
        if header is None:
            read_header(path)          # raises with the reason
            raise FrameError(path, "header could not be read")
        header = fits.Header(header)
        _check_complete(path)
        info.header = header
        found = instrument if instrument is not None else instrument_for(header)
        if instrument is not None:
            instrument.check_frame(header, path)
        info.instrument = found
        info.kind = found.classify(header, path)
        info.exptime = found.exposure_time(header, path)
        bx, by = found.binning(header)
        info.binning = f"{bx}x{by}"
        info.configuration = {k: v for k, v in found.configuration(header).items()
                              if k != "binning"}
        info.lamps = _lamps(found, header)
        info.date = str(header.get(found.date_key, ""))
    except FrameError as err:
        info.problem = err.problem
    return info


def _lamps(instrument: Instrument, header) -> str:
    on = instrument.lamps_on(header)
    if on:
        return ",".join(on)
    return str(header.get("LAMP", "")).strip()


def _check_complete(path: Path) -> None:
    """A file shorter than its header says is truncated (uncompressed files)."""
    if path.suffix.lower() not in (".fits", ".fit", ".fts"):
        return
    with _quiet(), fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
        info = hdul.fileinfo(0)
        expected = info["datLoc"] + info["datSpan"]     # data start and padded size
    if os.path.getsize(path) < expected:
        raise FrameError(path, f"is truncated ({os.path.getsize(path)} of {expected} bytes)")
