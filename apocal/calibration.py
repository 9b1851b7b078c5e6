"""`CalibrationSet`: master bias, dark, flat and arc, and calibrated science.

Every input frame goes through `Instrument.prepare` first, so masters are in
electrons with an uncertainty; the masters are combined with
`apocal.combine.combine` (ccdproc's Combiner underneath, with uncertainties
from the inputs), reading the raw files a block of rows at a time.

Masters are applied block by block (`apocal.blocks`) with the arithmetic
of ccdproc's `subtract_bias`, `subtract_dark` and `flat_correct`, written
out in float32: those calls go through astropy's NDData arithmetic, which
copies every array and propagates the uncertainty in float64 (a full-size
KOSMOS frame took 0.8 s, against 0.1 s here); a test checks that the
results agree. Two corrections to what those calls would do are made, each
explained where it is made: the master dark shares the master bias with
the science frame (ccdproc's arithmetic treats them as independent), and a
camera without overscan still has its bias level in the processed signal,
which must not be counted as photons.
"""

from __future__ import annotations

import importlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import mad_std
from ccdproc import subtract_bias

from . import __version__
from .blocks import for_each_block
from .combine import COMBINE_OPTIONS, combine
from .cosmic_rays import reject_cosmic_rays
from .exceptions import ApocalWarning, CalibrationError, FrameError
from .flags import FLAG_DTYPE, Flag
from .flat_response import fit_response, illuminated_rows, lamp_spectrum
from .instrument import Instrument
from .processing import ProcessedFrame
from .io import atomic_write_bytes, card_text, read_frame, write_frame

__all__ = ["CalibrationSet"]

_MANIFEST = "calibration_set.json"
# Exposure times closer than this (s) count as the same.
_SAME_EXPOSURE = 0.01
# Values per block of rows when calibrating a frame (2 MB per float32 array:
# large enough that two threads rarely wait for each other, measured).
_CALIBRATE_BLOCK_VALUES = 1 << 19
# A flat whose 90th-percentile signal is below this many read noises has no light.
_NO_LIGHT = 10.0


class CalibrationSet:
    """Master calibration frames for one instrument and configuration.

    Build it by chaining ``add_biases``, ``add_darks`` (optional),
    ``add_flats`` and ``add_arcs``; biases come before darks, and both
    before flats and arcs, since each call processes its frames and builds
    its master at once. Then ``calibrate`` science frames.

    Parameters
    ----------
    instrument : Instrument
        The camera that took every frame.
    overscan : {"rows", "level"}
        Overscan estimate used when processing frames
        (see `Instrument.process`).
    overscan_window : int, optional
        Overscan smoothing length in lines.

    Attributes
    ----------
    master_bias : CCDData or None
        Electrons; the structure left after the overscan (or, without one,
        the whole bias level).
    master_dark : CCDData or None
        Dark current in electrons per second (when there is a bias); without
        a bias, the combined darks of one exposure time, in electrons.
    master_darks : dict
        Without a bias: exposure time (s) -> combined darks of that time.
    master_flat : CCDData or None
        Pixel response around 1 (dimensionless).
    master_arc : CCDData or None
        Summed arc lamp frames, electrons.
    illumination_mask : numpy.ndarray or None
        True where the slit is illuminated (spectrographs).
    lamp_spectrum, flat_response : numpy.ndarray or None
        The flat's mean spectrum along the dispersion axis and the fit
        divided out of it (dimensionless: each flat was divided by its level).
    """

    def __init__(self, instrument: Instrument, *, overscan: str = "rows",
                 overscan_window: int | None = None):
        if not isinstance(instrument, Instrument):
            raise TypeError(f"CalibrationSet needs an Instrument instance, not {instrument!r}")
        self.instrument = instrument
        self.overscan = overscan
        self.overscan_window = overscan_window
        self.master_bias = None
        self.master_darks: dict[float, CCDData] = {}
        self._dark_rate = None
        self.master_flat = None
        self.master_arc = None
        self.illumination_mask = None
        self.lamp_spectrum = None
        self.flat_response = None
        self._sources: dict[str, str] = {}
        self._pedestals: dict[float, np.ndarray] = {}
        self._applied: dict[int, _Terms] = {}

    def __repr__(self) -> str:
        built = [k for k in ("bias", "dark", "flat", "arc")
                 if getattr(self, f"master_{k}", None) is not None]
        return f"<CalibrationSet {self.instrument.name}: {', '.join(built) or 'empty'}>"

    # ------------------------------------------------------------------
    # Masters
    # ------------------------------------------------------------------
    @property
    def master_dark(self) -> CCDData | None:
        """The dark-current rate (e-/s); without a bias, the one master dark
        when darks of a single exposure time were given (else see
        ``master_darks``)."""
        if self._dark_rate is not None:
            return self._dark_rate
        if len(self.master_darks) == 1:
            return next(iter(self.master_darks.values()))
        return None

    @property
    def files(self) -> dict[str, str]:
        """Master -> file name, for masters written by `write` or read by
        `read`: keys ``bias``, ``dark``, ``flat``, ``arc``, and without a bias
        ``dark:<exposure time>`` per master dark."""
        return dict(self._sources)

    @property
    def bad_pixel_mask(self) -> np.ndarray | None:
        """True for pixels no science should trust: bad in the flat, hot in
        the dark, or without data in any master."""
        bad = None
        wanted = FLAG_DTYPE(Flag.BAD_PIXEL | Flag.HOT | Flag.NO_DATA)
        masters = [self.master_bias, self._dark_rate, self.master_flat,
                   *self.master_darks.values()]
        for master in masters:
            if master is not None and master.flags is not None:
                these = (master.flags & wanted) != 0
                bad = these if bad is None else bad | these
        return bad

    def add_biases(self, frames, method: str = "median", **options) -> "CalibrationSet":
        """Combine bias frames into ``master_bias`` (electrons).

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw bias frames.
        method : {"median", "mean", "sum"}
            Combination (see `apocal.combine.combine`).
        **options
            ``sigma_clip``, ``minmax``, ``extrema``, ``exclude``,
            ``memory_limit`` of `apocal.combine.combine`.

        Returns
        -------
        CalibrationSet
            This set, for chaining.
        """
        _check_options(options, "add_biases")
        self._require_order("bias")
        processed, names = self._process_all(frames, "bias")
        master = combine(processed, method, **options)
        self.master_bias = _as_master(master, "bias", names, self.instrument)
        return self

    def add_darks(self, frames, method: str = "median", hot_sigma: float = 5.0,
                  **options) -> "CalibrationSet":
        """Build the dark-current master from dark frames.

        With a master bias, the darks are bias-subtracted and combined into a
        dark-current rate (e-/s), later scaled to each exposure. Without one
        (a camera whose bias comes from darks, the SBO way), darks are
        combined per exposure time and a science frame must use the dark of
        its own exposure time.

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw dark frames.
        method : {"median", "mean", "sum"}
            Combination (see `apocal.combine.combine`).
        hot_sigma : float
            Pixels whose dark signal exceeds the median by more than this
            many robust standard deviations of the master are flagged HOT.
        **options
            Options of `apocal.combine.combine`.

        Returns
        -------
        CalibrationSet
        """
        _check_options(options, "add_darks")
        self._require_order("dark")
        frames = list(frames)
        if self.master_bias is None:
            by_time: dict[float, list] = {}
            for frame in frames:
                source, name = self.instrument.raw_source(frame)
                exptime = self.instrument.exposure_time(source.header, name)
                key = next((t for t in by_time if abs(t - exptime) <= _SAME_EXPOSURE), exptime)
                by_time.setdefault(key, []).append(source)
            for exptime, group in sorted(by_time.items()):
                pedestal = self._bias_level_estimate(group[0])
                if pedestal is not None:
                    self._pedestals[exptime] = pedestal
                processed, names = self._process_all(group, "dark", bias=pedestal)
                master = combine(processed, method, **options)
                _flag_hot(master, hot_sigma)
                master = _as_master(master, "dark", names, self.instrument)
                master.header[self.instrument.exptime_key] = exptime
                self.master_darks[exptime] = master
            return self

        processed, names = self._process_all(frames, "dark")
        times = np.array([self.instrument.exposure_time(c.header, n)
                          for c, n in zip(processed, names)])
        if np.any(times <= 0):
            raise CalibrationError(f"{names[int(np.argmax(times <= 0))]}: a dark of zero "
                                   f"exposure cannot measure dark current")
        dark_time = float(times.mean())
        if np.ptp(times) <= _SAME_EXPOSURE:
            # Combine first, then remove the bias once: the master bias is
            # counted once in the uncertainty, as it should be.
            combined = combine(processed, method, **options)
            rate = subtract_bias(combined, self.master_bias, add_keyword=False).divide(dark_time * u.s)
            bias_coefficient = -1.0 / dark_time
        else:
            # Each dark minus the bias, over its own exposure: a rate per frame.
            scale = np.asarray(options.pop("scale", np.ones(len(times)))) / times
            combined = combine([self._calibrated(frame) for frame in processed], method,
                               scale=scale, **options)
            rate = combined
            bias_coefficient = -float(np.mean(1.0 / times))
        rate = CCDData(rate.data.astype(np.float32), unit=u.electron / u.s,
                       uncertainty=StdDevUncertainty(rate.uncertainty.array.astype(np.float32)),
                       flags=combined.flags | _flags(self.master_bias), meta=processed[0].header)
        _flag_hot(rate, hot_sigma)
        rate = _as_master(rate, "dark", names, self.instrument)
        rate.header[self.instrument.exptime_key] = (dark_time, "[s] mean exposure of the darks")
        rate.header["APBIASCO"] = (bias_coefficient,
                                   "[1/s] d(rate)/d(master bias)")
        self._dark_rate = rate
        return self

    def add_flats(self, frames, response: str | None = "spline", *, order: int | None = None,
                  knots: int | None = None, width: int | None = None,
                  method: str = "median", illumination_threshold: float = 0.8,
                  bad_pixel_limits: tuple[float, float] = (0.5, 1.5),
                  **options) -> "CalibrationSet":
        """Build the master flat: pixel response around 1.

        Each flat is bias- and dark-subtracted, divided by its own level and
        combined. For a spectrograph the illuminated part of the slit is
        found, the lamp spectrum (mean along the slit) is fitted along the
        dispersion axis and divided out; pixels outside the slit are set to
        1 and flagged UNILLUMINATED. An imaging flat is divided by its
        median. Pixels outside ``bad_pixel_limits`` are flagged BAD_PIXEL.

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw flat frames (exposure times may differ).
        response : {"spline", "poly", "boxcar", None}
            How to fit the lamp spectrum (spectrographs only); None keeps it.
        order, knots, width : int, optional
            Polynomial order, number of spline knots, boxcar width (pixels).
        method : {"median", "mean", "sum"}
            Combination of the normalised flats.
        illumination_threshold : float
            Fraction of the slit's typical level that counts as illuminated.
        bad_pixel_limits : (float, float)
            Master-flat values outside this range are bad pixels.
        **options
            Options of `apocal.combine.combine` (not ``scale``: each flat is
            scaled by its own level).

        Returns
        -------
        CalibrationSet
        """
        _check_options(options, "add_flats", forbidden=("scale",))
        self._require_order("flat")
        processed, names = self._process_all(frames, "flat", subtract=True)
        spectro = self.instrument.dispersion_axis is not None
        axis = self.instrument.dispersion_axis
        frame_shape = processed[0].shape
        unusable = FLAG_DTYPE(Flag.SATURATED | Flag.NO_DATA | Flag.BAD_PIXEL)
        # One flat in memory at a time: the illuminated slit needs the sum of
        # all of them, then each flat's level needs that slit, so a
        # spectrograph's flats are processed once per pass (three in all,
        # with the streamed combination) rather than all held at once.
        stack_sum = np.zeros(frame_shape) if spectro else None
        levels = []
        for flat, name in zip(processed, names):
            ccd = flat.ccd()
            noise = _read_noise(ccd)
            light = np.nanpercentile(ccd.data, 90)
            if not light > _NO_LIGHT * noise:
                raise CalibrationError(f"{name}: flat has no light (90th percentile "
                                       f"{light:.1f} e-, read noise {noise:.1f} e-); "
                                       f"was the lamp off or the shutter closed?")
            good = (ccd.flags & unusable) == 0
            if spectro:
                stack_sum += np.where(good, ccd.data, 0.0)
            else:
                levels.append(float(np.median(ccd.data[good])))
        if spectro:
            rows = illuminated_rows(stack_sum, axis, threshold=illumination_threshold)
            if not rows.any():
                raise CalibrationError(f"no part of the slit is illuminated in the flats "
                                       f"({names[0]} ...)")
            lit = np.broadcast_to(np.expand_dims(rows, axis), frame_shape)
            for flat in processed:
                ccd = flat.ccd()
                levels.append(float(np.median(ccd.data[lit & ((ccd.flags & unusable) == 0)])))
        else:
            lit = np.ones(frame_shape, dtype=bool)
        combined = combine(processed, method, scale=[1.0 / lvl for lvl in levels], **options)
        good = lit & ((combined.flags & FLAG_DTYPE(Flag.NO_DATA | Flag.SATURATED)) == 0)

        flat = combined.data.astype(np.float64)
        sigma = combined.uncertainty.array.astype(np.float64)
        flags = combined.flags.copy()
        if spectro:
            spectrum = lamp_spectrum(flat, axis, rows, bad=~good)
            fitted = fit_response(spectrum, response, order=order, knots=knots, width=width)
            dim = fitted <= 0.01 * np.nanmax(fitted)
            shape = [1, 1]
            shape[axis] = -1
            divisor = np.where(dim, 1.0, fitted).reshape(shape)
            flat, sigma = flat / divisor, sigma / divisor
            unlit = ~lit | np.broadcast_to(dim.reshape(shape), flat.shape)
            self.illumination_mask = ~unlit
            self.lamp_spectrum, self.flat_response = spectrum, fitted
        else:
            norm = float(np.median(flat[good]))
            flat, sigma = flat / norm, sigma / norm
            unlit = np.zeros(flat.shape, dtype=bool)
        flat[unlit] = 1.0
        sigma[unlit] = 0.0
        flags[unlit] |= FLAG_DTYPE(Flag.UNILLUMINATED)
        low, high = bad_pixel_limits
        flags[~unlit & ((flat < low) | (flat > high))] |= FLAG_DTYPE(Flag.BAD_PIXEL)
        master = CCDData(flat.astype(np.float32), unit=u.dimensionless_unscaled,
                         uncertainty=StdDevUncertainty(sigma.astype(np.float32)),
                         flags=flags, meta=combined.header)
        master = _as_master(master, "flat", names, self.instrument)
        master.header["APRESP"] = (str(response) if spectro else "median",
                                   "lamp spectrum removal")
        for key, value in (("APORDER", order), ("APKNOTS", knots), ("APWIDTH", width)):
            if value is not None and spectro:
                master.header[key] = value
        master.header["APILLUM"] = (illumination_threshold, "illuminated: profile >= this x level")
        master.header["APNBAD"] = (int(((flags & Flag.BAD_PIXEL) != 0).sum()), "bad pixels")
        for index, level in enumerate(levels, start=1):
            master.header[f"APLEV{index:03d}"] = (level, f"[e-] level of flat {index}")
        self.master_flat = master
        return self

    def add_arcs(self, frames, method: str = "sum", **options) -> "CalibrationSet":
        """Sum bias- and dark-subtracted arc frames into ``master_arc``.

        Saturated and non-linear pixels are kept in the sum and flagged; a
        warning says when arc lines reach the non-linear regime.

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw arc-lamp frames.
        method : {"sum", "median", "mean"}
            Combination; the lab's ArcCombine sums.
        **options
            Options of `apocal.combine.combine` (default ``exclude=0``:
            nothing is left out of the sum).

        Returns
        -------
        CalibrationSet
        """
        _check_options(options, "add_arcs")
        self._require_order("arc")
        options.setdefault("exclude", 0)
        processed, names = self._process_all(frames, "arc")
        times = [self.instrument.exposure_time(c.header, n) for c, n in zip(processed, names)]
        combined = combine(processed, method, **options)
        # Remove the bias and dark after combining, as a total for all
        # frames, so each master counts once in the uncertainty.
        count = len(processed) if method == "sum" else 1
        total_time = float(np.sum(times)) if method == "sum" else float(np.mean(times))
        arc, flags = combined, combined.flags | _flags(self.master_bias)
        if self.master_bias is not None:
            arc = arc.subtract(self.master_bias.multiply(count * u.one))
        dark = self._dark_for(total_time / count, names[0], required=False)
        if dark is not None:
            master, factor, _ = dark
            arc = arc.subtract(_as_electrons(master).multiply(factor * count * u.one))
            flags = flags | _flags(master)
        master = CCDData(arc.data.astype(np.float32), unit=u.electron,
                         uncertainty=StdDevUncertainty(arc.uncertainty.array.astype(np.float32)),
                         flags=flags, meta=combined.header)
        master = _as_master(master, "arc", names, self.instrument)
        heavy = (flags & FLAG_DTYPE(Flag.NONLINEAR | Flag.SATURATED)) != 0
        if self.illumination_mask is not None:
            heavy &= self.illumination_mask
        master.header["APNLPIX"] = (int(heavy.sum()), "saturated or non-linear pixels")
        if heavy.any():
            warnings.warn(f"{int(heavy.sum())} pixels of the arcs "
                          f"({', '.join(Path(n).name for n in names)}) reach "
                          f"the non-linear regime (raw level above "
                          f"{self.instrument.nonlinear or self.instrument.saturation:g} ADU); "
                          f"avoid those lines in the wavelength solution", ApocalWarning)
        self.master_arc = master
        return self

    # ------------------------------------------------------------------
    # Science
    # ------------------------------------------------------------------
    def calibrate(self, frame, *, cosmic_rays: bool = False, **cosmic_options) -> CCDData:
        """Calibrate a science frame to electrons.

        process (overscan, trim, gain) -> subtract the master bias ->
        subtract the dark (the rate times the exposure time, or the dark of
        the same exposure) -> divide by the master flat. The uncertainty
        holds read noise, photon noise and each master's uncertainty; the
        flags collect the frame's own (saturated, non-linear) and the
        masters' (bad, hot, unilluminated, no data).

        Parameters
        ----------
        frame : str, path-like or CCDData
            A raw science frame.
        cosmic_rays : bool
            Find and replace cosmic-ray hits with L.A.Cosmic
            (`apocal.cosmic_rays.reject_cosmic_rays`).
        **cosmic_options
            L.A.Cosmic settings, e.g. ``sigclip=5``.

        Returns
        -------
        astropy.nddata.CCDData
            Electrons, float32, with `StdDevUncertainty`, ``mask``,
            ``flags`` and provenance cards (APBIAS, APDARK, APFLAT).

        Raises
        ------
        CalibrationError
            When a needed master is missing (no bias and no dark of this
            exposure for a camera without overscan), or shapes differ.
        """
        source, name = self.instrument.raw_source(frame)
        exptime = self.instrument.exposure_time(source.header, name)
        prepared = self._prepare_one(source, name, "science", bias=self._pedestal_for(exptime))
        self._check_configuration(prepared.header, name)
        result = self._calibrated(prepared, flat=True).ccd()
        result.header["APSTAGE"] = ("calibrated", "apocal: bias, dark, flat applied")
        if cosmic_rays:
            result = reject_cosmic_rays(result, _read_noise(result), **cosmic_options)
        return result

    # ------------------------------------------------------------------
    # Files
    # ------------------------------------------------------------------
    def write(self, directory, overwrite: bool = False) -> list[Path]:
        """Write every master to ``directory`` and a manifest to read them back.

        Files: ``master_bias.fits``, ``master_dark.fits`` (or
        ``master_dark_<t>s.fits`` per exposure without a bias),
        ``master_flat.fits`` (with ILLUM, LAMP and RESPONSE extensions) and
        ``master_arc.fits``, each with UNCERT, MASK and FLAGS extensions and a
        provenance header, plus ``calibration_set.json``. Each file appears
        complete or not at all; the manifest is written last. With
        ``overwrite``, masters of an earlier set in ``directory`` that this
        set does not have (``master_dark.fits`` when this one has none) are
        removed, so the folder holds this set alone.

        Raises
        ------
        FileExistsError
            If any of the files exists and ``overwrite`` is False (nothing
            is written then).
        """
        directory = Path(directory)
        plan = self._file_plan()
        targets = [directory / name for name, _, _ in plan] + [directory / _MANIFEST]
        existing = [str(t) for t in targets if t.exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{', '.join(existing)}: exist(s); pass overwrite=True "
                                  f"to replace")
        stale = _earlier_masters(directory) - {name for name, _, _ in plan}
        if overwrite and (directory / _MANIFEST).exists():
            (directory / _MANIFEST).unlink()   # the folder is no set until it is complete
        written = []
        for name, master, extra in plan:
            written.append(write_frame(master, directory / name, overwrite=overwrite,
                                       extra_hdus=extra))
        manifest = {
            "apocal_version": __version__,
            "instrument": f"{type(self.instrument).__module__}:{type(self.instrument).__qualname__}",
            "gain": [a.gain for a in self.instrument.amplifiers],
            "read_noise": [a.read_noise for a in self.instrument.amplifiers],
            "overscan": self.overscan, "overscan_window": self.overscan_window,
            "files": {key: name for name, _, key in self._file_keys(plan)},
        }
        written.append(atomic_write_bytes(directory / _MANIFEST,
                                          json.dumps(manifest, indent=1).encode(),
                                          overwrite=overwrite))
        for name, _, key in self._file_keys(plan):
            self._sources[key] = name
        for name in stale if overwrite else ():
            (directory / name).unlink(missing_ok=True)
        return written

    @classmethod
    def read(cls, directory, instrument: Instrument | None = None) -> "CalibrationSet":
        """Read a set written by `write`.

        Parameters
        ----------
        directory : str or path-like
            The folder given to `write`.
        instrument : Instrument, optional
            The instrument, when its class cannot be imported by name (a
            class defined in a script); by default the recorded class is
            imported and given the recorded gain and read noise.

        Raises
        ------
        CalibrationError
            If the folder has no manifest or a listed file is missing.
        """
        directory = Path(directory)
        try:
            manifest = json.loads((directory / _MANIFEST).read_text())
        except FileNotFoundError:
            raise CalibrationError(f"{directory}: no {_MANIFEST}; not a written calibration "
                                   f"set (or its writing was interrupted)") from None
        if instrument is None:
            module, _, name = manifest["instrument"].partition(":")
            try:
                klass = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as err:
                raise CalibrationError(f"{directory}: cannot import the instrument "
                                       f"{manifest['instrument']} ({err}); pass instrument=")
            instrument = klass(gain=manifest["gain"], read_noise=manifest["read_noise"])
        cal = cls(instrument, overscan=manifest["overscan"],
                  overscan_window=manifest["overscan_window"])
        for key, name in manifest["files"].items():
            path = directory / name
            if not path.exists():
                raise CalibrationError(f"{path}: listed in {_MANIFEST} but missing")
            master = read_frame(path)
            kind, _, exposure = key.partition(":")
            cal._sources[key] = name
            if kind == "bias":
                cal.master_bias = master
            elif kind == "dark" and exposure:
                cal.master_darks[float(exposure)] = master
                with fits.open(path) as hdul:
                    if "PEDESTAL" in hdul:
                        cal._pedestals[float(exposure)] = np.array(hdul["PEDESTAL"].data)
            elif kind == "dark":
                cal._dark_rate = master
            elif kind == "flat":
                cal.master_flat = master
                with fits.open(path) as hdul:
                    if "ILLUM" in hdul:
                        cal.illumination_mask = hdul["ILLUM"].data.astype(bool)
                        cal.lamp_spectrum = np.array(hdul["LAMP"].data, dtype=float)
                        cal.flat_response = np.array(hdul["RESPONSE"].data, dtype=float)
            elif kind == "arc":
                cal.master_arc = master
        return cal

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    def _file_plan(self):
        plan = []
        if self.master_bias is not None:
            plan.append(("master_bias.fits", self.master_bias, None))
        if self._dark_rate is not None:
            plan.append(("master_dark.fits", self._dark_rate, None))
        for exptime, master in sorted(self.master_darks.items()):
            extra = [fits.ImageHDU(self._pedestals[exptime], name="PEDESTAL")] \
                if exptime in self._pedestals else None
            plan.append((f"master_dark_{exptime:g}s.fits", master, extra))
        if self.master_flat is not None:
            extra = None
            if self.illumination_mask is not None:
                extra = [fits.ImageHDU(self.illumination_mask.astype(np.uint8), name="ILLUM"),
                         fits.ImageHDU(np.asarray(self.lamp_spectrum, dtype=np.float64),
                                       name="LAMP"),
                         fits.ImageHDU(np.asarray(self.flat_response, dtype=np.float64),
                                       name="RESPONSE")]
            plan.append(("master_flat.fits", self.master_flat, extra))
        if self.master_arc is not None:
            plan.append(("master_arc.fits", self.master_arc, None))
        if not plan:
            raise CalibrationError("nothing to write: the set has no master yet")
        return plan

    def _file_keys(self, plan):
        for name, master, _ in plan:
            kind = master.header["APMASTER"]
            if kind == "dark" and name != "master_dark.fits":
                kind = f"dark:{master.header[self.instrument.exptime_key]:g}"
            yield name, master, kind

    def _require_order(self, kind):
        order = ("bias", "dark", "flat", "arc")
        built = {"bias": self.master_bias is not None,
                 "dark": self._dark_rate is not None or bool(self.master_darks),
                 "flat": self.master_flat is not None, "arc": self.master_arc is not None}
        if built[kind]:
            raise CalibrationError(f"this set already has a master {kind}; give all {kind} "
                                   f"frames in one call")
        # Darks use the bias; flats and arcs use both (not each other).
        needs = {"bias": (), "dark": ("bias",), "flat": ("bias", "dark"), "arc": ("bias", "dark")}
        later = [k for k in order if kind in needs[k] and built[k]]
        if later:
            raise CalibrationError(f"add {kind} frames before {' and '.join(later)}: those "
                                   f"masters were built without this one (start a new "
                                   f"CalibrationSet)")

    def _process_all(self, frames, kind, bias=None, subtract=False):
        """Prepare every frame (`Instrument.prepare`) to be combined straight
        from its file; with ``subtract``, with the bias and dark removed."""
        frames = list(frames)
        if not frames:
            raise CalibrationError(f"no {kind} frames given")
        processed, names, binnings = [], [], []
        for frame in frames:
            source, name = self.instrument.raw_source(frame)
            exptime = self.instrument.exposure_time(source.header, name) if kind != "bias" else 0.0
            pedestal = bias if bias is not None else self._pedestal_for(exptime)
            prepared = self._prepare_one(source, name, kind, bias=pedestal)
            processed.append(self._calibrated(prepared) if subtract else prepared)
            names.append(name)
            binnings.append(self.instrument.binning(source.header))
        if len(set(binnings)) > 1:
            odd = [f"{n} ({b[0]}x{b[1]})" for n, b in zip(names, binnings) if b != binnings[0]]
            raise CalibrationError(f"{kind} frames of different binnings: {names[0]} is "
                                   f"{binnings[0][0]}x{binnings[0][1]} but {', '.join(odd)}")
        for ccd, name in zip(processed, names):
            _check_shape(ccd, processed[0], name, f"the first {kind} frame ({names[0]})")
        return processed, names

    def _prepare_one(self, source, name, kind, bias=None) -> ProcessedFrame:
        try:
            found = self.instrument.classify(source.header, name)
        except FrameError:
            found = None
        if found is not None and found != kind:
            warnings.warn(f"{name}: its header says {found}, but it is used as {kind}",
                          ApocalWarning)
        try:
            prepared = self.instrument.prepare(source, overscan=self.overscan,
                                               overscan_window=self.overscan_window, bias=bias)
        except FrameError as err:
            raise FrameError(name, err.problem) from None
        if self.master_bias is not None:
            _check_shape(prepared, self.master_bias, name, "master bias")
        return prepared

    def _calibrated(self, prepared: ProcessedFrame, flat: bool = False) -> "_Calibrated":
        """``prepared`` with the master bias and the dark of its exposure
        subtracted (and, with ``flat``, divided by the master flat)."""
        name = prepared.name
        exptime = self.instrument.exposure_time(prepared.header, name)
        dark = self._dark_for(exptime, name, required=self.master_bias is None)
        lacks_overscan = any(amp.overscan is None for amp in prepared.layout.amplifiers)
        if self.master_bias is None and dark is None and lacks_overscan:
            raise CalibrationError(f"{name}: nothing removes the bias level: "
                                   f"{self.instrument.name} has no overscan and this set "
                                   f"has no bias or dark")
        header = prepared.header
        if self.master_bias is not None:
            header["APBIAS"] = (self._sources.get("bias", "in memory"), "master bias applied")
        steps = _Calibrated(prepared, self._terms(self.master_bias))
        if dark is not None:
            master, _, key = dark
            header["APDARK"] = (self._sources.get(key, "in memory"), "master dark applied")
            steps.dark = self._terms(master)
            if master.unit != u.electron:   # a rate, not the dark of this very exposure
                steps.dark_scale = exptime
                # The rate was made with the same master bias B: R = R0 + c B
                # with c = APBIASCO (about -1/t_dark). S - B - t R depends on B
                # through (1 + c t), so ccdproc's var(B) + t^2 var(R), which
                # treats them as independent, is too large by 2 |c| t var(B).
                steps.bias_covariance = 2.0 * float(master.header.get("APBIASCO", 0.0)) * exptime
        if flat and self.master_flat is not None:
            _check_shape(prepared, self.master_flat, name, "master flat")
            header["APFLAT"] = (self._sources.get("flat", "in memory"), "master flat applied")
            steps.flat = self._terms(self.master_flat, flat=True)
        return steps

    def _terms(self, master, flat=False):
        """`_Terms` of a master, computed once (a new master gets new ones)."""
        if master is None:
            return None
        terms = self._applied.get(id(master))
        if terms is None or terms.master is not master:
            terms = self._applied[id(master)] = _Terms(master, flat)
        return terms

    def _dark_for(self, exptime, name, required):
        """The dark to subtract from a frame of ``exptime``, its scale factor,
        and its key in ``files``."""
        if self._dark_rate is not None:
            return self._dark_rate, exptime, "dark"
        if not self.master_darks:
            return None
        for dark_time, master in self.master_darks.items():
            if abs(dark_time - exptime) <= _SAME_EXPOSURE:
                return master, 1.0, f"dark:{dark_time:g}"
        if required:
            times = ", ".join(f"{t:g} s" for t in sorted(self.master_darks))
            raise CalibrationError(f"{name}: exposure {exptime:g} s has no dark of that "
                                   f"exposure (darks: {times}), and without a bias a dark "
                                   f"cannot be scaled; add biases, or darks of {exptime:g} s")
        return None

    def _pedestal_for(self, exptime):
        """Electrons in a processed frame that are bias, not photons."""
        if self.master_bias is not None:
            return self.master_bias.data
        for dark_time, pedestal in self._pedestals.items():
            if abs(dark_time - exptime) <= _SAME_EXPOSURE:
                return pedestal
        return None

    def _bias_level_estimate(self, raw) -> np.ndarray | None:
        """Without a master bias: the bias level (e-) of each amplifier that
        has no overscan, taken as the median of a raw dark (dark current is
        small next to it); zero where an overscan removes the level.

        ``raw`` is a raw frame or source (`Instrument.raw_source`)."""
        source, name = self.instrument.raw_source(raw)
        layout = self.instrument.layout(source.header, source.shape, name)
        if all(amp.overscan is not None for amp in layout.amplifiers):
            return None
        data = source.rows(0, source.shape[0])
        level = np.zeros(layout.shape, dtype=np.float32)
        for amp in layout.amplifiers:
            if amp.overscan is None:
                level[amp.output.slices] = np.nanmedian(data[amp.data.slices]) * amp.gain
        return level

    def _check_configuration(self, header, name):
        if self.master_flat is None:
            return
        mine = self.instrument.configuration(header)
        flat = self.instrument.configuration(self.master_flat.header)
        differ = [f"{k} {mine[k]!r} vs {flat.get(k)!r}" for k in mine if mine[k] != flat.get(k)]
        if differ:
            warnings.warn(f"{name}: configuration differs from the master flat's "
                          f"({'; '.join(differ)})", ApocalWarning)


    # ------------------------------------------------------------------
    # Stacking
    # ------------------------------------------------------------------
    def stack(self, frames, *, cosmic_rays: bool = False, **options):
        """Calibrate frames and align and co-add them (`apocal.stack`).

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw science frames, calibrated here; a CCDData already
            calibrated by apocal (header APSTAGE = "calibrated") is used as
            it is.
        cosmic_rays : bool
            Reject cosmic rays while calibrating (see `calibrate`).
        **options
            Options of `apocal.stack` (``projection``, ``reference``,
            ``sigma_clip``, ``shifts``, ...). For a spectrograph,
            ``spatial_axis`` defaults to the axis across the dispersion.

        Returns
        -------
        apocal.stacking.StackedImage
        """
        from .stacking import stack

        calibrated = [frame if isinstance(frame, CCDData)
                      and frame.meta.get("APSTAGE") == "calibrated"
                      else self.calibrate(frame, cosmic_rays=cosmic_rays) for frame in frames]
        if self.instrument.dispersion_axis is not None:
            options.setdefault("spatial_axis", 1 - self.instrument.dispersion_axis)
        return stack(calibrated, **options)

# ----------------------------------------------------------------------
# Module helpers
# ----------------------------------------------------------------------
# Names `CalibrationSet.write` gives masters.
_MASTER_NAME = re.compile(r"^master_(bias|dark|flat|arc)(_[0-9.eE+-]+s)?\.fits$")


def _earlier_masters(directory: Path) -> set[str]:
    """Master files an earlier `CalibrationSet.write` left in ``directory``:
    those its manifest lists, and any file named as a master."""
    if not directory.is_dir():
        return set()
    found = {p.name for p in directory.iterdir() if _MASTER_NAME.match(p.name)}
    try:
        listed = json.loads((directory / _MANIFEST).read_text()).get("files", {}).values()
        found |= {name for name in listed if isinstance(name, str) and "/" not in name
                  and name not in (".", "..")}
    except (OSError, ValueError, AttributeError):
        pass
    return found


def _check_options(options, where, forbidden=()):
    allowed = set(COMBINE_OPTIONS) - {"method"} - set(forbidden)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"{where}() got unknown option(s) {', '.join(map(repr, unknown))}; "
                        f"it accepts {', '.join(sorted(allowed))}")


def _check_shape(ccd, reference, name, what):
    if ccd.shape != reference.shape:
        raise CalibrationError(f"{name}: processed shape {ccd.shape} differs from "
                               f"{reference.shape} of {what} (another binning or window?)")


def _flags(master) -> np.ndarray | FLAG_DTYPE:
    if master is None or master.flags is None:
        return FLAG_DTYPE(0)
    return master.flags


def _read_noise(ccd: CCDData) -> float:
    """Largest amplifier read noise (e-) recorded by `Instrument.process`."""
    values = [value for key, value in ccd.header.items() if key.startswith("APRDN")]
    return float(max(values)) if values else 0.0


def _flag_hot(master: CCDData, hot_sigma: float) -> None:
    data = master.data
    usable = (master.flags & FLAG_DTYPE(Flag.NO_DATA)) == 0
    centre = np.median(data[usable])
    spread = mad_std(data[usable])
    hot = (data - centre > hot_sigma * spread) | ((master.flags & Flag.SATURATED) != 0)
    master.flags[hot] |= FLAG_DTYPE(Flag.HOT)
    master.mask = master.flags != 0
    master.header["APNHOT"] = (int(hot.sum()), f"hot pixels (> {hot_sigma:g} sigma)")


def _as_master(ccd: CCDData, kind: str, names, instrument) -> CCDData:
    header = fits.Header(ccd.meta)
    for key in ("RAWFILE", "APOVSC1", "APOVSC2", "APOVSC3", "APOVSC4"):
        header.remove(key, ignore_missing=True)
    header["APMASTER"] = (kind, "apocal master frame")
    header["APINST"] = (instrument.name, "instrument")
    header["APVERS"] = (__version__, "apocal version")
    header["NCOMBINE"] = (len(names), "frames combined")
    for index, name in enumerate(names, start=1):
        header[f"IMCMB{index:03d}"] = card_text(Path(name).name)
    flags = ccd.flags if ccd.flags is not None else np.zeros(ccd.shape, FLAG_DTYPE)
    return CCDData(ccd.data, unit=ccd.unit, uncertainty=ccd.uncertainty, flags=flags,
                   mask=flags != 0, meta=header)


def _as_electrons(master: CCDData) -> CCDData:
    """A dark rate (e-/s) as the electrons it gives in one second."""
    if master.unit == u.electron:
        return master
    return CCDData(master.data, unit=u.electron,
                   uncertainty=StdDevUncertainty(master.uncertainty.array),
                   mask=master.mask, meta=master.meta)


class _Calibrated:
    """A prepared frame with masters applied, a block of rows at a time.

    ``data - bias - dark_scale * dark``, divided by ``flat``; variances
    add (with the bias shared by a dark rate taken into account) and a
    division propagates as ccdproc's ``flat_correct`` does:
    ``var(S / F) = var(S) / F**2 + (S / F)**2 var(F) / F**2``. Each master
    comes as its `_Terms` (computed once per master).
    """

    unit = u.electron

    def __init__(self, prepared: ProcessedFrame, bias: "_Terms | None"):
        self.prepared = prepared
        self.name, self.shape, self.header = prepared.name, prepared.shape, prepared.header
        self.meta = self.header
        self.bias = bias
        self.dark = self.flat = None
        self.dark_scale = 1.0
        self.bias_covariance = 0.0

    def rows(self, start, stop, data=None, variance=None, flags=None):
        data, variance, flags = self.prepared.rows(start, stop, data, variance, flags)
        rows = slice(start, stop)
        scratch = np.empty_like(data)
        for terms, factor in ((self.bias, 1.0), (self.dark, self.dark_scale)):
            if terms is None:
                continue
            if factor == 1.0:
                data -= terms.data[rows]
                variance += terms.variance[rows]
            else:
                data -= np.multiply(terms.data[rows], np.float32(factor), out=scratch)
                variance += np.multiply(terms.variance[rows], np.float32(factor**2), out=scratch)
            flags |= terms.flags[rows]
        if self.bias_covariance:
            variance += np.multiply(self.bias.variance[rows], np.float32(self.bias_covariance),
                                    out=scratch)
            np.maximum(variance, 0, out=variance)
        if self.flat is not None:
            inverse = self.flat.inverse[rows]
            data *= inverse
            variance *= inverse
            variance *= inverse
            np.multiply(data, data, out=scratch)
            scratch *= self.flat.relative_variance[rows]
            variance += scratch
            flags |= self.flat.flags[rows]
        return data, variance, flags

    def ccd(self) -> CCDData:
        """The whole frame, float32 electrons with uncertainty and flags."""
        shape = self.prepared.shape
        data = np.empty(shape, np.float32)
        sigma = np.empty(shape, np.float32)
        flags = np.empty(shape, FLAG_DTYPE)
        mask = np.empty(shape, bool)

        def run(block):
            self.rows(block.start, block.stop, data[block], sigma[block], flags[block])
            np.sqrt(sigma[block], out=sigma[block])
            np.not_equal(flags[block], 0, out=mask[block])

        for_each_block(shape[0], _CALIBRATE_BLOCK_VALUES // shape[1], run)
        return CCDData(data, unit=u.electron, meta=self.prepared.header.copy(),
                       uncertainty=StdDevUncertainty(sigma, copy=False), flags=flags, mask=mask)


class _Terms:
    """What applying one master needs, computed once: its data, variance and
    flags, and for a flat its reciprocal and relative variance."""

    def __init__(self, master: CCDData, flat: bool = False):
        self.master = master
        self.data = np.asarray(master.data, dtype=np.float32)
        sigma = np.asarray(master.uncertainty.array, dtype=np.float32)
        self.variance = sigma * sigma
        self.flags = _flags(master) if master.flags is not None else \
            np.zeros(master.shape, FLAG_DTYPE)
        if flat:
            with np.errstate(divide="ignore", invalid="ignore"):
                self.inverse = np.float32(1) / self.data
                self.relative_variance = self.variance * self.inverse * self.inverse
