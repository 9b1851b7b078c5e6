"""The Instrument base class: settings, geometry, reading and processing."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.tests.helper import assert_quantity_allclose

from apocal import Amplifier, Flag, FrameError, Instrument

from .kast import KastRed


class TwoAmp(Instrument):
    """A 20-row camera: amps of 8 columns, overscan of 6 columns each."""

    name = "twoamp"
    amplifiers = (
        Amplifier("[1:8,1:20]", "[18:23,1:20]", gain=2.0, read_noise=4.0, name="left"),
        Amplifier("[9:16,1:20]", "[24:29,1:20]", gain=1.5, read_noise=3.0, name="right"),
    )
    saturation = 60000.0
    nonlinear = 50000.0


def _raw(levels=(1000.0, 1200.0), signal_e=(500.0, 300.0), shape=(20, 30)):
    """Noise-free raw frame: amp i has bias levels[i] and signal_e[i] electrons."""
    raw = np.zeros(shape)
    gains = (2.0, 1.5)
    raw[:, 0:8] = levels[0] + signal_e[0] / gains[0]
    raw[:, 8:16] = levels[1] + signal_e[1] / gains[1]
    raw[:, 16] = 5.0                       # a prescan-like column nobody uses
    raw[:, 17:23] = levels[0]
    raw[:, 23:29] = levels[1]
    return CCDData(raw, unit=u.adu, meta={"EXPTIME": 10.0, "IMAGETYP": "object"})


def test_overscan_trim_assemble_and_gain_per_amplifier():
    frame = _raw()
    out = TwoAmp().process(frame, overscan="level")
    assert out.shape == (20, 16) and out.unit == u.electron
    signal, sigma = out.data * out.unit, out.uncertainty.quantity
    assert_quantity_allclose(signal[:, :8], 500 * u.electron, atol=1e-3 * u.electron)
    assert_quantity_allclose(signal[:, 8:], 300 * u.electron, atol=1e-3 * u.electron)
    # sqrt(read noise^2 + signal); the overscan is noise-free here
    assert_quantity_allclose(sigma[:, :8], np.sqrt(16 + 500) * u.electron, rtol=1e-5)
    assert_quantity_allclose(sigma[:, 8:], np.sqrt(9 + 300) * u.electron, rtol=1e-5)
    assert out.header["APGAIN2"] == 1.5 and out.header["APOVSC1"] == pytest.approx(1000.0)


def test_process_never_modifies_its_input():
    frame = _raw()
    data, header = frame.data.copy(), frame.header.copy()
    TwoAmp().process(frame)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.header == header and frame.unit == u.adu


def test_saturated_and_nonlinear_pixels_are_flagged_from_raw_adu():
    frame = _raw()
    frame.data[3, 2] = 60000.0   # saturated (and above the non-linear level)
    frame.data[4, 10] = 55000.0  # non-linear only
    out = TwoAmp().process(frame)
    assert out.flags[3, 2] == Flag.SATURATED | Flag.NONLINEAR
    assert out.flags[4, 10] == Flag.NONLINEAR
    assert out.mask.sum() == 2 and out.mask[3, 2] and out.mask[4, 10]


def test_rows_overscan_follows_a_per_row_level():
    frame = _raw()
    ramp = np.linspace(0, 30, 20)[:, None]
    frame.data[:, :] += ramp
    out = TwoAmp().process(frame, overscan="rows", overscan_window=5)
    np.testing.assert_allclose(out.data[:, :8], 500.0, atol=1e-3)
    flat = TwoAmp().process(frame, overscan="level")
    assert np.ptp(flat.data[:, 0]) > 50  # a single level leaves the ramp in


def test_header_values_win_over_class_defaults():
    frame = _raw()
    frame.header["GAIN"] = 3.0
    frame.header["RDNOISE"] = 7.0
    layout = TwoAmp().layout(frame.header, frame.shape)
    assert [a.gain for a in layout.amplifiers] == [3.0, 3.0]
    assert [a.read_noise for a in layout.amplifiers] == [7.0, 7.0]

    single = Instrument(gain=1.0, read_noise=1.0, amplifiers=(Amplifier("[1:4,1:4]", "[9:10,1:4]"),))
    header = fits.Header({"DATASEC": "[2:5,1:3]", "BIASSEC": "[7:8,1:3]"})
    amp = single.layout(header, (3, 10)).amplifiers[0]
    assert str(amp.data) == "[2:5,1:3]" and str(amp.overscan) == "[7:8,1:3]"


@pytest.mark.parametrize("cards", [{"CCDSUM": "2 2"}, {"BINX": 2, "BINY": 2},
                                   {"CCDBIN1": 2, "CCDBIN2": 2},
                                   {"XBINNING": 2, "YBINNING": 2}])
def test_binning_keys_scale_the_class_sections(cards):
    header = fits.Header(cards)
    layout = TwoAmp().layout(header, (10, 15))
    left, right = layout.amplifiers
    assert layout.binning == (2, 2)
    assert str(left.data) == "[1:4,1:10]" and str(right.data) == "[5:8,1:10]"
    assert str(left.overscan) == "[10:11,1:10]"   # unbinned 18..23 -> whole binned 10..11
    assert layout.shape == (10, 8)


def test_constructor_settings():
    camera = TwoAmp(gain=(1.0, 1.1), read_noise=5.0, saturation=40000.0)
    assert [a.gain for a in camera.amplifiers] == [1.0, 1.1]
    assert [a.read_noise for a in camera.amplifiers] == [5.0, 5.0]
    assert camera.saturation == 40000.0 and TwoAmp.saturation == 60000.0
    with pytest.raises(TypeError, match="no setting 'saturaton'"):
        TwoAmp(saturaton=1)


def test_geometry_errors_name_the_frame():
    frame = _raw(shape=(20, 30))
    small = CCDData(frame.data[:, :20], unit=u.adu, meta={"RAWFILE": "small.fits"})
    with pytest.raises(FrameError, match=r"small\.fits: twoamp left: class overscan_section "
                                         r"\[18:23,1:20\] does not fit the 20x20"):
        TwoAmp().process(small)
    header = fits.Header({"GAIN": "high"})
    with pytest.raises(FrameError, match="non-numeric gain"):
        TwoAmp().layout(header, (20, 30))
    with pytest.raises(FrameError, match="gain and read noise of amplifier 1 are not in the header"):
        Instrument().layout(fits.Header(), (5, 5))


def test_processed_frames_and_electrons_are_refused():
    out = TwoAmp().process(_raw())
    with pytest.raises(FrameError, match="not ADU"):
        TwoAmp().process(out)


def test_default_classification_and_configuration():
    camera = Instrument(gain=1.0, read_noise=1.0, config_keys={"filter": "FILTER"})
    header = fits.Header({"IMAGETYP": "Bias Frame", "FILTER": "V", "CCDSUM": "1 1"})
    assert camera.classify(header) == "bias"
    assert camera.configuration(header) == {"binning": "1x1", "filter": "V"}
    with pytest.raises(FrameError, match="cannot tell the frame kind"):
        camera.classify(fits.Header({"IMAGETYP": "focus"}))


# ----------------------------------------------------------------------
# A user subclass on real data: Kast red (shared/data/kast-red)
# ----------------------------------------------------------------------
KAST_KINDS = {"r112": "bias", "r113": "bias", "r114": "bias", "r124": "arc", "r125": "flat",
              "r126": "flat", "r127": "flat", "r136": "science", "r153": "science",
              "r154": "science", "r534": "science", "r535": "science"}


def test_kast_subclass_reads_classifies_and_processes_every_frame(shared_data):
    kast = KastRed()
    files = sorted((shared_data / "kast-red").glob("r*.fits.gz"))
    assert len(files) == 12
    for path in files:
        raw = kast.read(path)
        assert raw.unit == u.adu and raw.shape == (250, 1232)
        assert kast.matches(raw.header)
        assert kast.classify(raw.header) == KAST_KINDS[path.name[:4]]
        out = kast.process(path)
        assert out.shape == (250, 1200) and out.unit == u.electron
        assert np.isfinite(out.data).all() and np.all(out.uncertainty.array >= 3.8 - 1e-4)
        good = ~out.mask
        if KAST_KINDS[path.name[:4]] == "bias":
            # the overscan removes the ~1063 ADU level: a bias ends near zero
            assert abs(np.median(out.data[good])) < 3 * 1.9
        assert kast.layout(raw.header, raw.shape).amplifiers[0].overscan.x1 == 1203


def test_kast_biases_differ_by_read_noise_only(shared_data):
    kast = KastRed()
    first, second = (kast.process(shared_data / "kast-red" / name)
                     for name in ("r112.fits.gz", "r113.fits.gz"))
    from astropy.stats import sigma_clipped_stats

    _, _, scatter = sigma_clipped_stats(first.data - second.data, sigma=4)
    # overscan removed per frame, fixed structure cancels: what is left is
    # read noise (a few electrons; PypeIt quotes 3.8 e- for the newer CCD)
    assert 2.0 < scatter / np.sqrt(2) < 12.0


def test_kast_arc_has_saturated_pixels_flagged(shared_data):
    out = KastRed().process(shared_data / "kast-red" / "r124.fits.gz")
    raw = KastRed().read(shared_data / "kast-red" / "r124.fits.gz").data[:, :1200]
    assert np.array_equal(out.flags & Flag.SATURATED != 0, raw >= 65535)
    assert (out.flags & Flag.SATURATED).any()
    assert (out.flags & Flag.NONLINEAR).sum() >= (out.flags & Flag.SATURATED).astype(bool).sum()


def test_a_bias_holds_no_photons_whatever_its_exposure_time():
    # ALFOSC biases carry EXPTIME = 0.002 s: the kind decides, not EXPTIME > 0
    frame = _raw()
    frame.header["EXPTIME"] = 0.002
    frame.header["IMAGETYP"] = "bias"
    out = TwoAmp().process(frame, overscan="level")
    np.testing.assert_allclose(out.uncertainty.array[:, :8], 4.0, rtol=1e-5)
    # told what it is, a frame is processed as that kind
    as_bias = TwoAmp().process(_raw(), overscan="level", kind="bias")
    np.testing.assert_allclose(as_bias.uncertainty.array[:, 8:], 3.0, rtol=1e-5)
    # a header that does not say falls back on the exposure time
    frame = _raw()
    del frame.header["IMAGETYP"]
    frame.header["EXPTIME"] = 0.0
    np.testing.assert_allclose(TwoAmp().process(frame, overscan="level")
                               .uncertainty.array[:, :8], 4.0, rtol=1e-5)


def test_a_bias_estimate_removes_non_photons_from_the_poisson_term():
    out = TwoAmp().process(_raw(), overscan="level", bias=450.0)
    np.testing.assert_allclose(out.uncertainty.array[:, :8], np.sqrt(16 + 50), rtol=1e-5)
    np.testing.assert_allclose(out.uncertainty.array[:, 8:], 3.0, rtol=1e-5)  # 300 - 450 < 0


def test_geometry_without_detector_values():
    layout = Instrument().layout(fits.Header(), (5, 7), detector=False)
    amp = layout.amplifiers[0]
    assert layout.shape == (5, 7) and np.isnan(amp.gain) and np.isnan(amp.read_noise)


# ----------------------------------------------------------------------
# Which value wins, visibly
# ----------------------------------------------------------------------
def test_given_values_win_over_header_cards_which_win_over_the_class():
    header = fits.Header({"GAIN": 3.0, "RDNOISE": 7.0})
    from_header = TwoAmp().layout(header, (20, 30)).amplifiers[0]
    assert (from_header.gain, from_header.sources["gain"]) == (3.0, "header GAIN")
    given = TwoAmp(gain=2.5).layout(header, (20, 30)).amplifiers
    assert [a.gain for a in given] == [2.5, 2.5]
    assert [a.sources["gain"] for a in given] == ["given", "given"]
    assert given[0].sources["read_noise"] == "header RDNOISE"
    measured = TwoAmp().with_detector(read_noise=(4.5, 3.3), source="measured (photon transfer)")
    assert [a.read_noise for a in measured.layout(header, (20, 30)).amplifiers] == [4.5, 3.3]
    plain = TwoAmp().layout(fits.Header(), (20, 30)).amplifiers[1]
    assert (plain.gain, plain.sources["gain"], plain.sources["data"]) == (1.5, "class", "class")


def test_processed_frames_record_every_value_and_its_source():
    frame = _raw()
    frame.header["GAIN"] = 2.0
    out = TwoAmp().process(frame)
    header = out.header
    assert (header["APGAIN2"], header["APGSRC2"]) == (2.0, "header GAIN")
    assert (header["APRDN1"], header["APNSRC1"]) == (4.0, "class")
    assert (header["APDSEC2"], header["APDSRC2"]) == ("[9:16,1:20]", "class")
    assert (header["APBSEC1"], header["APBSRC1"]) == ("[18:23,1:20]", "class")


def test_a_header_section_that_does_not_fit_names_the_card_and_the_class_value():
    camera = Instrument(gain=1.0, read_noise=1.0,
                        amplifiers=(Amplifier("[1:400,1:2064]", "[1:400,2069:2102]"),))
    # ALFOSC: the BIASSEC card describes another readout window
    header = fits.Header({"BIASSEC": "[3:52,1:2102]", "CCDSUM": "1 2"})
    with pytest.raises(FrameError, match=r"header BIASSEC = '\[3:52,1:2102\]' does not fit the "
                                         r"400x1051 .* the class overscan_section is "
                                         r"\[1:400,2069:2102\] \(\[1:400,1035:1051\] at binning "
                                         r"1x2\); set overscan_section_key = None"):
        camera.layout(header, (1051, 400))
    camera.overscan_section_key = None
    amp = camera.layout(header, (1051, 400)).amplifiers[0]
    assert str(amp.overscan) == "[1:400,1035:1051]" and amp.sources["overscan"] == "class"
    assert not amp.overscan_along_rows      # a parallel overscan: one level per column


def test_an_overscan_overlapping_the_data_names_both_sources():
    header = fits.Header({"BIASSEC": "[3:52,1:20]"})
    camera = Instrument(gain=1.0, read_noise=1.0,
                        amplifiers=(Amplifier("[1:400,1:20]", "[401:410,1:20]"),))
    with pytest.raises(FrameError, match=r"overscan \[3:52,1:20\] \(header BIASSEC\) overlaps "
                                         r"the data \[1:400,1:20\] of amplifier 1 \(class\)"):
        camera.layout(header, (20, 410))


def test_sections_binned_says_how_class_sections_count_pixels():
    # ISIS writes its sections in binned pixels; copied into a class they
    # must not be binned again (half the slit would be lost, silently).
    header = fits.Header({"CCDSUM": "2 1"})
    amp = Amplifier("[1:483,1:4099]", "[1:483,4105:4200]")
    unbinned = Instrument(gain=1.0, read_noise=1.0, amplifiers=(amp,))
    assert str(unbinned.layout(header, (4200, 483)).amplifiers[0].data) == "[1:241,1:4099]"
    binned = Instrument(gain=1.0, read_noise=1.0, amplifiers=(amp,), sections_binned=True)
    assert str(binned.layout(header, (4200, 483)).amplifiers[0].data) == "[1:483,1:4099]"
    with pytest.raises(FrameError, match=r"class data_section \[1:966,1:4099\] \(class sections "
                                         r"count binned pixels; counted unbinned it would be "
                                         r"\[1:483,1:4099\] at binning 2x1: set sections_binned "
                                         r"= False if so\) does not fit"):
        Instrument(gain=1.0, read_noise=1.0, sections_binned=True,
                   amplifiers=(Amplifier("[1:966,1:4099]"),)).layout(header, (4200, 483))


def test_electron_frames_keep_no_raw_only_card():
    frame = _raw()
    frame.header.update({"GAIN": 2.0, "RDNOISE": 4.0, "DATAMIN": 0, "DATAMAX": 65535,
                         "SATURATE": 65535, "DATASEC": "[1:16,1:20]", "TRIMSEC": "[1:16,1:20]",
                         "RTDATSEC": "[586:1550,1:4200]", "DETSIZE": "[1:16,1:20]",
                         "BZERO": 32768})
    header = TwoAmp().process(frame).header
    for key in ("GAIN", "RDNOISE", "DATAMIN", "DATAMAX", "SATURATE", "DATASEC", "TRIMSEC",
                "RTDATSEC", "BZERO"):
        assert key not in header, key
    assert header["DETSIZE"] == "[1:16,1:20]" and header["BUNIT"] == "electron"


def test_a_celestial_wcs_moves_to_ccddata_wcs():
    frame = _raw()
    frame.header.update({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0,
                         "CRVAL2": 20.0, "CRPIX1": 5.0, "CRPIX2": 6.0, "CD1_1": -1e-4,
                         "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": 1e-4})
    single = Instrument(gain=1.0, read_noise=1.0, amplifiers=(Amplifier("[3:16,2:20]"),))
    out = single.process(frame)
    assert out.wcs is not None and out.wcs.has_celestial
    assert "CTYPE1" not in out.header and "CD1_1" not in out.header
    # trimmed by 2 columns and 1 row: the reference pixel moves with the data
    np.testing.assert_allclose(out.wcs.wcs.crpix, [3.0, 5.0])


def test_a_header_card_far_from_the_class_value_is_said():
    # Kast writes GAIN = 1, a gain index: used (the rule), but not silently
    from apocal import ApocalWarning

    camera = Instrument(amplifiers=(Amplifier("[1:8,1:20]", gain=1.465, read_noise=8.7),))
    with pytest.warns(ApocalWarning, match=r"header GAIN = 1 replaces the class gain 1.465 "
                                           r"\(32% apart\); .* set gain_keys = \(\)"):
        amp = camera.layout(fits.Header({"GAIN": 1}), (20, 8)).amplifiers[0]
    assert amp.gain == 1.0 and amp.sources["gain"] == "header GAIN"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        camera.layout(fits.Header({"GAIN": 1.5}), (20, 8))         # 2%: the header's own value
