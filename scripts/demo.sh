#!/usr/bin/env bash
# Set up .venv (first run only) and generate demo.mp4 with the tiny random models: no download.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m emocast demo --out "${1:-demo.mp4}"
