"""Detectors described by subclassing: `Amplifier` and `Instrument`.

An `Instrument` subclass states the facts of one camera as class attributes
(amplifier sections, gain, read noise, saturation, dispersion axis, header
keywords) and inherits reading, classifying and processing. Which value
wins where a frame's header says something too is decided in one place,
`apocal.layout`, and recorded in every processed frame.

The methods a subclass may override are called with exactly the signatures
documented here (and in the documentation's "Add your own instrument"):
``matches(cls, header, filename=None)``, ``classify(self, header)`` and
``header_sections(self, header, index)``.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import ClassVar
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.utils.exceptions import AstropyWarning

from . import __version__
from .exceptions import FrameError
from .flags import FLAG_DTYPE, Flag
from .io import RawImage, card_text, read_raw
from .layout import AmplifierLayout, FrameLayout, ImageLookup, resolve_layout
from .overscan import OVERSCAN_METHODS
from .processing import ArrayImage, ProcessedFrame

__all__ = ["Amplifier", "AmplifierLayout", "FrameLayout", "Instrument", "FRAME_KINDS"]

#: The kinds of frame `Instrument.classify` can return.
FRAME_KINDS = ("bias", "dark", "flat", "arc", "science")

# Cards of a raw header that stop being true once a frame is in electrons:
# its storage, its raw range and saturation, and the conversion to electrons
# (apocal records the gain and read noise it used in APGAINn and APRDNn).
_RAW_ONLY_KEYS = ("BZERO", "BSCALE", "BLANK", "DATAMIN", "DATAMAX", "SATURATE", "GAIN",
                  "EGAIN", "RDNOISE", "READNOIS", "RON")
# Section-valued cards describe raw geometry (DATASEC, BIASSEC, TRIMSEC,
# DETSEC, RTDATSEC...); only DETSIZE, the detector's size, stays true.
_SECTION_VALUE = re.compile(r"^\s*\[\s*[\d*]")


@dataclass(frozen=True)
class Amplifier:
    """One amplifier (readout port) of a detector.

    Parameters
    ----------
    data_section : str or None
        FITS section ``[x1:x2,y1:y2]`` (1-based, inclusive) of the
        amplifier's light-sensitive pixels in its image (HDU), in unbinned
        pixels unless the instrument sets ``sections_binned = True``; None
        for the whole image.
    overscan_section : str or None
        FITS section of this amplifier's overscan (same pixels); None if it
        has none.
    gain : float or None
        Gain, electrons per ADU; None when it must come from the header.
    read_noise : float or None
        Read noise, electrons; None when it must come from the header.
    name : str
        A label for reports ("left", "right"); defaults to the position.
    data_key, overscan_key : str or None
        Header cards holding this amplifier's own sections in the frame's
        (binned) pixels, e.g. ``"DSEC11"``; when present they win over the
        class sections. None: the instrument's ``data_section_key`` and
        ``overscan_section_key`` (DATASEC and BIASSEC) if the amplifier is
        alone in its HDU, else no card.
    extension : int, str or None
        The HDU holding this amplifier (index or EXTNAME); None for the
        instrument's ``data_extension``.
    detector_section : str or None
        Where the amplifier's data lie on the detector (the mosaic), FITS
        style in unbinned detector pixels; it may run backwards,
        ``[2048:1025,1:4096]``, for an amplifier read from the other side,
        whose data are then flipped. The assembled frame places each
        amplifier's trimmed data at its detector section (scaled by the
        binning). None: from ``detector_key``, else amplifiers are placed
        side by side in the order of their data sections.
    detector_key : str or None
        Header card in the amplifier's HDU giving its detector section,
        e.g. ``"DETSEC"``.
    """

    data_section: str | None = None
    overscan_section: str | None = None
    gain: float | None = None
    read_noise: float | None = None
    name: str = ""
    data_key: str | None = None
    overscan_key: str | None = None
    extension: int | str | None = None
    detector_section: str | None = None
    detector_key: str | None = None


class Instrument:
    """A CCD camera: geometry, detector properties and header conventions.

    Subclass it and set the class attributes below; an instance may override
    any of them by keyword (``SBO(gain=1.3, read_noise=9.5)``). ``gain`` and
    ``read_noise`` given to the constructor apply to every amplifier (a
    sequence gives one value per amplifier) and win over header cards.

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
        HDU holding the image (amplifiers in other HDUs say so with their
        ``extension``).
    sections_binned : bool
        False (default): the amplifiers' class sections count unbinned
        detector pixels and are scaled by each frame's binning. True: they
        count the frame's own (binned) pixels, as header cards do.
    data_section_key, overscan_section_key : str or None
        Header cards giving the data and overscan sections of an amplifier
        alone in its HDU (DATASEC and BIASSEC); None to ignore them.
    exptime_key, imagetype_key, object_key, date_key : str
        Header keys for exposure time (s), frame type, target and date.
    binning_keys : tuple
        Where to find binning: a key holding ``"bx by"`` (e.g. ``CCDSUM``)
        or a pair of keys ``(x_key, y_key)``; the first one present is used.
    gain_keys, read_noise_keys : tuple of str
        Header keys whose value, when present in an amplifier's HDU,
        replaces the class gain (e-/ADU) or read noise (e-); ``()`` when
        the camera's cards mean something else. A value given to the
        constructor wins over both.
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
    sections_binned: bool = False
    data_section_key: str | None = "DATASEC"
    overscan_section_key: str | None = "BIASSEC"
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

    def __init__(self, gain: float | Sequence[float] | None = None,
                 read_noise: float | Sequence[float] | None = None, **settings: Any) -> None:
        for key, value in settings.items():
            if key.startswith("_") or not hasattr(type(self), key) \
                    or callable(getattr(type(self), key)):
                raise TypeError(f"{type(self).__name__} has no setting {key!r}")
            setattr(self, key, copy.deepcopy(value))
        self._given: tuple[dict, ...] = tuple({} for _ in self.amplifiers)
        if gain is not None or read_noise is not None:
            self.amplifiers, self._given = self._with_values(gain, read_noise, "given")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def with_detector(self, gain: float | Sequence[float] | None = None,
                      read_noise: float | Sequence[float] | None = None,
                      source: str = "given") -> Instrument:
        """A copy of this instrument with new gain (e-/ADU) and read noise (e-).

        One value applies to every amplifier; a sequence gives one per
        amplifier. Like values given to the constructor, they win over
        header cards. Other settings of this instance are kept.

        Parameters
        ----------
        gain, read_noise : float or sequence of float, optional
        source : str
            How the values were obtained, recorded in processed frames
            (e.g. ``"measured (photon transfer)"``).
        """
        other = copy.copy(self)
        other.amplifiers, other._given = self._with_values(gain, read_noise, source)
        return other

    def _with_values(self, gain, read_noise, source):
        n = len(self.amplifiers)
        amplifiers, given = [], []
        for amp, known, g, r in zip(self.amplifiers, getattr(self, "_given", [{}] * n),
                                    _per_amplifier(gain, n, "gain"),
                                    _per_amplifier(read_noise, n, "read_noise")):
            known = dict(known)
            if g is not None:
                known["gain"] = (float(g), source)
            if r is not None:
                known["read_noise"] = (float(r), source)
            amplifiers.append(replace(amp, gain=amp.gain if g is None else float(g),
                                      read_noise=amp.read_noise if r is None else float(r)))
            given.append(known)
        return tuple(amplifiers), tuple(given)

    def given_value(self, index: int, what: str) -> tuple[float, str] | None:
        """The ``gain`` or ``read_noise`` given for amplifier ``index``
        (constructor, `with_detector`) and how it was obtained; None when
        not given."""
        return self._given[index].get(what) if index < len(self._given) else None

    def given_values(self, what: str) -> list[float | None]:
        """Per amplifier, the given ``gain`` or ``read_noise`` (None where
        the header or the class decides)."""
        return [(self.given_value(i, what) or (None,))[0] for i in range(len(self.amplifiers))]

    # ------------------------------------------------------------------
    # Recognising frames
    # ------------------------------------------------------------------
    @classmethod
    def matches(cls, header: fits.Header, filename: str | None = None) -> bool:
        """True when ``header`` was written by this instrument.

        Override it so that `apocal.instrument_for` and the night pipeline
        recognise the camera's frames. ``filename`` is the file's name (no
        folder) when there is a file, for cameras whose files say what their
        headers do not; an override may leave it out of its signature.
        The generic class matches nothing.
        """
        return False

    @classmethod
    def recognises(cls, header: fits.Header, filename: str | None = None) -> bool:
        """`matches`, called with the file name only where the override
        takes one (``matches(cls, header)`` is a valid override)."""
        if filename is not None and _takes_filename(cls.matches.__func__):
            return bool(cls.matches(header, filename))
        return bool(cls.matches(header))

    def exposure_time(self, header: fits.Header, source: str | os.PathLike | None = None) -> float:
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

    def classify(self, header: fits.Header) -> str:
        """Kind of frame: one of ``bias``, ``dark``, ``flat``, ``arc``, ``science``.

        The default reads ``imagetype_key`` through ``imagetypes``; a frame
        typed as science with an arc lamp on is an arc. Override it when a
        camera says the kind some other way.

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
        raise FrameError(None, f"cannot tell the frame kind from "
                         f"{self.imagetype_key}={header.get(self.imagetype_key)!r}")

    def kind_of(self, header: fits.Header, source=None) -> str:
        """`classify`, with errors naming ``source`` and the answer checked.

        Raises
        ------
        FrameError
            If the frame's kind cannot be told, or `classify` returned
            something that is not one of `FRAME_KINDS`.
        """
        try:
            kind = self.classify(header)
        except FrameError as err:
            raise FrameError(source if err.source is None else err.source, err.problem) \
                from None
        if kind not in FRAME_KINDS:
            raise FrameError(source, f"{type(self).__name__}.classify returned {kind!r}, not "
                                     f"one of {', '.join(FRAME_KINDS)}")
        return kind

    # ------------------------------------------------------------------
    # Geometry
    # ------------------------------------------------------------------
    def header_sections(self, header: fits.Header, index: int) -> tuple[str | None, str | None]:
        """Data and overscan sections the header gives for amplifier ``index``.

        ``header`` is that amplifier's HDU header, merged with the primary
        header. Override this when an instrument records its geometry
        differently (e.g. a count of overscan columns). Values are in the
        frame's own (binned) pixels; None means "not in the header". What
        it returns wins over the class sections (see `apocal.layout`).
        """
        sections = []
        for key in self.section_keys(index):
            value = header.get(key) if key else None
            sections.append(str(value) if value else None)
        return sections[0], sections[1]

    def section_keys(self, index: int) -> tuple[str | None, str | None]:
        """The header cards read (by the default `header_sections`) for the
        data and overscan sections of amplifier ``index``."""
        amp = self.amplifiers[index]
        here = amp.extension if amp.extension is not None else self.data_extension
        alone = sum((a.extension if a.extension is not None else self.data_extension) == here
                    for a in self.amplifiers) == 1
        return (amp.data_key or (self.data_section_key if alone else None),
                amp.overscan_key or (self.overscan_section_key if alone else None))

    @classmethod
    def header_sections_overridden(cls) -> bool:
        """True when a subclass reads its sections its own way."""
        return cls.header_sections is not Instrument.header_sections

    def layout(self, header: fits.Header, shape: tuple[int, int],
               source: str | os.PathLike | None = None, *, detector: bool = True,
               images: ImageLookup | None = None) -> FrameLayout:
        """Resolve every amplifier's sections, gain and read noise for a frame.

        Parameters
        ----------
        header : astropy.io.fits.Header
            The raw frame's header (of ``data_extension``, merged with the
            primary).
        shape : tuple of int
            numpy shape of that image.
        source : str or path-like, optional
            The file, for error messages.
        detector : bool
            Require the gain and read noise. With False, geometry alone is
            resolved and unknown values are NaN (for measuring them).
        images : callable, optional
            For amplifiers in other HDUs: ``images(extension)`` returns
            ``(key, header, shape)``; `frame_layout` passes it from the file.

        Raises
        ------
        FrameError
            If a section is malformed, does not fit the image or overlaps
            data, amplifiers cannot be placed, or the gain or read noise is
            unknown.
        """
        return resolve_layout(self, header, shape, source, detector=detector, images=images)

    def frame_layout(self, frame, detector: bool = True) -> FrameLayout:
        """`layout` of a raw file or frame, every HDU it needs included.

        Parameters
        ----------
        frame : str, path-like, CCDData or apocal.io.RawImage
        detector : bool
            As in `layout`.
        """
        source, name = self.raw_source(frame)
        return self.layout(source.header, source.shape, name, detector=detector,
                           images=_images_of(source))

    # ------------------------------------------------------------------
    # Reading and processing
    # ------------------------------------------------------------------
    def read(self, path: str | os.PathLike) -> CCDData:
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

    def process(self, frame: str | os.PathLike | CCDData, overscan: str = "rows",
                overscan_window: int | None = None, bias: np.ndarray | float | None = None,
                kind: str | None = None) -> CCDData:
        """Turn a raw frame into electrons with an honest uncertainty.

        Per amplifier: subtract the overscan level, cut out the data section
        and place it in the assembled image (at its detector section,
        flipped where that runs backwards), multiply by the gain. The
        uncertainty is ``sqrt(read_noise**2 + photons + g**2 var_os)``
        electrons, where ``var_os`` is the variance of the overscan estimate
        and ``photons = max(signal - bias, 0)``; a bias frame holds no
        photons, whatever its exposure time. Pixels whose raw value reached
        ``saturation`` or exceeded ``nonlinear`` are flagged
        (`apocal.flags.Flag`) and masked.

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
            `CalibrationSet` passes it; without it a camera without overscan
            gets an uncertainty that counts its bias level as photons.
        kind : str, optional
            The frame's kind (`FRAME_KINDS`); by default from `classify`, or
            when the header does not say, a frame of zero exposure time is
            taken to hold no photons.

        Returns
        -------
        astropy.nddata.CCDData
            float32 image in electrons with `StdDevUncertainty`, ``mask``,
            ``flags`` and a celestial ``wcs`` when the header has one.
            Header cards per amplifier n: APGAINn and APRDNn (gain and read
            noise used), APGSRCn and APNSRCn (where each came from: header
            card, class or given), APDSECn/APDSRCn and APBSECn/APBSRCn (data
            and overscan sections used and their sources), APOVSCn (mean
            overscan level, ADU). Raw-only cards (BZERO, DATAMIN/DATAMAX,
            SATURATE, GAIN, RDNOISE and section cards) are removed.

        Raises
        ------
        FrameError
            For an unreadable file, a frame already in electrons, sections
            that do not fit, or an unknown gain or read noise.
        """
        return self.prepare(frame, overscan, overscan_window, bias, kind).ccd()

    def prepare(self, frame: str | os.PathLike | CCDData | RawImage | ArrayImage,
                overscan: str = "rows", overscan_window: int | None = None,
                bias: np.ndarray | float | None = None,
                kind: str | None = None) -> ProcessedFrame:
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
        layout = self.layout(raw_header, source.shape, name, images=_images_of(source))
        if kind is None:
            try:
                kind = self.kind_of(raw_header, name)
            except FrameError:   # the header does not say: fall back on the exposure
                kind = ("science" if self.exptime_key not in raw_header
                        or self.exposure_time(raw_header, name) > 0 else "bias")
        header = self._processed_header(raw_header)
        header["APOVMETH"] = (overscan if any(a.overscan for a in layout.amplifiers) else "none",
                              "overscan estimate")
        header["APSTAGE"] = ("processed", "apocal: overscan, trim, gain applied")
        header["APVERS"] = (__version__, "apocal version")
        _shift_wcs(header, layout)
        return ProcessedFrame(self, amplifier_images(source, layout, self), name, layout,
                              header, kind != "bias", overscan,
                              overscan_window or self.overscan_window, bias)

    def _processed_header(self, raw_header: fits.Header) -> fits.Header:
        """The raw header without what stops being true in electrons."""
        header = raw_header.copy()
        stale = set(_RAW_ONLY_KEYS) | set(self.gain_keys) | set(self.read_noise_keys)
        for index in range(len(self.amplifiers)):
            stale.update(key for key in self.section_keys(index) if key)
            stale.update(key for key in (self.amplifiers[index].detector_key,) if key)
        for key in list(header.keys()):
            value = header.get(key)
            if key in stale or (key != "DETSIZE" and isinstance(value, str)
                                and _SECTION_VALUE.match(value)):
                header.remove(key, ignore_missing=True, remove_all=True)
        header["BUNIT"] = ("electron", "processed by apocal")
        return header

    def raw_source(self, frame: str | os.PathLike | CCDData | RawImage | ArrayImage
                   ) -> tuple[RawImage | ArrayImage, str]:
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

    def check_frame(self, header: fits.Header, source: str | os.PathLike | None = None) -> None:
        """Refuse a frame that is not this instrument's raw frame.

        A frame apocal (or another pipeline) has already processed or
        combined is refused. Instruments that recognise their frames (a
        ``matches`` classmethod) also refuse frames another built-in
        instrument recognises; headers nobody recognises pass.

        Raises
        ------
        FrameError
            If the frame is a product, or belongs to another built-in
            instrument.
        """
        product = [key for key in _PRODUCT_KEYS if key in header]
        if product:
            raise FrameError(source, f"is not a raw frame: it carries {product[0]}="
                                     f"{header[product[0]]!r} (already processed or combined)")
        filename = Path(source).name if source is not None else None
        if type(self).matches.__func__ is Instrument.matches.__func__ \
                or self.recognises(header, filename):
            return
        from .instruments import BUILTIN_INSTRUMENTS

        for other in BUILTIN_INSTRUMENTS:
            if other.recognises(header, filename):
                raise FrameError(source, f"is a {other.name} frame, not {self.name}")

    def raw_frame(self, frame: str | os.PathLike | CCDData) -> tuple[CCDData, str]:
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


@lru_cache(maxsize=None)
def _takes_filename(function) -> bool:
    """True when a ``matches`` override accepts a second argument."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return (len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)
            or any(p.name == "filename" for p in parameters))


def _images_of(source):
    """The `Instrument.layout` lookup of other HDUs for a raw source."""
    if not hasattr(source, "sibling"):
        return None

    def images(extension):
        image = source.sibling(extension)
        return image.extension, image.header, image.shape

    return images


def amplifier_images(source, layout: FrameLayout, instrument) -> dict:
    """HDU key -> the raw image (`~apocal.io.RawImage` or in-memory frame)
    holding each amplifier of ``layout``; ``source`` is the frame's main
    image."""
    own = getattr(source, "extension", instrument.data_extension)
    return {amp.extension: source if amp.extension == own else source.sibling(amp.extension)
            for amp in layout.amplifiers}


# Cards that say a file is a product, not a raw frame: apocal's own, and
# those IRAF's ccdproc/imcombine and ccdproc write.
_PRODUCT_KEYS = ("APSTAGE", "APMASTER", "CCDPROC", "ZEROCOR", "FLATCOR", "IMCMB001", "SUBBIAS",
                 "FLATCORR")


def _shift_wcs(header: fits.Header, layout: FrameLayout) -> None:
    """Keep a celestial WCS true after trimming a single-amplifier frame."""
    if len(layout.amplifiers) != 1:
        return
    amp = layout.amplifiers[0]
    if amp.flip_x or amp.flip_y:
        return
    for key, offset in (("CRPIX1", amp.data.x1 - 1), ("CRPIX2", amp.data.y1 - 1)):
        if key in header and offset:
            header[key] = header[key] - offset
