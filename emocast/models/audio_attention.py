"""Emotive audio attention: the emotion text steers how speech drives lips, face and pose.

Per frame, the 77 emotion-text tokens (query) attend to the 32 projected wav2vec2 tokens
(keys / values; 8 heads of 80, post-LayerNorm). The resulting 77 "emotional audio" tokens are the
context of three parallel cross-attentions over the image tokens, whose outputs are masked by the
full-frame / face / lip mask of this block's resolution, passed through zero-initialised 1x1
convolutions and summed with the pose / face / lip weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention, FeedForward

#: Width and head size of the audio / emotion-text tokens (fixed by the released checkpoint).
AUDIO_DIM = 768
AUDIO_HEAD_DIM = 80


@dataclass
class AudioDrive:
    """Per-frame inputs of every audio module of one denoiser call.

    audio:   [(B F), 32, 768] projected audio tokens (unconditional half: zeros).
    emotion: [(B F), 77, 768] emotion-text tokens, the query of the audio-emotion attention.
    masks:   "full" / "face" / "lip" -> per level [(B F), N_level] in [0, 1].
    weights: (pose, face, lip) scales of the three branches.
    """

    audio: torch.Tensor
    emotion: torch.Tensor
    masks: dict[str, list[torch.Tensor]]
    weights: tuple[float, float, float]


class EmotiveAudioAttention(nn.Module):
    """Self-attention, audio-emotion attention, masked full / face / lip cross-attention, FF."""

    def __init__(self, dim: int, heads: int, level: int):
        super().__init__()
        self.level = level
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim // heads)
        self.attn_audioemo = Attention(AUDIO_DIM, heads, AUDIO_HEAD_DIM, context_dim=AUDIO_DIM)
        self.postnorm_audioemo = nn.LayerNorm(AUDIO_DIM)
        self.norm2 = nn.LayerNorm(dim)
        for i in range(3):  # attn2_0 full (pose), attn2_1 face, attn2_2 lip
            setattr(self, f"attn2_{i}", Attention(dim, heads, dim // heads, context_dim=AUDIO_DIM))
        self.zero_conv_full = nn.Conv2d(dim, dim, 1)
        self.zero_conv_face = nn.Conv2d(dim, dim, 1)
        self.zero_conv_lip = nn.Conv2d(dim, dim, 1)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, drive: AudioDrive, cache: dict | None = None) -> torch.Tensor:
        """`cache` (one per clip) keeps what depends on the drive only: the same at every step."""
        x = self.attn1(self.norm1(x)) + x
        if cache is not None and self in cache:
            emotional_audio = cache[self]
        else:
            emotional_audio = self.postnorm_audioemo(self.attn_audioemo(drive.emotion, drive.audio))
            if cache is not None:
                cache[self] = emotional_audio
        h = self.norm2(x)
        b, n, c = x.shape
        side = int(round(n ** 0.5))
        branches = []
        for attn, conv, mask in zip((self.attn2_0, self.attn2_1, self.attn2_2),
                                    (self.zero_conv_full, self.zero_conv_face, self.zero_conv_lip),
                                    ("full", "face", "lip")):
            y = attn(h, emotional_audio, cache) * drive.masks[mask][self.level][:, :, None]
            y = conv(y.reshape(b, side, side, c).permute(0, 3, 1, 2))
            branches.append(y.permute(0, 2, 3, 1).reshape(b, n, c))
        (w_pose, w_face, w_lip), (full, face, lip) = drive.weights, branches
        x = w_pose * full + w_face * face + w_lip * lip + x
        return self.ff(self.norm3(x)) + x


class EmotiveAudioModule(nn.Module):
    """GroupNorm -> 1x1 proj_in (to the block's *input* width) -> EmotiveAudioAttention -> proj_out.

    The inner width is the width of the UNet block's input, not its output (docs/authors_behaviours.md#b24): that is
    how the released checkpoint was built.
    """

    def __init__(self, channels: int, inner: int, heads: int, groups: int, level: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([EmotiveAudioAttention(inner, heads, level)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, drive: AudioDrive, cache: dict | None = None) -> torch.Tensor:
        b, _, hgt, wid = x.shape
        h = self.proj_in(self.norm(x))
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(b, hgt * wid, inner)
        h = self.transformer_blocks[0](h, drive, cache)
        h = h.reshape(b, hgt, wid, inner).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x
