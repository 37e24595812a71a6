#!/usr/bin/env bash
# Set up .venv with the test requirements (first run only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
EMOCAST_DEV=1 bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
