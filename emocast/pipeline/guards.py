"""The check between clips that turns a silent numeric failure into one clear error.

A clip whose latents overflow (most often fp16 on some GPUs and inputs) would decode to black or
noise frames, and since each clip continues from the previous one's last frames (clamp keeps NaN),
every later clip would be spoiled too, with no message.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import InputError

_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}
_HINTS = {
    torch.float16: "fp16 overflows on some GPUs and inputs: load the model in bf16 (NVIDIA Ampere or newer) or fp32 "
                   "(CLI --dtype bf16 / fp32; the loader's dtype widget).",
    torch.bfloat16: "load the model in fp32.",
}
_WEIGHTS_HINT = ("In fp32 this points at the weights: check the model files (python -m emocast verify-checkpoint) "
                 "and download a damaged one again.")


class NonFiniteError(InputError):
    """NaN or infinite values where frames were expected: the precision overflowed, or a weights file holds NaN."""


def check_finite(values: torch.Tensor, clip: int, clips: int, made_by: str, dtype: Optional[torch.dtype],
                 step: Optional[int] = None) -> None:
    """Raise NonFiniteError naming the clip (0-based in, 1-based out), what produced the values, the
    precision and (when given) the step, unless `values` are all finite."""
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    name = _NAMES.get(dtype, str(dtype).removeprefix("torch."))
    after = f" after step {step}" if step is not None else ""
    raise NonFiniteError(
        f"clip {clip + 1} of {clips}: {made_by} produced {int((~finite).sum())} NaN / inf values in {name}{after}; "
        "stopped there, since each clip continues from the previous one.",
        hint=_HINTS.get(dtype, _WEIGHTS_HINT))
