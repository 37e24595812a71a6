"""Tiny random EmoCAST models, regenerated from their key names by the published weight rule.

The conformance package of the authors' outputs defines every tiny weight as a function of its
state-dict key and shape (no weight file is ever shipped). The same rule builds the demo's models,
so `python -m emocast demo` runs the real pipeline end to end with no download.

Rule, per entry (float32, exact):
    x = randn(shape, generator=Generator("cpu").manual_seed(crc32(key)))
    CLIP token / position embeddings   -> 0.02 * x
    ndim >= 2                          -> x * prod(shape[1:]) ** -0.5
    1-D "...norm...weight"             -> 1 + 0.1 * x
    anything else                      -> 0.02 * x
Motion-module `pos_encoder.pe` buffers hold the sinusoid table instead.
"""
from __future__ import annotations

import json
import math
import zlib
from functools import lru_cache
from pathlib import Path

import torch

from ..weights import save_weights

CONFIGS = Path(__file__).resolve().parent / "configs"
ASSETS = Path(__file__).resolve().parent / "assets"
DEMO_IMAGE = ASSETS / "portrait_astronaut_512.png"
DEMO_AUDIO = ASSETS / "speech_en_16k.wav"

#: component -> key list file (key names exactly as the rule was applied to them)
KEY_FILES = {
    "net": "tiny_net_keys.json",
    "vae": "tiny_vae_keys.json",
    "text_encoder": "tiny_text_encoder_keys.json",
    "wav2vec2": "tiny_wav2vec2_keys.json",
}
_EMBEDDINGS = ("token_embedding.weight", "position_embedding.weight")
_BUFFERS = ("pos_encoder.pe",)


def rule_value(key: str, shape) -> torch.Tensor:
    """The weight-rule tensor of one state-dict entry."""
    shape = tuple(int(s) for s in shape)
    g = torch.Generator(device="cpu").manual_seed(zlib.crc32(key.encode("utf-8")))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if key.endswith(_EMBEDDINGS):
        return x * 0.02
    if len(shape) >= 2:
        return x * (math.prod(shape[1:]) ** -0.5)
    if len(shape) == 1 and "norm" in key and key.endswith(".weight"):
        return x * 0.1 + 1.0
    return x * 0.02


def is_rule_key(key: str) -> bool:
    return not key.endswith(_BUFFERS)


@lru_cache(maxsize=None)
def key_shapes(component: str) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a tiny component, in the order of its key list."""
    data = json.loads((CONFIGS / KEY_FILES[component]).read_text())
    return {k: tuple(v["shape"]) for k, v in data["keys"].items()}


def tiny_state_dict(component: str) -> dict[str, torch.Tensor]:
    """Rule weights of a tiny component ("net", "vae", "text_encoder", "wav2vec2")."""
    from ..models.motion import sinusoid_table

    out = {}
    for key, shape in key_shapes(component).items():
        out[key] = rule_value(key, shape) if is_rule_key(key) else sinusoid_table(shape[1], shape[2])
    return out


def config(name: str) -> dict:
    """A bundled tiny config, e.g. config("tiny_unet/config.json")."""
    return json.loads((CONFIGS / name).read_text())


def tiny_net(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The tiny EmoCAST Net (widths 32/64/96/96) with rule weights."""
    from ..models.config import UNetConfig
    from ..models.net import EmoCASTNet

    net = EmoCASTNet.build(UNetConfig.from_diffusers(config("tiny_unet/config.json")))
    net.load_state_dict({k: v.to(dtype) for k, v in tiny_state_dict("net").items()}, strict=True, assign=True)
    return net.to(device).eval().requires_grad_(False)


def tiny_vae(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The tiny AutoencoderKL (4 levels, 32/32/64/64) with rule weights, as a VAECodec."""
    from diffusers import AutoencoderKL

    from ..models.vae import VAECodec

    cfg = {k: v for k, v in config("tiny_vae/config.json").items() if not k.startswith("_")}
    with torch.device("meta"):
        model = AutoencoderKL(**cfg)
    model.load_state_dict({k: v.to(dtype) for k, v in tiny_state_dict("vae").items()}, strict=True, assign=True)
    return VAECodec(model.to(device))


def write_tiny_text_encoder(folder: str | Path) -> Path:
    """The tiny CLIP text encoder as one safetensors file + sidecar config; returns the file."""
    return save_weights(tiny_state_dict("text_encoder"), Path(folder) / "emocast_tiny_clip.safetensors",
                        config("tiny_text_encoder/config.json"))
