"""The supported window of each core dependency, read from pyproject.toml, for the CI lanes (.ci/lane.sh).

python .ci/windows.py lower     pip constraints: every core dependency at the lower end of its window
python .ci/windows.py names     the core dependencies' names
python .ci/windows.py versions  the installed versions of the core dependencies, one `name==version` a line
"""

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)\s*(.*)$")


def windows() -> dict[str, str]:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    return dict(REQUIREMENT.match(r).groups() for r in project["dependencies"])


def lower_bound(specifier: str) -> str:
    bounds = [s.strip()[2:] for s in specifier.split(",") if s.strip().startswith(">=")]
    if len(bounds) != 1:
        raise SystemExit(f"no single lower bound (>=) in {specifier!r}: state one in pyproject.toml")
    return bounds[0]


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "lower":
        print("\n".join(f"{name}=={lower_bound(spec)}" for name, spec in windows().items()))
    elif mode == "names":
        print(" ".join(windows()))
    elif mode == "versions":
        print("\n".join(f"{name}=={metadata.version(name)}" for name in windows()))
    else:
        raise SystemExit(__doc__)
