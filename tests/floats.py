"""Float comparisons against stored values: the one place that picks tolerance or bit equality.

torch's CPU kernels differ per CPU (AVX512, AVX2, the scalar `ATEN_CPU_CAPABILITY=default` path that
CPUs without AVX2 and other architectures get), so the same code lands within float noise of a
stored golden, bit-identical only on the machine kind that made it. By default a test allows the
noise band measured across kernels (the figure sits next to each tolerance). `EMOCAST_STRICT=1`
asserts bit equality instead (or the given `strict` bound where even this machine is not exact),
so "bit-identical here" stays checkable on the goldens' machine.
"""
from __future__ import annotations

import os

import torch

STRICT = os.environ.get("EMOCAST_STRICT", "") == "1"


def limits(atol: float, mean: float | None = None, strict: float = 0.0) -> tuple[float, float | None]:
    """(max abs, mean abs) bounds in force: the cross-CPU band, or `strict` under EMOCAST_STRICT=1."""
    return (strict, None) if STRICT else (atol, mean)


def differences(actual, expected) -> tuple[float, float]:
    """Max and mean absolute difference, in float64 (numpy arrays and tensors alike)."""
    a, e = torch.as_tensor(actual), torch.as_tensor(expected)
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    d = (a.double() - e.double()).abs()
    return (float(d.max()), float(d.mean())) if d.numel() else (0.0, 0.0)


def failures(actual, expected, atol: float, mean: float | None = None, strict: float = 0.0,
             what: str = "value") -> list[str]:
    """What exceeds the bounds in force (empty when `actual` is close enough to `expected`)."""
    top, avg = differences(actual, expected)
    max_bound, mean_bound = limits(atol, mean, strict)
    mode = " (EMOCAST_STRICT=1)" if STRICT else ""
    fails = [f"{what}: max abs difference {top:.3g} > {max_bound:g}{mode}"] if not top <= max_bound else []  # NaN fails too
    if mean_bound is not None and not avg <= mean_bound:
        fails.append(f"{what}: mean abs difference {avg:.3g} > {mean_bound:g}")
    return fails


def assert_close(actual, expected, atol: float, mean: float | None = None, strict: float = 0.0,
                 what: str = "value") -> float:
    """`actual` equals the stored `expected` up to the float-noise band; returns the max difference."""
    fails = failures(actual, expected, atol, mean, strict, what)
    assert not fails, "; ".join(fails)
    return differences(actual, expected)[0]
