"""Conformance with the authors' inference: every case under tests/fixtures/cases and every folder
listed in EMOCAST_EXTRA_CASES (os.pathsep-separated), dispatched by the `kind` in its case.json.

    EMOCAST_EXTRA_CASES=/path/A:/path/B python -m pytest tests/test_conformance.py -s

Each case prints its max / mean differences (run with -s to see them).
"""
import json
import os
from pathlib import Path

import pytest

from conftest import FIXTURES


def case_dirs() -> list[Path]:
    dirs = sorted(p for p in (FIXTURES / "cases").iterdir() if (p / "case.json").is_file())
    for extra in filter(None, os.environ.get("EMOCAST_EXTRA_CASES", "").split(os.pathsep)):
        p = Path(extra).expanduser().resolve()
        found = [p] if (p / "case.json").is_file() else sorted(q for q in p.glob("*/") if (q / "case.json").is_file())
        if not found:
            raise FileNotFoundError(f"EMOCAST_EXTRA_CASES entry {p} holds no case.json (directly or one level down)")
        dirs += found
    return dirs


_NETS: dict = {}


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
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
