"""The EmoCAST Net: everything the released `net.pth` holds, under the checkpoint's names."""
from __future__ import annotations

import torch
from torch import nn

from .config import UNetConfig
from .projections import AudioProj, FaceLocator, ImageProj
from .unet import DenoisingUNet, ReferenceNet


class EmoCASTNet(nn.Module):
    """reference_unet + denoising_unet + face_locator + imageproj + audioproj."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        self.reference_unet = ReferenceNet(cfg)
        self.denoising_unet = DenoisingUNet(cfg)
        self.face_locator = FaceLocator(cfg.block_out_channels[0], widths=cfg.face_locator_channels)
        self.imageproj = ImageProj(token_dim=cfg.cross_attention_dim)
        self.audioproj = AudioProj()

    @classmethod
    def build(cls, cfg: UNetConfig | None = None, device: str | torch.device = "meta") -> "EmoCASTNet":
        """Construct without allocating (device "meta") so loading never holds two copies."""
        with torch.device(device):
            return cls(cfg or UNetConfig.sd15())

    @property
    def dtype(self) -> torch.dtype:
        return self.denoising_unet.dtype

    @property
    def device(self) -> torch.device:
        """The compute device (with block swap, where the blocks run, not where the weights rest)."""
        swap = getattr(self, "_emocast_offload", None)
        return swap.device if swap is not None else self.denoising_unet.conv_in.weight.device
