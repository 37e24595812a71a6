"""Shared test setup: offline, deterministic, CPU only, never reading the shared reference folder."""
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def run_cli(*args, timeout=600) -> subprocess.CompletedProcess:
    """`python -m emocast ARGS...` in the repository root, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "emocast", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


class TinyCase:
    """The PUBLIC conformance case on the tiny models, for tests that need a real sampler run."""

    def __init__(self, tmp):
        import conformance_pipeline as cp
        from emocast.demo.tiny import tiny_net, tiny_vae, write_tiny_text_encoder
        from emocast.models.clip_text import load_text_encoder

        self.case = FIXTURES / "cases" / "PUBLIC"
        self.params = __import__("json").loads((self.case / "case.json").read_text())["params"]
        self.net, self.vae = tiny_net(), tiny_vae()
        self.text = load_text_encoder(write_tiny_text_encoder(tmp))
        self.face, self.audio = cp.case_inputs(self.case, self.params)
        self.emotion = self.text.encode(self.params["prompt_emo"])
        self.settings = cp.case_settings(self.params)
        self.trace = torch.load(self.case / "trace" / "clip0.pt", weights_only=True)
        self.golden = torch.load(self.case / "golden" / "video.pt", weights_only=True).permute(1, 0, 2, 3)

    def generate(self, net=None, vae=None, face=None, audio=None, emotion=None, **overrides):
        from dataclasses import replace

        from emocast.pipeline.clips import generate

        kwargs = {k: overrides.pop(k) for k in ("progress", "should_cancel") if k in overrides}
        return generate(net or self.net, vae or self.vae, face or self.face, audio or self.audio,
                        emotion or self.emotion, replace(self.settings, **overrides), **kwargs)


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory) -> TinyCase:
    return TinyCase(tmp_path_factory.mktemp("tiny_case"))
