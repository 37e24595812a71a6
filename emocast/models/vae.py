"""The image autoencoder (sd-vae-ft-mse, diffusers' AutoencoderKL) as the sampler uses it.

The authors scale latents by a hard-coded 0.18215 (not the config's factor), encode the reference
with the posterior *mean* (no sampling) and decode frame by frame; `VAECodec` does the same, with
decoding in batches (identical per frame, see the tests). Weights load from a diffusers folder or a
single file, in diffusers or original (LDM, e.g. vae-ft-mse-840000-ema-pruned.safetensors) naming,
checked strictly (models/loading.py): an extra, missing or mis-shaped key refuses the file.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import bundled_config
from ..weights import Download, locate, read_state_dict
from . import ModelWrapper
from .loading import KeyRules, match_state_dict

log = logging.getLogger("EmoCAST")

LATENT_SCALE = 0.18215
VAE_URL = "https://huggingface.co/stabilityai/sd-vae-ft-mse"
VAE_FILE = Download("diffusion_pytorch_model.safetensors", VAE_URL)
FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
#: diffusers' pre-0.14 attention names, which older VAE uploads still use.
KEY_RULES = KeyRules(renames=tuple((f"{part}.mid_block.attentions.0.{old}.", f"{part}.mid_block.attentions.0.{new}.")
                                   for part in ("encoder", "decoder") for old, new in
                                   (("query", "to_q"), ("key", "to_k"), ("value", "to_v"), ("proj_attn", "to_out.0"))))


class VAECodec(ModelWrapper):
    """pixels [N, 3, H, W] in [-1, 1] <-> latents [N, 4, H/8, W/8] already scaled by 0.18215."""

    def __init__(self, model):
        self.model = model.eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, self.dtype)
        return self.model.encode(x).latent_dist.mean * LATENT_SCALE

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch: int = 1) -> torch.Tensor:
        """Decode `batch` frames per call (memory vs speed); returns [-1, 1]-range pixels (not clamped)."""
        z = (1 / LATENT_SCALE * latents).to(self.device, self.dtype)
        return torch.cat([self.model.decode(z[i:i + batch]).sample for i in range(0, z.shape[0], batch)])


def default_config() -> dict:
    return bundled_config("sd_vae_ft_mse_config.json")


def load_vae(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> VAECodec:
    """AutoencoderKL from a diffusers folder or one weights file (config: sidecar JSON or sd-vae-ft-mse)."""
    from diffusers import AutoencoderKL

    weights, config = locate(path, FOLDER_WEIGHTS, default_config, what="SD VAE",
                             hint=f"Download sd-vae-ft-mse from {VAE_URL}.")
    sd = read_state_dict(weights, VAE_FILE)
    stored = list(sd)
    if any(k.startswith(("encoder.down.", "first_stage_model.")) for k in sd):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        sd = convert_ldm_vae_checkpoint(sd, config)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = AutoencoderKL(**config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = match_state_dict(sd, expected, weights.name, KEY_RULES, model="SD VAE", folder="vae", stored_keys=stored,
                          hint=f"Use sd-vae-ft-mse ({VAE_URL}); SD3 / Flux / video VAEs do not fit EmoCAST. "
                               "A VAE of another shape needs its config as '<file stem>.json' next to the file.")
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    return VAECodec(model.to(device))
