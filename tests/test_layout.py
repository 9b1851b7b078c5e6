"""Reading every storage form exactly, and assembling amplifiers into a frame.

The raw files here come from `tests/rawwriter.py`, written byte by byte
from explicit arrays: the truth shares no code with apocal.
"""

import numpy as np
import pytest
from astropy.io import fits

import apocal
from apocal import FrameError
from apocal.io import RawImage, read_raw

from .mosaic import GAINS, LEVELS, write_mosaic
from .rawwriter import image, write_raw

# (name, BITPIX, BZERO): every way a camera stores integer ADU or floats.
STORAGE = [("int16+BZERO", 16, 1000), ("uint16", 16, 32768), ("int32", 32, 0),
           ("uint32", 32, 2**31), ("float32", -32, 0), ("float64", -64, 0)]


class Plain(apocal.Instrument):
    """One amplifier: 20 data columns, 6 overscan columns on the right."""

    name = "plain"
    amplifiers = (apocal.Amplifier("[1:20,1:16]", "[21:26,1:16]", gain=1.7, read_noise=3.5),)
    saturation = 33000.0
    nonlinear = 31000.0


def _raw_values():
    """Integer ADU that every storage form holds exactly (int16 with BZERO
    1000 reaches 33767)."""
    rng = np.random.default_rng(11)
    values = np.round(rng.normal(2000, 6, (16, 26)))
    values[:, :20] += np.round(rng.uniform(0, 27000, (16, 20)))
    values[3, 4] = 33001.0   # saturated, and above the non-linear level
    values[7, 8] = 31234.0
    return values


@pytest.mark.parametrize("name, bitpix, bzero", STORAGE)
def test_raw_image_reads_every_storage_form_as_astropy_section_does(tmp_path, name, bitpix,
                                                                    bzero):
    values = _raw_values()
    if bitpix == 32:   # beyond float32's exact integers too
        values[0, 0] = 2**24 + 3 + (2**31 if bzero else 0)
    path = write_raw(tmp_path / "frame.fits", image(values, bitpix, bzero))
    raw = RawImage(path)
    np.testing.assert_array_equal(raw.rows(0, 16), values)
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(raw.rows(5, 9, columns=slice(2, 7)),
                                      hdul[0].section[5:9, 2:7])
    data, _ = read_raw(path)
    np.testing.assert_array_equal(data, values)


def test_every_storage_form_gives_bit_identical_processed_frames(tmp_path):
    values = _raw_values()
    cards = {"EXPTIME": 10.0, "IMAGETYP": "object"}
    paths = [write_raw(tmp_path / f"{name}.fits", image(values, bitpix, bzero, cards=cards))
             for name, bitpix, bzero in STORAGE]
    paths.append(write_raw(tmp_path / "gzip.fits.gz", image(values, 16, 32768, cards=cards),
                           compress=True))
    paths.append(write_raw(tmp_path / "extension.fits", image(None, cards=cards),
                           image(values, 32, 2**31, extname="SCI")))
    paths.append(write_raw(tmp_path / "extension.fits.gz", image(None, cards=cards),
                           image(values, 16, 32768, extname="SCI"), compress=True))
    first = Plain().process(paths[0])
    assert first.flags[3, 4] and first.flags[7, 8]
    for path in paths[1:]:
        out = Plain().process(path)
        for got, want in ((out.data, first.data), (out.uncertainty.array, first.uncertainty.array),
                          (out.flags, first.flags)):
            assert got.tobytes() == want.tobytes(), path.name


def test_alfosc_unsigned_32_bit_pixels_read_exactly(shared_data):
    # BITPIX 32 + BZERO 2**31 in extension 1: a float32 detour before adding
    # BZERO rounds every value to a multiple of 128 ADU.
    path = shared_data / "alfosc" / "ALDc210004.fits"
    truth = fits.getdata(path)
    assert truth.dtype == np.uint32
    data, header = read_raw(path)
    assert np.array_equal(data, truth) and header["CCDSUM"] == "1 2"
    raw = RawImage(path)
    assert np.array_equal(raw.rows(0, raw.shape[0]), truth)
    assert np.unique(truth[100:200, 100:200] % 128).size > 100   # not multiples of 128


# ----------------------------------------------------------------------
# A mosaic: two CCDs, each read by two amplifiers, every amplifier in its
# own extension with its own DATASEC, BIASSEC, DETSEC and GAIN (tests/mosaic.py)
# ----------------------------------------------------------------------
class Mosaic(apocal.Instrument):
    """Four amplifiers, each in its own extension, placed by DETSEC."""

    name = "testmos"
    amplifiers = tuple(apocal.Amplifier(extension=f"AMP{n}", detector_key="DETSEC",
                                        name=f"amp{n}") for n in range(1, 5))

    @classmethod
    def matches(cls, header):
        return header.get("INSTRUME") == "TESTMOS"


@pytest.mark.parametrize("binning", [(1, 1), (2, 2)])
@pytest.mark.parametrize("compress", [False, True])
def test_mosaic_of_amplifier_extensions_assembles_to_the_truth(tmp_path, binning, compress):
    path, truth = write_mosaic(tmp_path / "mosaic.fits", *binning, compress=compress)
    out = Mosaic().process(path, overscan="rows", overscan_window=5)
    assert out.shape == truth.shape
    np.testing.assert_allclose(out.data, truth, atol=2e-3)   # orientation, gain, overscan
    layout = Mosaic().frame_layout(path)
    assert [a.flip_x for a in layout.amplifiers] == [False, True, False, True]
    assert [a.flip_y for a in layout.amplifiers] == [False, False, True, False]
    assert [a.gain for a in layout.amplifiers] == GAINS
    assert {a.sources["gain"] for a in layout.amplifiers} == {"header GAIN"}
    assert {a.sources["detector"] for a in layout.amplifiers} == {"header DETSEC"}
    assert out.header["APGAIN4"] == 3.0 and out.header["APGSRC4"] == "header GAIN"
    assert out.header["APOVSC2"] == pytest.approx(LEVELS[1] + (10 // binning[1] - 1), abs=1e-3)
    assert not out.mask.any()


def test_mosaic_detector_section_must_match_the_data(tmp_path):
    path, _ = write_mosaic(tmp_path / "mosaic.fits")

    class Wrong(Mosaic):
        amplifiers = Mosaic.amplifiers[:3] + (apocal.Amplifier(
            extension="AMP4", detector_section="[19:26,1:10]", name="amp4"),)

    with pytest.raises(FrameError, match=r"amp4: detector section \[19:26,1:10\] \(class\) "
                                         r"covers 8x10 pixels .* holds 6x10"):
        Wrong().process(path)

    class Partly(Mosaic):
        amplifiers = Mosaic.amplifiers[:3] + (apocal.Amplifier(extension="AMP4", name="amp4"),)

    with pytest.raises(FrameError, match="amp4 has no detector section while other "
                                         "amplifiers do"):
        Partly().process(path)


def test_a_gap_between_ccds_is_flagged_no_data(tmp_path):
    path, truth = write_mosaic(tmp_path / "mosaic.fits")

    class Gapped(Mosaic):   # the second CCD 3 columns further right
        amplifiers = Mosaic.amplifiers[:2] + (
            apocal.Amplifier(extension="AMP3", detector_section="[16:21,10:1]", name="amp3"),
            apocal.Amplifier(extension="AMP4", detector_section="[27:22,1:10]", name="amp4"))

    out = Gapped().process(path, overscan="rows", overscan_window=5)
    assert out.shape == (10, 27)
    assert np.all(out.flags[:, 12:15] == apocal.Flag.NO_DATA) and out.mask[:, 12:15].all()
    np.testing.assert_allclose(out.data[:, 15:], truth[:, 12:], atol=2e-3)
    assert not out.mask[:, :12].any() and not out.mask[:, 15:].any()


def test_single_extension_instruments_are_unchanged_by_a_detsec_card(tmp_path):
    # A DETSEC card is read only where an amplifier asks for it.
    values = _raw_values()
    path = write_raw(tmp_path / "frame.fits", image(values, 16, 32768, cards={
        "DETSEC": "[20:1,1:16]", "EXPTIME": 1.0, "IMAGETYP": "object"}))
    out = Plain().process(path, overscan="level")
    assert out.shape == (16, 20) and not out.flags[:, 0].any()
    assert out.flags[3, 4]   # not flipped
