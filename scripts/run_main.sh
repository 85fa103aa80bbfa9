#!/usr/bin/env bash
# The main job of the README: set up (idempotent), then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m vaswani.scripts.demo "$@"
