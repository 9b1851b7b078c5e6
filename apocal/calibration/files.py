"""A `CalibrationSet` on disk: its masters as FITS files and a manifest.

Files: ``master_bias.fits``, ``master_dark.fits`` (or
``master_dark_<t>s.fits`` per exposure time without a bias),
``master_flat.fits`` (with ILLUM, LAMP and RESPONSE extensions) and
``master_arc.fits``, each with UNCERT, MASK and FLAGS extensions and a
provenance header, plus `MANIFEST` (``calibration_set.json``), written
last, which says which file is which master and how to rebuild the
instrument.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from .. import __version__
from ..exceptions import CalibrationError
from ..io import atomic_write_bytes, read_frame, write_frame

__all__ = ["MANIFEST", "MasterFile", "write_set", "read_set", "masters_of", "dark_key"]

#: The manifest of a written set: the file whose presence says a set is complete.
MANIFEST = "calibration_set.json"


@dataclass(frozen=True)
class MasterFile:
    """One master of a set.

    Attributes
    ----------
    key : str
        ``bias``, ``dark``, ``flat``, ``arc``, or `dark_key` of a dark of one
        exposure time (a set without a bias).
    kind : str
        ``bias``, ``dark``, ``flat`` or ``arc``.
    exposure : float or None
        Exposure time (s) of a dark of one exposure time.
    master : astropy.nddata.CCDData
    file : str or None
        Its file name in the set's folder, once written or read.
    """

    key: str
    kind: str
    exposure: float | None
    master: CCDData
    file: str | None = None


def dark_key(exposure: float) -> str:
    """The key of the dark of one exposure time (s) in a set without a bias."""
    return f"dark:{exposure:g}"


def masters_of(cal):
    """``(key, kind, exposure, master)`` for every master of a set."""
    if cal.master_bias is not None:
        yield "bias", "bias", None, cal.master_bias
    if cal._dark_rate is not None:
        yield "dark", "dark", None, cal._dark_rate
    for exposure, master in sorted(cal.master_darks.items()):
        yield dark_key(exposure), "dark", exposure, master
    if cal.master_flat is not None:
        yield "flat", "flat", None, cal.master_flat
    if cal.master_arc is not None:
        yield "arc", "arc", None, cal.master_arc


def _file_name(kind: str, exposure: float | None) -> str:
    return f"master_{kind}.fits" if exposure is None else f"master_{kind}_{exposure:g}s.fits"


def write_set(cal, directory, overwrite: bool = False) -> list[Path]:
    """Write every master of ``cal`` to ``directory`` and the manifest.

    Each file appears complete or not at all; the manifest is written last.
    With ``overwrite``, masters of an earlier set in ``directory`` that this
    set does not have (``master_dark.fits`` when this one has none) are
    removed, so the folder holds this set alone.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    FileExistsError
        If any of the files exists and ``overwrite`` is False (nothing is
        written then).
    CalibrationError
        If the set has no master yet.
    """
    directory = Path(directory)
    plan = []
    for key, kind, exposure, master in masters_of(cal):
        extra = None
        if key.startswith("dark:") and exposure in cal._pedestals:
            extra = [fits.ImageHDU(cal._pedestals[exposure], name="PEDESTAL")]
        if kind == "flat" and cal.illumination_mask is not None:
            extra = [fits.ImageHDU(cal.illumination_mask.astype(np.uint8), name="ILLUM"),
                     fits.ImageHDU(np.asarray(cal.lamp_spectrum, dtype=np.float64), name="LAMP"),
                     fits.ImageHDU(np.asarray(cal.flat_response, dtype=np.float64),
                                   name="RESPONSE")]
        plan.append((key, _file_name(kind, exposure), master, extra))
    if not plan:
        raise CalibrationError("nothing to write: the set has no master yet")
    targets = [directory / name for _, name, _, _ in plan] + [directory / MANIFEST]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)}: exist(s); pass overwrite=True to replace")
    stale = _earlier_masters(directory) - {name for _, name, _, _ in plan}
    if overwrite and (directory / MANIFEST).exists():
        (directory / MANIFEST).unlink()   # the folder is no set until it is complete
    written = [write_frame(master, directory / name, overwrite=overwrite, extra_hdus=extra)
               for _, name, master, extra in plan]
    manifest = {
        "apocal_version": __version__,
        "instrument": f"{type(cal.instrument).__module__}:{type(cal.instrument).__qualname__}",
        # only values given to the instrument: header cards and class values
        # speak for themselves when the set is read back
        "gain": cal.instrument.given_values("gain"),
        "read_noise": cal.instrument.given_values("read_noise"),
        "overscan": cal.overscan, "overscan_window": cal.overscan_window,
        "dark_bias_coefficient": cal.dark_bias_coefficient,
        "files": {key: name for key, name, _, _ in plan},
    }
    written.append(atomic_write_bytes(directory / MANIFEST,
                                      json.dumps(manifest, indent=1).encode(),
                                      overwrite=overwrite))
    for key, name, _, _ in plan:
        cal._sources[key] = name
    for name in stale if overwrite else ():
        (directory / name).unlink(missing_ok=True)
    return written


# Names `write_set` gives masters.
_MASTER_NAME = re.compile(r"^master_(bias|dark|flat|arc)(_[0-9.eE+-]+s)?\.fits$")


def _earlier_masters(directory: Path) -> set[str]:
    """Master files an earlier `write_set` left in ``directory``: those its
    manifest lists, and any file named as a master."""
    if not directory.is_dir():
        return set()
    found = {p.name for p in directory.iterdir() if _MASTER_NAME.match(p.name)}
    try:
        listed = json.loads((directory / MANIFEST).read_text()).get("files", {}).values()
        found |= {name for name in listed if isinstance(name, str) and "/" not in name
                  and name not in (".", "..")}
    except (OSError, ValueError, AttributeError):
        pass
    return found


def read_set(cls, directory, instrument=None):
    """Read a set written by `write_set`.

    Parameters
    ----------
    cls : type
        `~apocal.CalibrationSet` (or a subclass) to make.
    directory : str or path-like
        The folder given to `write_set`.
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
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{directory}: no {MANIFEST}; not a written calibration "
                               f"set (or its writing was interrupted)") from None
    if instrument is None:
        module, _, name = manifest["instrument"].partition(":")
        try:
            klass = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise CalibrationError(f"{directory}: cannot import the instrument "
                                   f"{manifest['instrument']} ({err}); pass instrument=") from None
        instrument = klass(gain=manifest["gain"], read_noise=manifest["read_noise"])
    cal = cls(instrument, overscan=manifest["overscan"],
              overscan_window=manifest["overscan_window"])
    for key, name in manifest["files"].items():
        path = directory / name
        if not path.exists():
            raise CalibrationError(f"{path}: listed in {MANIFEST} but missing")
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
            cal.dark_bias_coefficient = float(manifest.get(
                "dark_bias_coefficient", master.header.get("APBIASCO", 0.0)))
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
