"""Weights files: reading them safely in ~1x memory, with one readable error per wrong file.

Every loader in the library reads its files through here: the Net (models/checkpoint.py) takes
tensors one at a time from `open_checkpoint`, the small models (VAE, CLIP text, wav2vec2) take a
whole state dict from `read_state_dict`, and find a Hugging Face folder or a single file with its
`<stem>.json` sidecar config through `locate`.

Safety: tensors come only from `torch.load(weights_only=True)` or from safetensors' plain layout (a
JSON header of shapes and byte ranges, then raw bytes); a pickle that needs any Python object
beyond tensors and containers is refused, never executed.

Memory (`open_checkpoint`):
* .safetensors: each tensor is `readinto` its own buffer at the offset the header gives. No memory
  map: twice as fast as copying out of one here, and the same 1x peak on every OS.
* .pth (a zip): `torch.load(weights_only=True, mmap=True)`; each tensor is copied out, then the file pages under it
  are handed back (Linux `madvise`, `release`; elsewhere they go when the load ends: peak up to
  file + model).

Tolerance: released files are flat state dicts; re-saves of them are tolerated when nested under
"state_dict" / "module" / "model" / "net", or with a "module." (DistributedDataParallel) or "net."
prefix on every key, since fine-tuning scripts commonly produce those. Errors name the usual
non-weights (a folder, an empty file, a Git LFS pointer, a web page, a truncated file, a training
pickle) and, through `Download`, where to download the file again.
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
import struct
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .errors import CheckpointError, InputError, MissingModelError

log = logging.getLogger("EmoCAST")

SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_NESTS = ("state_dict", "module", "model", "net")
_PREFIXES = ("module.", "net.")
ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
SHOW = 5  # keys listed per group in a message


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes:,.0f} bytes"


def cuda_fp16_unsafe(device: str | torch.device) -> str | None:
    """Why fp16 should not be used on this CUDA GPU, or None: GTX 16xx cards (Turing without tensor cores,
    capability 7.5) give NaNs in fp16, GPUs before Pascal (capability < 6.0) have no usable fp16 compute."""
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if (major, minor) == (7, 5) and "GTX 16" in name:
        return f"{name} (a GTX 16xx) gives NaNs in fp16"
    if major < 6:
        return f"{name} (compute capability {major}.{minor}) predates Pascal: no usable fp16 compute"
    return None


def check_cuda_dtype(dtype: torch.dtype, device: str | torch.device) -> None:
    """Refuse bf16 before Ampere (emulated, and SDPA's math fallback at 512 px needs ~8.6 GB of scores);
    warn about fp16 where it is unsafe (the user asked for it)."""
    device = torch.device(device)
    if device.type != "cuda":
        return
    if dtype == torch.bfloat16 and torch.cuda.get_device_capability(device)[0] < 8:
        name = torch.cuda.get_device_name(device)
        raise InputError(f"bf16 needs an NVIDIA GPU of the Ampere generation or newer (RTX 30xx, A100, ...); "
                         f"{name} would emulate it slowly, with attention falling back to a kernel that needs "
                         "about 8.6 GB more at 512 px.", hint="Use dtype auto (fp16 where safe, else fp32).")
    why = cuda_fp16_unsafe(device) if dtype == torch.float16 else None
    if why:
        log.warning("fp16 as asked, but %s; if frames come out black or the run stops on NaN, use fp32.", why)


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device | None = None) -> torch.dtype | None:
    """"fp16" / "bf16" / "fp32" / a torch dtype / None (keep the file's) -> torch dtype or None.

    "auto": on a CUDA `device` fp16 where it is safe (see cuda_fp16_unsafe), else fp32; fp32 on the
    CPU (CPU fp16 is slow and not what the authors ran). A named dtype on CUDA is checked
    (check_cuda_dtype).
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    cuda = device is not None and torch.device(device).type == "cuda"
    if dtype == "auto":
        if not cuda:
            return torch.float32
        why = cuda_fp16_unsafe(device)
        if why:
            log.info("dtype auto: fp32, since %s.", why)
        return torch.float32 if why else torch.float16
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; expected auto or one of {', '.join(DTYPES)}.")
    if cuda:
        check_cuda_dtype(DTYPES[dtype], device)
    return DTYPES[dtype]


@dataclass(frozen=True)
class Download:
    """Where to get the published file a weights file should be a copy of (for the hints of errors)."""

    file: str  #: its usual name, e.g. "net.pth"
    url: str  #: where to download it

    @property
    def again(self) -> str:
        return f"Download it again ({self.file} from {self.url})."


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
        counts = Counter(DTYPE_NAMES.get(d, str(d).removeprefix("torch.")) for d in self.dtypes.values())
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{d} ({n})" for d, n in counts.most_common())


# ---------------------------------------------------------------------------------------------- reading

def _folder_listing(folder: Path) -> str:
    found = sorted(p.name for p in folder.iterdir() if p.suffix in SUFFIXES)[:6] if folder.is_dir() else None
    return "the folder does not exist" if found is None else (
        f"the folder holds {', '.join(found)}" if found else "the folder holds no weights file")


def _size_note(size: int, expected_numel: int | None) -> str:
    note = f"{gb(size)} on disk"
    return note + (f"; the full file is about {gb(2 * expected_numel)} in fp16, {gb(4 * expected_numel)} in fp32"
                   if expected_numel else "")


def _check_file(path: Path, download: Download) -> bytes:
    """Fail early, with the fix, on the usual non-weights: no file, a folder, empty, an LFS pointer, HTML."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a weights file ({_folder_listing(path)}).",
                              hint=f"Pass the file itself, e.g. {path / download.file}.")
    if not path.exists():
        raise MissingModelError(f"{path.name} not found in {path.parent.resolve()} ({_folder_listing(path.parent)}).",
                                hint=f"Download {download.file} from {download.url} into that folder, "
                                     "or pass the right path.")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes): the download did not complete.",
                              hint=download.again)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path.name} is a Git LFS pointer ({size} bytes), not the weights.",
                              hint="Run `git lfs pull` in the clone, or use the file's download link on Hugging Face.")
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        raise CheckpointError(f"{path.name} is a web page ({size} bytes), not weights: the link returned HTML.",
                              hint=download.again)
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"{path.name}: unsupported weights format {path.suffix!r} "
                              f"(expected {', '.join(SUFFIXES)}).",
                              hint=f"Use {download.file} or a .safetensors made from it.")
    return head


def _damaged(path: Path, size: int, expected_numel: int | None, download: Download, detail: str) -> CheckpointError:
    return CheckpointError(f"{path.name} is incomplete or damaged ({_size_note(size, expected_numel)}): {detail}",
                           hint=download.again)


def _safetensors_header(path: Path, size: int, expected_numel: int | None, download: Download
                        ) -> tuple[dict, dict, int]:
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
        raise _damaged(path, size, expected_numel, download,
                       f"the safetensors header is unreadable ({e}).") from None
    bad = {d for _, d, _, _ in specs.values()} - set(ST_DTYPES)
    if bad:
        raise CheckpointError(f"{path.name} holds tensors of unsupported dtype {sorted(bad)}.",
                              hint="Convert it to fp16, bf16 or fp32.")
    end = max((e for *_, e in specs.values()), default=0)
    if 8 + n + end > size:
        raise _damaged(path, size, expected_numel, download,
                       f"its header declares {8 + n + end:,} bytes, found {size:,}.")
    wrong = [k for k, (s, d, b, e) in specs.items()
             if not 0 <= b <= e or e - b != math.prod(s) * ST_DTYPES[d].itemsize]
    if wrong:
        raise _damaged(path, size, expected_numel, download, f"byte ranges do not match the shapes of {wrong[:SHOW]}.")
    return {k: (s, ST_DTYPES[d], b) for k, (s, d, b, _) in specs.items()}, meta, 8 + n


def _torch_load(path: Path, head: bytes, size: int, expected_numel: int | None, download: Download):
    """torch.load(weights_only=True): memory-mapped for zip files, in memory for the legacy format."""
    mapped = head.startswith(b"PK")
    if not mapped and not head.startswith(b"\x80"):
        raise CheckpointError(f"{path.name} is not a PyTorch or safetensors file (it starts with {head[:8]!r}).",
                              hint=download.again)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped), mapped
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not culprit:
            raise _damaged(path, size, expected_numel, download, "torch.load cannot unpickle it.") from None
        raise CheckpointError(
            f"{path.name} is not a plain state dict: unpickling it needs the Python object {culprit.group(1)}, "
            "and EmoCAST never unpickles arbitrary code (torch.load(weights_only=True) only).",
            hint="Where you trust the file, save only its tensors (torch.save(model.state_dict(), ...)) "
                 "or convert it to .safetensors, then use that file.") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise _damaged(path, size, expected_numel, download,
                       "torch.load: " + str(e).split(". ")[0][:200] + ".") from None


def _unwrap(obj, name: str, download: Download) -> tuple[dict[str, torch.Tensor], str]:
    """The flat {key: tensor} dict inside a torch file, and how it was found."""
    how = []
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in _NESTS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
        how.append(f'nested under "{key}"')
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__ + (f" with keys {list(obj)[:SHOW]}" if isinstance(obj, dict) else "")
        raise CheckpointError(f"{name} holds a {kind}, not a state dict of named tensors.",
                              hint=f"Use the model's state dict (the released {download.file}), not a training state.")
    other = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if other:
        log.warning("%s: ignoring %d entries that are not tensors: %s", name, len(other), other[:SHOW])
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, ", ".join(how)


def _log_unwrapped(info: CheckpointInfo) -> None:
    if info.unwrapped:
        log.info("%s: state dict %s.", info.path.name, info.unwrapped)


def _prefix(keys) -> str:
    return next((p for p in _PREFIXES if keys and all(k.startswith(p) for k in keys)), "")


@contextmanager
def open_checkpoint(path: str | Path, download: Download, expected_numel: int | None = None
                    ) -> Iterator[tuple[CheckpointInfo, Callable[[str], torch.Tensor], bool]]:
    """(info, take, mapped) for a weights file, tensors still on disk.

    `take(key)` returns one tensor, memory-mapped when `mapped` (copy it, then `release` it), else
    already in memory (the file forgets it). `download` says where to get the file in errors;
    `expected_numel` only sizes the "incomplete" message.
    """
    path = Path(path)
    head = _check_file(path, download)
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        header, meta, start = _safetensors_header(path, size, expected_numel, download)
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
                    raise _damaged(path, path.stat().st_size, expected_numel, download,
                                   f"{key} ends past the end of the file.")
                return t
            yield info, take, False
        return
    obj, mapped = _torch_load(path, head, size, expected_numel, download)
    sd, how = _unwrap(obj, path.name, download)
    pre = _prefix(list(sd))
    sd = {k[len(pre):]: v for k, v in sd.items()}
    del obj
    how = ", ".join(filter(None, [how, f'prefix "{pre}" removed' if pre else ""]))
    info = CheckpointInfo(path, {k: tuple(v.shape) for k, v in sd.items()}, {k: v.dtype for k, v in sd.items()},
                          size, {}, how)
    _log_unwrapped(info)
    yield info, sd.pop, mapped


def inspect_checkpoint(path: str | Path, download: Download) -> CheckpointInfo:
    """Names, shapes and dtypes of a weights file: header only for safetensors, a memory map for .pth."""
    with open_checkpoint(path, download) as (info, _, _):
        return info


def read_state_dict(path: str | Path, download: Download) -> dict[str, torch.Tensor]:
    """{key: tensor} of a whole weights file (a small model's), with the checks of `open_checkpoint`.

    Tensors of a .pth stay memory-mapped until the model copies them.
    """
    with open_checkpoint(path, download) as (info, take, _):
        return {k: take(k) for k in info.shapes}


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


# ---------------------------------------------------------------------------------------------- small models

def read_json(path: Path) -> dict:
    """A config file's dict; CheckpointError naming the file when it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the JSON file {path}: {exc}") from None


def sidecar(weights: str | Path) -> Path:
    """Where the config of a single weights file sits: `<weights stem>.json` next to it."""
    return Path(weights).with_suffix(".json")


def locate(path: str | Path, folder_files: tuple[str, ...], default_config: Callable[[], dict], *, what: str,
           hint: str) -> tuple[Path, dict]:
    """(weights file, config) of a Hugging Face folder or of a single file.

    Folder: config.json and the first of `folder_files` present. File: its `sidecar` config, else
    `default_config()`. MissingModelError (with `hint`) names what is missing.
    """
    path = Path(path)
    if path.is_dir():
        weights = next((path / n for n in folder_files if (path / n).is_file()), None)
        missing = [n for n, ok in (("config.json", (path / "config.json").is_file()),
                                   (" or ".join(folder_files), weights is not None)) if not ok]
        if missing:
            raise MissingModelError(f"the {what} folder {path} has no {' and no '.join(missing)}.", hint=hint)
        return weights, read_json(path / "config.json")
    if path.is_file():
        config = sidecar(path)
        return path, read_json(config) if config.is_file() else default_config()
    raise MissingModelError(f"{what} not found: {path} (looked for a weights file or a Hugging Face folder there).",
                            hint=hint)


def save_weights(sd: dict[str, torch.Tensor], path: str | Path, config: dict | None = None) -> Path:
    """Write {key: tensor} as a .safetensors file, with `config` as its `sidecar` when given."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")  # renamed when complete: no half-written weights file
    try:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if config is not None:
        sidecar(path).write_text(json.dumps(config, indent=1))
    return path
