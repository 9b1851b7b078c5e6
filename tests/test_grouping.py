from apocal.grouping import group_frames
from apocal.instruments import DISRed, SBO
from apocal.simulate import simulate
from apocal.survey import survey


def test_two_gratings_get_their_own_flats_and_share_the_biases(tmp_path):
    simulate(DISRed(), tmp_path, binning=(8, 8), bias=3, flat=2, arc=1, science=1, truth="a")
    simulate(DISRed(), tmp_path, binning=(8, 8), bias=0, flat=2, arc=1, science=1,
             config={"GRATING": "R1200"}, first_number=20, prefix="hi-", truth="b")
    groups = group_frames(survey(tmp_path))
    assert [g.configuration["grating"] for g in groups] == ["R1200", "R300"]
    low, high = groups[1], groups[0]
    assert {f.name for f in high.flats} == {"hi-flat.0020r.fits", "hi-flat.0021r.fits"}
    assert all(f.name.startswith("flat") for f in low.flats)
    assert len(low.biases) == len(high.biases) == 3
    assert low.label == "dis-red_8x8_R300_7500.0" and low.label != high.label


def test_two_binnings_get_separate_biases(tmp_path):
    simulate(SBO(), tmp_path, binning=(4, 4), bias=2, flat=2, science=1, truth="a")
    simulate(SBO(), tmp_path, binning=(8, 8), bias=3, flat=2, science=1, first_number=50,
             truth="b")
    groups = group_frames(survey(tmp_path))
    assert [(g.binning, len(g.biases), len(g.flats)) for g in groups] == [("4x4", 2, 2),
                                                                          ("8x8", 3, 2)]


def test_arcs_of_another_slit_are_used_with_a_note(shared_data):
    from .kast import KastRed

    groups = group_frames(survey(shared_data / "kast-red", KastRed()))
    assert len(groups) == 1
    group = groups[0]
    assert group.configuration["slit"] == "2.0 arcsec"
    assert [f.name for f in group.arcs] == ["r124.fits.gz"]
    assert "differ only in slit" in group.notes[0]
    assert len(group.science) == 5 and len(group.flats) == 3 and len(group.biases) == 3
