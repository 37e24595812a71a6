"""Spatial transformers with reference-feature sharing (the ReferenceNet <-> denoiser link).

Every spatial transformer block normalises its input (norm1) before self-attention. In the
ReferenceNet those normalised tokens of the reference image and the two motion frames are
*written* to a bank; the denoiser's block of the same name *reads* them: its self-attention also
attends to the reference tokens, and the motion-frame tokens feed its motion modules.

The authors' quirks kept here on purpose (their trained weights expect them, docs/authors_behaviours.md B11-B16):
- the writer tiles the CFG conditioning over its batch (item i sees context i % halves), so the
  motion frames pair with alternating contexts;
- the reader tiles the per-half reference tokens over *all* rows of its batch, so row r (frame r
  of the [uncond; cond] batch) attends to the reference of half r % halves: with CFG the
  conditional frames alternate between the reference written with the unconditional and with
  the conditional context (the authors' `repeat` of a 3-D tensor with 4 factors does this);
- with CFG the unconditional half attends to itself only, never to the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention, FeedForward, TextGuidedEmotiveAttention

#: Items each reference batch half holds: [reference, motion frame 1, motion frame 2].
REFERENCE_ITEMS = 3


@dataclass
class ReferenceBank:
    """norm1 tokens of the ReferenceNet's blocks, by block name: [halves * 3, L, C] each.

    halves: 2 with classifier-free guidance (uncond, cond), else 1.
    cfg:    whether half 0 is the unconditional half (which then ignores the reference).
    cond_only: read by a batch of the conditional half's rows only (a guidance-free step of a CFG
               clip): those rows see exactly what they see in the CFG batch.
    """

    tokens: dict[str, torch.Tensor]
    halves: int
    cfg: bool
    cond_only: bool = False

    def references(self, name: str, rows: int) -> torch.Tensor:
        """[rows, L, C]: the reference tokens each row of a [halves * frames] batch attends to."""
        refs = self.tokens[name][::REFERENCE_ITEMS]  # one reference per half
        first = rows if self.cond_only else 0  # cond-only: rows are the CFG batch's rows f .. 2f - 1
        return refs[(torch.arange(rows, device=refs.device) + first) % self.halves]

    def motion(self, name: str) -> torch.Tensor:
        """[halves, REFERENCE_ITEMS - 1, L, C]: the motion-frame tokens of each half (cond-only: the last)."""
        t = self.tokens[name]
        m = t.reshape(self.halves, REFERENCE_ITEMS, *t.shape[1:])[:, 1:]
        return m[-1:] if self.cond_only else m

    def to(self, dtype: torch.dtype) -> "ReferenceBank":
        return ReferenceBank({k: v.to(dtype) for k, v in self.tokens.items()}, self.halves, self.cfg, self.cond_only)

    def conditional(self) -> "ReferenceBank":
        """The view a conditional-only batch reads (same tokens; only for a bank written with CFG)."""
        return ReferenceBank(self.tokens, self.halves, self.cfg, cond_only=self.cfg)


class SpatialTransformerBlock(nn.Module):
    """Self-attention (+ reference), text-guided emotive cross-attention, GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim // heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = TextGuidedEmotiveAttention(dim, heads, dim // heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.bank_key = ""  # set by the owning UNet to the block's module path

    def forward(self, x: torch.Tensor, context: torch.Tensor, *, write: dict | None = None,
                read: ReferenceBank | None = None, cache: dict | None = None) -> torch.Tensor:
        h = self.norm1(x)
        if write is not None:
            write[self.bank_key] = h
        if read is None:
            x = self.attn1(h) + x
        else:
            x = self._attend_with_reference(h, x, read)
        if context.shape[0] != x.shape[0]:  # writer: tile [u, c] over its [r, m1, m2] x halves batch
            context = context.repeat(x.shape[0] // context.shape[0], 1, 1)
        x = self.attn2(self.norm2(x), context, cache) + x
        return self.ff(self.norm3(x)) + x

    def _attend_with_reference(self, h: torch.Tensor, x: torch.Tensor, bank: ReferenceBank) -> torch.Tensor:
        refs = bank.references(self.bank_key, h.shape[0])
        if not bank.cfg or bank.cond_only:
            return self.attn1(h, torch.cat([h, refs], dim=1)) + x
        frames = h.shape[0] // bank.halves
        uncond, cond = h[:frames], h[frames:]
        out = torch.cat([self.attn1(uncond), self.attn1(cond, torch.cat([cond, refs[frames:]], dim=1))])
        return out + x


class SpatialTransformer(nn.Module):
    """GroupNorm -> 1x1 proj_in -> transformer block(s) -> 1x1 proj_out, + residual."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([SpatialTransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor, **bank) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(b, hgt * wid, c)
        for block in self.transformer_blocks:
            h = block(h, context, **bank)
        h = h.reshape(b, hgt, wid, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x

    @property
    def first_block_key(self) -> str:
        return self.transformer_blocks[0].bank_key
