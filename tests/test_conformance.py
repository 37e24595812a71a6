"""Conformance with the authors' inference: every case under tests/fixtures/cases and every folder
listed in EMOCAST_EXTRA_CASES (os.pathsep-separated), dispatched by the `kind` in its case.json.

    EMOCAST_EXTRA_CASES=/path/A:/path/B python -m pytest tests/test_conformance.py -s

Each case prints its max / mean differences (run with -s to see them). Bounds: the measured
cross-CPU float-noise band by default, bit equality with EMOCAST_STRICT=1 (see tests/floats.py).
"""
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES
from floats import STRICT


def case_dirs() -> list[Path]:
    dirs = sorted(p for p in (FIXTURES / "cases").iterdir() if (p / "case.json").is_file())
    for extra in filter(None, os.environ.get("EMOCAST_EXTRA_CASES", "").split(os.pathsep)):
        p = Path(extra).expanduser().resolve()
        found = [p] if (p / "case.json").is_file() else sorted(q for q in p.glob("*/") if (q / "case.json").is_file())
        if not found:
            raise FileNotFoundError(f"EMOCAST_EXTRA_CASES entry {p} holds no case.json (directly or one level down)")
        dirs += found
    return dirs


def case_params() -> list:
    """Every case is float-sensitive; pipeline cases (20-40 s each on 2 cores) are slow too."""
    params = []
    for case in case_dirs():
        kind = json.loads((case / "case.json").read_text()).get("kind")
        marks = [pytest.mark.float_sensitive] + ([pytest.mark.slow] if kind == "pipeline" else [])
        params.append(pytest.param(case, marks=marks, id=case.name))
    return params


_NETS: dict = {}


@pytest.mark.parametrize("case", case_params())
def test_case(case, tmp_path_factory):
    kind = json.loads((case / "case.json").read_text())["kind"]
    if kind == "pipeline":
        import conformance_pipeline as runner

        metrics = runner.run_case(case, tmp_path_factory.mktemp("pipeline"), _NETS)
        fails = runner.check(metrics)
    elif kind == "masks":
        import conformance_masks as runner

        metrics, fails = runner.run_case(case), []
    elif kind == "audio":
        import conformance_audio as runner

        metrics, fails = runner.run_case(case), []
    else:
        pytest.fail(f"{case}: unknown case kind {kind!r}")
    print(f"\n[conformance] {case.name} ({kind}): " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in metrics.items()))
    assert not fails, f"{case.name}: " + "; ".join(fails)


def video_metrics(video: torch.Tensor, golden: torch.Tensor) -> dict:
    d = (video - golden).abs()
    return {"video_max_abs": float(d.max()), "video_mean_abs": float(d.mean())}


def test_the_video_bounds_fail_an_8_bit_round_trip():
    """Frames rounded to 8 bits somewhere (max 2e-3, mean 1e-3) are an error the bounds must catch."""
    import conformance_pipeline as runner

    golden = torch.load(FIXTURES / "cases" / "PUBLIC" / "golden" / "video.pt", weights_only=True)
    assert runner.check(video_metrics(golden, golden)) == []
    fails = runner.check(video_metrics(golden.mul(255).round().div(255), golden))
    assert any("mean abs" in f for f in fails) or (STRICT and fails), fails


@pytest.mark.slow
def test_the_video_bounds_catch_the_smallest_real_effect(tiny_case):
    """The face locator's output lost (the smallest real effect the conformance package measured:
    mean 7.6e-3) fails both bounds."""
    import conformance_pipeline as runner

    hook = tiny_case.net.face_locator.register_forward_hook(lambda module, args, out: torch.zeros_like(out))
    try:
        video = tiny_case.generate()
    finally:
        hook.remove()
    fails = runner.check(video_metrics(video, tiny_case.golden))
    assert any("max abs" in f for f in fails) and (STRICT or any("mean abs" in f for f in fails)), fails
