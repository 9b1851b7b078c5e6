"""apocal: raw CCD frames to calibrated, trustworthy data.

Built on astropy's `~astropy.nddata.CCDData` and ccdproc. An `Instrument`
describes a detector; a `CalibrationSet` builds master frames and
calibrates science frames to electrons with a propagated uncertainty;
`stack` aligns and co-adds calibrated frames.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("apocal")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from . import instruments
from .calibration import CalibrationSet
from .detection import instrument_for
from .exceptions import ApocalError, ApocalWarning, CalibrationError, FrameError, UnknownInstrumentError
from .flags import Flag
from .instrument import Amplifier, Instrument
from .stacking import StackedImage, stack

__all__ = [
    "__version__",
    "Amplifier",
    "Instrument",
    "CalibrationSet",
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
