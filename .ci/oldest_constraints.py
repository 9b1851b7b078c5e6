"""Pin every direct dependency of apocal at its floor: the oldest versions
pyproject.toml allows, for the second CI run.

    python .ci/oldest_constraints.py           # writes .ci/oldest-constraints.txt
    python .ci/oldest_constraints.py --check   # fails when that file is out of step

Every requirement of [project].dependencies and of the ``test`` extra must
state a floor (``>=``); a requirement without one is an error, so a new
dependency cannot slip in untested at its oldest. Requirements are simple
(``name>=X`` or ``name>=X,<Y``); anything else (markers, ``==``, URLs) is
refused rather than guessed at.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYPROJECT = HERE.parent / "pyproject.toml"
OUTPUT = HERE / "oldest-constraints.txt"
EXTRAS = ("test",)

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>!=~]=?\s*[0-9][0-9a-z.]*\s*,?\s*)+)$")


def floors(pyproject: Path = PYPROJECT) -> list[tuple[str, str]]:
    """(name, floor) of every direct dependency, in the order pyproject lists them."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in EXTRAS:
        requirements += project["optional-dependencies"][extra]
    result = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement.strip())
        if not match:
            raise SystemExit(f"{pyproject.name}: cannot read requirement {requirement!r} "
                             f"(expected name>=X[,<Y])")
        name, specifiers = match.groups()
        lower = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
        if len(lower) != 1:
            raise SystemExit(f"{pyproject.name}: {requirement!r} states no floor (>=)")
        result.append((name, lower[0]))
    return result


def constraints_text(pyproject: Path = PYPROJECT) -> str:
    lines = ["# The oldest versions pyproject.toml allows, made by .ci/oldest_constraints.py",
             "# from pyproject.toml: do not edit, run the script."]
    lines += [f"{name}=={floor}" for name, floor in floors(pyproject)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = constraints_text()
    if argv[1:] == ["--check"]:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(HERE.parent)} is out of step with pyproject.toml: "
                  f"run python .ci/oldest_constraints.py", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
