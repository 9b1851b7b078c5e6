"""What is in a folder of raw frames: `survey` and `FrameInfo`.

Every FITS file (a regular file with a FITS name, compressed or not) is
opened once with `apocal.io.RawFile`, which reads all its headers: a frame
is described by the header of its image merged with the primary header,
so a multi-extension file with an empty primary is described by what its
image extension says (binning, sections, gain). For every file: the
instrument that wrote it, the kind of frame, and the reason when it cannot
be used (not FITS, truncated, unknown instrument, a product rather than a
raw frame, or not shaped like the instrument's raw frames).

ccdproc's `~ccdproc.ImageFileCollection` is not used here: it describes a
file by its primary header only (empty in a multi-extension file).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from .detection import instrument_for
from .exceptions import ApocalError, FrameError
from .instrument import Instrument
from .io import RawImage

__all__ = ["FrameInfo", "survey", "survey_table", "fits_files"]

# File names taken as FITS (as ImageFileCollection takes them), compressed or not.
_FITS_NAME = re.compile(r"\.(fits|fit|fts|fz)(\.(gz|bz2|xz))?$", re.IGNORECASE)


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
        The header of the frame's image (merged with the primary header),
        when it could be read.
    shape : tuple of int
        numpy shape of that image.
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
    shape: tuple = ()
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
    return [_describe(path, instrument) for path in fits_files(raw_dir)]


def fits_files(folder) -> list[Path]:
    """The FITS files of a folder (not its subfolders), sorted by name:
    regular files named ``*.fits``, ``*.fit``, ``*.fts`` or ``*.fz``,
    possibly ``.gz``, ``.bz2`` or ``.xz`` compressed. Anything else (a pipe,
    a device, a folder with such a name) is left alone."""
    found = []
    for entry in os.scandir(folder):
        if _FITS_NAME.search(entry.name) and entry.is_file():
            found.append(Path(folder) / entry.name)
    return sorted(found)


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


def _describe(path: Path, instrument) -> FrameInfo:
    info = FrameInfo(path)
    try:
        extension = instrument.data_extension if instrument is not None else 0
        image = RawImage(path, extension)
        header = image.header
        found = instrument if instrument is not None \
            else instrument_for(header, filename=path.name)
        if instrument is None:   # now that the camera is known, its own image
            image = image.sibling(found.data_extension)
            header = image.header
        info.header, info.shape = header, image.shape
        found.check_frame(header, path)
        info.instrument = found
        info.kind = found.kind_of(header, path)
        info.exptime = found.exposure_time(header, path)
        bx, by = found.binning(header)
        info.binning = f"{bx}x{by}"
        info.configuration = {k: v for k, v in found.configuration(header).items()
                              if k != "binning"}
        info.lamps = _lamps(found, header)
        info.date = str(header.get(found.date_key, ""))
        try:
            found.frame_layout(image, detector=False)
        except FrameError as err:
            raise FrameError(path, f"is not a raw {found.name} frame: {err.problem}") from None
    except FrameError as err:
        info.problem = err.problem
    return info


def _lamps(instrument: Instrument, header) -> str:
    on = instrument.lamps_on(header)
    if on:
        return ",".join(on)
    return str(header.get("LAMP", "")).strip()
