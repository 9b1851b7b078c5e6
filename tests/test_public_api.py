"""What ``import apocal`` offers: the public names, nothing leaked, and the
``apocal.simulate`` function beside the ``apocal.simulate`` module."""

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import apocal


def _public(namespace):
    return {name for name, value in vars(namespace).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)}


def test_the_namespace_holds_what_all_lists_and_nothing_else():
    listed = {name for name in apocal.__all__ if not name.startswith("_")}
    assert _public(apocal) == listed - {"instruments"}
    assert isinstance(apocal.instruments, types.ModuleType)
    for leaked in ("version", "PackageNotFoundError"):
        assert not hasattr(apocal, leaked)
    assert isinstance(apocal.__version__, str)


def test_reduce_night_and_simulate_from_the_top():
    from apocal.night import reduce_night
    from apocal.simulate import simulate

    assert apocal.reduce_night is reduce_night
    assert apocal.simulate is simulate and isinstance(apocal.simulate, types.FunctionType)
    assert {"reduce_night", "simulate"} <= set(apocal.__all__)


def test_the_simulate_module_stays_importable_by_name():
    module = importlib.import_module("apocal.simulate")
    assert isinstance(module, types.ModuleType)
    assert module is sys.modules["apocal.simulate"]
    assert module.simulate is apocal.simulate
    from apocal.simulate import SimulatedNight, Truth  # names only the module has

    assert SimulatedNight.__module__ == Truth.__module__ == "apocal.simulate"


@pytest.mark.parametrize("code", [
    # what tests, docs and the notebook do, first thing in a new interpreter
    "from apocal.simulate import simulate, Truth\n"
    "import apocal\n"
    "assert apocal.simulate is simulate",
    # importing the module by its dotted name leaves the function in place
    "import apocal.simulate\n"
    "import types\n"
    "assert isinstance(apocal.simulate, types.FunctionType)\n"
    "import sys\n"
    "assert sys.modules['apocal.simulate'].Truth",
    # 'import a.b as c' binds the attribute a.b (Python >= 3.7): the function
    "import apocal.simulate as s\n"
    "import types\n"
    "assert isinstance(s, types.FunctionType)",
])
def test_in_a_new_interpreter(code):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0, result.stderr


def test_py_typed_is_installed_with_the_package():
    assert (Path(apocal.__file__).parent / "py.typed").is_file()
