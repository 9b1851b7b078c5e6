"""Stacking: simulated sky and spectra with known truth and sub-pixel offsets,
masks, sigma clipping, files and the command line, and the real XO-1 frames."""

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.stats import sigma_clipped_stats
from astropy.tests.helper import assert_quantity_allclose
from astropy.wcs import WCS
from astropy.wcs.utils import pixel_to_pixel

import apocal
from apocal import CalibrationSet, Flag, FrameError
from apocal.cli import main
from apocal.instruments import SBO
from apocal.io import read_frame, write_frame
from apocal.night import Reduction
from apocal.stacking import measure_shifts

READ_NOISE = 5.0
# (x, y, peak e-) of smooth sources; sigma 3 px keeps bilinear interpolation
# errors well below the noise, so the analytic sky is the truth of the stack.
SOURCES = ((30, 40, 300.0), (70, 75, 250.0), (90, 30, 150.0))


def sky(x, y):
    """The true sky (e-) at position (x, y) in the reference frame's pixels."""
    image = 400.0 + 0.5 * x + 0.3 * y
    for x0, y0, peak in SOURCES:
        image = image + peak * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / 3.0 ** 2)
    return image


def tan_wcs(shape, dx=0.0, dy=0.0):
    """A 1"/pixel TAN WCS for a frame whose pixel (x, y) sees reference pixel (x - dx, y - dy)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [240.55, 28.18]
    wcs.wcs.cdelt = [-1 / 3600, 1 / 3600]
    wcs.wcs.crpix = [shape[1] / 2 + dx, shape[0] / 2 + dy]
    return wcs


def sky_frames(n=6, shape=(128, 128), seed=1, noise=True, truth=sky, exptime=60.0):
    """Frames of one sky at known sub-pixel offsets (the first at none)."""
    rng = np.random.default_rng(seed)
    offsets = [(0.0, 0.0)] + [tuple(rng.uniform(-4, 4, 2)) for _ in range(n - 1)]
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    frames = []
    for index, (dx, dy) in enumerate(offsets):
        expected = truth(xx - dx, yy - dy)
        variance = expected + READ_NOISE ** 2
        data = expected + (rng.standard_normal(shape) * np.sqrt(variance) if noise else 0)
        frames.append(CCDData(data.astype(np.float32), unit=u.electron, wcs=tan_wcs(shape, dx, dy),
                              uncertainty=StdDevUncertainty(np.sqrt(variance).astype(np.float32)),
                              flags=np.zeros(shape, np.uint16),
                              meta={"EXPTIME": exptime, "RAWFILE": f"sky{index + 1}.fits"}))
    return frames, np.array(offsets)


def copy(frame):
    """A copy of a frame, flags included (CCDData.copy shares them)."""
    new = frame.copy()
    new.flags = None if frame.flags is None else frame.flags.copy()
    return new


def interior(result, n, margin=8):
    good = (result.coverage == n) & ~result.image.mask
    good[:margin] = good[-margin:] = False
    good[:, :margin] = good[:, -margin:] = False
    return good


def pulls(result, truth, good):
    return (result.image.data[good] - truth[good]) / result.image.uncertainty.array[good]


@pytest.fixture(scope="module")
def sim():
    return sky_frames()


# ----------------------------------------------------------------------
# Simulated sky with known truth
# ----------------------------------------------------------------------
def test_stack_recovers_the_sky_within_its_uncertainty(sim):
    frames, offsets = sim
    result = apocal.stack(frames)
    yy, xx = np.mgrid[0:128, 0:128].astype(float)
    good = interior(result, len(frames))
    assert good.sum() > 0.6 * good.size
    p = pulls(result, sky(xx, yy), good)
    assert abs(p.mean()) < 0.05 and 0.9 < p.std() < 1.1
    assert abs(p.std() - 1) < 0.03                  # measured: 1.004
    # the offsets were recovered from the WCS
    np.testing.assert_allclose(result.offsets, offsets, atol=1e-6)
    image = result.image
    assert image.unit == u.electron and image.data.dtype == np.float32
    assert image.header["NCOMBINE"] == 6 and image.header["STKPROJ"] == "interp"
    assert image.wcs.has_celestial and result.exposure[good].max() == 360.0


@pytest.mark.parametrize("projection", ["interp", "adaptive", "exact"])
def test_uncertainty_is_the_scatter_of_each_resampled_pixel(projection):
    # Against the stack of the same frames without noise, the pull measures
    # the uncertainty alone: sum W^2 var, not the reprojected variance.
    frames, _ = sky_frames(n=4, shape=(96, 96), seed=2)
    clean, _ = sky_frames(n=4, shape=(96, 96), seed=2, noise=False)
    noisy = apocal.stack(frames, projection=projection)
    truth = apocal.stack(clean, projection=projection)
    good = interior(noisy, 4, margin=6)
    p = pulls(noisy, truth.image.data, good)
    # measured std: 1.006 interp and exact, 1.025 adaptive
    assert abs(p.mean()) < 0.05 and 0.95 < p.std() < 1.05
    # what the uncertainty would be from the reprojected variance: too large
    assert np.median(noisy.image.uncertainty.array[good]) < 0.9 * np.median(
        frames[0].uncertainty.array[good]) / 2


def test_noise_drops_as_one_over_sqrt_n():
    flat = lambda x, y: np.full(np.shape(x), 400.0)   # noqa: E731
    frames, _ = sky_frames(n=6, shape=(256, 256), seed=3, truth=flat)
    result = apocal.stack(frames)
    good = interior(result, 6, margin=16)
    residual = result.image.data - 400.0
    singles = [f.data - 400.0 for f in frames]

    def block_noise(image, size=16):   # noise of sums over 16x16 pixels
        core = image[16:240, 16:240]
        return core.reshape(14, size, 14, size).sum(axis=(1, 3)).std()

    ratio = block_noise(residual) / np.mean([block_noise(s) for s in singles])
    assert ratio == pytest.approx(1 / np.sqrt(6), rel=0.15)      # measured 0.40 for 0.41
    # pixel by pixel the noise drops further (interpolation averages
    # neighbours), and the uncertainty says by how much
    per_pixel = residual[good].std() / np.mean([s[good].std() for s in singles])
    assert per_pixel < 0.8 / np.sqrt(6)
    assert residual[good].std() == pytest.approx(
        np.sqrt(np.mean(result.image.uncertainty.array[good] ** 2)), rel=0.03)


def test_frames_of_other_exposures_are_scaled_and_weighted(sim):
    frames, _ = sim
    long = copy(frames[1])
    long.data = long.data * 2
    long.uncertainty = StdDevUncertainty(long.uncertainty.array * 2)
    long.meta["EXPTIME"] = 120.0
    result = apocal.stack([frames[0], long, *frames[2:]])
    reference = apocal.stack(frames)
    good = interior(result, 6)
    assert_quantity_allclose(result.image.data[good] * result.image.unit,
                             reference.image.data[good] * reference.image.unit, rtol=1e-5)
    assert result.exposure[good].max() == 420.0
    # one weight per frame from its median variance: the same for a scaled copy
    np.testing.assert_allclose(result.weights, reference.weights, rtol=1e-5)


# ----------------------------------------------------------------------
# Masks, flags, sigma clipping
# ----------------------------------------------------------------------
def test_masked_pixels_are_left_out(sim):
    frames, _ = sim
    frames = [copy(f) for f in frames]
    frames[2].data[60:64, 50:54] = 1e6                       # a bad patch, flagged
    frames[2].flags[60:64, 50:54] = Flag.BAD_PIXEL
    # the same sky position masked in every frame: no data there
    for frame, (dx, dy) in zip(frames, sim[1]):
        x, y = int(round(20 + dx)), int(round(100 + dy))
        frame.flags[y - 1:y + 2, x - 1:x + 2] |= np.uint16(Flag.SATURATED)
    result = apocal.stack(frames)
    yy, xx = np.mgrid[0:128, 0:128].astype(float)
    x2, y2 = pixel_to_pixel(frames[2].wcs, result.image.wcs, 51.5, 61.5)
    near = (slice(int(y2) - 1, int(y2) + 2), slice(int(x2) - 1, int(x2) + 2))
    assert np.all(result.coverage[near] == 5)
    p = (result.image.data[near] - sky(xx, yy)[near]) / result.image.uncertainty.array[near]
    assert np.all(np.abs(p) < 4)
    assert result.coverage[100, 20] == 0
    assert result.image.flags[100, 20] & Flag.NO_DATA and result.image.flags[100, 20] & Flag.SATURATED
    assert np.isfinite(result.image.data[100, 20])
    assert result.image.mask[100, 20] and not result.image.mask[near].any()


def test_sigma_clipping_removes_a_satellite_trail(sim):
    frames, offsets = sim
    frames = [copy(f) for f in frames]
    yy, xx = np.mgrid[0:128, 0:128].astype(float)
    dx, dy = offsets[3]
    # a trail 3 pixels wide, 600 e- (about 28 sigma), unflagged, in frame 4 only
    trail = np.abs((yy - dy) - (0.6 * (xx - dx) + 20)) < 1.5
    frames[3].data = frames[3].data + np.where(trail, 600.0, 0.0).astype(np.float32)
    on = np.abs(yy - (0.6 * xx + 20)) < 1.0            # its core on the reference grid
    truth = sky(xx, yy)

    plain = apocal.stack(frames)
    clipped = apocal.stack(frames, sigma_clip=4)
    core = interior(plain, 6) & on
    assert core.sum() > 100
    assert np.median(pulls(plain, truth, core)) > 5            # the trail is in the plain stack
    p = pulls(clipped, truth, core)
    assert abs(np.median(p)) < 0.5 and np.abs(p).max() < 5
    off = pulls(clipped, truth, interior(clipped, 6) & ~on)
    assert 0.9 < off.std() < 1.1
    assert clipped.image.header["STKR004"] > 200 and clipped.image.header["STKR001"] < 20
    assert clipped.image.header["STKCLIP"] == "4,4"


# ----------------------------------------------------------------------
# 2-D spectra: shifts along the slit
# ----------------------------------------------------------------------
SPATIAL, DISPERSION = 120, 300


def spectrum(shift):
    y = np.arange(SPATIAL)[:, None]
    x = np.arange(DISPERSION)[None, :]
    continuum = 200 + 150 * np.sin(x / 40.0) ** 2
    trace = continuum * np.exp(-0.5 * ((y - 55.3 - shift - 0.01 * x) / 2.2) ** 2)
    sky_line = 300 * np.exp(-0.5 * ((x - 150) / 1.5) ** 2)
    return trace + 80 + sky_line + 0 * y


def spectra(shifts, seed=5):
    rng = np.random.default_rng(seed)
    frames = []
    for shift in shifts:
        expected = spectrum(shift)
        variance = expected + READ_NOISE ** 2
        data = expected + rng.standard_normal(expected.shape) * np.sqrt(variance)
        frames.append(CCDData(data.astype(np.float32), unit=u.electron,
                              uncertainty=StdDevUncertainty(np.sqrt(variance).astype(np.float32)),
                              meta={"EXPTIME": 300.0}))
    return frames


def test_spatial_shifts_are_measured_and_spectra_stacked():
    true = [0.0, 0.37, -1.62, 2.85, 5.5]
    frames = spectra(true)
    measured = measure_shifts(frames, spatial_axis=0)
    assert np.all(np.abs(measured - true) < 0.05)                # measured: within 0.01
    result = apocal.stack(frames, spatial_axis=0)
    assert result.projection == "shift" and result.image.wcs is None
    np.testing.assert_allclose(result.offsets, measured)
    good = result.coverage == 5
    assert good[10:110].all()
    p = pulls(result, spectrum(0.0), good)
    assert abs(p.mean()) < 0.05 and 0.95 < p.std() < 1.05
    # given shifts are used as they are, along either axis
    given = apocal.stack(frames, shifts=true, spatial_axis=0)
    np.testing.assert_array_equal(given.offsets, true)
    turned = [CCDData(f.data.T.copy(), unit=f.unit, uncertainty=StdDevUncertainty(
        f.uncertainty.array.T.copy()), meta=f.meta) for f in frames]
    across = apocal.stack(turned, spatial_axis=1)
    np.testing.assert_allclose(across.offsets, measured, atol=1e-6)
    np.testing.assert_allclose(across.image.data.T, result.image.data, rtol=1e-5)


def test_spectra_of_another_shape_or_without_an_axis():
    frames = spectra([0.0, 1.0])
    small = frames[1][:100]
    small.meta["RAWFILE"] = "short.fits"
    with pytest.raises(FrameError, match=r"short\.fits: shape \(100, 300\) differs"):
        apocal.stack([frames[0], small], spatial_axis=0)
    with pytest.raises(FrameError, match="no celestial WCS.*spatial_axis="):
        apocal.stack(frames)
    with pytest.raises(ValueError, match="spatial_axis must be 0 or 1"):
        apocal.stack(frames, shifts=[0, 1])
    with pytest.raises(ValueError, match="adaptive.*celestial WCS"):
        apocal.stack(frames, spatial_axis=0, projection="adaptive")


# ----------------------------------------------------------------------
# Grids, bad input, files
# ----------------------------------------------------------------------
def test_optimal_grid_covers_every_frame(sim):
    frames, _ = sim
    first = apocal.stack(frames[:3])
    optimal = apocal.stack(frames[:3], reference="optimal")
    assert (optimal.coverage > 0).sum() > (first.coverage > 0).sum()
    outside = optimal.coverage == 0               # corners no frame reaches
    assert outside.any() and np.isnan(optimal.image.data[outside]).all()
    assert np.all(optimal.image.flags[outside] & Flag.NO_DATA)
    with pytest.raises(ValueError, match="reference must be"):
        apocal.stack(frames, reference="best")


def test_bad_frames_are_named(sim, tmp_path):
    frames, _ = sim
    plain = CCDData(frames[1].data, unit=u.electron, wcs=frames[1].wcs, meta={"RAWFILE": "x.fits"})
    with pytest.raises(FrameError, match=r"x\.fits: has no standard-deviation uncertainty"):
        apocal.stack([frames[0], plain])
    adu = copy(frames[1])
    adu.unit = u.adu
    with pytest.raises(FrameError, match=r"sky2\.fits: unit adu differs from electron"):
        apocal.stack([frames[0], adu])
    (tmp_path / "junk.fits").write_text("not fits")
    with pytest.raises(FrameError, match="junk.fits: cannot be read"):
        apocal.stack([frames[0], tmp_path / "junk.fits"])
    with pytest.raises(ValueError, match="projection must be one of"):
        apocal.stack(frames, projection="lanczos")
    with pytest.raises(ValueError, match="three frames or more"):
        apocal.stack(frames[:2], sigma_clip=3)


def test_write_read_and_refuse_to_overwrite(sim, tmp_path):
    frames, _ = sim
    paths = []
    for index, frame in enumerate(frames[:3]):
        paths.append(write_frame(frame, tmp_path / f"f{index}.fits"))
    result = apocal.stack(paths)                     # files written by apocal
    assert result.names == [str(p) for p in paths]
    out = result.write(tmp_path / "stack.fits")
    with fits.open(out) as hdul:
        assert [h.name for h in hdul][1:] == ["UNCERT", "MASK", "FLAGS", "COVERAGE", "EXPOSURE"]
        assert hdul["COVERAGE"].data.max() == 3 and hdul["EXPOSURE"].data.max() == 180.0
        assert hdul[0].header["CTYPE1"] == "RA---TAN" and hdul[0].header["NCOMBINE"] == 3
        assert hdul[0].header["IMCMB002"] == "f1.fits"
    back = read_frame(out)
    np.testing.assert_array_equal(back.data, result.image.data)
    np.testing.assert_array_equal(back.uncertainty.array, result.image.uncertainty.array)
    stamp = out.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=True"):
        result.write(out)
    assert out.stat().st_mtime_ns == stamp
    result.write(out, overwrite=True)
    import matplotlib

    matplotlib.use("Agg")
    ax = result.plot()
    assert "stack of 3 frames" in ax.get_title()


def test_command_line(sim, tmp_path, capsys):
    frames, _ = sim
    paths = [str(write_frame(f, tmp_path / f"f{i}.fits")) for i, f in enumerate(frames[:4])]
    out = tmp_path / "stack.fits"
    assert main(["stack", *paths, "-o", str(out), "--sigma-clip", "5"]) == 0
    assert "stacked 4 frames" in capsys.readouterr().err
    assert read_frame(out).header["STKCLIP"] == "5,5"
    assert main(["stack", *paths, "-o", str(out)]) == 1                 # exists
    assert "exists" in capsys.readouterr().err
    (tmp_path / "junk.fits").write_text("not fits")
    assert main(["stack", paths[0], str(tmp_path / "junk.fits"), "-o", str(tmp_path / "o.fits")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"apocal: error: {tmp_path / 'junk.fits'}: ") and "\n" not in err
    assert main(["stack", *paths[:2], "-o", str(tmp_path / "o.fits"), "--sigma-clip", "3"]) == 1
    assert "three frames or more" in capsys.readouterr().err


def test_reduction_stacks_its_frames_by_target(sim, tmp_path):
    frames, _ = sim
    science = []
    for index, frame in enumerate(frames[:4]):
        frame = copy(frame)
        frame.meta["OBJECT"] = "XO-1" if index < 3 else "flat field"
        name = f"calibrated/g/f{index}_cal.fits"
        write_frame(frame, tmp_path / name)
        science.append({"output": name})
    night = Reduction(tmp_path, {"groups": [{"science": science}]})
    result = night.stack("xo-1")
    assert len(result.names) == 3 and result.coverage.max() == 3
    with pytest.raises(apocal.ApocalError, match=r"several targets \(XO-1, flat field\)"):
        night.stack()
    with pytest.raises(apocal.ApocalError, match=r"no calibrated frame of 'M31'"):
        night.stack("M31")


def test_calibration_set_stacks_raw_spectra_along_the_slit(tmp_path):
    from apocal.instruments import KOSMOS
    from apocal.simulate import simulate

    sim = simulate(KOSMOS(), tmp_path, binning=(8, 8), bias=3, flat=3, arc=0, science=3, seed=9)
    cal = CalibrationSet(sim.instrument).add_biases(sim["bias"]).add_flats(sim["flat"])
    first = cal.calibrate(sim["science"][0])
    result = cal.stack([first, *sim["science"][1:]])       # calibrated and raw frames
    assert result.projection == "shift" and len(result.names) == 3
    assert np.all(np.abs(result.offsets) < 0.05)             # one pointing: no shift
    assert result.image.header["IMCMB002"] == sim["science"][1].name
    # along the slit is across KOSMOS's dispersion axis (0): numpy axis 1
    assert result.image.header["STKAXIS"] == 1
    with pytest.raises(ValueError, match="spatial_axis must be 0 or 1"):
        cal.stack(sim["science"], spatial_axis=2)


# ----------------------------------------------------------------------
# Real frames: six plate-solved 60 s z-band exposures of XO-1 (ARCSAT)
# ----------------------------------------------------------------------
def _centroid(data, x, y, half=7):
    """First moment and rms width (pixels) of a star near (x, y)."""
    x, y = int(round(float(x))), int(round(float(y)))
    background = np.median(data[y - 20:y + 21, x - 20:x + 21])
    box = np.clip(data[y - half:y + half + 1, x - half:x + half + 1] - background, 0, None)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    cx, cy = (box * xx).sum() / box.sum(), (box * yy).sum() / box.sum()
    width = np.sqrt((box * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / box.sum() / 2)
    return x + cx, y + cy, width


def test_xo1_frames_calibrate_and_stack(shared_data):
    from scipy.ndimage import gaussian_filter

    folder = shared_data / "arcsat-2025"
    # gain and read noise measured from this night (see test_calibration)
    cal = (CalibrationSet(SBO(gain=1.336, read_noise=16.2))
           .add_biases(sorted(folder.glob("Bias_*.fits")))
           .add_darks(sorted(folder.glob("Dark_*.fits")))
           .add_flats(sorted(folder.glob("domeflat_z_*.fits"))))
    lights = [cal.calibrate(p) for p in sorted(folder.glob("XO1-b_z_*.fits"))]
    result = cal.stack(lights)
    image = result.image
    assert image.shape == (1024, 1024) and result.coverage.max() == 6
    # the pointing wandered by several pixels: offsets from the plate solutions
    assert np.abs(result.offsets).max() > 5
    full = result.coverage == 6

    # the brightest source: one star at one place, not doubled
    smooth = gaussian_filter(np.where(full, image.data, 0), 2)
    smooth[:30], smooth[-30:], smooth[:, :30], smooth[:, -30:] = 0, 0, 0, 0
    y, x = np.unravel_index(np.argmax(smooth), smooth.shape)
    sx, sy, width = _centroid(image.data, x, y)
    widths = []
    for light in lights:
        wcs = light.wcs          # calibrated frames carry the plate solution in CCDData.wcs
        assert "CTYPE1" not in light.header
        fx, fy = pixel_to_pixel(image.wcs, wcs, sx, sy)
        cx, cy, w = _centroid(light.data, fx, fy)
        bx, by = pixel_to_pixel(wcs, image.wcs, cx, cy)
        assert np.hypot(bx - sx, by - sy) < 1.0            # measured: 0.27 to 0.88 px
        widths.append(w)
    assert width < 1.15 * np.mean(widths)                 # as sharp as a single frame

    # background noise: single frame against stack
    _, _, single = sigma_clipped_stats(lights[0].data, mask=lights[0].mask | ~full, sigma=3)
    _, _, stacked = sigma_clipped_stats(image.data, mask=image.mask | ~full, sigma=3)
    ratio = stacked / single
    # pixel by pixel it drops by more than sqrt(6) (interpolation averages
    # neighbours; measured 0.334 for 1/sqrt(6) = 0.408), as the uncertainty says
    assert 0.28 < ratio < 1.05 / np.sqrt(6)
    assert stacked == pytest.approx(np.median(image.uncertainty.array[full & ~image.mask]),
                                    rel=0.15)
