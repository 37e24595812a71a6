#!/usr/bin/env bash
# Run the whole test suite (sets up what it needs on the first run):
#  1. .venv with the requirements + test tools: every test (mediapipe ones skip there: numpy 2);
#     then the float-sensitive ones (-m float_sensitive) again under ATEN_CPU_CAPABILITY=default:
#     torch's scalar kernels, what CPUs without AVX2 and other architectures get ("another CPU");
#  2. .venv-mediapipe with mediapipe 0.10.21 (numpy < 2): the face / landmark / mask tests again, with
#     the real mediapipe face mesh. Skipped on Python > 3.12 (no such wheel) or with EMOCAST_MEDIAPIPE=0.
# Extra arguments go to the first pytest run.
set -euo pipefail
cd "$(dirname "$0")/.."
EMOCAST_DEV=1 bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/python -m pytest "$@"
ATEN_CPU_CAPABILITY=default .venv/bin/python -m pytest -q -p no:cacheprovider -m float_sensitive

if [ "${EMOCAST_MEDIAPIPE:-1}" = 1 ]; then
  PY=${PYTHON:-python3}
  if "$PY" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 12)))'; then
    VENV=.venv-mediapipe EMOCAST_DEV=1 EMOCAST_EXTRA_REQUIREMENTS=requirements-test-mediapipe.txt bash scripts/setup_env.sh
    .venv-mediapipe/bin/python -m pytest -q -p no:cacheprovider tests/test_face.py tests/test_landmarks.py tests/test_masks.py
  else
    echo "mediapipe 0.10.21 needs Python 3.9-3.12: its face mesh tests are skipped on $("$PY" --version)"
  fi
fi
