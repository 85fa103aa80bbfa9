"""The supported window of each core dependency, read from pyproject.toml, for the CI lanes (.ci/lane.sh).

python .ci/windows.py lower     pip constraints: every core dependency at the lower end of its window
python .ci/windows.py names     the core dependencies' names
python .ci/windows.py versions  the installed versions of the core dependencies, one `name==version` a line
python .ci/windows.py unreached newer releases of the core dependencies than those installed, which pip could not
                                install here, each with pip's reason (lane "beyond": a release whose own
                                requirements this registry cannot meet would otherwise go unseen)
"""

import re
import subprocess
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


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)  # fmt: skip


def unreached() -> list[str]:
    """One line for each core dependency whose newest release on the registry is not the one installed."""
    from packaging.version import Version  # pip's dependency, present in every lane

    lines = []
    for name in windows():
        listed = re.search(r"\((\S+)\)", pip("index", "versions", name).stdout)  # "transformers (5.25.0)"
        installed = metadata.version(name)
        if not listed or Version(listed.group(1)) <= Version(installed):
            continue
        trial = pip("install", "--dry-run", f"{name}=={listed.group(1)}")
        reason = why_not(trial.stdout + trial.stderr)
        lines.append(f"{name} {listed.group(1)} is released; this lane has {installed}: {reason}")
    return lines


def why_not(pip_output: str) -> str:
    """pip's reason, in one line, for not installing a release."""
    missing = re.search(r"Could not find a version that satisfies the requirement ([^\n]*?)( \(from versions|\n)",
                        pip_output)  # fmt: skip
    if missing:  # a requirement of the release that this registry does not have
        return f"not installable here, it requires {missing.group(1)}"
    conflict = re.search(r"The conflict is caused by:\n((?:    .*\n)+)", pip_output)
    if conflict:  # e.g. a constraint file of this machine
        return "not installable here: " + "; ".join(line.strip() for line in conflict.group(1).splitlines())
    return "installable alone; pip chose the older one to satisfy another package"


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "lower":
        print("\n".join(f"{name}=={lower_bound(spec)}" for name, spec in windows().items()))
    elif mode == "names":
        print(" ".join(windows()))
    elif mode == "versions":
        print("\n".join(f"{name}=={metadata.version(name)}" for name in windows()))
    elif mode == "unreached":
        print("\n".join(unreached()))
    else:
        raise SystemExit(__doc__)
