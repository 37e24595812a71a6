#!/usr/bin/env bash
# Create (or reuse) .venv with torch and the pack's requirements. Idempotent.
#   TORCH_SPEC (default torch==2.13.0: the CPU build this project is tested with)
#   EMOCAST_DEV=1 also installs requirements-dev.txt (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
stamp=.venv/.emocast-installed
want="$(cat requirements.txt requirements-dev.txt 2>/dev/null | sha1sum | cut -c1-12)-${EMOCAST_DEV:-0}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  $VPY -m pip install -q --upgrade pip
  $VPY -c "import torch" 2>/dev/null || $VPY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  $VPY -m pip install -q -r requirements.txt
  if [ "${EMOCAST_DEV:-0}" = 1 ]; then $VPY -m pip install -q -r requirements-dev.txt; fi
  echo "$want" > "$stamp"
fi
