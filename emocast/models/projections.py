"""Small networks that turn conditioning into the UNets' vocabulary.

FaceLocator: face-region mask -> features added to the denoiser's first convolution output.
ImageProj:   512-d insightface identity embedding -> 4 face tokens of 768 (the decoupled branch).
AudioProj:   5-frame window of 12 wav2vec2 layers x 768 -> 32 audio tokens of 768 per frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FaceLocator(nn.Module):
    """Per-frame conv stack (3 stride-2 stages, SiLU) down to the latent grid; conv_out zero-init."""

    def __init__(self, out_channels: int, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, region: torch.Tensor) -> torch.Tensor:
        """region [N, 3, H, W] -> [N, out_channels, H/8, W/8]."""
        x = F.silu(self.conv_in(region))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)


class ImageProj(nn.Module):
    def __init__(self, embed_dim: int = 512, token_dim: int = 768, tokens: int = 4):
        super().__init__()
        self.tokens, self.token_dim = tokens, token_dim
        self.proj = nn.Linear(embed_dim, tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """[N, 512] -> [N, 4, 768]."""
        return self.norm(self.proj(embedding).reshape(-1, self.tokens, self.token_dim))


class AudioProj(nn.Module):
    def __init__(self, window: int = 5, layers: int = 12, channels: int = 768, hidden: int = 512,
                 token_dim: int = 768, tokens: int = 32):
        super().__init__()
        self.tokens, self.token_dim = tokens, token_dim
        self.proj1 = nn.Linear(window * layers * channels, hidden)
        self.proj2 = nn.Linear(hidden, hidden)
        self.proj3 = nn.Linear(hidden, tokens * token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """[F, window, layers, channels] -> [F, 32, 768]."""
        x = torch.relu(self.proj1(windows.reshape(windows.shape[0], -1)))
        x = torch.relu(self.proj2(x))
        return self.norm(self.proj3(x).reshape(-1, self.tokens, self.token_dim))
