"""Reading, checking and converting EmoCAST checkpoints (the authors' `net.pth`, or .safetensors).

Safety: tensors come only from `torch.load(weights_only=True)` or from safetensors' plain layout (a
JSON header of shapes and byte ranges, then raw bytes); a pickle that needs any Python object
beyond tensors and containers is refused, never executed.

Memory: build the model on the `meta` device; `load_into` then fills it one tensor at a time,
straight in its final dtype and device, so a 2.5 B-parameter Net never exists twice (peak RSS =
model + about one tensor; benchmarks/bench_load.py). The model owns its memory afterwards (no
live mapping), so the file may be replaced or deleted while the host runs.
* .safetensors: each tensor is `readinto` its own buffer at the offset the header gives. No memory
  map: twice as fast as copying out of one here, and the same 1x peak on every OS.
* .pth (a zip): `torch.load(mmap=True)`; each tensor is copied out, then the file pages under it
  are handed back (Linux `madvise`; elsewhere they go when the load ends: peak up to file + model).

Strictness: a layout mismatch raises one `CheckpointError` that groups missing / unexpected /
mis-shaped keys and names the usual mistakes (a Hallo net.pth, an SD1.5 UNet, an AnimateDiff
motion module). The released file is a flat state dict; re-saves of it are tolerated when nested
under "state_dict" / "module" / "model" / "net", or with a "module." (DistributedDataParallel) or
"net." prefix on every key, since fine-tuning scripts commonly produce those.
"""
from __future__ import annotations

import ctypes
import json
import logging
import math
import mmap
import os
import pickle
import re
import shutil
import struct
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, InputError, MissingModelError
from .config import UNetConfig

log = logging.getLogger("EmoCAST")

NET_URL = "https://huggingface.co/Jmaomao/EmoCAST"
NET_FILE = "net.pth"
SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NET_COMPONENTS = ("reference_unet.", "denoising_unet.", "face_locator.", "imageproj.", "audioproj.")
#: key fragments only EmoCAST has on top of Hallo: emotion-text attention and IP-adapter projections
EMOCAST_ONLY = ("attn_audioemo.", "postnorm_audioemo.", "processor.to_k_ip.", "processor.to_v_ip.")
_NESTS = ("state_dict", "module", "model", "net")
_PREFIXES = ("module.", "net.")
_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_SHORT = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_SHOW = 5  # keys listed per group in a diagnosis


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes:,.0f} bytes"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """"fp16" / "bf16" / "fp32" / a torch dtype / None (keep the file's) -> torch dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a weights file holds (names, shapes, dtypes), learned without reading its tensor data."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    size: int  #: bytes on disk
    metadata: dict[str, str] = field(default_factory=dict)  #: safetensors `__metadata__`
    unwrapped: str = ""  #: how the state dict was found when not flat, e.g. 'prefix "module." removed'

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def dtype_summary(self) -> str:
        counts = Counter(_SHORT.get(d, str(d).removeprefix("torch.")) for d in self.dtypes.values())
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{d} ({n})" for d, n in counts.most_common())


@dataclass(frozen=True)
class LayoutDiff:
    """Keys of a file against the keys a model expects."""

    missing: list[str]
    unexpected: list[str]
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  #: key -> (in file, expected)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)


# ---------------------------------------------------------------------------------------------- reading

def _folder_listing(folder: Path) -> str:
    found = sorted(p.name for p in folder.iterdir() if p.suffix in SUFFIXES)[:6] if folder.is_dir() else None
    return "the folder does not exist" if found is None else (
        f"the folder holds {', '.join(found)}" if found else "the folder holds no weights file")


def _size_note(size: int, expected_numel: int | None) -> str:
    note = f"{gb(size)} on disk"
    return note + (f"; the full file is about {gb(2 * expected_numel)} in fp16, {gb(4 * expected_numel)} in fp32"
                   if expected_numel else "")


def _check_file(path: Path) -> bytes:
    """Fail early, with the fix, on the usual non-weights: no file, a folder, empty, an LFS pointer, HTML."""
    redownload = f"Download it again (EmoCAST's net.pth: {NET_URL})."
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a weights file ({_folder_listing(path)}).",
                              hint=f"Pass the file itself, e.g. {path / NET_FILE}.")
    if not path.exists():
        raise MissingModelError(f"{path.name} not found in {path.parent.resolve()} ({_folder_listing(path.parent)}).",
                                hint=f"Download net.pth from {NET_URL} into that folder, or pass the right path.")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes): the download did not complete.", hint=redownload)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path.name} is a Git LFS pointer ({size} bytes), not the weights.",
                              hint="Run `git lfs pull` in the clone, or use the file's download link on Hugging Face.")
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        raise CheckpointError(f"{path.name} is a web page ({size} bytes), not weights: the link returned HTML.",
                              hint=redownload)
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"{path.name}: unsupported weights format {path.suffix!r} "
                              f"(expected {', '.join(SUFFIXES)}).", hint="Use net.pth or a .safetensors made from it.")
    return head


def _damaged(path: Path, size: int, expected_numel: int | None, detail: str) -> CheckpointError:
    return CheckpointError(f"{path.name} is incomplete or damaged ({_size_note(size, expected_numel)}): {detail}",
                           hint=f"Download it again (EmoCAST's net.pth: {NET_URL}).")


def _safetensors_header(path: Path, size: int, expected_numel: int | None) -> tuple[dict, dict, int]:
    """({key: (shape, dtype, first byte)}, metadata, data start) from the 8-byte length + JSON header."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                raise ValueError(f"its header claims {n:,} bytes")
            header = json.loads(f.read(n))
        meta = header.pop("__metadata__", None) or {}
        specs = {k: (tuple(int(s) for s in v["shape"]), v["dtype"], *map(int, v["data_offsets"]))
                 for k, v in header.items()}
    except (struct.error, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise _damaged(path, size, expected_numel, f"the safetensors header is unreadable ({e}).") from None
    bad = {d for _, d, _, _ in specs.values()} - set(_ST_DTYPES)
    if bad:
        raise CheckpointError(f"{path.name} holds tensors of unsupported dtype {sorted(bad)}.",
                              hint="Convert it to fp16, bf16 or fp32.")
    end = max((e for *_, e in specs.values()), default=0)
    if 8 + n + end > size:
        raise _damaged(path, size, expected_numel, f"its header declares {8 + n + end:,} bytes, found {size:,}.")
    wrong = [k for k, (s, d, b, e) in specs.items()
             if not 0 <= b <= e or e - b != math.prod(s) * _ST_DTYPES[d].itemsize]
    if wrong:
        raise _damaged(path, size, expected_numel, f"byte ranges do not match the shapes of {wrong[:_SHOW]}.")
    return {k: (s, _ST_DTYPES[d], b) for k, (s, d, b, _) in specs.items()}, meta, 8 + n


def _torch_load(path: Path, head: bytes, size: int, expected_numel: int | None):
    """torch.load(weights_only=True): memory-mapped for zip files, in memory for the legacy format."""
    mapped = head.startswith(b"PK")
    if not mapped and not head.startswith(b"\x80"):
        raise CheckpointError(f"{path.name} is not a PyTorch or safetensors file (it starts with {head[:8]!r}).",
                              hint=f"Download it again (EmoCAST's net.pth: {NET_URL}).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped), mapped
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not culprit:
            raise _damaged(path, size, expected_numel, "torch.load cannot unpickle it.") from None
        raise CheckpointError(
            f"{path.name} is not a plain state dict: unpickling it needs the Python object {culprit.group(1)}, "
            "and EmoCAST never unpickles arbitrary code (torch.load(weights_only=True) only).",
            hint="Where you trust the file, save only its tensors (torch.save(model.state_dict(), ...)) "
                 "or convert it to .safetensors, then use that file.") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise _damaged(path, size, expected_numel, "torch.load: " + str(e).split(". ")[0][:200] + ".") from None


def _unwrap(obj, name: str) -> tuple[dict[str, torch.Tensor], str]:
    """The flat {key: tensor} dict inside a torch file, and how it was found."""
    how = []
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in _NESTS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
        how.append(f'nested under "{key}"')
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__ + (f" with keys {list(obj)[:_SHOW]}" if isinstance(obj, dict) else "")
        raise CheckpointError(f"{name} holds a {kind}, not a state dict of named tensors.",
                              hint="Use the Net's state dict (the released net.pth), not a training state.")
    other = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if other:
        log.warning("%s: ignoring %d entries that are not tensors: %s", name, len(other), other[:_SHOW])
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, ", ".join(how)


def _log_unwrapped(info: CheckpointInfo) -> None:
    if info.unwrapped:
        log.info("%s: state dict %s.", info.path.name, info.unwrapped)


def _prefix(keys) -> str:
    return next((p for p in _PREFIXES if keys and all(k.startswith(p) for k in keys)), "")


@contextmanager
def open_checkpoint(path: str | Path, expected_numel: int | None = None
                    ) -> Iterator[tuple[CheckpointInfo, Callable[[str], torch.Tensor], bool]]:
    """(info, take, mapped) for a weights file, tensors still on disk.

    `take(key)` returns one tensor, memory-mapped when `mapped` (copy it, then `release` it), else
    already in memory (the file forgets it). `expected_numel` only sizes the "incomplete" message.
    """
    path = Path(path)
    head = _check_file(path)
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        header, meta, start = _safetensors_header(path, size, expected_numel)
        pre = _prefix(list(header))
        info = CheckpointInfo(path, {k[len(pre):]: s for k, (s, _, _) in header.items()},
                              {k[len(pre):]: d for k, (_, d, _) in header.items()}, size, meta,
                              f'prefix "{pre}" removed' if pre else "")
        _log_unwrapped(info)
        with open(path, "rb") as f:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # 2x faster cold reads here

            def take(key: str) -> torch.Tensor:
                shape, dtype, first = header[pre + key]
                t = torch.empty(shape, dtype=dtype)
                f.seek(start + first)
                if f.readinto(memoryview(t.reshape(-1).view(torch.uint8).numpy())) != t.nbytes:
                    raise _damaged(path, path.stat().st_size, expected_numel, f"{key} ends past the end of the file.")
                return t
            yield info, take, False
        return
    obj, mapped = _torch_load(path, head, size, expected_numel)
    sd, how = _unwrap(obj, path.name)
    pre = _prefix(list(sd))
    sd = {k[len(pre):]: v for k, v in sd.items()}
    del obj
    how = ", ".join(filter(None, [how, f'prefix "{pre}" removed' if pre else ""]))
    info = CheckpointInfo(path, {k: tuple(v.shape) for k, v in sd.items()}, {k: v.dtype for k, v in sd.items()},
                          size, {}, how)
    _log_unwrapped(info)
    yield info, sd.pop, mapped


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Names, shapes and dtypes of a weights file: header only for safetensors, a memory map for .pth."""
    with open_checkpoint(path) as (info, _, _):
        return info


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def release(t: torch.Tensor) -> None:
    """Hand the memory-mapped file pages under `t` back to the OS (Linux), once they have been copied.

    Only for a source tensor nobody uses again: MADV_DONTNEED drops the pages from this process
    (a file mapping re-reads them on a later access), so RSS does not grow to file + model.
    """
    if _LIBC is None or t.device.type != "cpu":
        return
    s = t.untyped_storage()
    lo = -(-s.data_ptr() // mmap.PAGESIZE) * mmap.PAGESIZE
    hi = (s.data_ptr() + s.nbytes()) // mmap.PAGESIZE * mmap.PAGESIZE
    if hi > lo:
        _LIBC.madvise(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), mmap.MADV_DONTNEED)


# ---------------------------------------------------------------------------------------------- checking

def compare_layout(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]) -> LayoutDiff:
    return LayoutDiff([k for k in expected if k not in found], [k for k in found if k not in expected],
                      {k: (tuple(found[k]), tuple(s)) for k, s in expected.items()
                       if k in found and tuple(found[k]) != tuple(s)})


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
    return None


def _group(title: str, items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:_SHOW]) + more


def check_layout(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                 name: str = "checkpoint") -> None:
    """Raise one CheckpointError grouping missing / unexpected / mis-shaped keys, naming known wrong files."""
    diff = compare_layout(found, expected)
    if not diff:
        return
    is_net = any(k.startswith("denoising_unet.") for k in expected)
    what, hint = (_recognise(list(found), diff, name) if is_net else None) or (
        f"{name} does not have the {'EmoCAST Net' if is_net else 'expected'} layout",
        f"Use EmoCAST's net.pth from {NET_URL}, or a .safetensors made from it with "
        "`python -m emocast convert-checkpoint`." if is_net else "Check that the file belongs to this model.")
    text = (f"{what}: {len(diff.missing)} of {len(expected)} expected entries missing, {len(diff.unexpected)} "
            f"unexpected, {len(diff.mismatched)} with another shape.")
    text += _group("missing", diff.missing) if diff.missing else ""
    text += _group("unexpected", diff.unexpected) if diff.unexpected else ""
    if diff.mismatched:
        text += _group("other shape", [f"{k} {list(a)} in the file, {list(b)} expected"
                                       for k, (a, b) in diff.mismatched.items()])
    raise CheckpointError(text, hint=hint)


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
    info = inspect_checkpoint(path)
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
             _SHORT.get(dtype, "as stored"), time.perf_counter() - t0)
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
    with open_checkpoint(path, sum(math.prod(s) for s in expected.values())) as (info, take, mapped):
        return _fill(model, info, take, mapped, expected, resolve_dtype(dtype), device, progress)


def load_net(path: str | Path, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None) -> nn.Module:
    """The EmoCAST Net of a checkpoint (widths from its shapes), built on meta, filled strictly, in eval mode.

    One file open: the layout check, the widths and the tensors all come from the same read.
    """
    from .net import EmoCASTNet

    with open_checkpoint(path) as (info, take, mapped):
        net = EmoCASTNet.build(net_config(info.shapes))
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        _fill(net, info, take, mapped, expected, resolve_dtype(dtype), device, progress)
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
    with open_checkpoint(src) as (info, take, mapped):
        check_layout(info.shapes, expected if expected is not None else net_layout(net_config(info.shapes)).shapes,
                     src.name)
        specs = {k: (info.shapes[k], dtype if dtype is not None and info.dtypes[k].is_floating_point
                     else info.dtypes[k]) for k in sorted(info.shapes)}
        header, offset = {}, 0
        for k, (shape, dt) in specs.items():
            n = math.prod(shape) * dt.itemsize
            header[k] = {"dtype": _ST_NAMES[dt], "shape": list(shape), "data_offsets": [offset, offset + n]}
            offset += n
        meta = {"format": "pt", "source": src.name, "dtype": _SHORT.get(dtype, "as stored"),
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
    return inspect_checkpoint(dst)
