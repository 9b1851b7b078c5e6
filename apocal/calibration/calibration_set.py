"""`CalibrationSet`: master bias, dark, flat and arc, and calibrated science.

Every input frame goes through `Instrument.prepare` first, so masters are
in electrons with an uncertainty; they are combined with
`apocal.combine.combine` (ccdproc's Combiner underneath, with uncertainties
from the inputs), reading the raw files a block of rows at a time. Masters
are applied by one engine, `apocal.calibration.apply.Calibrated`, whatever
they are applied to (a flat being built, a combined dark or arc, a science
frame), so the master bias shared with a dark-current rate is counted once
wherever it appears. A camera without overscan still has its bias level in
the processed signal: it is passed to processing so it is not counted as
photons.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData

from ..combine import COMBINE_OPTIONS, combine
from ..cosmic_rays import reject_cosmic_rays
from ..exceptions import ApocalWarning, CalibrationError, FrameError
from ..flags import FLAG_DTYPE, Flag
from ..instrument import Instrument, amplifier_images
from ..processing import InMemoryFrame, ProcessedFrame
from .apply import Calibrated, MasterTerms
from .files import MasterFile, dark_key, masters_of, read_set, write_set
from .masters import as_master, flag_defects, flag_hot, make_flat
from .self_check import FrameSample, UncertaintyCheck, check_uncertainty

__all__ = ["CalibrationSet"]

# Exposure times closer than this (s) count as the same.
_SAME_EXPOSURE = 0.01
# Frames of each kind a sample is kept of, for check_uncertainty.
_SAMPLED = 20


class CalibrationSet:
    """Master calibration frames for one instrument and configuration.

    Build it by chaining ``add_biases``, ``add_darks`` (optional),
    ``add_flats`` and ``add_arcs``; biases come before darks, and both
    before flats and arcs, since each call processes its frames and builds
    its master at once. Then ``calibrate`` science frames, and
    ``check_uncertainty`` to test the error model on the set's own frames.

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
        the whole bias level). Hot columns and pixels are flagged HOT.
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
        True where the master flat measures the response (spectrographs).
    lamp_spectrum, flat_response : numpy.ndarray or None
        The flat's mean spectrum along the dispersion axis and the fit
        divided out of it (dimensionless: each flat was divided by its level).
    dark_bias_coefficient : float
        ``d(rate)/d(master bias)`` of a dark-current rate made with the
        master bias (about ``-1/t_dark``, 1/s); 0 without one.
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
        self.dark_bias_coefficient = 0.0
        self.master_flat = None
        self.master_arc = None
        self.illumination_mask = None
        self.lamp_spectrum = None
        self.flat_response = None
        self._sources: dict[str, str] = {}
        self._pedestals: dict[float, np.ndarray] = {}
        self._terms_of: dict[int, MasterTerms] = {}
        # A sample of rows of every frame the masters were built from (up to
        # _SAMPLED per kind), for check_uncertainty, and how each was combined.
        self.samples: dict[str, list[FrameSample]] = {}
        self.combine_options: dict[str, dict] = {}

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
        `read` (see `master_files` for what each key means)."""
        return dict(self._sources)

    def master_files(self) -> list[MasterFile]:
        """Every master of the set with its key, kind, exposure time (darks
        without a bias) and file name (once written or read)."""
        return [MasterFile(key, kind, exposure, master, self._sources.get(key))
                for key, kind, exposure, master in masters_of(self)]

    @property
    def bad_pixel_mask(self) -> np.ndarray | None:
        """True for pixels no science should trust: bad or hot in any master,
        or without data."""
        bad = None
        wanted = FLAG_DTYPE(Flag.BAD_PIXEL | Flag.HOT | Flag.NO_DATA)
        masters = [self.master_bias, self._dark_rate, self.master_flat,
                   *self.master_darks.values()]
        for master in masters:
            if master is not None and master.flags is not None:
                these = (master.flags & wanted) != 0
                bad = these if bad is None else bad | these
        return bad

    def add_biases(self, frames, method: str = "median", *, defect_sigma: float = 5.0,
                   **options) -> "CalibrationSet":
        """Combine bias frames into ``master_bias`` (electrons).

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw bias frames.
        method : {"median", "mean", "sum"}
            Combination (see `apocal.combine.combine`).
        defect_sigma : float
            Pixels standing more than this many robust standard deviations
            above (below) their neighbourhood are flagged HOT (BAD_PIXEL): a
            hot column, not the bias structure.
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
        master = as_master(combine(processed, method, **options), "bias", names, self.instrument)
        flag_defects(master, defect_sigma)
        self.master_bias = master
        self._remember("bias", method, options)
        return self

    def add_darks(self, frames, method: str = "median", hot_sigma: float = 5.0,
                  **options) -> "CalibrationSet":
        """Build the dark-current master from dark frames.

        With a master bias, the darks are combined (as rates when their
        exposures differ) and the bias is removed once, giving a
        dark-current rate (e-/s), later scaled to each exposure. Without
        one (a camera whose bias comes from darks, the SBO way), darks are
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
        self._remember("dark", method, options)
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
                flag_hot(master, hot_sigma)
                master = as_master(master, "dark", names, self.instrument)
                master.header[self.instrument.exptime_key] = exptime
                self.master_darks[exptime] = master
            return self

        processed, names = self._process_all(frames, "dark")
        times = np.array([self.instrument.exposure_time(c.header, n)
                          for c, n in zip(processed, names)])
        if np.any(times <= 0):
            raise CalibrationError(f"{names[int(np.argmax(times <= 0))]}: a dark of zero "
                                   f"exposure cannot measure dark current")
        if np.ptp(times) <= _SAME_EXPOSURE:
            # Combine, then remove the bias once and divide by the exposure.
            combined = combine(processed, method, **options)
            per_second = 1.0 / float(times.mean())
            rate = self._apply(InMemoryFrame(combined), scale=per_second)
        else:
            # Each dark less the bias's values over its own exposure: a rate
            # per frame. The bias's error is the same in every frame, so it is
            # added once, after combining, at the frames' typical 1/t (exact
            # for a mean; for a median, the frames in the middle).
            bias = self._terms(self.master_bias)
            rates = [Calibrated(frame, bias=bias.values_only(), scale=1.0 / t)
                     for frame, t in zip(processed, times)]
            combined = combine(rates, method, **options)
            per_second = float(np.median(1.0 / times) if method == "median"
                               else np.mean(1.0 / times))
            rate = Calibrated(InMemoryFrame(combined), bias=bias.noise_only(),
                              bias_factor=per_second)
        rate = rate.ccd(unit=u.electron / u.s)
        flag_hot(rate, hot_sigma)
        rate = as_master(rate, "dark", names, self.instrument)
        # a rate has no exposure time of its own: say how long the darks were
        rate.header.remove(self.instrument.exptime_key, ignore_missing=True)
        rate.header["APDKTIME"] = (float(times.mean()), "[s] mean exposure of the darks")
        rate.header["APBIASCO"] = (-per_second, "[1/s] d(rate)/d(master bias)")
        self._dark_rate = rate
        self.dark_bias_coefficient = -per_second
        return self

    def add_flats(self, frames, response: str | None = "spline", *, order: int | None = None,
                  knots: int | None = None, width: int | None = None,
                  method: str = "median", illumination_threshold: float = 0.8,
                  bad_pixel_limits: tuple[float, float] = (0.5, 1.5), min_snr: float = 20.0,
                  **options) -> "CalibrationSet":
        """Build the master flat: pixel response around 1.

        Each flat is bias- and dark-subtracted, divided by its own level
        (measured where no flat is saturated) and combined. For a
        spectrograph the illuminated part of the slit is found, and the
        lamp spectrum (mean along the slit) is fitted along the dispersion
        axis in log counts, per span of amplifiers, and divided out
        (`apocal.flat_response`); pixels outside the slit, or where the
        master's signal-to-noise ratio per pixel is below ``min_snr``, are
        set to 1 and flagged UNILLUMINATED, and positions the fit cannot
        follow to within the flat's noise are flagged BAD_FLAT. An imaging
        flat is divided by its median. Pixels whose response departs from
        their neighbourhood's beyond ``bad_pixel_limits`` are flagged
        BAD_PIXEL (smooth vignetting is kept: the flat corrects it).

        Parameters
        ----------
        frames : sequence of str, path-like or CCDData
            Raw flat frames (exposure times may differ).
        response : {"spline", "poly", "boxcar", None}
            How to fit the lamp spectrum (spectrographs only); None keeps it.
        order, knots, width : int, optional
            Polynomial order, number of spline knots to start from, boxcar
            width (pixels).
        method : {"median", "mean", "sum"}
            Combination of the normalised flats.
        illumination_threshold : float
            Fraction of the slit's typical level that counts as illuminated.
        bad_pixel_limits : (float, float)
            Response relative to the pixel's neighbourhood outside this range
            is a bad pixel.
        min_snr : float
            Signal-to-noise ratio per pixel of the master flat below which it
            does not measure the response.
        **options
            Options of `apocal.combine.combine` (not ``scale``: each flat is
            scaled by its own level).

        Returns
        -------
        CalibrationSet

        Raises
        ------
        CalibrationError
            If a flat has no light or is saturated (the message says which,
            with the saturation level), or no part of the slit is lit.
        """
        _check_options(options, "add_flats", forbidden=("scale",))
        self._require_order("flat")
        processed, names = self._process_all(frames, "flat", subtract=True)
        try:
            result = make_flat(processed, names, self.instrument, response=response,
                               order=order, knots=knots, width=width, method=method,
                               illumination_threshold=illumination_threshold,
                               bad_pixel_limits=bad_pixel_limits, min_snr=min_snr, **options)
        except ValueError as err:   # a lamp spectrum the fit cannot take
            raise CalibrationError(f"flats {names[0]} ...: {err}") from None
        for note in result.notes:
            warnings.warn(note, ApocalWarning)
        self.master_flat = result.master
        self.illumination_mask = result.illumination_mask
        self.lamp_spectrum, self.flat_response = result.lamp_spectrum, result.response
        self._remember("flat", method, options)
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
        arc = self._apply(InMemoryFrame(combined), exptime=total_time / count,
                          bias_factor=count, count=count).ccd()
        master = as_master(arc, "arc", names, self.instrument)
        master.header[self.instrument.exptime_key] = (total_time, "[s] exposure of the "
                                                      + ("sum" if method == "sum" else "frames"))
        heavy = (master.flags & FLAG_DTYPE(Flag.NONLINEAR | Flag.SATURATED)) != 0
        if self.illumination_mask is not None:
            heavy &= self.illumination_mask
        master.header["APNLPIX"] = (int(heavy.sum()), "saturated or non-linear pixels")
        if heavy.any():
            warnings.warn(f"{int(heavy.sum())} pixels of the arcs "
                          f"({', '.join(_file_name(n) for n in names)}) reach "
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
        masters' (bad, hot, unilluminated, unfitted flat, no data).

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
            ``flags``, a celestial ``wcs`` when the raw header has one, and
            provenance cards (APBIAS, APDARK, APFLAT).

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
        prepared.header["APSTAGE"] = ("calibrated", "apocal: bias, dark, flat applied")
        result = self._apply(prepared, exptime=exptime, flat=True).ccd()
        if cosmic_rays:
            noise = max((v for k, v in result.header.items() if k.startswith("APRDN")),
                        default=0.0)
            result = reject_cosmic_rays(result, noise, **cosmic_options)
        return result

    def check_uncertainty(self, tolerance: float = 0.05) -> UncertaintyCheck:
        """Check the set's error model on its own frames.

        Pairs of biases, of flats and of darks, and each bias against the
        master of the others, differ only by noise: their pulls must
        scatter by 1 (see `apocal.calibration.self_check`).

        Parameters
        ----------
        tolerance : float
            A test passes when its robust pull standard deviation is within
            this of 1.

        Returns
        -------
        apocal.calibration.self_check.UncertaintyCheck
            ``.passed``, ``.table``, ``.verdict``, ``.messages``, ``.plot()``.
        """
        return check_uncertainty(self, tolerance=tolerance)

    # ------------------------------------------------------------------
    # Files
    # ------------------------------------------------------------------
    def write(self, directory, overwrite: bool = False):
        """Write every master to ``directory`` and a manifest to read them back.

        See `apocal.calibration.write_set`.

        Raises
        ------
        FileExistsError
            If any of the files exists and ``overwrite`` is False (nothing
            is written then).
        """
        return write_set(self, directory, overwrite=overwrite)

    @classmethod
    def read(cls, directory, instrument: Instrument | None = None) -> "CalibrationSet":
        """Read a set written by `write` (see `apocal.calibration.read_set`).

        Raises
        ------
        CalibrationError
            If the folder has no manifest or a listed file is missing.
        """
        return read_set(cls, directory, instrument)

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
        from ..stacking import stack

        calibrated = [frame if isinstance(frame, CCDData)
                      and frame.meta.get("APSTAGE") == "calibrated"
                      else self.calibrate(frame, cosmic_rays=cosmic_rays) for frame in frames]
        if self.instrument.dispersion_axis is not None:
            options.setdefault("spatial_axis", 1 - self.instrument.dispersion_axis)
        return stack(calibrated, **options)

    # ------------------------------------------------------------------
    # Helpers
    # ------------------------------------------------------------------
    def _remember(self, kind, method, options) -> None:
        """How a master was combined (check_uncertainty rebuilds it)."""
        self.combine_options[kind] = dict(method=method, **{k: v for k, v in options.items()
                                                            if k != "scale"})

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
            if kind in ("bias", "dark", "flat") and len(self.samples.get(kind, [])) < _SAMPLED:
                self.samples.setdefault(kind, []).append(FrameSample(prepared))
            processed.append(self._apply(prepared, exptime=exptime) if subtract else prepared)
            names.append(name)
            binnings.append(self.instrument.binning(source.header))
        if len(set(binnings)) > 1:
            odd = [f"{n} ({b[0]}x{b[1]})" for n, b in zip(names, binnings) if b != binnings[0]]
            raise CalibrationError(f"{kind} frames of different binnings: {names[0]} is "
                                   f"{binnings[0][0]}x{binnings[0][1]} but {', '.join(odd)}")
        for ccd, name in zip(processed, names):
            _check_shape(ccd, processed[0], name, f"the first {kind} frame ({names[0]})")
        return processed, names

    def prepare(self, frame, kind: str) -> ProcessedFrame:
        """A raw frame prepared as this set prepares frames of ``kind``
        (overscan options, and the bias level that holds no photons).

        Raises
        ------
        FrameError
            If the frame cannot be read or processed.
        """
        source, name = self.instrument.raw_source(frame)
        exptime = self.instrument.exposure_time(source.header, name) if kind != "bias" else 0.0
        return self._prepare_one(source, name, kind, bias=self._pedestal_for(exptime))

    def _prepare_one(self, source, name, kind, bias=None) -> ProcessedFrame:
        try:
            found = self.instrument.kind_of(source.header, name)
        except FrameError:
            found = None
        if found is not None and found != kind:
            warnings.warn(f"{name}: its header says {found}, but it is used as {kind}",
                          ApocalWarning)
        try:
            prepared = self.instrument.prepare(source, overscan=self.overscan,
                                               overscan_window=self.overscan_window, bias=bias,
                                               kind=kind)
        except FrameError as err:
            raise FrameError(name, err.problem) from None
        if self.master_bias is not None:
            _check_shape(prepared, self.master_bias, name, "master bias")
        return prepared

    def _apply(self, frame, *, exptime: float | None = None, flat: bool = False,
               bias_factor: float = 1.0, count: int = 1, scale: float = 1.0) -> Calibrated:
        """``frame`` (read by rows) with the master bias (``bias_factor``
        times) and the dark of ``exptime`` (``count`` times) removed and, with
        ``flat``, divided by the master flat: `Calibrated`, the one engine.
        Header cards APBIAS, APDARK, APFLAT name the masters used."""
        name, header = frame.name, frame.header
        dark = None
        if exptime is not None:
            dark = self._dark_for(exptime, name, required=self.master_bias is None)
            layout = getattr(frame, "layout", None)
            lacks_overscan = layout is not None and any(amp.overscan is None
                                                        for amp in layout.amplifiers)
            if self.master_bias is None and dark is None and lacks_overscan:
                raise CalibrationError(f"{name}: nothing removes the bias level: "
                                       f"{self.instrument.name} has no overscan and this set "
                                       f"has no bias or dark")
        steps = {"bias": self._terms(self.master_bias), "bias_factor": bias_factor,
                 "scale": scale}
        if self.master_bias is not None:
            header["APBIAS"] = (self._sources.get("bias", "in memory"), "master bias applied")
        if dark is not None:
            master, key = dark
            header["APDARK"] = (self._sources.get(key, "in memory"), "master dark applied")
            rate = master.unit != u.electron    # a rate, not the dark of this very exposure
            steps.update(dark=self._terms(master), dark_scale=exptime * count if rate else count,
                         dark_bias_coefficient=self.dark_bias_coefficient if rate else 0.0)
        if flat and self.master_flat is not None:
            _check_shape(frame, self.master_flat, name, "master flat")
            header["APFLAT"] = (self._sources.get("flat", "in memory"), "master flat applied")
            steps["flat"] = self._terms(self.master_flat, flat=True)
        return Calibrated(frame, **steps)

    def _terms(self, master, flat=False):
        """`MasterTerms` of a master, computed once (a new master gets new ones)."""
        if master is None:
            return None
        terms = self._terms_of.get(id(master))
        if terms is None or terms.master is not master:
            terms = self._terms_of[id(master)] = MasterTerms(master, flat)
        return terms

    def _dark_for(self, exptime, name, required):
        """The dark to subtract from a frame of ``exptime`` and its key in
        ``files``."""
        if self._dark_rate is not None:
            return self._dark_rate, "dark"
        if not self.master_darks:
            return None
        for dark_time, master in self.master_darks.items():
            if abs(dark_time - exptime) <= _SAME_EXPOSURE:
                return master, dark_key(dark_time)
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
        layout = self.instrument.frame_layout(source)
        if all(amp.overscan is not None for amp in layout.amplifiers):
            return None
        images = amplifier_images(source, layout, self.instrument)
        level = np.zeros(layout.shape, dtype=np.float32)
        for amp in layout.amplifiers:
            if amp.overscan is None:
                data = images[amp.extension].rows(amp.data.y1 - 1, amp.data.y2)
                level[amp.output.slices] = np.nanmedian(data[:, amp.data.x1 - 1:amp.data.x2]) \
                    * amp.gain
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


# ----------------------------------------------------------------------
# Module helpers
# ----------------------------------------------------------------------
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


def _file_name(name) -> str:
    return str(name).replace("\\", "/").rsplit("/", 1)[-1]
