"""Install what requirements.txt cannot list safely: onnxruntime and insightface.

ComfyUI-Manager (and comfy-cli) run this after `pip install -r requirements.txt`; for a manual install run it
with ComfyUI's Python: `python install.py`. It is a no-op when everything is there.

Why not requirements.txt: several distributions provide the `onnxruntime` module (onnxruntime,
onnxruntime-gpu, -directml, -openvino, -rocm, ...). pip knows them only by name, so a plain `onnxruntime`
requirement, or insightface (whose metadata requires `onnxruntime` and `opencv-python`), installs the CPU
build over an installed onnxruntime-gpu and removes its CUDA provider. So: onnxruntime only when no build
is installed; insightface with --no-deps, plus its other dependencies (opencv comes from
opencv-python-headless in requirements.txt, so no second OpenCV either). insightface 2.x is a pure-Python
wheel: nothing to compile, on Windows too. `pip check` then reports insightface's two requirements we
satisfy otherwise ("onnxruntime" and "opencv-python"); that is expected.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import tempfile

#: Distributions that provide the `onnxruntime` module.
ONNXRUNTIME_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                      "onnxruntime-rocm", "onnxruntime-silicon", "onnxruntime-qnn", "onnxruntime-cann",
                      "onnxruntime-training")
INSIGHTFACE = "insightface>=0.7.3"
#: insightface's own requirements, less onnxruntime and opencv-python (see above).
INSIGHTFACE_DEPS = ("onnx>=1.13", "scipy", "scikit-image", "tqdm", "requests")
#: Never upgraded or downgraded by this script: pinned to what is installed (ComfyUI and other packs rely on them).
KEEP = ("numpy", "torch", "opencv-python", "opencv-python-headless", "opencv-contrib-python",
        "opencv-contrib-python-headless", *ONNXRUNTIME_BUILDS)


def installed(name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def plan() -> list[list[str]]:
    """The pip commands (arguments after `pip install`) still needed."""
    steps = []
    if not any(installed(n) for n in ONNXRUNTIME_BUILDS):
        steps.append(["onnxruntime"])
    if not installed("insightface"):
        steps.append(["--no-deps", INSIGHTFACE])
        steps.append(list(INSIGHTFACE_DEPS))
    return steps


def constraints() -> str:
    """pip constraints holding every installed KEEP package at its version."""
    lines = []
    for name in KEEP:
        try:
            lines.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return "\n".join(lines) + "\n"


def main() -> int:
    steps = plan()
    if not steps:
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(constraints())
    try:
        return _run(steps, f.name)
    finally:
        os.unlink(f.name)


def _run(steps: list[list[str]], pins: str) -> int:
    for args in steps:
        cmd = [sys.executable, "-m", "pip", "install", "-c", pins, *args]
        print("EmoCAST install:", " ".join(cmd[3:]).replace(pins, "<installed numpy/opencv/onnxruntime>"),
              flush=True)
        code = subprocess.call(cmd)
        if code:
            print(f"EmoCAST install: pip failed ({code}); the face nodes need insightface and onnxruntime.",
                  file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
