"""Checks between sampler steps that turn a silent numeric failure into one clear error.

A run whose latents overflow (most often fp16 on a large or bright input) would otherwise decode to
black or noise frames and write them as if all went well.
"""
from __future__ import annotations

import torch

from ..errors import InputError

_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


class NonFiniteError(InputError):
    """The latents became NaN or infinite: the precision overflowed (or a weights file holds NaN)."""


def check_finite(latents: torch.Tensor, clip: int, step: int, dtype: torch.dtype | None = None) -> None:
    """Raise NonFiniteError naming the clip (0-based in, 1-based out) and step unless `latents` are all finite."""
    finite = torch.isfinite(latents)
    if bool(finite.all()):
        return
    name = _NAMES.get(dtype or latents.dtype, str(dtype or latents.dtype).removeprefix("torch."))
    bad = int((~finite).sum())
    if name == "fp16":
        hint = ("fp16 overflowed: run in bf16 or fp32 (CLI --dtype bf16 / fp32; the node's dtype widget); "
                "bf16 has fp32's range at fp16's cost.")
    else:
        hint = ("In bf16 / fp32 this points at the weights: check the model files (`python -m emocast "
                "verify-checkpoint`) and download a damaged one again.")
    raise NonFiniteError(f"the latents of clip {clip + 1} hold {bad} NaN/inf values after step {step} "
                         f"({name}); the frames would be black or noise.", hint=hint)
