"""Reading raw FITS files safely and writing products atomically.

Raw files are opened read-only and never written. Products (processed
frames, masters, calibrated science) are written as a primary HDU with the
data plus ``UNCERT`` (standard deviation), ``MASK`` and ``FLAGS``
extensions; a file appears under its final name only once it is complete.
"""

from __future__ import annotations

import gzip
import os
import zlib
import weakref
import warnings
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

__all__ = ["read_raw", "read_header", "open_fits", "RawImage", "write_frame", "read_frame",
           "atomic_write_bytes", "fits_error_reason", "card_text"]

# Largest integer a float32 holds exactly: raw integer frames below it are
# stored as float32 without loss, halving memory for the common case.
_FLOAT32_EXACT = 2**24


def read_raw(path, extension: int | str = 0) -> tuple[np.ndarray, fits.Header]:
    """Read the image and header of one raw FITS file.

    Parameters
    ----------
    path : str or path-like
        A FITS file, possibly gzip-compressed (``.fits.gz``).
    extension : int or str
        HDU holding the image. When it is the primary HDU and that is empty
        (a multi-extension file), the first image extension is used.

    Returns
    -------
    data : numpy.ndarray
        The image in ADU (BZERO/BSCALE applied), float32 when exact.
    header : astropy.io.fits.Header
        The image HDU header, preceded by the primary header's cards for a
        multi-extension file.

    Raises
    ------
    FrameError
        If the file is missing, not FITS, truncated, has no 2-D image, or
        holds no finite value.
    """
    with open_fits(path) as hdul:
        hdu = _image_hdu(hdul, extension, path)
        data = hdu.data  # in memory (memmap=False); _as_float copies it
        header = _image_header(hdul, hdu)
    if data.ndim != 2:
        raise FrameError(path, f"holds a {data.ndim}-D array; a 2-D image was expected")
    data = _as_float(data)
    if not np.isfinite(data).any():
        raise FrameError(path, "has no finite pixel value (all NaN or infinite)")
    return data, header


def read_header(path) -> fits.Header:
    """The primary header of a FITS file (merged with the first extension's
    when the primary HDU holds no data).

    Raises
    ------
    FrameError
        If the file is missing or is not FITS.
    """
    with open_fits(path) as hdul:
        header = hdul[0].header.copy()
        if hdul[0].header.get("NAXIS", 0) == 0 and len(hdul) > 1:
            header.extend(hdul[1].header, update=True)
    return header


@contextmanager
def open_fits(path):
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


def _image_hdu(hdul, extension, path, load=True):
    """The image HDU asked for; with ``load=False`` its data are not read."""
    def empty(h):
        return h.data is None if load else int(h.header.get("NAXIS", 0)) == 0

    try:
        hdu = hdul[extension]
    except (KeyError, IndexError) as err:
        raise FrameError(path, f"has no HDU {extension!r}") from err
    if empty(hdu) and extension in (0, "PRIMARY"):
        for candidate in hdul[1:]:
            if candidate.is_image and not empty(candidate):
                return candidate
    if empty(hdu):
        raise FrameError(path, f"HDU {extension!r} holds no image data")
    if not getattr(hdu, "is_image", False):
        raise FrameError(path, f"HDU {extension!r} is a table, not an image")
    return hdu


class RawImage:
    """A raw FITS image opened for reading blocks of rows on demand.

    Only the header is read when it is opened; `rows` then reads the rows
    asked for straight from the file (a seek and one read, converted into
    an array the caller may reuse), so a stack of full-size frames can be
    combined a block at a time without ever holding a whole frame. A
    gzip-compressed file is decompressed once into a temporary file,
    removed with the `RawImage`; a tile-compressed image or one with BLANK
    values is read whole by astropy.
    The file is opened read-only every time.

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
    header : astropy.io.fits.Header
        As `read_raw` returns it.
    shape : tuple of int
        numpy shape of the image (rows, columns).

    Raises
    ------
    FrameError
        If the file is missing, not FITS, or has no 2-D image.
    """

    def __init__(self, path, extension: int | str = 0):
        self.path = Path(path)
        self._array = None
        with open_fits(self.path) as hdul:
            hdu = _image_hdu(hdul, extension, self.path, load=False)
            index = hdul.index(hdu)
            header = _image_header(hdul, hdu)
            self.shape = tuple(int(n) for n in hdu.shape)
            if len(self.shape) != 2:
                raise FrameError(self.path, f"holds a {len(self.shape)}-D array; "
                                 f"a 2-D image was expected")
            self._offset = hdul.fileinfo(index)["datLoc"]
            bitpix = int(hdu.header["BITPIX"])
            self._dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", 64: ">i8",
                                    -32: ">f4", -64: ">f8"}[bitpix])
            self._scale = float(hdu.header.get("BSCALE", 1.0))
            self._zero = float(hdu.header.get("BZERO", 0.0))
            plain = not isinstance(hdu, fits.CompImageHDU) and "BLANK" not in hdu.header
            if not plain:
                self._array = _as_float(np.asarray(hdu.data))
        for key in ("BZERO", "BSCALE", "BLANK"):
            header.remove(key, ignore_missing=True)
        self.header = header
        self._file = self.path
        row_bytes = self.shape[1] * self._dtype.itemsize
        if self._array is None and _is_gzip(self.path):
            self._file = _decompressed_copy(self.path, self._offset + row_bytes * self.shape[0])
            weakref.finalize(self, remove_quietly, self._file)
        if self._array is None and os.path.getsize(self._file) < self._offset + row_bytes * self.shape[0]:
            raise FrameError(self.path, "cannot be read as FITS (the file is truncated)")
        # float32 holds every integer up to 2**24 ADU exactly, beyond any
        # CCD's ADC; only 64-bit data are kept in float64.
        self.dtype = np.dtype(np.float64 if self._dtype.itemsize == 8 else np.float32)

    def __repr__(self) -> str:
        return f"<RawImage {self.path.name} {self.shape[1]}x{self.shape[0]}>"

    def rows(self, start: int, stop: int, out: np.ndarray | None = None,
             columns: slice = slice(None)) -> np.ndarray:
        """Rows ``start`` to ``stop - 1`` (0-based) in ADU, BZERO/BSCALE applied.

        Parameters
        ----------
        start, stop : int
            numpy row range.
        out : numpy.ndarray, optional
            Array of shape ``(stop - start, n_columns)`` to fill (any float
            dtype); a new array of ``dtype`` otherwise.
        columns : slice
            The columns wanted (all by default).

        Returns
        -------
        numpy.ndarray
        """
        n_rows = stop - start
        if self._array is not None:
            raw = self._array[start:stop, columns]
        else:
            raw = np.empty((n_rows, self.shape[1]), dtype=self._dtype)
            with open(self._file, "rb") as handle:
                handle.seek(self._offset + start * self.shape[1] * self._dtype.itemsize)
                if handle.readinto(memoryview(raw).cast("B")) != raw.nbytes:
                    raise FrameError(self.path, "cannot be read as FITS (the file is truncated)")
            raw = raw[:, columns]
        if out is None:
            out = np.empty(raw.shape, dtype=self.dtype)
        out[...] = raw
        if self._array is not None:
            return out
        if self._scale != 1.0:
            out *= self._scale
        if self._zero != 0.0:
            out += self._zero
        return out


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _decompressed_copy(path: Path, needed: int) -> str:
    """Decompress the first ``needed`` bytes of a gzip file (what its header
    declares) into a temporary file (`apocal.scratch`); returns its name.

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
        with os.fdopen(fd, "wb") as out, gzip.open(path, "rb") as src:
            left = needed
            while left > 0:
                try:
                    chunk = src.read(min(left, 1 << 22))
                except (OSError, EOFError, zlib.error) as err:
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


def _as_float(data: np.ndarray) -> np.ndarray:
    if data.dtype.kind == "f":
        return data.astype(np.float64 if data.dtype.itemsize > 4 else np.float32, copy=True)
    if data.size and max(abs(int(data.min())), abs(int(data.max()))) < _FLOAT32_EXACT:
        return data.astype(np.float32)
    return data.astype(np.float64)


def atomic_write_bytes(path, payload: bytes, overwrite: bool = False) -> Path:
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


def write_frame(ccd: CCDData, path, overwrite: bool = False, extra_hdus=None) -> Path:
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


def read_frame(path) -> CCDData:
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
