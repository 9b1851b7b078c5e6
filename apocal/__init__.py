"""apocal: raw CCD frames to calibrated, trustworthy data.

Built on astropy's `~astropy.nddata.CCDData` and ccdproc. An `Instrument`
describes a detector; a `CalibrationSet` builds master frames and
calibrates science frames to electrons with a propagated uncertainty;
`stack` aligns and co-adds calibrated frames; `reduce_night` reduces a
folder of raw frames; `simulate` writes a night of raw frames whose truth
is known.
"""


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("apocal")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


__version__ = _installed_version()
del _installed_version

from . import instruments  # noqa: E402  (the modules below read __version__)
from .calibration import CalibrationSet  # noqa: E402
from .detection import instrument_for  # noqa: E402
from .exceptions import (ApocalError, ApocalWarning, CalibrationError,  # noqa: E402
                         FrameError, UnknownInstrumentError)
from .flags import Flag  # noqa: E402
from .instrument import Amplifier, Instrument  # noqa: E402
from .night import reduce_night  # noqa: E402
from .stacking import StackedImage, stack  # noqa: E402

# The function, bound over the module of the same name: ``apocal.simulate(...)``
# simulates a night. ``from apocal.simulate import simulate, Truth`` still works
# (the import system finds the module in sys.modules, not through this name).
from .simulate import simulate  # noqa: E402

__all__ = [
    "__version__",
    "Amplifier",
    "Instrument",
    "CalibrationSet",
    "reduce_night",
    "simulate",
    "instrument_for",
    "stack",
    "StackedImage",
    "instruments",
    "Flag",
    "ApocalError",
    "ApocalWarning",
    "CalibrationError",
    "FrameError",
    "UnknownInstrumentError",
]
