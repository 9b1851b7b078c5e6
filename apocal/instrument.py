"""Detectors described by subclassing: `Amplifier` and `Instrument`.

An `Instrument` subclass states the facts of one camera as class attributes
(amplifier sections, gain, read noise, saturation, dispersion axis, header
keywords) and inherits reading, classifying and processing. Values found in
a frame's header (DATASEC/BIASSEC or per-amplifier keys, GAIN, RDNOISE,
binning) win over the class defaults.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyWarning

from . import __version__
from .exceptions import FrameError
from .flags import FLAG_DTYPE, Flag
from .io import RawImage, card_text, read_raw
from .overscan import OVERSCAN_METHODS
from .processing import ArrayImage, ProcessedFrame
from .sections import Section, parse_section

__all__ = ["Amplifier", "AmplifierLayout", "FrameLayout", "Instrument", "FRAME_KINDS"]

#: The kinds of frame `Instrument.classify` can return.
FRAME_KINDS = ("bias", "dark", "flat", "arc", "science")

# Header cards that describe raw geometry and stop being true after trimming.
_GEOMETRY_KEYS = ("DATASEC", "BIASSEC", "TRIMSEC", "CCDSEC")


@dataclass(frozen=True)
class Amplifier:
    """One amplifier (readout port) of a detector.

    Parameters
    ----------
    data_section : str or None
        FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive, unbinned pixels)
        holding this amplifier's light-sensitive pixels; None for the whole
        image.
    overscan_section : str or None
        FITS section of this amplifier's overscan; None if it has none.
    gain : float or None
        Gain, electrons per ADU; None when it must come from the header.
    read_noise : float or None
        Read noise, electrons; None when it must come from the header.
    name : str
        A label for reports ("left", "right"); defaults to the position.
    data_key, overscan_key : str or None
        Header keys holding this amplifier's sections in the frame's own
        (binned) pixels, e.g. ``"DSEC11"``. For an instrument with a single
        amplifier they default to ``DATASEC`` and ``BIASSEC``.
    """

    data_section: str | None = None
    overscan_section: str | None = None
    gain: float | None = None
    read_noise: float | None = None
    name: str = ""
    data_key: str | None = None
    overscan_key: str | None = None


@dataclass(frozen=True)
class AmplifierLayout:
    """An amplifier resolved for one frame: sections in that frame's pixels."""

    name: str
    data: Section
    overscan: Section | None
    output: Section
    gain: float
    read_noise: float
    overscan_along_rows: bool = True

    @property
    def overscan_lines(self) -> tuple[int, int]:
        """First and last 0-based data line (row or column) the overscan spans."""
        if self.overscan_along_rows:
            return self.overscan.y1 - 1, self.overscan.y2 - 1
        return self.overscan.x1 - 1, self.overscan.x2 - 1


@dataclass(frozen=True)
class FrameLayout:
    """Where every amplifier of one raw frame is, and the assembled shape."""

    raw_shape: tuple[int, int]
    shape: tuple[int, int]
    binning: tuple[int, int]
    amplifiers: tuple[AmplifierLayout, ...] = field(default_factory=tuple)


class Instrument:
    """A CCD camera: geometry, detector properties and header conventions.

    Subclass it and set the class attributes below; an instance may override
    any of them by keyword (``SBO(gain=1.3, read_noise=9.5)``). ``gain`` and
    ``read_noise`` given to the constructor apply to every amplifier (a
    sequence gives one value per amplifier).

    Attributes
    ----------
    name : str
        Short name used in reports and file names.
    amplifiers : tuple of Amplifier
        The readout ports, each with its data and overscan sections.
    saturation : float
        Raw level (ADU) at which the ADC or the pixel saturates.
    nonlinear : float or None
        Raw level (ADU) above which the response is no longer linear.
    dispersion_axis : int or None
        numpy axis along which wavelength changes (0: rows, 1: columns);
        None for an imager.
    data_extension : int or str
        HDU holding the image.
    exptime_key, imagetype_key, object_key, date_key : str
        Header keys for exposure time (s), frame type, target and date.
    binning_keys : tuple
        Where to find binning: a key holding ``"bx by"`` (e.g. ``CCDSUM``)
        or a pair of keys ``(x_key, y_key)``; the first one present is used.
    gain_keys, read_noise_keys : tuple of str
        Header keys whose value, when present, replaces the class gain
        (e-/ADU) or read noise (e-) of every amplifier.
    lamp_keys : tuple of str
        Header keys whose value is ``on``/``off`` for each calibration lamp.
    arc_lamp_keys : tuple of str
        The lamps among ``lamp_keys`` that make a frame an arc.
    config_keys : dict
        Label -> header key for what defines a configuration (grating, slit,
        filter...).
    imagetypes : dict
        Frame kind -> accepted values of ``imagetype_key`` (case-insensitive).
    overscan_window : int
        Lines over which the per-line overscan level is smoothed.
    flat_response : str or None
        How the night pipeline fits a spectroscopic flat's lamp spectrum by
        default (``"spline"``, ``"poly"``, ``"boxcar"``, None).
    raw_shape : tuple of int or None
        Unbinned size of a full raw frame, (rows, columns), when known
        (used by `apocal.simulate`).
    """

    name: ClassVar[str] = "generic"
    amplifiers: tuple[Amplifier, ...] = (Amplifier(),)
    saturation: float = 65535.0
    nonlinear: float | None = None
    dispersion_axis: int | None = None
    data_extension: int | str = 0
    exptime_key: str = "EXPTIME"
    imagetype_key: str = "IMAGETYP"
    object_key: str = "OBJECT"
    date_key: str = "DATE-OBS"
    binning_keys: tuple = ("CCDSUM", ("BINX", "BINY"), ("CCDBIN1", "CCDBIN2"),
                           ("XBINNING", "YBINNING"))
    gain_keys: tuple[str, ...] = ("GAIN",)
    read_noise_keys: tuple[str, ...] = ("RDNOISE",)
    lamp_keys: tuple[str, ...] = ()
    arc_lamp_keys: tuple[str, ...] = ()
    config_keys: dict = {}
    imagetypes: dict = {
        "bias": ("bias", "zero", "bias frame"),
        "dark": ("dark", "dark frame"),
        "flat": ("flat", "flat field", "domeflat", "skyflat", "twiflat"),
        "arc": ("arc", "comp", "lamp"),
        "science": ("object", "science", "light", "light frame", "std", "standard"),
    }
    overscan_window: int = 101
    flat_response: str | None = "spline"
    raw_shape: tuple[int, int] | None = None

    def __init__(self, gain=None, read_noise=None, **settings):
        for key, value in settings.items():
            if key.startswith("_") or not hasattr(type(self), key) \
                    or callable(getattr(type(self), key)):
                raise TypeError(f"{type(self).__name__} has no setting {key!r}")
            setattr(self, key, copy.deepcopy(value))
        if gain is not None or read_noise is not None:
            self.amplifiers = self.with_detector(gain, read_noise).amplifiers

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def with_detector(self, gain=None, read_noise=None) -> "Instrument":
        """A copy of this instrument with new gain (e-/ADU) and read noise (e-).

        One value applies to every amplifier; a sequence gives one per
        amplifier. Other settings of this instance are kept.
        """
        other = copy.copy(self)
        n = len(self.amplifiers)
        other.amplifiers = tuple(
            replace(amp, gain=amp.gain if g is None else float(g),
                    read_noise=amp.read_noise if r is None else float(r))
            for amp, g, r in zip(self.amplifiers, _per_amplifier(gain, n, "gain"),
                                 _per_amplifier(read_noise, n, "read_noise")))
        return other

    # ------------------------------------------------------------------
    # Recognising frames
    # ------------------------------------------------------------------
    @classmethod
    def matches(cls, header: fits.Header) -> bool:
        """True when ``header`` was written by this instrument.

        Used by `apocal.instrument_for`; the generic class matches nothing.
        """
        return False

    def exposure_time(self, header: fits.Header, source=None) -> float:
        """Exposure time in seconds.

        Raises
        ------
        FrameError
            If the header has no usable exposure time.
        """
        value = header.get(self.exptime_key)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise FrameError(source, f"has no usable exposure time "
                             f"({self.exptime_key}={value!r})") from None
        if not np.isfinite(value) or value < 0:
            raise FrameError(source, f"has a negative or non-finite exposure time "
                             f"({self.exptime_key}={value!r})")
        return value

    def binning(self, header: fits.Header) -> tuple[int, int]:
        """On-chip binning ``(bin_x, bin_y)`` (columns, rows); (1, 1) if absent."""
        for keys in self.binning_keys:
            try:
                if isinstance(keys, str):
                    if keys in header:
                        bx, by = str(header[keys]).replace(",", " ").split()[:2]
                        return int(bx), int(by)
                elif keys[0] in header and keys[1] in header:
                    return int(header[keys[0]]), int(header[keys[1]])
            except (TypeError, ValueError):
                continue
        return (1, 1)

    def lamps_on(self, header: fits.Header) -> tuple[str, ...]:
        """Names of the lamp keys whose value is ``on``."""
        return tuple(key for key in self.lamp_keys
                     if str(header.get(key, "")).strip().lower() in ("on", "1", "true", "t"))

    def configuration(self, header: fits.Header) -> dict:
        """What must match between calibrations and science: binning plus
        the instrument's ``config_keys`` (grating, slit, filter...)."""
        bx, by = self.binning(header)
        config = {"binning": f"{bx}x{by}"}
        for label, key in self.config_keys.items():
            value = header.get(key)
            config[label] = str(value).strip() if value is not None else ""
        return config

    def imagetype(self, header: fits.Header) -> str:
        """The header's frame-type value, stripped and lower-case."""
        return str(header.get(self.imagetype_key, "")).strip().lower()

    def classify(self, header: fits.Header, source=None) -> str:
        """Kind of frame: one of ``bias``, ``dark``, ``flat``, ``arc``, ``science``.

        The default reads ``imagetype_key`` through ``imagetypes``; a frame
        typed as science with an arc lamp on is an arc.

        Raises
        ------
        FrameError
            If the header does not say which kind the frame is.
        """
        value = self.imagetype(header)
        for kind, accepted in self.imagetypes.items():
            if value in accepted:
                if kind == "science" and set(self.lamps_on(header)) & set(self.arc_lamp_keys):
                    return "arc"
                return kind
        raise FrameError(source, f"cannot tell the frame kind from "
                         f"{self.imagetype_key}={header.get(self.imagetype_key)!r}")

    # ------------------------------------------------------------------
    # Geometry
    # ------------------------------------------------------------------
    def header_sections(self, header: fits.Header, index: int) -> tuple[str | None, str | None]:
        """Data and overscan sections the header gives for amplifier ``index``.

        Override this when an instrument records its geometry differently
        (e.g. a count of overscan columns). Values are in the frame's own
        (binned) pixels; None means "not in the header".
        """
        amp = self.amplifiers[index]
        single = len(self.amplifiers) == 1
        data_key = amp.data_key or ("DATASEC" if single else None)
        overscan_key = amp.overscan_key or ("BIASSEC" if single else None)
        data = header.get(data_key) if data_key else None
        overscan = header.get(overscan_key) if overscan_key else None
        return (str(data) if data else None, str(overscan) if overscan else None)

    def _header_value(self, header, keys, what, source):
        for key in keys:
            if key in header:
                try:
                    value = float(header[key])
                except (TypeError, ValueError):
                    raise FrameError(source, f"has a non-numeric {what} "
                                     f"({key}={header[key]!r})") from None
                impossible = value <= 0 if what == "gain" else value < 0
                if not np.isfinite(value) or impossible:
                    raise FrameError(source, f"has an impossible {what} ({key}={value!r})")
                return value
        return None

    def layout(self, header: fits.Header, shape: tuple[int, int], source=None, *,
               detector: bool = True) -> FrameLayout:
        """Resolve every amplifier's sections, gain and read noise for a frame.

        Parameters
        ----------
        header : astropy.io.fits.Header
            The raw frame's header.
        shape : tuple of int
            numpy shape of the raw image.
        source : str or path-like, optional
            The file, for error messages.
        detector : bool
            Require the gain and read noise. With False, geometry alone is
            resolved and unknown values are NaN (for measuring them).

        Raises
        ------
        FrameError
            If a section is malformed or does not fit the image, or the gain
            or read noise is unknown.
        """
        binning = self.binning(header)
        header_gain = self._header_value(header, self.gain_keys, "gain", source)
        header_noise = self._header_value(header, self.read_noise_keys, "read noise", source)
        resolved = []
        for index, amp in enumerate(self.amplifiers):
            label = amp.name or f"amplifier {index + 1}"
            head_data, head_overscan = self.header_sections(header, index)
            data = self._section(head_data, amp.data_section, binning, shape, label, "data", source)
            overscan = None
            if head_overscan or amp.overscan_section:
                overscan = self._section(head_overscan, amp.overscan_section, binning, shape,
                                         label, "overscan", source)
            gain = header_gain if header_gain is not None else amp.gain
            noise = header_noise if header_noise is not None else amp.read_noise
            if not detector:
                gain = np.nan if gain is None else gain
                noise = np.nan if noise is None else noise
            if gain is None or noise is None:
                missing = [name for name, value in (("gain", gain), ("read noise", noise))
                           if value is None]
                verb = "are" if len(missing) == 2 else "is"
                raise FrameError(source, f"{self.name}: the {' and '.join(missing)} of {label} {verb} not in the "
                                 f"header ({', '.join(self.gain_keys + self.read_noise_keys) or 'no keys'})"
                                 f" nor set on the instrument; pass it, e.g. "
                                 f"{type(self).__name__}(gain=..., read_noise=...), or measure it "
                                 f"with apocal.diagnostics.photon_transfer")
            resolved.append((label, data, overscan, float(gain), float(noise)))
        return FrameLayout(raw_shape=tuple(shape), shape=_assembled_shape(resolved),
                           binning=binning,
                           amplifiers=tuple(_place(resolved, source)))

    def _section(self, from_header, default, binning, shape, label, what, source) -> Section:
        try:
            if from_header:
                section = parse_section(from_header, shape)
            elif default:
                section = parse_section(default).binned(binning)
            else:
                section = Section.whole(shape)
        except ValueError as err:
            raise FrameError(source, f"{self.name} {label}: bad {what} section: {err}") from None
        if not section.fits_in(shape):
            raise FrameError(source, f"{self.name} {label}: {what} section {section} does not fit "
                             f"the {shape[1]}x{shape[0]} (columns x rows) image; "
                             f"is this a {self.name} frame with binning {binning[0]}x{binning[1]}?")
        return section

    # ------------------------------------------------------------------
    # Reading and processing
    # ------------------------------------------------------------------
    def read(self, path) -> CCDData:
        """Read a raw frame as `CCDData` in ADU with its header.

        Handles integer (BITPIX 16/32, unsigned via BZERO) and float data,
        gzip-compressed files and multi-extension files
        (``data_extension``). The file is opened read-only.

        Raises
        ------
        FrameError
            If the file is unreadable, truncated, not an image or all NaN.
        """
        data, header = read_raw(path, self.data_extension)
        header["RAWFILE"] = (card_text(Path(path).name), "raw file read by apocal")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return CCDData(data, unit=u.adu, meta=header)

    def process(self, frame, overscan: str = "rows", overscan_window: int | None = None,
                bias=None) -> CCDData:
        """Turn a raw frame into electrons with an honest uncertainty.

        Per amplifier: subtract the overscan level, cut out the data section
        and place it in the assembled image, multiply by the gain. The
        uncertainty is ``sqrt(read_noise**2 + max(signal, 0) + g**2 var_os)``
        electrons, where ``var_os`` is the variance of the overscan estimate.
        A frame of zero exposure time (a bias) collected no photons and gets
        no Poisson term. Pixels whose raw value reached ``saturation`` or
        exceeded ``nonlinear`` are flagged (`apocal.flags.Flag`) and masked.

        Parameters
        ----------
        frame : str, path-like or astropy.nddata.CCDData
            A raw file or a raw frame in ADU (it is not modified).
        overscan : {"rows", "level"}
            Smoothed per-line overscan level, or a single level per amplifier.
        overscan_window : int, optional
            Smoothing length in lines (default ``overscan_window``).
        bias : numpy.ndarray or float, optional
            Electrons left in the processed signal that are not photons (a
            master bias; for a camera without overscan, its bias level).
            The Poisson term then counts ``max(signal - bias, 0)``.
            `CalibrationSet` passes it; without it a camera without overscan
            gets an uncertainty that counts its bias level as photons.

        Returns
        -------
        astropy.nddata.CCDData
            float32 image in electrons with `StdDevUncertainty`, ``mask`` and
            ``flags``; header cards APGAINn, APRDNn, APOVSCn record the gain,
            read noise and mean overscan level used for amplifier n.

        Raises
        ------
        FrameError
            For an unreadable file, a frame already in electrons, sections
            that do not fit, or an unknown gain or read noise.
        """
        return self.prepare(frame, overscan, overscan_window, bias).ccd()

    def prepare(self, frame, overscan: str = "rows", overscan_window: int | None = None,
                bias=None) -> ProcessedFrame:
        """Get a frame ready to be processed a block of rows at a time.

        Reads the header and the overscan (not the image) and returns a
        `~apocal.processing.ProcessedFrame` whose ``rows(start, stop)`` gives
        any block of the image `process` would return, read from the file
        when it is needed. Combining many full-size frames this way keeps
        memory bounded. Parameters and errors are those of `process`.

        Returns
        -------
        apocal.processing.ProcessedFrame
        """
        if overscan not in OVERSCAN_METHODS:
            raise ValueError(f"overscan must be one of {OVERSCAN_METHODS}, not {overscan!r}")
        source, name = self.raw_source(frame)
        raw_header = source.header
        self.check_frame(raw_header, name)
        layout = self.layout(raw_header, source.shape, name)
        photons = self.exptime_key not in raw_header or self.exposure_time(raw_header, name) > 0
        header = _processed_header(raw_header)
        header["APOVMETH"] = (overscan if any(a.overscan for a in layout.amplifiers) else "none",
                              "overscan estimate")
        header["APSTAGE"] = ("processed", "apocal: overscan, trim, gain applied")
        header["APVERS"] = (__version__, "apocal version")
        _shift_wcs(header, layout)
        return ProcessedFrame(self, source, name, layout, header, photons, overscan,
                              overscan_window or self.overscan_window, bias)

    def raw_source(self, frame) -> tuple[RawImage | ArrayImage, str]:
        """A raw frame opened for reading rows, and its name for messages.

        A path is opened as an `apocal.io.RawImage` (header only; rows are
        read when asked for); a `CCDData` is checked as in `raw_frame`; an
        opened source is returned as it is.

        Raises
        ------
        FrameError
            If the file cannot be read, or the frame is not a raw image.
        """
        if isinstance(frame, RawImage):
            return frame, str(frame.path)
        if isinstance(frame, ArrayImage):
            return frame, str(frame.header.get("RAWFILE", "<in-memory frame>"))
        if isinstance(frame, (str, os.PathLike)):
            source = RawImage(frame, self.data_extension)
            source.header["RAWFILE"] = (card_text(Path(frame).name), "raw file read by apocal")
            return source, str(frame)
        ccd, name = self.raw_frame(frame)
        return ArrayImage(ccd), name

    def check_frame(self, header: fits.Header, source=None) -> None:
        """Refuse a frame that another built-in instrument recognises as its own.

        Only instruments that can recognise their frames (a ``matches``
        classmethod) check; headers nobody recognises pass.

        Raises
        ------
        FrameError
            If the header belongs to another built-in instrument.
        """
        if type(self).matches.__func__ is Instrument.matches.__func__ or self.matches(header):
            return
        from .instruments import BUILTIN_INSTRUMENTS

        for other in BUILTIN_INSTRUMENTS:
            if other.matches(header):
                raise FrameError(source, f"is a {other.name} frame, not {self.name}")

    def raw_frame(self, frame) -> tuple[CCDData, str]:
        """A raw frame in ADU and the name to use for it in messages.

        Parameters
        ----------
        frame : str, path-like or astropy.nddata.CCDData
            A raw file (read with `read`), or a raw frame in ADU.

        Returns
        -------
        ccd : astropy.nddata.CCDData
        name : str
            The path, or the RAWFILE card of an in-memory frame.

        Raises
        ------
        FrameError
            If the file cannot be read, or the frame is not a raw 2-D image
            in ADU (e.g. it was processed already).
        """
        if isinstance(frame, CCDData):
            name = str((frame.meta or {}).get("RAWFILE", "<in-memory frame>"))
            if frame.unit is not None and frame.unit != u.adu:
                raise FrameError(name, f"is in {frame.unit}, not ADU: a raw frame is needed "
                                 f"(was it processed already?)")
            if frame.meta.get("APSTAGE"):
                raise FrameError(name, "has already been processed by apocal")
            if frame.data.ndim != 2:
                raise FrameError(name, f"holds a {frame.data.ndim}-D array, not an image")
            return frame, name
        if isinstance(frame, (str, os.PathLike)):
            return self.read(frame), str(frame)
        raise TypeError(f"a frame is a path or a CCDData, not {type(frame).__name__}")

    def raw_flags(self, data: np.ndarray) -> np.ndarray:
        """Flags of raw values (ADU): SATURATED at or above ``saturation``,
        NONLINEAR above ``nonlinear``, NO_DATA where not finite."""
        flags = np.zeros(data.shape, dtype=FLAG_DTYPE)
        lowest = self.saturation if self.nonlinear is None else min(self.saturation, self.nonlinear)
        if data.size == 0 or data.max() < lowest:   # the usual case, in one pass (NaN fails it)
            return flags
        flags[data >= self.saturation] |= FLAG_DTYPE(Flag.SATURATED)
        if self.nonlinear is not None:
            flags[data > self.nonlinear] |= FLAG_DTYPE(Flag.NONLINEAR)
        flags[~np.isfinite(data)] |= FLAG_DTYPE(Flag.NO_DATA)
        return flags


def _per_amplifier(value, n, what):
    if value is None:
        return [None] * n
    if np.ndim(value) == 0:
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{what} needs one value or {n} values (one per amplifier)")
    return list(value)


def _assembled_shape(resolved) -> tuple[int, int]:
    columns = {data.x1: data.shape[1] for _, data, *_ in resolved}
    rows = {data.y1: data.shape[0] for _, data, *_ in resolved}
    return (sum(rows.values()), sum(columns.values()))


def _place(resolved, source):
    """Where each amplifier's data goes in the assembled image.

    Amplifiers are arranged in a grid by the position of their data
    sections: the output keeps their left-right and bottom-top order and
    closes any gap between them.
    """
    x_starts = sorted({data.x1 for _, data, *_ in resolved})
    y_starts = sorted({data.y1 for _, data, *_ in resolved})
    widths = {data.x1: data.shape[1] for _, data, *_ in resolved}
    heights = {data.y1: data.shape[0] for _, data, *_ in resolved}
    placed = []
    for label, data, overscan, gain, noise in resolved:
        x0 = sum(widths[x] for x in x_starts if x < data.x1)
        y0 = sum(heights[y] for y in y_starts if y < data.y1)
        output = Section(x0 + 1, x0 + data.shape[1], y0 + 1, y0 + data.shape[0])
        along_rows = True
        if overscan is not None:
            beside = overscan.x2 < data.x1 or overscan.x1 > data.x2
            above = overscan.y2 < data.y1 or overscan.y1 > data.y2
            if not (beside or above):
                raise FrameError(source, f"{label}: overscan {overscan} overlaps data {data}")
            along_rows = beside
        placed.append(AmplifierLayout(label, data, overscan, output, gain, noise, along_rows))
    outputs = [amp.output for amp in placed]
    if len({(o.x1, o.y1) for o in outputs}) != len(outputs):
        raise FrameError(source, "two amplifiers' data sections start at the same place")
    return placed


def _processed_header(raw_header: fits.Header) -> fits.Header:
    header = raw_header.copy()
    for key in _GEOMETRY_KEYS:
        header.remove(key, ignore_missing=True, remove_all=True)
    for key in list(header.keys()):
        if key[:4] in ("DSEC", "BSEC") and key[4:].isdigit():
            header.remove(key, ignore_missing=True, remove_all=True)
    return header


def _shift_wcs(header: fits.Header, layout: FrameLayout) -> None:
    """Keep a celestial WCS true after trimming a single-amplifier frame."""
    if len(layout.amplifiers) != 1:
        return
    data = layout.amplifiers[0].data
    for key, offset in (("CRPIX1", data.x1 - 1), ("CRPIX2", data.y1 - 1)):
        if key in header and offset:
            header[key] = header[key] - offset
