#!/usr/bin/env bash
# The main job of the README: set up (idempotent), then train, evaluate and translate (at most 20 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/python -m vaswani.scripts.train_translation "$@"
