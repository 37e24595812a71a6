"""How much device memory one clip needs beyond the weights, from the sizes of the tensors it holds.

Derived from the sampler's layout, not fitted: per denoiser call the batch is B = halves x frames
(halves = 2 with guidance) and level l of the UNet works on N_l = (size / 8 / 2^l)^2 tokens of width
C_l. What is alive at the peak:

- the reference bank: every spatial transformer block's tokens of the ReferenceNet, [halves x 3, N_l,
  C_l] in fp16, held for the whole clip; and the per-clip key / value cache of the text and audio
  contexts ([B, 81 / 32, C_l] per attention layer);
- the skip connections of the down path (conv_in, each resnet / transformer output, each downsampler);
- the widest moment at level 0: a spatial transformer block reading the reference tokens (keys /
  values of 2 N tokens), then its GEGLU feed-forward ([B, N, 8 C] projection, [B, N, 4 C] gate and
  product) beside the block's input and residual;
- or, after the loop, the VAE decoding `vae_batch` frames: 512 / 512 / 256 / 128 channels at 1/8 /
  1/4 / 1/2 / 1 of the size, the last up level holding ~2 maps of 256 and ~3 of 128 channels at full size.

Attention scores are not counted: SDPA's flash / memory-efficient kernels (CUDA, and the CPU for
fp32) and ComfyUI's backends never hold the [N, 2N] matrix whole. On a GPU the allocator's caching
adds to this; `benchmarks/bench_memory.py --cuda` compares it with torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: Text + face tokens of the emotive attention; audio tokens per frame.
CONTEXT_TOKENS, AUDIO_TOKENS = 81, 32
#: sd-vae-ft-mse decoder widths from the latent to the image resolution.
VAE_WIDTHS = (512, 512, 256, 128)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes: `unet` (denoising, the clip's resident tensors included), `vae` (decoding), `peak` = max."""

    unet: int
    vae: int

    @property
    def peak(self) -> int:
        return max(self.unet, self.vae)


def _bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate(cfg, size: int, clip_length: int, dtype: torch.dtype, guidance: bool, *, vae_batch: int = 1,
             vae_dtype: torch.dtype | None = None) -> MemoryEstimate:
    """Working memory of one clip at `size` px with `clip_length` frames (cfg: the Net's UNetConfig)."""
    halves = 2 if guidance else 1
    b = halves * clip_length
    widths, n = cfg.block_out_channels, cfg.layers_per_block
    tokens = [(size // 8 // 2 ** lvl) ** 2 for lvl in range(len(widths))]
    per = _bytes(dtype)
    # transformer blocks per level: down levels 0-2 (n each), mid (1), up levels 1-3 -> widths 2, 1, 0 (n + 1 each)
    attn = [(lvl, n) for lvl in range(3)] + [(3, 1)] + [(lvl, n + 1) for lvl in range(3)]
    bank = sum(halves * 3 * tokens[lvl] * widths[lvl] * k for lvl, k in attn) * 2  # fp16 tokens
    cache = sum(2 * b * (CONTEXT_TOKENS + AUDIO_TOKENS) * widths[lvl] * k for lvl, k in attn) * per
    skips = b * tokens[0] * widths[0] + sum(b * tokens[lvl] * widths[lvl] * (n + (lvl < 3)) for lvl in range(4))
    c, t = widths[0], tokens[0]
    block = b * t * c * (3 + 2 * 2 + 1)  # x, residual, norm; keys and values of [N ; N reference]; output
    ff = b * t * c * (8 + 4 + 4)  # GEGLU projection, gate, product
    unet = bank + cache + (skips + block + ff) * per
    vae_per = _bytes(vae_dtype or dtype)
    hw = size * size
    vae = vae_batch * vae_per * (2 * VAE_WIDTHS[2] * hw + 3 * VAE_WIDTHS[3] * hw + 3 * VAE_WIDTHS[1] * hw // 4)
    return MemoryEstimate(int(unet), int(vae))
