"""Attention layers of EmoCAST, with the parameter names of the released checkpoint.

`Attention` is plain multi-head attention (to_q / to_k / to_v / to_out.0) computed with
`scaled_dot_product_attention`, which is what the authors' diffusers version ran for every layer.
`TextGuidedEmotiveAttention` is the paper's decoupled cross-attention: the 77 CLIP emotion-text
tokens go through to_k / to_v, the 4 face-identity tokens through their own projections
(`processor.to_k_ip.0` / `processor.to_v_ip.0`, IP-Adapter style), and both results are summed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Number of face-identity tokens appended after the text tokens (ImageProj output).
FACE_TOKENS = 4


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over `heads` heads; q [B, Lq, C], k / v [B, Lk, C] -> [B, Lq, C]."""
    b, lq, c = q.shape
    d = c // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, lq, c)


#: The attention every layer calls: SDPA, or a host's backend (ComfyUI's optimized_attention) set by
#: `set_backend`; same layout: q [B, Lq, heads x d], k / v [B, Lk, heads x d], `heads` -> [B, Lq, heads x d].
_backend = sdpa_attention


def set_backend(fn=None) -> None:
    """Use `fn(q, k, v, heads)` for every attention layer (None: back to SDPA)."""
    global _backend
    _backend = fn or sdpa_attention


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    return _backend(q, k, v, heads)


def _keys_values(module: nn.Module, cache: dict | None, compute):
    """compute() once per cache (one clip: the context is the same at every step), else every call."""
    if cache is None:
        return compute()
    if module not in cache:
        cache[module] = compute()
    return cache[module]


class Attention(nn.Module):
    """Multi-head attention: self-attention when `context` is None, else cross-attention."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 out_dim: int | None = None):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, out_dim or query_dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, cache: dict | None = None) -> torch.Tensor:
        """`cache` keeps the keys / values of a context that does not change between denoising steps."""
        context = x if context is None else context
        k, v = _keys_values(self, cache, lambda: (self.to_k(context), self.to_v(context)))
        return self.to_out[0](multi_head_attention(self.to_q(x), k, v, self.heads))


class FaceTokenProjection(nn.Module):
    """Key / value projections of the face-identity tokens.

    Registered as `processor` so the checkpoint's `attn2.processor.to_k_ip.0.weight` names load as is.
    """

    def __init__(self, context_dim: int, inner: int):
        super().__init__()
        self.to_k_ip = nn.ModuleList([nn.Linear(context_dim, inner, bias=False)])
        self.to_v_ip = nn.ModuleList([nn.Linear(context_dim, inner, bias=False)])


class TextGuidedEmotiveAttention(Attention):
    """Cross-attention on [77 emotion-text tokens ; 4 face tokens] with decoupled face branch.

    out = to_out(Attn(q, text) + Attn(q, face)), the face branch at scale 1.
    """

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__(query_dim, heads, head_dim, context_dim)
        self.processor = FaceTokenProjection(context_dim, heads * head_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, cache: dict | None = None) -> torch.Tensor:  # type: ignore[override]
        text, face = context[:, :-FACE_TOKENS], context[:, -FACE_TOKENS:]
        ip = self.processor
        k, v, face_k, face_v = _keys_values(self, cache, lambda: (self.to_k(text), self.to_v(text),
                                                                  ip.to_k_ip[0](face), ip.to_v_ip[0](face)))
        q = self.to_q(x)
        out = multi_head_attention(q, k, v, self.heads) + multi_head_attention(q, face_k, face_v, self.heads)
        return self.to_out[0](out)


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward (4x width); `net.0` / `net.2` names as in the checkpoint."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))
