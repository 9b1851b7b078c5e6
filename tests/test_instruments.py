"""The built-in instruments: facts, header conventions, processing on simulated truth."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.tests.helper import assert_quantity_allclose

from apocal import Flag, FrameError
from apocal.instruments import KOSMOS, SBO, DISBlue, DISRed
from apocal.instruments.sbo import MAXIM_IMAGETYPES


def test_kosmos_facts():
    kosmos = KOSMOS()
    left, right = kosmos.amplifiers
    assert (left.gain, left.read_noise, right.gain, right.read_noise) == (0.6, 5.0, 0.6, 5.0)
    assert kosmos.saturation == 262144 and kosmos.nonlinear == pytest.approx(0.86 * 262144)
    assert kosmos.dispersion_axis == 0
    layout = kosmos.layout(fits.Header({"BINX": 1, "BINY": 1}), (4096, 2148))
    assert layout.shape == (4096, 2048)
    assert [str(a.data) for a in layout.amplifiers] == ["[1:1024,1:4096]", "[1025:2048,1:4096]"]
    assert [str(a.overscan) for a in layout.amplifiers] == ["[2056:2088,1:4096]",
                                                            "[2106:2138,1:4096]"]


def test_kosmos_header_sections_win():
    header = fits.Header({"DSEC11": "[1:1000,1:4096]", "BSEC11": "[2050:2090,1:4096]",
                          "GAIN": 0.65})
    left, right = KOSMOS().layout(header, (4096, 2148)).amplifiers
    assert str(left.data) == "[1:1000,1:4096]" and str(left.overscan) == "[2050:2090,1:4096]"
    assert str(right.data) == "[1025:2048,1:4096]"
    assert left.gain == right.gain == 0.65


def test_dis_facts():
    red, blue = DISRed(), DISBlue()
    assert (red.amplifiers[0].gain, red.amplifiers[0].read_noise) == (1.88, 4.6)
    assert (blue.amplifiers[0].gain, blue.amplifiers[0].read_noise) == (1.68, 4.9)
    assert red.dispersion_axis == blue.dispersion_axis == 1
    assert red.saturation == 65535


@pytest.mark.parametrize("cards, kind", [
    ({"IMAGETYP": "Bias"}, "bias"),
    ({"IMAGETYP": "Flat", "QUARTZ": "on"}, "flat"),
    ({"IMAGETYP": "Object"}, "science"),
    ({"IMAGETYP": "Object", "NEON": "on"}, "arc"),
    ({"IMAGETYP": "Object", "HE-TR": "on", "AR-TR": "on"}, "arc"),
    ({"IMAGETYP": "Object", "QUARTZ": "on"}, "science"),
])
def test_kosmos_classification(cards, kind):
    assert KOSMOS().classify(fits.Header(cards)) == kind


@pytest.mark.parametrize("value, kind", [("zero", "bias"), ("flat", "flat"), ("comp", "arc"),
                                         ("object", "science"), ("OBJECT  ", "science")])
def test_dis_classification(value, kind):
    assert DISRed().classify(fits.Header({"IMAGETYP": value})) == kind


@pytest.mark.parametrize("value", [v for values in MAXIM_IMAGETYPES.values() for v in values]
                         + ["BIAS", "DARK", "FLAT", "LIGHT"])
def test_maxim_classification(value):
    kind = SBO().classify(fits.Header({"IMAGETYP": value}))
    assert value.lower() in MAXIM_IMAGETYPES[kind]


def test_sbo_gain_from_header_then_constructor():
    header = fits.Header({"EGAIN": 1.25, "RDNOISE": 9.0})
    amp = SBO().layout(header, (10, 10)).amplifiers[0]
    assert (amp.gain, amp.read_noise, amp.overscan) == (1.25, 9.0, None)
    amp = SBO(gain=2.0, read_noise=11.0).layout(fits.Header(), (10, 10)).amplifiers[0]
    assert (amp.gain, amp.read_noise) == (2.0, 11.0)
    with pytest.raises(FrameError, match="photon_transfer"):
        SBO().layout(fits.Header(), (10, 10))


# ----------------------------------------------------------------------
# Processing against simulated truth
# ----------------------------------------------------------------------
def _pulls(out, truth, name):
    expected = truth.bias + truth.dark_rate * truth.frames[name]["exptime"] + truth.expected(name)
    good = ~out.mask
    good.flat[truth.cosmic_rays.get(name, [])] = False
    return ((out.data - expected) / out.uncertainty.array)[good]


@pytest.mark.parametrize("name", ["kosmos", "dis-red", "dis-blue", "sbo"])
@pytest.mark.parametrize("kind", ["bias", "flat", "science"])
def test_processed_frame_equals_truth_within_its_uncertainty(night, name, kind):
    sim = night(name)
    path = sim[kind][0]
    # Without an overscan the bias level is still in the signal: say so, or
    # the Poisson term would count it as photons.
    bias = sim.truth.bias if name == "sbo" else None
    out = sim.instrument.process(path, bias=bias)
    pulls = _pulls(out, sim.truth, path.name)
    assert abs(pulls.mean()) < 0.05
    assert 0.95 < pulls.std() < 1.05


def test_without_a_bias_estimate_the_uncertainty_errs_high_not_low(night):
    sim = night("sbo")
    path = sim["science"][0]
    pulls = _pulls(sim.instrument.process(path), sim.truth, path.name)
    assert 0.5 < pulls.std() < 0.95


def test_both_kosmos_amplifiers_end_at_the_same_level(night):
    sim = night("kosmos")
    path = sim["flat"][0]
    raw = sim.instrument.read(path)
    # the raw bias levels of the two amplifiers differ (overscan boxes, binned 4x4)
    left_os = np.median(raw.data[:, 515:522])
    right_os = np.median(raw.data[:, 527:534])
    assert abs(left_os - right_os) > 3
    out = sim.instrument.process(path)
    signal = out.data - sim.truth.bias
    # columns either side of the amplifier boundary (spatial axis = columns)
    left = np.median(signal[:, 250:256] / sim.truth.response[:, 250:256])
    right = np.median(signal[:, 256:262] / sim.truth.response[:, 256:262])
    assert right == pytest.approx(left, rel=0.003)


def test_dis_red_overscan_changes_from_frame_to_frame_and_is_removed(night):
    sim = night("dis-red")
    levels = [sim.truth.frames[p.name]["overscan"][0] for p in sim["bias"]]
    assert np.ptp(levels) > 5   # the red camera's level wanders (120-162 ADU)
    medians = [np.median(sim.instrument.process(p).data) for p in sim["bias"]]
    assert np.ptp(medians) < 1.0


def test_simulated_saturation_is_flagged(night):
    sim = night("kosmos")
    path = sim["science"][0]
    out = sim.instrument.process(path)
    hits = sim.truth.saturated[path.name]
    assert np.all(out.flags.flat[hits] & Flag.SATURATED)


# ----------------------------------------------------------------------
# Real SBO-style frames (shared/data/arcsat-2025)
# ----------------------------------------------------------------------
ARCSAT_KINDS = {"Bias": "bias", "Dark": "dark", "domeflat": "flat", "XO1-b": "science"}


def test_every_arcsat_frame_is_read_classified_and_processed(shared_data):
    files = sorted((shared_data / "arcsat-2025").glob("*.fits"))
    assert len(files) == 21
    sbo = SBO(gain=1.336, read_noise=16.2)   # not in these headers: measured separately
    for path in files:
        raw = sbo.read(path)
        assert raw.unit == u.adu and raw.shape == (1024, 1024)
        assert raw.data.min() >= 0 and raw.data.max() <= 65535   # BZERO 32768 applied
        assert SBO.matches(raw.header)
        assert sbo.classify(raw.header) == ARCSAT_KINDS[path.name.split("_")[0]]
        out = sbo.process(path)
        assert out.shape == (1024, 1024)
        gain = 1.336 * u.electron / u.adu
        assert_quantity_allclose(out.data * out.unit, raw.data * raw.unit * gain, rtol=1e-6)
        assert np.all(np.isfinite(out.uncertainty.array))
