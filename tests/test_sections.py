import pytest

from apocal.sections import Section, parse_section


def test_fits_section_is_one_based_inclusive_x_first():
    section = parse_section("[1:1024,1:4096]")
    assert (section.x1, section.x2, section.y1, section.y2) == (1, 1024, 1, 4096)
    assert section.shape == (4096, 1024)
    assert section.slices == (slice(0, 4096), slice(0, 1024))


def test_slices_select_exactly_the_named_pixels():
    import numpy as np

    image = np.arange(10 * 20).reshape(10, 20)  # 10 rows, 20 columns
    cut = image[parse_section("[3:5,2:4]").slices]
    # columns 3..5 (0-based 2..4), rows 2..4 (0-based 1..3)
    assert cut.shape == (3, 3)
    assert cut[0, 0] == image[1, 2] and cut[-1, -1] == image[3, 4]


def test_star_means_whole_axis_and_needs_shape():
    assert parse_section("[*,11:20]", shape=(100, 50)) == Section(1, 50, 11, 20)
    with pytest.raises(ValueError, match="needs the image shape"):
        parse_section("[*,11:20]")


@pytest.mark.parametrize("text", ["1:10,1:10", "[0:10,1:5]", "[10:1,1:5]", "[a:b,1:2]", ""])
def test_malformed_sections_are_rejected(text):
    with pytest.raises(ValueError):
        parse_section(text)


@pytest.mark.parametrize("binning, expected", [
    ((1, 2), ("[1:1024,1:2048]", "[1025:2048,1:2048]")),
    ((2, 1), ("[1:512,1:4096]", "[513:1024,1:4096]")),
    ((2, 2), ("[1:512,1:2048]", "[513:1024,1:2048]")),
])
def test_binning_matches_kosmos_class_code(binning, expected):
    left = parse_section("[1:1024,1:4096]").binned(binning)
    right = parse_section("[1025:2048,1:4096]").binned(binning)
    assert (str(left), str(right)) == expected


def test_binned_overscan_keeps_only_whole_binned_pixels():
    # Binned by 4, pixel k sums unbinned columns 4k-3..4k. Pixel 514 sums
    # 2053..2056, partly outside [2056:2088], so the region starts at 515.
    section = parse_section("[2056:2088,1:4096]").binned((4, 4))
    assert (section.x1, section.x2) == (515, 522)
    assert (section.y1, section.y2) == (1, 1024)


def test_fits_in():
    assert parse_section("[1:20,1:10]").fits_in((10, 20))
    assert not parse_section("[1:21,1:10]").fits_in((10, 20))
