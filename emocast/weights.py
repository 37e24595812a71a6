"""Reading weight files safely: safetensors, or torch.load(weights_only=True). Never a pickle.

Every loader in the library (Net, VAE, CLIP, wav2vec2) reads files through here, and looks for an
optional sidecar config `<weights stem>.json` next to a single weights file.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import CheckpointError, MissingModelError

PT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """{name: tensor} of a .safetensors / .pth / .pt / .ckpt / .bin file (memory-mapped where possible)."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in PT_SUFFIXES:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    raise CheckpointError(f"{path.name}: unknown weights format {path.suffix!r}.",
                          hint="Use a .safetensors or .pth file.")


def sidecar_config(weights: str | Path) -> dict | None:
    """The config JSON stored next to a single weights file as `<stem>.json`, if any."""
    p = Path(weights).with_suffix(".json")
    return json.loads(p.read_text()) if p.is_file() else None
