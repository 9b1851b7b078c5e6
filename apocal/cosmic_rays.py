"""Cosmic-ray rejection on calibrated frames with ccdproc's L.A.Cosmic.

`ccdproc.cosmicray_lacosmic` is used with three corrections for frames
that are already in electrons and bias-subtracted:

* its noise model is given the frame's own variance (``invar``); its
  default (gain and read noise applied to the data) would take the
  bias-subtracted, flat-fielded values as the Poisson signal;
* gain 1 and no saturation level, since the data are electrons and
  saturated pixels are already masked (and left out through the mask);
* the uncertainty of a replaced pixel is set to that of its neighbourhood
  (the value there is now an interpolation, not the hit), and the pixel is
  flagged ``COSMIC_RAY`` and masked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty
from ccdproc import cosmicray_lacosmic
from scipy.ndimage import median_filter

from .flags import FLAG_DTYPE, Flag

__all__ = ["reject_cosmic_rays", "LACOSMIC_OPTIONS"]

#: L.A.Cosmic settings that may be changed (see `ccdproc.cosmicray_lacosmic`).
LACOSMIC_OPTIONS = ("sigclip", "sigfrac", "objlim", "niter", "sepmed", "cleantype", "fsmode",
                    "psfmodel", "psffwhm", "psfsize")


def reject_cosmic_rays(ccd: CCDData, read_noise: float, **options: Any) -> CCDData:
    """Find and replace cosmic-ray hits in a calibrated frame.

    Parameters
    ----------
    ccd : astropy.nddata.CCDData
        A frame in electrons with a `StdDevUncertainty` (e.g. from
        `CalibrationSet.calibrate`); not modified.
    read_noise : float
        Read noise in electrons (used by L.A.Cosmic's fine structure test).
    **options
        Any of ``LACOSMIC_OPTIONS``. Defaults ``sigclip=5``, ``objlim=5``: a
        little stricter than L.A.Cosmic's 4.5, because sharp sky and arc
        lines in binned spectra otherwise pass for hits.

    Returns
    -------
    astropy.nddata.CCDData
        A copy with hits replaced, flagged ``COSMIC_RAY`` and masked, and
        header card NCOSMIC giving their number.
    """
    unknown = sorted(set(options) - set(LACOSMIC_OPTIONS))
    if unknown:
        raise TypeError(f"unknown cosmic-ray option(s) {unknown}; known: {LACOSMIC_OPTIONS}")
    if not ccd.unit.is_equivalent(u.electron):
        raise ValueError(f"cosmic-ray rejection needs a frame in electrons, not {ccd.unit}")
    options = {"sigclip": 5.0, "objlim": 5.0, **options}
    variance = np.asarray(ccd.uncertainty.array, dtype=np.float32) ** 2
    flags = np.zeros(ccd.shape, FLAG_DTYPE) if ccd.flags is None else ccd.flags.copy()
    cleaned = cosmicray_lacosmic(
        CCDData(ccd.data.astype(np.float32), unit=u.electron, mask=flags != 0),
        gain=1.0, readnoise=read_noise * u.electron, invar=variance, satlevel=np.inf,
        gain_apply=False, **options)
    hits = np.asarray(cleaned.mask) & ~(flags != 0)
    flags[hits] |= FLAG_DTYPE(Flag.COSMIC_RAY)
    sigma = np.sqrt(variance)
    sigma[hits] = np.sqrt(median_filter(variance, size=5)[hits])
    result = ccd.copy()
    result.data = np.asarray(cleaned.data, dtype=ccd.data.dtype)
    result.uncertainty = StdDevUncertainty(sigma.astype(ccd.data.dtype))
    result.flags = flags
    result.mask = flags != 0
    result.header["NCOSMIC"] = (int(hits.sum()), "pixels replaced as cosmic-ray hits")
    return result
