"""The built-in instruments.

========  =====================================================
KOSMOS    APO 3.5 m KOSMOS, one CCD read by two amplifiers
DISRed    APO 3.5 m DIS, red camera
DISBlue   APO 3.5 m DIS, blue camera
SBO       MaxIm-style campus imaging camera (no overscan)
========  =====================================================
"""

from .dis import DISBlue, DISRed
from .kosmos import KOSMOS
from .sbo import SBO

__all__ = ["KOSMOS", "DISRed", "DISBlue", "SBO", "BUILTIN_INSTRUMENTS"]

#: Built-in instrument classes, in the order `apocal.instrument_for` tries them.
BUILTIN_INSTRUMENTS = (KOSMOS, DISRed, DISBlue, SBO)
