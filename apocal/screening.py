"""Checks every frame of a night before it is used: `screen_frames`.

A frame that cannot be used must be left out and named, not spoil the
master it would go into (a single frame of another shape made the whole
combination fail) nor slip in unseen (an all-NaN bias, a copy of a frame
counted twice). Each usable frame is read once, a block at a time:

- its data must be all there (a file shorter than its header says is
  truncated), and of a size apocal agrees to read (a small compressed file
  whose header declares gigabytes is refused before anything is
  decompressed);
- its image must hold at least one finite value;
- its image must have the shape most frames of its instrument and binning
  have;
- its pixel data must differ from every other frame's: the data of every
  HDU are hashed (BLAKE2b; headers left out, so a copy with an edited
  header is still a copy), and a repeat is left out, naming the first.

The hash doubles as the frame's fingerprint: a resumed reduction compares
it with the one recorded when the masters were built.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from .exceptions import FrameError
from .io import RawFile, fits_error_reason, open_fits
from .scratch import MAX_TEMPORARY_BYTES
from .survey import FrameInfo

__all__ = ["screen_frames", "frame_fingerprint", "Fingerprint"]

# Bytes read at a time (a multiple of every FITS pixel size).
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a raw frame's content.

    Attributes
    ----------
    name : str
        File name.
    size : int
        File size, bytes.
    digest : str
        BLAKE2b hash (hex, 32 characters) of the pixel data of every HDU
        (what makes two frames copies of each other).
    content : str
        BLAKE2b hash of the headers and data together (what a resumed
        reduction compares: a corrected EXPTIME changes the products).
    shape : tuple of int
        numpy shape of the image (rows, columns).
    """

    name: str
    size: int
    digest: str
    shape: tuple
    content: str = ""

    def record(self) -> list:
        """As written into JSON: ``[name, size, content]``."""
        return [self.name, self.size, self.content]


def screen_frames(infos: list[FrameInfo]) -> tuple[dict[Path, Fingerprint], list[str]]:
    """Check every usable frame; those that fail get a ``problem``.

    Parameters
    ----------
    infos : list of FrameInfo
        From `apocal.survey.survey`. Frames found unusable here are given a
        ``problem`` (so grouping leaves them out and the table shows why).

    Returns
    -------
    fingerprints : dict
        Path -> `Fingerprint` of every frame still usable.
    problems : list of str
        One line per frame left out, naming it.
    """
    prints: dict[Path, Fingerprint] = {}
    problems = []

    def leave_out(info, problem):
        info.problem = problem
        prints.pop(info.path, None)
        use = f"left out of the master {info.kind}" if info.kind in ("bias", "dark", "flat",
                                                                   "arc") else "not calibrated"
        problems.append(f"{info.name}: {problem} ({use})")

    for info in infos:
        if not info.usable:
            continue
        try:
            prints[info.path] = frame_fingerprint(info.path, info.instrument.data_extension)
        except FrameError as err:
            leave_out(info, err.problem)

    by_detector: dict[tuple, list[FrameInfo]] = {}
    for info in infos:
        if info.usable:
            by_detector.setdefault((info.instrument.name, info.binning), []).append(info)
    for (name, binning), frames in by_detector.items():
        counts = Counter(prints[f.path].shape for f in frames)
        first = {}
        for f in frames:
            first.setdefault(prints[f.path].shape, f.name)
        usual = max(counts, key=lambda s: (counts[s], [-ord(c) for c in first[s]]))
        for f in frames:
            shape = prints[f.path].shape
            if shape != usual:
                leave_out(f, f"its image is {_size(shape)} pixels, unlike the {counts[usual]} "
                             f"frames of {name} {binning} that are {_size(usual)} (a window, "
                             f"or another readout?)")

    seen: dict[str, str] = {}
    for info in infos:
        if info.usable:
            digest = prints[info.path].digest
            if digest in seen:
                leave_out(info, f"has the same pixel data as {seen[digest]} (a copy?); "
                                f"counted once")
            else:
                seen[digest] = info.name
    return prints, problems


def _size(shape) -> str:
    return f"{shape[1]}x{shape[0]}"


def frame_fingerprint(path, extension: int | str = 0) -> Fingerprint:
    """Read a raw file once: its fingerprint, after checking its data.

    Parameters
    ----------
    path : str or path-like
    extension : int or str
        HDU of the image (as `apocal.io.RawImage` takes it).

    Raises
    ------
    FrameError
        If the file is not FITS, is truncated, declares too much data, or
        its image holds no finite value.
    """
    path = Path(path)
    index = RawFile(path).index(extension)
    with open_fits(path) as hdul:
        image = hdul[index]
        shape = tuple(int(n) for n in image.shape)
        if len(shape) != 2:
            raise FrameError(path, f"holds a {len(shape)}-D array; a 2-D image was expected")
        regions = []
        for index, hdu in enumerate(hdul):
            info = hdul.fileinfo(index)
            # a tile-compressed image's header describes the image, not the
            # table of tiles on disk: take the span astropy found
            size = info["datSpan"] if isinstance(hdu, fits.CompImageHDU) else \
                _data_bytes(hdu.header)
            if size:
                regions.append((info["datLoc"], size, hdu is image))
        compressed_image = isinstance(image, fits.CompImageHDU)
        check = None if compressed_image else _finite_check(image.header)
        if compressed_image and int(image.header.get("ZBITPIX", 16)) < 0 \
                and not np.isfinite(image.data).any():
            raise FrameError(path, "has no finite pixel value (all NaN or infinite)")
    total = sum(size for _, size, _ in regions)
    if total > MAX_TEMPORARY_BYTES:
        raise FrameError(path, f"its header declares {total / 2**30:.1f} GiB of data, more "
                               f"than apocal reads ({MAX_TEMPORARY_BYTES / 2**30:.0f} GiB); a "
                               f"damaged or hostile file?")
    digest = hashlib.blake2b(digest_size=16)
    whole = hashlib.blake2b(digest_size=16)
    finite = check is None
    try:
        with _open_stream(path) as stream:
            position = 0
            for offset, size, is_image in sorted(regions):
                _skip(stream, offset - position, path, whole)
                left = size
                while left:
                    chunk = stream.read(min(left, _CHUNK))
                    if len(chunk) < min(left, _CHUNK):
                        raise FrameError(path, f"is truncated (its data stop "
                                               f"{left - len(chunk)} bytes short of what its "
                                               f"header declares)")
                    digest.update(chunk)
                    whole.update(chunk)
                    if is_image and not finite:
                        finite = check(chunk)
                    left -= len(chunk)
                position = offset + size
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        raise FrameError(path, f"cannot be read ({fits_error_reason(err)})") from err
    if not finite:
        raise FrameError(path, "has no finite pixel value (all NaN or infinite)")
    return Fingerprint(path.name, path.stat().st_size, digest.hexdigest(), shape,
                       whole.hexdigest())


def _data_bytes(header) -> int:
    """Bytes of data an HDU declares (FITS standard 4.4.1.1)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    count = 1
    for axis in range(1, naxis + 1):
        count *= int(header.get(f"NAXIS{axis}", 0))
    count = int(header.get("GCOUNT", 1)) * (int(header.get("PCOUNT", 0)) + count)
    return abs(int(header["BITPIX"])) // 8 * count


def _finite_check(header):
    """A function telling whether a chunk of the image's bytes holds a
    usable value: a finite float, or an integer other than BLANK."""
    bitpix = int(header["BITPIX"])
    dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}[bitpix])
    if dtype.kind == "f":
        return lambda chunk: bool(np.isfinite(np.frombuffer(chunk, dtype)).any())
    if "BLANK" in header:
        blank = int(header["BLANK"])
        return lambda chunk: bool((np.frombuffer(chunk, dtype) != blank).any())
    return None


def _open_stream(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _skip(stream, count: int, path, whole) -> None:
    while count > 0:
        chunk = stream.read(min(count, _CHUNK))
        if not chunk:
            raise FrameError(path, "is truncated (the file ends before its data)")
        whole.update(chunk)
        count -= len(chunk)
