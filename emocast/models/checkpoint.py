"""The EmoCAST Net's checkpoints (the authors' `net.pth`, or .safetensors): checking, loading, converting.

The file is read by emocast/weights.py (safety, nesting, prefixes, damaged files, memory).

Memory: build the model on the `meta` device; `load_into` then fills it one tensor at a time,
straight in its final dtype and device, so a 2.5 B-parameter Net never exists twice (peak RSS =
model + about one tensor; benchmarks/bench_load.py). The model owns its memory afterwards (no
live mapping), so the file may be replaced or deleted while the host runs.

Strictness: the one matcher of models/loading.py; a layout mismatch raises one `CheckpointError`
that groups missing / unexpected / mis-shaped keys and names the usual mistakes (a Hallo net.pth,
an SD1.5 UNet, an AnimateDiff motion module, a VAE / CLIP / wav2vec2 file).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import InputError
from ..weights import (DTYPE_NAMES, ST_DTYPES, CheckpointInfo, Download, gb, inspect_checkpoint,
                       open_checkpoint, release, resolve_dtype)
from . import loading
from .config import UNetConfig
from .loading import LayoutDiff, compare_layout, looks_like  # noqa: F401 (LayoutDiff, compare_layout: API)

log = logging.getLogger("EmoCAST")

NET_URL = "https://huggingface.co/Jmaomao/EmoCAST"
NET_FILE = Download("net.pth", NET_URL)
NET_COMPONENTS = ("reference_unet.", "denoising_unet.", "face_locator.", "imageproj.", "audioproj.")
#: key fragments only EmoCAST has on top of Hallo: emotion-text attention and IP-adapter projections
EMOCAST_ONLY = ("attn_audioemo.", "postnorm_audioemo.", "processor.to_k_ip.", "processor.to_v_ip.")
_ST_NAMES = {v: k for k, v in ST_DTYPES.items()}


# ---------------------------------------------------------------------------------------------- checking

def _recognise(keys: list[str], diff: LayoutDiff, name: str) -> tuple[str, str] | None:
    """(what the file is, the fix) for the usual wrong files given in place of EmoCAST's net.pth."""
    get = f"Download EmoCAST's net.pth from {NET_URL}"
    if any(k.startswith(NET_COMPONENTS) for k in keys):
        emocast_only = [k for k in diff.missing if any(m in k for m in EMOCAST_ONLY)]
        if emocast_only and not any(m in k for k in keys for m in EMOCAST_ONLY):
            return (f"{name} looks like a Hallo net.pth, not EmoCAST's: it has the same Net components but none of "
                    "EmoCAST's emotion-text attention (attn_audioemo, postnorm_audioemo) or IP-adapter projections "
                    "(attn2.processor.to_k_ip / to_v_ip)",
                    f"{get}; Hallo's net.pth has no emotion control.")
        return None
    sd15 = ("Stable Diffusion 1.5 is only the base config EmoCAST builds on (bundled with the pack); the trained "
            f"weights of both UNets are in net.pth. {get}.")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return (f"{name} is a Stable Diffusion checkpoint (original 'model.diffusion_model.' keys), "
                "not the EmoCAST Net", sd15)
    if keys and all("motion_modules." in k for k in keys):
        return (f"{name} is an AnimateDiff motion module (only '...motion_modules...' keys), not the EmoCAST Net",
                f"EmoCAST's net.pth already contains its trained motion modules; the motion-module file is not "
                f"needed. {get}.")
    if "conv_in.weight" in keys or any(k.startswith(("down_blocks.", "up_blocks.", "mid_block.")) for k in keys):
        return f"{name} is a bare diffusers UNet (e.g. SD1.5's unet), not the EmoCAST Net", sd15
    kind = looks_like(keys)
    if kind is not None and kind[1] != "emocast":
        return (f"{name} is {kind[0]}, not the EmoCAST Net", f"Put it in models/{kind[1]}/ (where its loader "
                f"looks), and {get[0].lower()}{get[1:]} into models/emocast/.")
    return None


def check_layout(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                 name: str = "checkpoint") -> None:
    """Raise one CheckpointError grouping missing / unexpected / mis-shaped keys, naming known wrong files."""
    if not any(k.startswith("denoising_unet.") for k in expected):  # `load_into` on another model
        return loading.check_layout(found, expected, name, model="expected", folder="",
                                    hint="Check that the file belongs to this model.")
    loading.check_layout(found, expected, name, model="EmoCAST Net", folder="emocast", diagnose=_recognise,
                         hint=f"Use EmoCAST's net.pth from {NET_URL}, or a .safetensors made from it with "
                              "`python -m emocast convert-checkpoint`.")


@dataclass(frozen=True)
class NetLayout:
    """The EmoCAST Net's state-dict layout at some UNet widths: {key: shape}, its buffers, its config."""

    shapes: dict[str, tuple[int, ...]]
    buffers: frozenset[str]
    config: UNetConfig

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())


def net_config(found: Mapping[str, tuple[int, ...]] | None = None) -> UNetConfig:
    """The UNetConfig a file's shapes imply (so a tiny test Net verifies too), else SD1.5's (the release)."""
    try:
        return UNetConfig.from_shapes(dict(found)) if found else UNetConfig.sd15()
    except (ValueError, IndexError, TypeError):
        return UNetConfig.sd15()  # not a Net at all: diagnose it against the released layout


def net_layout(cfg: UNetConfig | None = None) -> NetLayout:
    """The layout of `EmoCASTNet` (built on meta: the model is the one source of the expected keys)."""
    from .net import EmoCASTNet

    net = EmoCASTNet.build(cfg)
    return NetLayout({k: tuple(v.shape) for k, v in net.state_dict().items()},
                     frozenset(k for k, _ in net.named_buffers()), net.config)


def verify_net(path: str | Path) -> tuple[CheckpointInfo, NetLayout]:
    """Check that a file has the EmoCAST Net layout, reading only its header (safetensors) or map (.pth)."""
    info = inspect_checkpoint(path, NET_FILE)
    layout = net_layout(net_config(info.shapes))
    check_layout(info.shapes, layout.shapes, info.path.name)
    return info, layout


# ---------------------------------------------------------------------------------------------- loading

def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and t.is_floating_point() else t.dtype


def _fill(model: nn.Module, info: CheckpointInfo, take, mapped: bool, expected: Mapping[str, tuple[int, ...]],
          dtype, device, progress) -> nn.Module:
    """Check the layout, then move tensors from the file into `model` one at a time (see the module doc)."""
    t0 = time.perf_counter()
    check_layout(info.shapes, expected, info.path.name)
    sd = {}
    for i, key in enumerate(expected):
        src = take(key)
        sd[key] = src.to(device=device, dtype=_cast(src, dtype), copy=mapped)
        if mapped:
            release(src)
        del src
        if progress:
            progress(i + 1, len(expected))
    model.load_state_dict(sd, strict=True, assign=True)
    log.info("loaded %s (%d tensors, %s -> %s) in %.1f s", info.path.name, len(sd), info.dtype_summary(),
             DTYPE_NAMES.get(dtype, "as stored"), time.perf_counter() - t0)
    return model


def load_into(model: nn.Module, path: str | Path, dtype: str | torch.dtype | None = None,
              device: str | torch.device = "cpu", *, expected: Mapping[str, tuple[int, ...]] | None = None,
              progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """Fill `model` (best built on the meta device) from a weights file, strictly, in ~1x memory.

    dtype: cast every floating tensor, buffers included (the authors run `net.to(weight_dtype)`, so
    their fp16 runs use fp16 `pos_encoder.pe` tables too); None keeps the file's dtypes.
    device: where the tensors land; loading straight to "cuda" keeps host memory at ~one tensor.
    expected: {key: shape} to check against (default: the model's own state dict).
    progress(done, total): called after each tensor (a host progress bar / cancel point).
    """
    expected = dict(expected or {k: tuple(v.shape) for k, v in model.state_dict().items()})
    with open_checkpoint(path, NET_FILE, sum(math.prod(s) for s in expected.values())) as (info, take, mapped):
        return _fill(model, info, take, mapped, expected, resolve_dtype(dtype, device), device, progress)


def load_net(path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None, weight_dtype: str | None = None) -> nn.Module:
    """The EmoCAST Net of a checkpoint (widths from its shapes), built on meta, filled strictly, in eval mode.

    One file open: the layout check, the widths and the tensors all come from the same read.
    weight_dtype "fp8_e4m3fn" (or "fp8"): Linear / Conv weights stored in fp8, computed in `dtype` (models.fp8).
    """
    from .net import EmoCASTNet

    with open_checkpoint(path, NET_FILE) as (info, take, mapped):
        net = EmoCASTNet.build(net_config(info.shapes))
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        _fill(net, info, take, mapped, expected, resolve_dtype(dtype, device), device, progress)
    if weight_dtype not in (None, "default", "fp8", "fp8_e4m3fn"):
        raise InputError(f"unknown weight dtype {weight_dtype!r}; expected default or fp8_e4m3fn.")
    if weight_dtype in ("fp8", "fp8_e4m3fn"):
        from .fp8 import quantize_

        quantize_(net)
    return net.eval().requires_grad_(False)


def convert_checkpoint(src: str | Path, dst: str | Path, dtype: str | torch.dtype | None = "fp16", *,
                       expected: Mapping[str, tuple[int, ...]] | None = None) -> CheckpointInfo:
    """Write `src` as a .safetensors file in `dtype`, streaming one tensor at a time (never two copies).

    The layout is checked first (default: the EmoCAST Net's at the file's widths); the file is
    written next to `dst` and renamed when complete, so an interrupted run leaves no half file.
    Metadata records the source file name and the dtype.
    """
    from .. import __version__

    src, dst, dtype = Path(src), Path(dst), resolve_dtype(dtype)
    if dst.suffix != ".safetensors":
        raise InputError(f"output {dst.name} must end in .safetensors.",
                         hint=f"Use --out {dst.with_suffix('.safetensors').name}.")
    if src.exists() and (dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst))):
        raise InputError(f"output {dst} is the input file; converting in place would destroy it.",
                         hint="Pass another --out path.")
    with open_checkpoint(src, NET_FILE) as (info, take, mapped):
        check_layout(info.shapes, expected if expected is not None else net_layout(net_config(info.shapes)).shapes,
                     src.name)
        specs = {k: (info.shapes[k], dtype if dtype is not None and info.dtypes[k].is_floating_point
                     else info.dtypes[k]) for k in sorted(info.shapes)}
        header, offset = {}, 0
        for k, (shape, dt) in specs.items():
            n = math.prod(shape) * dt.itemsize
            header[k] = {"dtype": _ST_NAMES[dt], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        meta = {"format": "pt", "source": src.name, "dtype": DTYPE_NAMES.get(dtype, "as stored"),
                "converted_by": f"emocast {__version__}"}
        blob = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
        dst.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dst.parent).free
        if free < offset + len(blob) + 8:
            raise InputError(f"not enough disk space in {dst.parent}: {gb(offset)} needed, {gb(free)} free.",
                             hint="Free some space or write --out to another disk.")
        log.info("converting %s (%s, %s) -> %s (%s)", src.name, info.dtype_summary(), gb(info.size), dst.name,
                 meta["dtype"])
        if dst.exists():
            log.warning("%s exists; it will be replaced once the conversion is complete.", dst)
        tmp = dst.with_name(dst.name + ".partial")
        try:
            with open(tmp, "wb") as f:
                f.write(struct.pack("<Q", len(blob)) + blob)
                for k, (_, dt) in specs.items():
                    t = take(k)
                    data = t.to(dt).contiguous()
                    f.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
                    if mapped:
                        release(t)
                    del t, data
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    return inspect_checkpoint(dst, NET_FILE)
