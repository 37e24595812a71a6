#!/usr/bin/env bash
# Create (or reuse) a venv with torch and the pack's requirements. Idempotent.
#   VENV (default .venv); TORCH_SPEC (default torch==2.13.0: the CPU build this project is tested with;
#   only installed when the venv has no torch); EMOCAST_DEV=1 adds requirements-dev.txt (tests);
#   EMOCAST_EXTRA_REQUIREMENTS=FILE adds one more requirements file (e.g. requirements-test-mediapipe.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python
extra=${EMOCAST_EXTRA_REQUIREMENTS:-}
stamp=$VENV/.emocast-installed
want="$(cat requirements.txt requirements-dev.txt install.py ${extra:+"$extra"} 2>/dev/null | sha1sum | cut -c1-12)-${EMOCAST_DEV:-0}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  $VPY -m pip install -q --upgrade pip
  $VPY -c "import torch" 2>/dev/null || $VPY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  reqs=(-r requirements.txt)
  if [ "${EMOCAST_DEV:-0}" = 1 ]; then reqs+=(-r requirements-dev.txt); fi
  if [ -n "$extra" ]; then reqs+=(-r "$extra"); fi
  $VPY -m pip install -q "${reqs[@]}"
  $VPY install.py  # onnxruntime (unless a build is there) and insightface, as ComfyUI-Manager runs it
  echo "$want" > "$stamp"
fi
