"""Building master frames from prepared calibration frames.

`CalibrationSet` prepares a night's frames (`Instrument.prepare`) and
applies the masters it already has (`apocal.calibration.apply`); the
functions here turn those frames into one master each, in the style of
banzai's calibration makers: `make_flat` (illuminated slit, levels, the
lamp spectrum's fit, and flags that say what each doubtful pixel is), and
the finishing steps every master shares (`as_master`, `flag_defects`,
`flag_hot`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import bottleneck as bn
import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import mad_std

from .. import __version__
from ..blocks import for_each_block
from ..combine import combine
from ..exceptions import CalibrationError
from ..flags import FLAG_DTYPE, Flag
from ..io import card_text
from ..flat_response import fit_response, illuminated_rows, lamp_spectrum, response_misfit

__all__ = ["FlatResult", "make_flat", "as_master", "flag_defects", "flag_hot",
           "neighbourhood"]

# A flat whose 90th-percentile signal is below this many read noises has no light.
_NO_LIGHT = 10.0
# Flat pixels that cannot measure anything: saturated, without data, dead.
_UNUSABLE = FLAG_DTYPE(Flag.SATURATED | Flag.NO_DATA | Flag.BAD_PIXEL)


@dataclass
class FlatResult:
    """A master flat and what was learnt building it.

    Attributes
    ----------
    master : astropy.nddata.CCDData
        Pixel response around 1 (dimensionless), flags included.
    illumination_mask : numpy.ndarray or None
        True where the flat is a measurement (spectrographs).
    lamp_spectrum, response : numpy.ndarray or None
        The lamp spectrum along the dispersion axis and its fit.
    notes : list of str
        What a user should know (saturated flats, unfitted positions).
    """

    master: CCDData
    illumination_mask: np.ndarray | None = None
    lamp_spectrum: np.ndarray | None = None
    response: np.ndarray | None = None
    notes: list = field(default_factory=list)


def make_flat(flats, names, instrument, *, response="spline", order=None, knots=None,
              width=None, method="median", illumination_threshold=0.8,
              bad_pixel_limits=(0.5, 1.5), min_snr=20.0, **options) -> FlatResult:
    """A master flat from bias- and dark-subtracted flats.

    Each flat is divided by its level, measured on the pixels usable in
    every flat (the illuminated slit, for a spectrograph), and the flats
    are combined (`apocal.combine.combine`). For a spectrograph the lamp
    spectrum is fitted along the dispersion axis (`apocal.flat_response`),
    per span of amplifiers, and divided out; pixels outside the slit, or
    where the master flat's own signal-to-noise ratio per pixel is below
    ``min_snr``, are set to 1 and flagged UNILLUMINATED, and positions the
    fit cannot follow are flagged BAD_FLAT. An imaging flat is divided by
    its median. A pixel whose response departs from its neighbourhood's
    (running medians over 5 pixels in both directions) beyond
    ``bad_pixel_limits`` is flagged BAD_PIXEL; smooth vignetting is a low
    response, kept and corrected.

    Parameters
    ----------
    flats : sequence
        Frames read by rows (`apocal.calibration.apply.Calibrated`), one
        per flat, each with a ``layout`` reachable as ``.frame.layout``.
    names : sequence of str
        Their files, for messages.
    instrument : Instrument
    response, order, knots, width, method, illumination_threshold, bad_pixel_limits
        As `CalibrationSet.add_flats`.
    min_snr : float
        Signal-to-noise ratio per pixel of the master flat below which it is
        not a measurement (UNILLUMINATED).
    **options
        Options of `apocal.combine.combine`.

    Raises
    ------
    CalibrationError
        If a flat has no light or is saturated (with the level), or no part
        of the slit is illuminated.
    """
    axis = instrument.dispersion_axis
    spectro = axis is not None
    shape = flats[0].shape
    notes = []
    # One flat in memory at a time: the illuminated slit needs the sum of
    # all of them, then each flat's level needs that slit, so the flats are
    # processed once per pass (three in all, with the streamed combination)
    # rather than all held at once.
    stack_sum = np.zeros(shape) if spectro else None
    common = np.ones(shape, dtype=bool)
    saturated = {}
    for flat, name in zip(flats, names):
        ccd = flat.ccd()
        good = (ccd.flags & _UNUSABLE) == 0
        saturated[name] = float(((ccd.flags & Flag.SATURATED) != 0).mean())
        _check_light(ccd, good, name, saturated[name], instrument)
        common &= good
        if spectro:
            stack_sum += np.where(good, ccd.data, 0.0)
    if spectro:
        rows = illuminated_rows(stack_sum, axis, threshold=illumination_threshold)
        if not rows.any():
            worst = max(saturated, key=saturated.get)
            if saturated[worst] > 0.01:
                raise CalibrationError(f"{worst}: the flats are saturated ({saturated[worst]:.0%} "
                                       f"of its pixels reach {instrument.name}'s saturation "
                                       f"level, {instrument.saturation:g} ADU); is that level "
                                       f"right for this camera, or was the lamp too bright?")
            raise CalibrationError(f"no part of the slit is illuminated in the flats "
                                   f"({names[0]} ...)")
        lit = np.broadcast_to(np.expand_dims(rows, axis), shape)
    else:
        rows = None
        lit = np.ones(shape, dtype=bool)
    area = lit & common
    if area.sum() < 0.1 * lit.sum():
        area = None   # too little is usable in every flat: each flat's own usable pixels
    for name, fraction in saturated.items():
        if fraction > 0.001:
            notes.append(f"{name}: {fraction:.1%} of its pixels are saturated (at or above "
                         f"{instrument.saturation:g} ADU); they are left out of the master "
                         f"flat and of every flat's level")
    levels = []
    for flat in flats:
        ccd = flat.ccd()
        usable = area if area is not None else lit & ((ccd.flags & _UNUSABLE) == 0)
        levels.append(float(np.median(ccd.data[usable])))
    combined = combine(flats, method, scale=[1.0 / level for level in levels], **options)

    flat = combined.data.astype(np.float64)
    sigma = combined.uncertainty.array.astype(np.float64)
    flags = combined.flags.copy()
    good = lit & ((flags & FLAG_DTYPE(Flag.NO_DATA | Flag.SATURATED)) == 0)
    spectrum = fitted = None
    if spectro:
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pixel_noise = np.nanmedian(np.where(good & (flat > 0), sigma / flat, np.nan),
                                       axis=1 - axis)
        spectrum = lamp_spectrum(flat, axis, rows, bad=~good)
        dim = ~(pixel_noise <= 1.0 / min_snr)        # NaN (no usable pixel) is dim too
        fittable = np.where(dim, np.nan, spectrum)
        fitted = fit_response(fittable, response, order=order, knots=knots, width=width,
                              segments=_segments(flats[0], axis, shape))
        misfit = ~dim & response_misfit(spectrum, fitted, pixel_noise)
        along = [1, 1]
        along[axis] = -1
        flat, sigma = flat / fitted.reshape(along), sigma / fitted.reshape(along)
        unlit = ~lit | np.broadcast_to(dim.reshape(along), shape)
        flags[~unlit & np.broadcast_to(misfit.reshape(along), shape)] |= FLAG_DTYPE(Flag.BAD_FLAT)
        if misfit.any():
            notes.append(f"the lamp spectrum could not be fitted to within the flat's noise at "
                         f"{int(misfit.sum())} of {misfit.size} positions along the dispersion; "
                         f"their pixels are flagged BAD_FLAT")
    else:
        norm = float(np.median(flat[good]))
        flat, sigma = flat / norm, sigma / norm
        unlit = np.zeros(shape, dtype=bool)
    flat[unlit] = 1.0
    sigma[unlit] = 0.0
    flags[unlit] |= FLAG_DTYPE(Flag.UNILLUMINATED)
    flags[~unlit & pixel_defects(flat, ~unlit, bad_pixel_limits)] |= FLAG_DTYPE(Flag.BAD_PIXEL)

    master = CCDData(flat.astype(np.float32), unit=u.dimensionless_unscaled,
                     uncertainty=StdDevUncertainty(sigma.astype(np.float32)),
                     flags=flags, meta=combined.header)
    master = as_master(master, "flat", names, instrument)
    master.header.remove(instrument.exptime_key, ignore_missing=True)   # dimensionless
    master.header["APRESP"] = (str(response) if spectro else "median", "lamp spectrum removal")
    for key, value in (("APORDER", order), ("APKNOTS", knots), ("APWIDTH", width)):
        if value is not None and spectro:
            master.header[key] = value
    master.header["APILLUM"] = (illumination_threshold, "illuminated: profile >= this x level")
    master.header["APMINSNR"] = (min_snr, "lit: S/N per pixel of the master >= this")
    for key, bit, what in (("APNBAD", Flag.BAD_PIXEL, "bad pixels"),
                           ("APNUNLIT", Flag.UNILLUMINATED, "unilluminated pixels"),
                           ("APNBADFL", Flag.BAD_FLAT, "pixels where the lamp fit fails")):
        master.header[key] = (int(((flags & bit) != 0).sum()), what)
    for index, level in enumerate(levels, start=1):
        master.header[f"APLEV{index:03d}"] = (level, f"[e-] level of flat {index}")
    return FlatResult(master, ~unlit if spectro else None, spectrum, fitted, notes)


def _check_light(ccd, good, name, saturated, instrument) -> None:
    """A flat must have light; when it has none that is usable, say why."""
    noise = max((v for k, v in ccd.header.items() if k.startswith("APRDN")), default=0.0)
    light = np.percentile(ccd.data[good], 90) if good.any() else np.nan
    if light > _NO_LIGHT * noise:
        return
    if saturated > 0.01:
        raise CalibrationError(f"{name}: flat is saturated: {saturated:.0%} of its pixels reach "
                               f"{instrument.name}'s saturation level, "
                               f"{instrument.saturation:g} ADU; is that level right for this "
                               f"camera, or was the lamp too bright?")
    raise CalibrationError(f"{name}: flat has no light (90th percentile {light:.1f} e-, read "
                           f"noise {noise:.1f} e-); was the lamp off or the shutter closed?")


def _segments(flat, axis, shape) -> list[tuple[int, int]] | None:
    """Spans of the dispersion axis read by their own amplifiers."""
    layout = getattr(getattr(flat, "frame", flat), "layout", None)
    if layout is None:
        return None
    spans = sorted({(a.output.y1 - 1, a.output.y2) if axis == 0 else (a.output.x1 - 1, a.output.x2)
                    for a in layout.amplifiers})
    joined = all(one[1] == two[0] for one, two in zip(spans, spans[1:]))
    if len(spans) < 2 or not joined or spans[0][0] != 0 or spans[-1][1] != shape[axis]:
        return None
    return spans


def neighbourhood(image: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The level of each pixel's neighbourhood: a running median of five
    pixels along the rows, then along the columns (a defect one or two
    pixels wide, a bad column or row, does not change it; slow structure
    such as vignetting does). Unusable pixels count as the image's median.

    Five-point medians by a min/max network on two threads (a running
    median by bottleneck took 0.5 s for a full-size KOSMOS frame; this
    takes a fifth of that)."""
    values = np.asarray(image, dtype=np.float32)
    if not usable.all():
        values = np.where(usable, values, np.float32(np.median(values[usable])))
    smooth = np.empty_like(values)
    across = np.empty_like(values)

    def rows(block):
        lo, hi = max(block.start - 2, 0), min(block.stop + 2, values.shape[0])
        padded = np.pad(values[lo:hi], ((0, 0), (2, 2)), mode="edge")
        across[lo:hi] = _median5(*(padded[:, i:i + values.shape[1]] for i in range(5)))

    def columns(block):
        lo, hi = block.start, block.stop
        smooth[lo:hi] = _median5(*(padded[lo + i:hi + i] for i in range(5)))

    size = max(1, (1 << 19) // values.shape[1])
    for_each_block(values.shape[0], size, rows)
    padded = np.pad(across, ((2, 2), (0, 0)), mode="edge")
    for_each_block(values.shape[0], size, columns)
    return smooth


def _median5(a, b, c, d, e):
    """Element-wise median of five arrays (Paeth's min/max network)."""
    f = np.maximum(np.minimum(a, b), np.minimum(c, d))
    g = np.minimum(np.maximum(a, b), np.maximum(c, d))
    return np.maximum(np.minimum(e, f), np.minimum(np.maximum(e, f), g))


def pixel_defects(flat: np.ndarray, usable: np.ndarray, limits) -> np.ndarray:
    """True where a flat's value over its neighbourhood's is outside ``limits``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = flat / neighbourhood(flat, usable)
    low, high = limits
    return usable & np.isfinite(ratio) & ((ratio < low) | (ratio > high))


def flag_defects(master: CCDData, sigma: float = 5.0) -> None:
    """Flag a master bias's pixel-scale defects, in place: HOT where its
    level stands more than ``sigma`` robust standard deviations above its
    neighbourhood's (a hot column), BAD_PIXEL where it stands as far below.
    A bias structure that changes smoothly is the bias, not a defect."""
    usable = (master.flags & FLAG_DTYPE(Flag.NO_DATA)) == 0
    deviation = master.data - neighbourhood(master.data, usable)
    # the scatter of the deviations, from every 7th pixel: plenty, and fast
    sample = np.where(usable.ravel()[::7], deviation.ravel()[::7], np.nan)
    spread = 1.4826 * float(bn.nanmedian(np.abs(sample - bn.nanmedian(sample))))
    if not spread > 0:
        return
    hot = usable & (deviation > sigma * spread)
    low = usable & (deviation < -sigma * spread)
    master.flags[hot] |= FLAG_DTYPE(Flag.HOT)
    master.flags[low] |= FLAG_DTYPE(Flag.BAD_PIXEL)
    master.mask = master.flags != 0
    master.header["APNHOT"] = (int(hot.sum()), f"hot pixels (> {sigma:g} sigma above neighbours)")
    master.header["APNBAD"] = (int(low.sum()), f"low pixels (> {sigma:g} sigma below neighbours)")


def flag_hot(master: CCDData, hot_sigma: float) -> None:
    """Flag a master dark's hot pixels, in place: dark signal more than
    ``hot_sigma`` robust standard deviations above the median, or saturated."""
    data = master.data
    usable = (master.flags & FLAG_DTYPE(Flag.NO_DATA)) == 0
    centre = np.median(data[usable])
    spread = mad_std(data[usable])
    hot = (data - centre > hot_sigma * spread) | ((master.flags & Flag.SATURATED) != 0)
    master.flags[hot] |= FLAG_DTYPE(Flag.HOT)
    master.mask = master.flags != 0
    master.header["APNHOT"] = (int(hot.sum()), f"hot pixels (> {hot_sigma:g} sigma)")


def as_master(ccd: CCDData, kind: str, names, instrument) -> CCDData:
    """A combined frame as a master: provenance cards (APMASTER, APINST,
    NCOMBINE, IMCMBnnn) and flags that are never missing."""
    header = fits.Header(ccd.meta)
    for key in [k for k in header if k == "RAWFILE" or k.startswith("APOVSC")]:
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
