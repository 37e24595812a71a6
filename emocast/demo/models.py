"""The demo's complete set of models: tiny, random (weight rule), and needing no download.

`demo_models()` builds them in memory for `python -m emocast demo`; `export_models(DIR)` writes
them in the ComfyUI models layout (the same sub-folders and names the nodes and `generate` read):

    DIR/emocast/emocast_tiny.safetensors          the tiny Net (widths 32/64/96/96), fp16
    DIR/vae/emocast_tiny_vae.safetensors (+ .json) the tiny AutoencoderKL
    DIR/text_encoders/emocast_tiny_clip.safetensors (+ .json)
    DIR/audio_encoders/emocast_tiny_wav2vec2.safetensors (+ .json)
    DIR/insightface/models/emocast_tiny/*.onnx    small self-made detector / landmarks / recogniser

The audio encoder is wav2vec2-base's shape where the Net depends on it (12 layers of 768, so the
Net's audio projection fits) and narrow elsewhere. Frames from random weights look like noise:
the demo proves the plumbing, not the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import bundled_config
from ..weights import save_weights
from .tiny import config, rule_value, tiny_net, tiny_state_dict, tiny_vae, write_tiny_text_encoder

#: Resolution of the tiny demo (a multiple of 64; the real model runs at 512).
DEMO_SIZE = 128
NET_FILE = "emocast_tiny.safetensors"


def demo_wav2vec2_config() -> dict:
    
    base = bundled_config("wav2vec2_base_960h.json")
    return {**base, "intermediate_size": 512, "conv_dim": [32] * 7}


def demo_wav2vec2_state_dict() -> dict[str, torch.Tensor]:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = {k: v for k, v in demo_wav2vec2_config().items() if k not in ("do_normalize", "architectures")}
    with torch.device("meta"):
        model = Wav2Vec2Model(Wav2Vec2Config(**cfg))
    return {k: rule_value(k, v.shape) for k, v in model.state_dict().items()}


def demo_wav2vec2():
    from ..models.wav2vec2 import build_wav2vec2

    return build_wav2vec2(demo_wav2vec2_config(), demo_wav2vec2_state_dict(), source="demo wav2vec2")


@dataclass
class DemoModels:
    net: object
    vae: object
    text: object
    wav2vec2: object
    insightface: Path


def demo_models(workdir: str | Path) -> DemoModels:
    """All demo models in memory (the text encoder and face packs go through files in `workdir`)."""
    from ..models.clip_text import load_text_encoder
    from .face_models import write_tiny_insightface

    workdir = Path(workdir)
    return DemoModels(net=tiny_net(), vae=tiny_vae(),
                      text=load_text_encoder(write_tiny_text_encoder(workdir / "text_encoders")),
                      wav2vec2=demo_wav2vec2(),
                      insightface=write_tiny_insightface(workdir / "insightface" / "models"))


def export_models(models_dir: str | Path) -> dict[str, Path]:
    """Write the demo models into a ComfyUI-style models folder; returns what went where."""
    from .face_models import write_tiny_insightface

    d = Path(models_dir)
    return {
        "emocast": save_weights(_fp16(tiny_state_dict("net")), d / "emocast" / NET_FILE),
        "vae": save_weights(tiny_state_dict("vae"), d / "vae" / "emocast_tiny_vae.safetensors",
                            config("tiny_vae/config.json")),
        "text_encoders": write_tiny_text_encoder(d / "text_encoders"),
        "audio_encoders": save_weights(_fp16(demo_wav2vec2_state_dict()), d / "audio_encoders" /
                                       "emocast_tiny_wav2vec2.safetensors", demo_wav2vec2_config()),
        "insightface": write_tiny_insightface(d / "insightface" / "models"),
    }


def _fp16(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half() for k, v in sd.items()}
