"""Looking at the data at every step: numbers and a plot per look.

Each function measures something and returns a small result object that
holds the numbers (units in its docstring) and draws them with
``.plot(ax=None)``, which returns the matplotlib Axes. Detector
measurements work on raw frames in ADU, amplifier by amplifier.

==============================  ============================================
`section_statistics`            bias level of data vs overscan, per amplifier
`region_histograms`             histograms of those sections, integer ADU bins
`read_noise_from_pair`          read noise from the difference of two biases
`read_noise_from_stack`         read noise from a stack of biases
`photon_transfer`               gain and read noise from flats and biases
`linearity`                     signal vs exposure time, deviation from a line
`nonlinear_check`               frames with pixels in the non-linear regime
`dispersion_slices`             cuts along the dispersion axis, line curvature
`lamp_response`                 a spectroscopic flat's lamp spectrum and fit
`slit_illumination`             the master flat's profile along the slit
`show_frame`                    zscale display with colour bar and masks
==============================  ============================================
"""

from .display import show_frame
from .flat import LampResponse, SlitIllumination, lamp_response, slit_illumination
from .histograms import RegionHistograms, region_histograms
from .linearity import Linearity, NonlinearCheck, NonlinearFrame, linearity, nonlinear_check
from .noise import ReadNoise, read_noise_from_pair, read_noise_from_stack
from .photon_transfer import PhotonTransfer, TransferPair, photon_transfer
from .regions import RegionStatistics, SectionStatistics, section_statistics
from .slices import DispersionSlices, dispersion_slices

__all__ = [
    "section_statistics", "SectionStatistics", "RegionStatistics",
    "region_histograms", "RegionHistograms",
    "read_noise_from_pair", "read_noise_from_stack", "ReadNoise",
    "photon_transfer", "PhotonTransfer", "TransferPair",
    "linearity", "Linearity", "nonlinear_check", "NonlinearCheck", "NonlinearFrame",
    "dispersion_slices", "DispersionSlices",
    "lamp_response", "LampResponse", "slit_illumination", "SlitIllumination",
    "show_frame",
]
