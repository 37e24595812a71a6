"""What fp16 and fp8 weights cost on the tiny networks: frames vs an fp32 run (max abs, PSNR).

    python benchmarks/bench_precision.py [--steps 1]

The PUBLIC conformance case's inputs; the network's weights rounded to fp16 (computed in fp32, so only
storage differs) and stored in fp8 (emocast.models.fp8, computed in fp32).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1)
    args = ap.parse_args()
    from conftest import TinyCase

    from emocast.models import fp8

    case = TinyCase(Path(tempfile.mkdtemp()))
    ref = case.generate(steps=args.steps)
    runs = {"fp16 weights": copy.deepcopy(case.net).half().float(),
            "fp8 weights": fp8.quantize_(copy.deepcopy(case.net))}
    for name, net in runs.items():
        out = case.generate(net=net, steps=args.steps)
        mse = (out - ref).pow(2).mean().item()
        psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
        print(f"{name}: max abs {(out - ref).abs().max().item():.2e}, PSNR {psnr:.1f} dB vs fp32 "
              f"({out.shape[0]} frames, {args.steps} step)")


if __name__ == "__main__":
    main()
