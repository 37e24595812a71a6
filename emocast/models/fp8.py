"""fp8 weight storage: Linear / Conv weights kept as float8_e4m3fn, upcast per layer at forward.

Halves weight memory against fp16 (a byte per weight plus one scale per output channel). Each
weight is stored as round_fp8(w / s) with s = max|w| / 448 per output channel (448: e4m3fn's largest
value), so small weights keep their 3 mantissa bits instead of falling into fp8's subnormals. At
forward the layer computes with s * fp8 cast to the activations' dtype (fp16 / bf16 / fp32): the
kernels are the compute dtype's, only the stored values are rounded.

Cost on the tiny networks, frames vs an fp32 run (benchmarks/bench_precision.py, PUBLIC case, 1 step,
x86 CPU): fp16-rounded weights max abs 3.5e-3, PSNR 64.6 dB; fp8 weights max abs 0.41, PSNR 25.5 dB:
its 3 mantissa bits round each weight by up to 6 %, and the tiny networks' random weights pass that
through every layer. A visible change: an option for cards that cannot hold fp16, not a free lunch
(unmeasured on the trained weights). Biases, norms and the UNets' conv_in / conv_out (tiny, and they set
the network's dtype) stay in the compute dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
#: Layers kept in the compute dtype, by name ending (the UNets' dtype is read from conv_in).
KEEP = ("conv_in", "conv_out")


def _upcast(module: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    return module.weight.to(dtype) * module.weight_scale.to(dtype)


class FP8Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, _upcast(self, x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class FP8Conv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _upcast(self, x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class FP8Conv1d(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, _upcast(self, x.dtype), None if self.bias is None else self.bias.to(x.dtype))


_CLASSES = {nn.Linear: FP8Linear, nn.Conv2d: FP8Conv2d, nn.Conv1d: FP8Conv1d}


def quantize_(net: nn.Module) -> nn.Module:
    """Store every Linear / Conv weight of `net` in fp8 (in place, one layer at a time); returns `net`."""
    with torch.no_grad():
        for name, module in net.named_modules():
            cls = _CLASSES.get(type(module))
            if cls is None or name.endswith(KEEP):
                continue
            w = module.weight.data
            scale = w.float().abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp(min=1e-12) / FP8_MAX
            module.weight = nn.Parameter((w.float() / scale).to(FP8), requires_grad=False)
            module.register_buffer("weight_scale", scale.to(w.dtype), persistent=False)
            module.__class__ = cls
    return net


def is_fp8(net: nn.Module) -> bool:
    return any(isinstance(m, tuple(_CLASSES.values())) for m in net.modules())
