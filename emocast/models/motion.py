"""Temporal motion modules (AnimateDiff v2 "Vanilla"): attention across frames at each pixel.

Each module is one transformer block with two temporal self-attentions, each preceded by a
LayerNorm and a sinusoidal frame-position table (32 positions: the clip plus its motion frames
must fit), then a GEGLU feed-forward; proj_out is zero-initialised so a fresh module is identity.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import Attention, FeedForward

#: Frame positions of the sinusoidal table: clip frames + motion frames must not exceed it.
MAX_FRAMES = 32


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """[1, max_len, dim] AnimateDiff positional table: sin on even, cos on odd channels (float32)."""
    pos = torch.arange(max_len).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(pos * freq)
    pe[0, :, 1::2] = torch.cos(pos * freq)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the frame-position table `pe` (a buffer: the checkpoint holds it under this name).

    Hosts that move a model layer by layer (ComfyUI moves only modules with weights) leave this
    weight-less module where it was, so the table follows the input's device instead: a copy per
    device, made again when the buffer is replaced or loaded into.
    """

    #: The placement check (models/placement.py) does not require this module on the compute device.
    follows_input_device = True

    def __init__(self, dim: int, max_len: int = MAX_FRAMES):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim))
        self._copies: dict[torch.device, tuple[torch.Tensor, int, torch.Tensor]] = {}

    def _table(self, device: torch.device) -> torch.Tensor:
        if self.pe.device == device:
            return self.pe
        source, version, copy = self._copies.get(device, (None, -1, None))
        if source is not self.pe or version != self.pe._version:
            copy = self.pe.to(device)
            self._copies[device] = (self.pe, self.pe._version, copy)
        return copy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._table(x.device)[:, : x.shape[1]]


class TemporalAttention(Attention):
    """Self-attention over the frame axis, tokens [(B HW), F, C], with frame positions added."""

    def __init__(self, dim: int, heads: int, max_len: int = MAX_FRAMES):
        super().__init__(dim, heads, dim // heads)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, context=None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(self.pos_encoder(x))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x [(B F), C, H, W] -> same shape."""
        bf, c, hgt, wid = x.shape
        b = bf // frames
        h = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bf, hgt * wid, c))
        # (b f) d c -> (b d) f c: every pixel becomes a sequence of frames
        h = h.reshape(b, frames, hgt * wid, c).transpose(1, 2).reshape(b * hgt * wid, frames, c)
        for block in self.transformer_blocks:
            h = block(h)
        h = h.reshape(b, hgt * wid, frames, c).transpose(1, 2).reshape(bf, hgt * wid, c)
        h = self.proj_out(h).reshape(bf, hgt, wid, c).permute(0, 3, 1, 2)
        return h + x


class MotionModule(nn.Module):
    """Temporal transformer run on [motion frames ; clip frames]; returns the clip frames only."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, groups)
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor, motion: torch.Tensor, frames: int) -> torch.Tensor:
        """x [(B F), C, H, W] clip frames; motion [B, M, C, H, W] motion-frame features."""
        b, m = motion.shape[:2]
        seq = torch.cat([motion.to(x.dtype), x.reshape(b, frames, *x.shape[1:])], dim=1)
        out = self.temporal_transformer(seq.reshape(b * (m + frames), *x.shape[1:]), m + frames)
        return out.reshape(b, m + frames, *x.shape[1:])[:, m:].reshape_as(x)
