"""Opt-in `torch.compile` of the denoising UNet: the exact tier's fastest path.

The denoiser is nearly all of a run's time. Compiled by inductor it does the same arithmetic in fused
kernels, for CUDA users (not measured there yet: benchmarks/bench_gpu_presets.py --compile). On the CPU it
uses weight *freezing* (the weights become constants, packed once for oneDNN / MKL), the only CPU setting
that was not slower than eager, yet at real size it only matches eager (README, "Speed presets"). The
frames move by float noise (PUBLIC case: 6e-6 max abs from the authors' golden, the band is 5e-3), never
bit for bit, so it is off by default. The first call of each input shape compiles (minutes on a CPU, the
run says so); a new shape (a guided vs a conditional-only step, another size or clip length) compiles again.

Freezing folds the weights in, so it is used only where they never move or change after the first call:
on the CPU and not with fp8 storage (it would fold every upcast weight in at full size). Block swap moves
weights inside the forward pass and is refused. When compiling fails (no C++ compiler, no Triton, an op
inductor cannot lower) the run goes on eagerly with one warning.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import torch
from torch import nn

from ..errors import ConfigError
from . import fp8, offload

log = logging.getLogger("EmoCAST")


class CompiledDenoiser:
    """Stands in for `DenoisingUNet.forward`; keeps the eager forward to fall back on."""

    def __init__(self, unet: nn.Module, freezing: bool):
        self.eager = unet.forward
        self.freezing = freezing
        self.compiled = torch.compile(self.eager, dynamic=False, options={"freezing": freezing})
        self.error: str | None = None
        self.shapes: set[tuple] = set()

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, inputs):
        if self.error is not None:
            return self.eager(latents, t, inputs)
        # The per-clip key / value cache is a dict filled on the first step: tracing both the filling and the
        # reading call would compile the UNet twice. The compiled graph computes them itself.
        inputs = dataclasses.replace(inputs, cache=None)
        shape = (tuple(latents.shape), latents.dtype, inputs.reuse is not None and inputs.reuse.shallow)
        first = shape not in self.shapes
        if first:
            log.info("EmoCAST: compiling the denoiser for %s latents%s (once per shape; minutes on a CPU)...",
                     "x".join(map(str, latents.shape)), ", outer levels only" if shape[2] else "")
            t0 = time.perf_counter()
        try:
            out = self.compiled(latents, t, inputs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the eager path is always there
            self.error = f"{type(e).__name__}: {_reason(e)}"
            log.warning("EmoCAST: torch.compile failed (%s); running the denoiser eagerly.", self.error)
            return self.eager(latents, t, inputs)
        if first:
            self.shapes.add(shape)
            log.info("EmoCAST: compiled in %.0f s.", time.perf_counter() - t0)
        return out


def _reason(e: Exception) -> str:
    """The line of a compiler failure that says what failed (inductor's first line is often only a header)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    line = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    return line[:300]


def compile_denoiser(net: nn.Module) -> CompiledDenoiser:
    """Compile `net.denoising_unet` in place (idempotent); returns the wrapper."""
    unet = net.denoising_unet
    if isinstance(unet.forward, CompiledDenoiser):
        return unet.forward
    if offload.manager(net) is not None:
        raise ConfigError("torch.compile cannot run with block swap (the weights move inside the forward pass).",
                          hint="Use one or the other: turn compile off, or set the VRAM budget to 0.")
    cpu = unet.conv_in.weight.device.type == "cpu"
    unet.forward = CompiledDenoiser(unet, freezing=cpu and not fp8.is_fp8(net))
    return unet.forward


def uncompile(net: nn.Module) -> None:
    """Back to the eager forward (and the exact frames)."""
    unet = net.denoising_unet
    if isinstance(unet.forward, CompiledDenoiser):
        del unet.forward  # the instance attribute: the class's forward again


def is_compiled(net: nn.Module) -> bool:
    return isinstance(net.denoising_unet.forward, CompiledDenoiser)
