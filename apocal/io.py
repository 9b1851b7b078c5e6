"""Reading raw FITS files safely and writing products atomically.

Raw files are opened read-only and never written. Products (processed
frames, masters, calibrated science) are written as a primary HDU with the
data plus ``UNCERT`` (standard deviation), ``MASK`` and ``FLAGS``
extensions; a file appears under its final name only once it is complete.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import warnings
import weakref
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.utils.exceptions import AstropyWarning

from . import stages
from .exceptions import FrameError
from .flags import FLAG_DTYPE, describe_flags
from .output import write_atomically
from .scratch import check_room, new_scratch_file, remove_quietly

__all__ = ["read_raw", "read_header", "open_fits", "RawFile", "RawImage", "write_frame",
           "read_frame", "atomic_write_bytes", "fits_error_reason", "card_text"]

# Largest integer a float32 holds exactly: raw values within it are kept in
# float32 without loss, halving memory for the common case.
_FLOAT32_EXACT = 2**24


def read_raw(path: str | os.PathLike, extension: int | str = 0) -> tuple[np.ndarray, fits.Header]:
    """Read the image and header of one raw FITS file, exactly.

    Parameters
    ----------
    path : str or path-like
        A FITS file, possibly gzip-compressed (``.fits.gz``).
    extension : int or str
        HDU holding the image (index or EXTNAME). When it is the primary
        HDU and that is empty (a multi-extension file), the first image
        extension is used.

    Returns
    -------
    data : numpy.ndarray
        The image in ADU, BZERO/BSCALE applied in float64 (as `RawImage`
        does); float32 when that holds every value exactly, else float64.
    header : astropy.io.fits.Header
        The image HDU header, preceded by the primary header's cards for a
        multi-extension file.

    Raises
    ------
    FrameError
        If the file is missing, not FITS, truncated, has no 2-D image, or
        holds no finite value.
    """
    image = RawImage(path, extension)
    data = image.rows(0, image.shape[0])
    if data.dtype == np.float64:
        narrow = data.astype(np.float32)
        if np.array_equal(narrow, data, equal_nan=True):
            data = narrow
    if not np.isfinite(data).any():
        raise FrameError(path, "has no finite pixel value (all NaN or infinite)")
    return data, image.header


def read_header(path: str | os.PathLike) -> fits.Header:
    """The header describing a FITS file's image: the primary header, merged
    with the first image extension's when the primary HDU holds no data (a
    multi-extension file), as `read_raw` gives it.

    Raises
    ------
    FrameError
        If the file is missing or is not FITS.
    """
    with open_fits(path) as hdul:
        if int(hdul[0].header.get("NAXIS", 0)) > 0:
            return hdul[0].header.copy()
        for hdu in hdul[1:]:
            if getattr(hdu, "is_image", False) and int(hdu.header.get("NAXIS", 0)) > 0:
                return _image_header(hdul, hdu)
        return hdul[0].header.copy()


@contextmanager
def open_fits(path: str | os.PathLike) -> Iterator[fits.HDUList]:
    """Open a FITS file read-only, turning every failure into a `FrameError`.

    astropy's warnings about odd but legal headers are silenced: apocal
    reports real problems itself (a truncated file fails when its data are
    read).
    """
    path = Path(path)
    if not path.is_file():
        raise FrameError(path, "no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            with fits.open(path, mode="readonly", memmap=False) as hdul:
                yield hdul
    except FrameError:
        raise
    except (OSError, TypeError, ValueError, EOFError, zlib.error) as err:
        raise FrameError(path, f"cannot be read as FITS ({fits_error_reason(err)})") from err


def _image_header(hdul, hdu) -> fits.Header:
    """The image HDU's header, preceded by the primary header's cards when
    the image is in an extension."""
    header = hdu.header.copy()
    if hdu is hdul[0]:
        return header
    merged = hdul[0].header.copy()
    merged.strip()
    merged.extend(header, update=True)
    return merged


# numpy dtype of the values stored in a FITS image, by BITPIX.
_STORED = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
           -32: np.dtype(">f4"), -64: np.dtype(">f8")}


def _exact_dtype(stored: np.dtype, scale: float, zero: float) -> np.dtype:
    """The narrowest float dtype that holds every scaled value exactly.

    Integers up to 2**24 fit a float32; 32- and 64-bit integers, a
    non-integer zero point or any scale factor need float64.
    """
    if stored.kind == "f":
        plain = scale == 1.0 and zero == 0.0 and stored.itemsize == 4
        return np.dtype(np.float32 if plain else np.float64)
    if scale != 1.0 or zero != int(zero):
        return np.dtype(np.float64)
    info = np.iinfo(stored)
    largest = max(abs(info.min + zero), abs(info.max + zero))
    return np.dtype(np.float32 if largest <= _FLOAT32_EXACT else np.float64)


class _ImageInfo:
    """Where one image HDU's pixels are and how they are stored."""

    def __init__(self, hdul, hdu, path):
        self.index = hdul.index(hdu)
        self.header = _image_header(hdul, hdu)
        self.shape = tuple(int(n) for n in hdu.shape)
        self.compressed = isinstance(hdu, fits.CompImageHDU)
        raw = hdu.header
        self.stored = _STORED[int(raw["BITPIX"])] if not self.compressed else None
        self.scale = float(raw.get("BSCALE", 1.0))
        self.zero = float(raw.get("BZERO", 0.0))
        blank = raw.get("BLANK")
        self.blank = int(blank) if blank is not None and self.stored is not None \
            and self.stored.kind != "f" else None
        self.offset = hdul.fileinfo(self.index)["datLoc"]
        self.dtype = (_exact_dtype(self.stored, self.scale, self.zero) if self.stored is not None
                      else np.dtype(np.float64))
        for key in ("BZERO", "BSCALE", "BLANK"):
            self.header.remove(key, ignore_missing=True)


class RawFile:
    """A raw FITS file whose image HDUs are read a block of rows at a time.

    The headers are read when it is opened; pixels only when asked for, by
    the `RawImage` of each HDU (`image`). A gzip-compressed file is
    decompressed once (gzip, bzip2 or xz, as astropy reads them), into a
    temporary file shared by all its images and removed with the `RawFile`. The file is opened read-only every time.

    Parameters
    ----------
    path : str or path-like

    Raises
    ------
    FrameError
        If the file is missing or not FITS.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._images: dict[int, RawImage] = {}
        self._file = None
        with open_fits(self.path) as hdul:
            self._names = [hdu.name.upper() for hdu in hdul]
            self._empty_primary = int(hdul[0].header.get("NAXIS", 0)) == 0
            self._infos = {hdul.index(hdu): _ImageInfo(hdul, hdu, self.path) for hdu in hdul
                           if getattr(hdu, "is_image", False)
                           and int(hdu.header.get("NAXIS", 0)) > 0}
            ends = [info["datLoc"] + info["datSpan"] for info in map(hdul.fileinfo, self._infos)]
        self._compression = _compression(self.path)
        self._end = max(ends, default=0)
        if ends and self._compression is None and os.path.getsize(self.path) < max(ends):
            raise FrameError(self.path, f"is truncated ({os.path.getsize(self.path)} of "
                                        f"{max(ends)} bytes)")

    def __repr__(self) -> str:
        return f"<RawFile {self.path.name}: images in HDU {sorted(self._infos)}>"

    def index(self, extension: int | str) -> int:
        """The HDU index of ``extension`` (an index or an EXTNAME).

        An empty primary HDU (0 or "PRIMARY") stands for the first image
        extension.

        Raises
        ------
        FrameError
            If there is no such HDU or it holds no image.
        """
        if isinstance(extension, str) and extension.upper() != "PRIMARY":
            found = [i for i, name in enumerate(self._names) if name == extension.upper()]
            if not found:
                raise FrameError(self.path, f"has no HDU {extension!r}")
            index = found[0]
        else:
            index = 0 if isinstance(extension, str) else int(extension)
            if not 0 <= index < len(self._names):
                raise FrameError(self.path, f"has no HDU {extension!r}")
            if index == 0 and self._empty_primary and self._infos:
                index = min(self._infos)
        if index not in self._infos:
            raise FrameError(self.path, f"HDU {extension!r} holds no image data")
        return index

    def image(self, extension: int | str = 0) -> "RawImage":
        """The `RawImage` of one HDU (see `index`)."""
        index = self.index(extension)
        if index not in self._images:
            self._images[index] = RawImage(self.path, index, _file=self)
        return self._images[index]

    def info(self, extension) -> _ImageInfo:
        return self._infos[self.index(extension)]

    def readable(self) -> str:
        """The name of an uncompressed copy of the file to read pixels from."""
        if self._file is None:
            name = self.path
            if self._compression is not None:
                name = _decompressed_copy(self.path, self._end, self._compression)
                weakref.finalize(self, remove_quietly, name)
            self._file = name
        return self._file


class RawImage:
    """A raw FITS image opened for reading blocks of rows on demand.

    Only the header is read when it is opened; `rows` then reads the rows
    asked for straight from the file (a seek and one read) and applies
    BZERO/BSCALE in float64, so every storage form astropy accepts (8-,
    16-, 32- and 64-bit integers, signed or unsigned through BZERO, float
    data, BLANK values) gives exactly the values astropy's scaling would,
    without rounding (a 32-bit integer in float32 loses its last bits). A
    stack of full-size frames can then be combined a block at a time
    without ever holding a whole frame. A tile-compressed image is read
    whole by astropy when its pixels are first needed.

    Parameters
    ----------
    path : str or path-like
        The raw file.
    extension : int or str
        HDU holding the image (an empty primary HDU means the first image
        extension, as in `read_raw`).

    Attributes
    ----------
    path : pathlib.Path
    file : RawFile
        The file, for the images of its other HDUs.
    header : astropy.io.fits.Header
        As `read_raw` returns it.
    shape : tuple of int
        numpy shape of the image (rows, columns).
    dtype : numpy.dtype
        float32 when it holds every value the storage allows exactly,
        else float64.

    Raises
    ------
    FrameError
        If the file is missing, not FITS, or has no 2-D image.
    """

    def __init__(self, path: str | os.PathLike, extension: int | str = 0, *,
                 _file: RawFile | None = None) -> None:
        self.file = _file if _file is not None else RawFile(path)
        self.path = self.file.path
        self.extension = self.file.index(extension)
        self._info = self.file.info(self.extension)
        if len(self._info.shape) != 2:
            raise FrameError(self.path, f"holds a {len(self._info.shape)}-D array; a 2-D "
                                        f"image was expected")
        self.header = self._info.header
        self.file._images.setdefault(self.extension, self)
        self.shape = self._info.shape
        self.dtype = self._info.dtype
        self._array = None

    def __repr__(self) -> str:
        return f"<RawImage {self.path.name}[{self.extension}] {self.shape[1]}x{self.shape[0]}>"

    def sibling(self, extension: int | str) -> "RawImage":
        """The image in another HDU of the same file."""
        return self.file.image(extension)

    def rows(self, start: int, stop: int, out: np.ndarray | None = None,
             columns: slice = slice(None)) -> np.ndarray:
        """Rows ``start`` to ``stop - 1`` (0-based) in ADU, BZERO/BSCALE applied.

        Parameters
        ----------
        start, stop : int
            numpy row range.
        out : numpy.ndarray, optional
            Array of shape ``(stop - start, n_columns)`` to fill (any float
            dtype: a float32 ``out`` keeps values up to 2**24 exact); a new
            array of ``dtype`` otherwise.
        columns : slice
            The columns wanted (all by default).

        Returns
        -------
        numpy.ndarray

        Raises
        ------
        FrameError
            If the file is shorter than its header says.
        """
        info = self._info
        if info.compressed:
            if self._array is None:
                with open_fits(self.path) as hdul:
                    self._array = np.asarray(hdul[self.extension].data, dtype=np.float64)
            values = self._array[start:stop, columns]
            if out is None:
                out = np.empty(values.shape, dtype=self.dtype)
            out[...] = values
            return out
        stored = self._read(start, stop)[:, columns]
        if out is None:
            out = np.empty(stored.shape, dtype=self.dtype)
        scaled = info.scale != 1.0 or info.zero != 0.0
        if not scaled or (info.dtype == np.float32 and out.dtype == np.float32):
            # Exact in the output's own precision: no float64 detour.
            out[...] = stored
            if info.scale != 1.0:
                out *= info.scale
            if info.zero != 0.0:
                out += info.zero
        else:
            values = stored.astype(np.float64)
            if info.scale != 1.0:
                values *= info.scale
            if info.zero != 0.0:
                values += info.zero
            out[...] = values
        if info.blank is not None:
            blank = stored == info.blank
            if blank.any():
                out[blank] = np.nan
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        info = self._info
        raw = np.empty((stop - start, self.shape[1]), dtype=info.stored)
        name = self.file.readable()
        with open(name, "rb") as handle:
            handle.seek(info.offset + start * self.shape[1] * info.stored.itemsize)
            if handle.readinto(memoryview(raw).cast("B")) != raw.nbytes:
                raise FrameError(self.path, "cannot be read as FITS (the file is truncated)")
        return raw


# How compressed files start, and the modules that read them (as astropy does).
_COMPRESSIONS = {b"\x1f\x8b": gzip, b"BZh": bz2, b"\xfd7zXZ\x00": lzma}


def _compression(path: Path):
    """The module that decompresses ``path`` (gzip, bz2, lzma), or None."""
    with open(path, "rb") as handle:
        start = handle.read(6)
    if start.startswith(b"PK\x03\x04"):
        raise FrameError(path, "is a zip archive; unzip it first")
    return next((module for magic, module in _COMPRESSIONS.items() if start.startswith(magic)),
                None)


def _decompressed_copy(path: Path, needed: int, module=gzip) -> str:
    """Decompress the first ``needed`` bytes of a compressed file (what its
    headers declare) into a temporary file (`apocal.scratch`); returns its
    name.

    The declared size is checked against a limit and the free space first,
    and nothing beyond it is written: a small file that decompresses to
    gigabytes fills no disk. The copy is removed if anything, Ctrl-C
    included, stops it half-way.

    Raises
    ------
    FrameError
        If the file is damaged, or declares more than apocal decompresses.
    OSError
        If the temporary folder has no room for it (not the file's fault).
    """
    refused = check_room(needed)
    if refused:
        raise FrameError(path, f"not decompressed: {refused}")
    fd, name = new_scratch_file()
    try:
        with os.fdopen(fd, "wb") as out, module.open(path, "rb") as src:
            left = needed
            while left > 0:
                try:
                    chunk = src.read(min(left, 1 << 22))
                except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:
                    raise FrameError(path, f"cannot be read as FITS "
                                           f"({fits_error_reason(err)})") from err
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as err:
                    raise OSError(err.errno, f"{err.strerror} (decompressing {path.name})",
                                  name) from None
                if left == needed:
                    stages.reached("decompressing", path.name)
                left -= len(chunk)
    except BaseException:
        remove_quietly(name)
        raise
    return name


def fits_error_reason(err: Exception) -> str:
    """A short reason for an error astropy raised while opening a FITS file."""
    text = str(err)
    if (isinstance(err, EOFError) or "truncated" in text.lower()
            or "buffer is too small" in text or "cannot reshape" in text):
        return "the file is truncated"
    if "SIMPLE" in text or "Empty or corrupt" in text:
        return "not a FITS file, or its header is damaged"
    return text.splitlines()[0] if text else type(err).__name__


def atomic_write_bytes(path: str | os.PathLike, payload: bytes, overwrite: bool = False) -> Path:
    """Write ``payload`` to ``path`` so that it is complete or absent.

    The bytes go to a temporary file in the same folder, are flushed to
    disk, and the file is then moved into place in one step
    (`apocal.output.write_atomically`: the umask is honoured, and no link
    is followed inside a protected output folder). Without ``overwrite`` an
    existing file is never replaced, even by a concurrent writer.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    OSError
        If it cannot be written; the error names ``path``.
    """
    return write_atomically(path, payload, overwrite=overwrite)


def card_text(text) -> str:
    """``text`` as a FITS card can hold it (printable ASCII): other
    characters become Python escapes (``café.fits`` -> ``caf\\xe9.fits``)."""
    text = str(text)
    if text.isascii() and text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def write_frame(ccd: CCDData, path: str | os.PathLike, overwrite: bool = False,
                extra_hdus: Sequence[fits.ImageHDU | fits.BinTableHDU] | None = None) -> Path:
    """Write a processed or calibrated frame with its uncertainty, mask and flags.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        The frame; ``uncertainty`` must be a `StdDevUncertainty` if present,
        ``flags`` (if present) an integer image of `apocal.flags.Flag` bits.
    path : str or path-like
        Output file.
    overwrite : bool
        Replace an existing file. Default False.
    extra_hdus : sequence of astropy.io.fits HDUs, optional
        More extensions to append (e.g. a flat's lamp spectrum).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    hdus = [fits.PrimaryHDU(np.asarray(ccd.data), header=_clean_header(ccd))]
    hdus[0].header["BUNIT"] = ccd.unit.to_string()
    if ccd.uncertainty is not None:
        if not isinstance(ccd.uncertainty, StdDevUncertainty):
            raise TypeError("write_frame needs a StdDevUncertainty")
        unc = fits.ImageHDU(np.asarray(ccd.uncertainty.array, dtype=ccd.data.dtype), name="UNCERT")
        unc.header["UTYPE"] = "StdDevUncertainty"
        unc.header["BUNIT"] = ccd.unit.to_string()
        hdus.append(unc)
    if ccd.mask is not None:
        hdus.append(fits.ImageHDU(np.asarray(ccd.mask, dtype=np.uint8), name="MASK"))
    if ccd.flags is not None:
        flags = fits.ImageHDU(np.asarray(ccd.flags, dtype=FLAG_DTYPE), name="FLAGS")
        for key, name in describe_flags().items():
            flags.header[key] = (name, "apocal.flags.Flag bit")
        hdus.append(flags)
    hdus.extend(extra_hdus or ())
    buffer = _to_bytes(fits.HDUList(hdus))
    return atomic_write_bytes(path, buffer, overwrite=overwrite)


def _clean_header(ccd: CCDData) -> fits.Header:
    header = fits.Header(ccd.header) if ccd.header else fits.Header()
    for key in ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE"):
        header.remove(key, ignore_missing=True, remove_all=True)
    if ccd.wcs is not None:
        header.extend(ccd.wcs.to_header(relax=True), update=True)
    return header


def _to_bytes(hdul: fits.HDUList) -> bytes:
    buffer = BytesIO()
    hdul.writeto(buffer, output_verify="silentfix")
    return buffer.getvalue()


def read_frame(path: str | os.PathLike) -> CCDData:
    """Read a frame written by :func:`write_frame`, flags included.

    Raises
    ------
    FrameError
        If the file cannot be read.
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            data = np.array(hdul[0].data)
            unit = u.Unit(header.get("BUNIT", "adu"))
            uncertainty = mask = flags = None
            if "UNCERT" in hdul:
                uncertainty = StdDevUncertainty(np.array(hdul["UNCERT"].data))
            if "MASK" in hdul:
                mask = np.array(hdul["MASK"].data).astype(bool)
            if "FLAGS" in hdul:
                flags = np.array(hdul["FLAGS"].data).astype(FLAG_DTYPE)
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise FrameError(path, f"cannot be read as an apocal product ({fits_error_reason(err)})") from err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        return CCDData(data, unit=unit, meta=header, uncertainty=uncertainty,
                       mask=mask, flags=flags)
