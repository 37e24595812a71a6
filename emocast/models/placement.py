"""Is a model on the compute device? Every parameter and buffer the sampler uses must be there.

Hosts do not always move a plain torch module whole. ComfyUI moves the modules that own weights
one by one (a module holding only a buffer stays behind), in low-VRAM mode only up to a memory
budget, and with --novram not at all. Sampling then fails deep inside a layer with a device
mismatch, or computes on the CPU without a word (F.linear accepts CPU weights for some inputs).
`check_placement` refuses that up front, with the names of what is elsewhere.

Exempt are modules that bring their tensors in themselves: those managed by the block-swap
offload (`emocast.models.offload.is_managed`, or a module marked `_emocast_offload = True`) and
constants that follow the input's device (`follows_input_device = True`, the motion modules'
frame-position table). Callers may pass their own `allow` predicate.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ..errors import InputError

Allow = Callable[[nn.Module], bool]


def _offload_predicate() -> Allow:
    try:  # the block-swap offload, where this version has it
        from .offload import is_managed
    except ImportError:
        return lambda m: bool(getattr(m, "_emocast_offload", False))
    return lambda m: bool(getattr(m, "_emocast_offload", False) or is_managed(m))


def default_allow() -> Allow:
    """Offload-managed modules and modules whose constants follow the input's device."""
    offloaded = _offload_predicate()
    return lambda m: bool(getattr(m, "follows_input_device", False)) or offloaded(m)


def same_device(a: torch.device, b: torch.device) -> bool:
    """cuda and cuda:0 match (an index only counts when both name one)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def misplaced(module: nn.Module, device: torch.device, allow: Optional[Allow] = None) -> list[tuple[str, torch.device]]:
    """(name, device) of every parameter and buffer not on `device`, outside the modules `allow` accepts."""
    allow = default_allow() if allow is None else allow
    exempt = [name for name, m in module.named_modules() if allow(m)]

    def exempted(name: str) -> bool:
        return any(p == "" or name.startswith(p + ".") for p in exempt)

    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [(n, t.device) for n, t in tensors if not same_device(t.device, device) and not exempted(n)]


def _where(bad: list[tuple[str, torch.device]]) -> str:
    """'audioproj, denoising_unet.up_blocks (cpu)': the modules holding misplaced tensors, two levels deep."""
    groups: dict[str, list[str]] = {}
    for name, dev in bad:
        prefix = ".".join(name.split(".")[:2]) if name.count(".") > 1 else name.split(".")[0]
        groups.setdefault(str(dev), [])
        if prefix not in groups[str(dev)]:
            groups[str(dev)].append(prefix)
    return "; ".join(f"{', '.join(p[:4])}{' ...' if len(p) > 4 else ''} ({dev})" for dev, p in groups.items())


def check_placement(module: nn.Module, device: torch.device, *, what: str = "the EmoCAST network",
                    why: str = "", hint: str = "", allow: Optional[Allow] = None) -> None:
    """InputError naming what of `module` is not on `device` (nothing when all is there)."""
    bad = misplaced(module, device, allow)
    if bad:
        total = sum(1 for _ in module.parameters()) + sum(1 for _ in module.buffers())
        raise InputError(
            f"{what} is not on {device}: {len(bad)} of its {total} weights are elsewhere, in {_where(bad)}"
            + (f". {why}" if why else "; sampling would fail or run on the wrong device."),
            hint=hint or f"Move the whole model with .to({str(device)!r}) before sampling (or pass the device it "
                         "is on).")
