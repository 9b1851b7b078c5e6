import gzip
import os
import shutil

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from apocal.exceptions import FrameError
from apocal.flags import Flag
from apocal.io import RawImage, atomic_write_bytes, read_frame, read_raw, write_frame


@pytest.mark.parametrize("dtype, bitpix", [(np.int16, 16), (np.int32, 32), (np.float32, -32),
                                           (np.uint16, 16)])
def test_read_raw_handles_bitpix_and_bzero(tmp_path, dtype, bitpix):
    values = np.array([[0, 1, 2], [40000 if dtype == np.uint16 else 3, 5, 65535 if dtype in (np.uint16, np.int32) else 7]])
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(values.astype(dtype)).writeto(path)
    assert fits.getheader(path)["BITPIX"] == bitpix
    data, header = read_raw(path)
    np.testing.assert_array_equal(data, values.astype(np.float64))
    assert data.dtype == np.float32


def test_read_raw_gzip_and_multi_extension(tmp_path):
    image = np.arange(12, dtype=np.int16).reshape(3, 4)
    path = tmp_path / "mef.fits"
    primary = fits.PrimaryHDU()
    primary.header["OBSERVER"] = "someone"
    fits.HDUList([primary, fits.ImageHDU(image, name="SCI")]).writeto(path)
    with open(path, "rb") as raw, gzip.open(tmp_path / "mef.fits.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    data, header = read_raw(tmp_path / "mef.fits.gz")
    np.testing.assert_array_equal(data, image)
    assert header["OBSERVER"] == "someone"       # primary cards kept
    data, _ = read_raw(path, extension="SCI")
    np.testing.assert_array_equal(data, image)


def test_read_raw_errors_name_the_file_and_the_problem(tmp_path):
    text = tmp_path / "notes.fits"
    text.write_text("this is not a FITS file" * 200)
    with pytest.raises(FrameError, match=r"notes\.fits: .*not a FITS file"):
        read_raw(text)

    whole = tmp_path / "whole.fits"
    fits.PrimaryHDU(np.zeros((200, 200), dtype=np.int32)).writeto(whole)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(whole.read_bytes()[: 2880 * 10])
    with pytest.raises(FrameError, match=r"cut\.fits: .*truncated"):
        read_raw(cut)

    nan = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((4, 4), np.nan, dtype=np.float32)).writeto(nan)
    with pytest.raises(FrameError, match=r"nan\.fits: has no finite pixel"):
        read_raw(nan)

    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4), dtype=np.int16)).writeto(cube)
    with pytest.raises(FrameError, match=r"cube\.fits: holds a 3-D array"):
        read_raw(cube)

    with pytest.raises(FrameError, match="no such file"):
        read_raw(tmp_path / "missing.fits")


def test_read_raw_leaves_the_file_untouched(tmp_path):
    path = tmp_path / "raw.fits"
    fits.PrimaryHDU(np.ones((5, 5), dtype=np.uint16)).writeto(path)
    before, mtime = path.read_bytes(), os.stat(path).st_mtime_ns
    read_raw(path)
    assert path.read_bytes() == before and os.stat(path).st_mtime_ns == mtime


def _product():
    rng = np.random.default_rng(0)
    flags = np.zeros((6, 5), dtype=np.uint16)
    flags[1, 2] = Flag.SATURATED | Flag.NONLINEAR
    ccd = CCDData(rng.normal(size=(6, 5)).astype(np.float32), unit=u.electron,
                  uncertainty=StdDevUncertainty(np.full((6, 5), 2.0, np.float32)),
                  mask=flags != 0, flags=flags, meta={"OBJECT": "test"})
    return ccd


def test_write_and_read_back_a_product(tmp_path):
    ccd = _product()
    path = write_frame(ccd, tmp_path / "out.fits")
    back = read_frame(path)
    np.testing.assert_array_equal(back.data, ccd.data)
    np.testing.assert_array_equal(back.uncertainty.array, ccd.uncertainty.array)
    np.testing.assert_array_equal(back.mask, ccd.mask)
    np.testing.assert_array_equal(back.flags, ccd.flags)
    assert back.unit == u.electron and back.header["OBJECT"] == "test"
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "UNCERT", "MASK", "FLAGS"]
        assert hdul["FLAGS"].header["BIT2"] == "SATURATED"


def test_write_refuses_to_overwrite_unless_asked(tmp_path):
    path = write_frame(_product(), tmp_path / "out.fits")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="out.fits"):
        write_frame(_product(), path)
    assert path.read_bytes() == before
    write_frame(_product(), path, overwrite=True)


def test_atomic_write_leaves_nothing_behind_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"

    def broken_link(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_raw_image_rows_match_read_raw(tmp_path, dtype):
    values = np.random.default_rng(4).uniform(0, 250, (37, 23)).astype(dtype)
    path = tmp_path / "frame.fits"
    fits.PrimaryHDU(values).writeto(path)
    image = RawImage(path)
    whole, header = read_raw(path)
    assert image.shape == (37, 23) and image.header["NAXIS1"] == 23
    np.testing.assert_array_equal(image.rows(0, 37), whole)
    np.testing.assert_array_equal(image.rows(5, 9, columns=slice(3, 8)), whole[5:9, 3:8])
    out = np.empty((2, 23), image.dtype)
    assert image.rows(30, 32, out=out) is out
    # float32 holds every 8- and 16-bit integer exactly, not every 32-bit one
    assert image.dtype == (np.float64 if dtype in (np.float64, np.int32) else np.float32)
    np.testing.assert_array_equal(out, whole[30:32])


def test_raw_image_reads_gzip_and_extensions_and_leaves_the_file_untouched(tmp_path):
    image = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) + 30000
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI")]).writeto(path)
    packed = tmp_path / "mef.fits.gz"
    with open(path, "rb") as raw, gzip.open(packed, "wb") as out:
        shutil.copyfileobj(raw, out)
    before = packed.read_bytes()
    for source in (RawImage(packed), RawImage(path, extension="SCI")):
        np.testing.assert_array_equal(source.rows(3, 7), image[3:7])
    assert packed.read_bytes() == before


def test_raw_image_names_a_truncated_file(tmp_path):
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(np.zeros((200, 200), np.int32)).writeto(path)
    path.write_bytes(path.read_bytes()[:2880 * 10])
    with pytest.raises(FrameError, match="cut.fits.*truncated"):
        RawImage(path)
