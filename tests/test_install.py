"""Installing the pack's requirements next to onnxruntime-gpu keeps onnxruntime-gpu (and its CUDA provider).

Opt-in (EMOCAST_INSTALL_TEST=1: a fresh venv and about 600 MB of wheels from the package index; minutes).
EMOCAST_ORT_GPU_WHEEL=path/to/onnxruntime_gpu-*.whl saves downloading it again. The last step is the control:
a plain `pip install onnxruntime`, what a requirements.txt listing onnxruntime or insightface did, replaces
the GPU build's files and the CUDA provider disappears, so the check above it can fail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pack_fixtures import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("EMOCAST_INSTALL_TEST") != "1",
                                                   reason="opt-in: EMOCAST_INSTALL_TEST=1 (downloads ~600 MB)")]

PROBE = ("import json, importlib.metadata as md, onnxruntime as ort\n"
         "def v(n):\n    try: return md.version(n)\n    except md.PackageNotFoundError: return None\n"
         "print(json.dumps({'providers': ort.get_available_providers(), 'gpu': v('onnxruntime-gpu'), "
         "'cpu': v('onnxruntime'), 'numpy': v('numpy')}))")


def run(*cmd, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT)
    if check and out.returncode:
        raise AssertionError(f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def test_requirements_and_install_py_keep_onnxruntime_gpu(tmp_path):
    py = tmp_path / "venv" / "bin" / "python"
    run(sys.executable, "-m", "venv", tmp_path / "venv")
    run(py, "-m", "pip", "install", "-q", os.environ.get("EMOCAST_ORT_GPU_WHEEL") or "onnxruntime-gpu")
    before = json.loads(run(py, "-c", PROBE).stdout)
    assert "CUDAExecutionProvider" in before["providers"] and before["gpu"] and before["cpu"] is None

    run(py, "-m", "pip", "install", "-q", "-r", ROOT / "requirements.txt")
    middle = json.loads(run(py, "-c", PROBE).stdout)
    first = run(py, ROOT / "install.py")
    assert "--no-deps insightface" in first.stdout
    assert not any(line.endswith(" onnxruntime") for line in first.stdout.splitlines())  # a build is there
    after = json.loads(run(py, "-c", PROBE).stdout)
    assert after == middle  # install.py changed neither onnxruntime nor numpy
    assert {k: after[k] for k in ("providers", "gpu", "cpu")} == {k: before[k] for k in ("providers", "gpu", "cpu")}
    run(py, "-c", "from insightface.app import FaceAnalysis; import cv2, diffusers, transformers, av, librosa")
    assert run(py, ROOT / "install.py").stdout == ""  # a second run does nothing

    problems = [line for line in run(py, "-m", "pip", "check", check=False).stdout.splitlines()
                if line.strip() and not line.startswith("No broken")]
    expected = [p for p in problems if p.startswith("insightface ") and ("onnxruntime" in p or "opencv-python" in p)]
    assert problems == expected, problems  # only insightface's two requirements we satisfy otherwise

    run(py, "-m", "pip", "install", "-q", "onnxruntime")  # the control: what the old requirements did
    broken = json.loads(run(py, "-c", PROBE).stdout)
    assert broken["cpu"] and "CUDAExecutionProvider" not in broken["providers"], broken
