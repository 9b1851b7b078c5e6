"""Shared fixtures: the real frames in ``../shared/data`` and simulated nights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from apocal.instruments import KOSMOS, SBO, DISBlue, DISRed
from apocal.simulate import simulate

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Name apocal's own version in pytest-astropy-header's header (the
    packages it lists are set in pyproject.toml)."""
    try:
        from pytest_astropy_header.display import TESTED_VERSIONS
    except ImportError:        # the plugin comes with the test extras
        return
    import apocal

    TESTED_VERSIONS["apocal"] = apocal.__version__


def _shared_data() -> Path:
    return Path(os.environ.get("APOCAL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real raw frames; tests needing it skip when it is absent."""
    path = _shared_data()
    if not (path / "arcsat-2025").is_dir() or not (path / "kast-red").is_dir():
        pytest.skip(f"real frames not found at {path} (a user's clone has no ../shared; "
                    f"set APOCAL_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def night(tmp_path_factory):
    """A simulated night per built-in instrument, binned 4x4, built once."""
    cache = {}

    def make(name, **options):
        key = (name, repr(sorted(options.items())))
        if key not in cache:
            instrument = {"kosmos": KOSMOS, "dis-red": DISRed, "dis-blue": DISBlue,
                          "sbo": SBO}[name]()
            folder = tmp_path_factory.mktemp(name)
            settings = {"binning": (4, 4), "seed": 7}
            settings.update(options)
            cache[key] = simulate(instrument, folder, **settings)
        return cache[key]

    return make
