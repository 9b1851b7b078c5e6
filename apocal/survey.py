"""What is in a folder of raw frames: `survey` and `FrameInfo`.

Every FITS file is found by its name (as ccdproc's
`~ccdproc.ImageFileCollection` finds them, compressed or not); only
regular files are read (a FIFO would hang the reader), and one damaged file
cannot stop the survey. Each is opened with `apocal.io.RawImage`, which
reads its headers: a frame is described by the header of its image merged
with the primary header, so a multi-extension file with an empty primary is
described by what its image extension says (binning, sections, gain). For
every file: the instrument that wrote it, the kind of frame, and the reason
when it cannot be used (not a regular file, a header bomb, not FITS,
truncated, unknown instrument, a product rather than a raw frame, or not
shaped like the instrument's raw frames).

ccdproc's `~ccdproc.ImageFileCollection` itself is not used: it describes a
file by its primary header only (empty in a multi-extension file), and one
damaged file stops it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from .detection import instrument_for
from .exceptions import ApocalError, FrameError
from .instrument import Instrument
from .io import RawImage

__all__ = ["FrameInfo", "survey", "survey_table", "fits_files"]

# Longest primary header read (bytes): 280 FITS blocks, 10080 cards, far
# more than any camera writes (a few hundred); astropy's handling of a
# header grows faster than its length (20000 cards took a minute to reduce,
# a "header bomb" of millions would take hours).
_LONGEST_HEADER = 280 * 2880
_END_CARD = b"END" + b" " * 77

# File names taken for FITS files (those ccdproc's ImageFileCollection takes).
_FITS_ENDINGS = tuple(f".{ext}{comp}" for ext in ("fit", "fits", "fts")
                      for comp in ("", ".gz", ".bz2", ".xz", ".z", ".zip", ".fz"))


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
    names, odd = _fits_names(raw_dir)
    infos = [FrameInfo(raw_dir / name, problem=problem) for name, problem in odd.items()]
    infos += [_describe(raw_dir / name, instrument) for name in names]
    return sorted(infos, key=lambda info: info.name)


def fits_files(folder) -> list[Path]:
    """The FITS files of a folder (not its subfolders) that can be read,
    sorted by name: regular files with a FITS name (compressed or not) and a
    header of sensible length."""
    return [Path(folder) / name for name in _fits_names(Path(folder))[0]]


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


def _fits_names(raw_dir: Path) -> tuple[list[str], dict[str, str]]:
    """Names of the FITS files in ``raw_dir`` (by extension, as ccdproc
    finds them) that are regular files, and the reason for the others: a
    FIFO named ``x.fits`` would make a reader wait for ever."""
    names = [name for name in os.listdir(raw_dir) if name.lower().endswith(_FITS_ENDINGS)]
    regular, odd = [], {}
    for name in names:
        path = raw_dir / name
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            odd[name] = "broken symbolic link (what it points to does not exist)" \
                if path.is_symlink() else "no such file"
            continue
        except OSError as err:
            odd[name] = f"cannot be read ({err.strerror})"
            continue
        if not stat.S_ISREG(mode):
            odd[name] = f"is not a regular file ({_file_type(mode)}); not read"
            continue
        try:
            problem = _header_problem(path)
        except OSError as err:
            problem = f"cannot be read ({err.strerror})"
        if problem:
            odd[name] = problem
        else:
            regular.append(name)
    return sorted(regular), odd


def _header_problem(path: Path) -> str | None:
    """Why the primary header cannot be read safely: longer than
    `_LONGEST_HEADER` bytes (a "header bomb": astropy would parse millions
    of cards), or None. A damaged file is left to the reader to name."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    opener = (gzip.open if magic[:2] == b"\x1f\x8b" else bz2.open if magic[:3] == b"BZh"
              else lzma.open if magic == b"\xfd7zXZ\x00" else open)
    try:
        with opener(path, "rb") as stream:
            for _ in range(_LONGEST_HEADER // 2880):
                block = stream.read(2880)
                if len(block) < 2880:
                    return None
                if any(block[i:i + 80] == _END_CARD for i in range(0, 2880, 80)):
                    return None
    except PermissionError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        return None
    return (f"its header is longer than {_LONGEST_HEADER // 80} cards "
            f"({_LONGEST_HEADER // 1024} KiB): a damaged or hostile file?")


def _file_type(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "not a file"


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
    except (Exception, SystemExit) as err:
        # an instrument's own code (a user's plugin) failed on this file:
        # the file is left out, the night goes on
        who = type(info.instrument or instrument).__name__ if (info.instrument or instrument) \
            else "instrument recognition"
        what = f"sys.exit({err.code!r})" if isinstance(err, SystemExit) else \
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        info.problem = f"{who} failed on it ({what})"
    return info


def _lamps(instrument: Instrument, header) -> str:
    on = instrument.lamps_on(header)
    if on:
        return ",".join(on)
    return str(header.get("LAMP", "")).strip()
