"""Calibration: masters built from a night's calibration frames, and science
frames calibrated with them.

`CalibrationSet` is the one object users chain; it hands the work to one
module per job:

============================  ================================================
`~.calibration_set`           `CalibrationSet`: the masters of one instrument
`~.masters`                   building each master from prepared frames
`~.apply`                     the one engine that applies masters to a frame
`~.files`                     a set written to a folder, and read back
`~.self_check`                the uncertainty checked on the set's own frames
============================  ================================================
"""

from .calibration_set import CalibrationSet

__all__ = ["CalibrationSet"]
