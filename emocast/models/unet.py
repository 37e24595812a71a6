"""The two UNets of EmoCAST: ReferenceNet (SD1.5, 2D) and the denoising video UNet.

Both share the SD1.5 skeleton (4 levels, `layers_per_block` resnets each, spatial transformers on
levels 0-2 and the middle) and module names, so the released checkpoint loads unchanged. The
denoiser adds, per spatial transformer, an emotive audio module and a motion module; video
activations are frames folded into the batch, [(B F), C, h, w], B = CFG halves.

What the authors' inference actually runs (docs/authors_behaviours.md#b20: their denoiser stays in training mode
with gradient checkpointing), reproduced here because the weights were trained that way:
- every cross-attention layer runs resnet -> spatial transformer (reading the reference bank) ->
  audio module -> motion module on [2 motion frames ; clip frames];
- the levels without attention (down_blocks.3, up_blocks.0) run their resnets only: their motion
  modules exist in the checkpoint but are never run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .audio_attention import AudioDrive, EmotiveAudioModule
from .config import UNetConfig
from .motion import MotionModule
from .resnet import Downsample, ResnetBlock, TimestepEmbedding, Upsample, timestep_embedding
from .transformer import ReferenceBank, SpatialTransformer, SpatialTransformerBlock


@dataclass
class FeatureReuse:
    """Deep-feature reuse across steps (DeepCache): a full call stores the input of the last up level;
    a call with `shallow` set runs only conv_in, the first down level and the last up level, on the
    stored deep features (levels 1-3 and the middle are skipped). Off unless the sampler asks."""

    deep: Optional[torch.Tensor] = None
    shallow: bool = False


@dataclass
class DenoiseInputs:
    """Everything a denoiser call needs besides the latents and the timestep.

    context:  [(B F), 81, 768] text + face tokens of every frame (the text-guided emotive attention).
    face:     [(B F), C0, h, w] FaceLocator features added after conv_in (None: nothing added).
    drive:    per-frame audio, emotion query, masks and branch weights.
    bank:     the ReferenceNet's tokens of this clip.
    frames:   F, frames per CFG half.
    cache:    keys / values of contexts that stay the same at every step of the clip (None: no reuse).
    reuse:    deep features kept across steps (None: every call runs the whole UNet).
    """

    context: torch.Tensor
    face: Optional[torch.Tensor]
    drive: AudioDrive
    bank: ReferenceBank
    frames: int
    cache: Optional[dict] = None
    reuse: Optional[FeatureReuse] = None


def _motion_features(bank: ReferenceBank, key: str, hgt: int, wid: int) -> torch.Tensor:
    """[halves, 2, C, h, w] motion-frame features from the bank (tokens are row-major h x w)."""
    m = bank.motion(key)
    return m.permute(0, 1, 3, 2).reshape(*m.shape[:2], m.shape[-1], hgt, wid)


class UNetLevel(nn.Module):
    """One resolution level: resnets (+ spatial transformers, + audio / motion modules), resampler.

    kind: "down" or "up" (up levels concatenate a skip connection before each resnet).
    video: build the denoiser's modules (motion modules always; audio modules with attention).
    """

    def __init__(self, cfg: UNetConfig, kind: str, in_ch: int, out_ch: int, n_layers: int, attention: bool,
                 video: bool, level: int, resample: bool, prev_ch: int = 0):
        super().__init__()
        temb, g, eps = cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps
        self.kind = kind
        self.resnets = nn.ModuleList()
        for i in range(n_layers):
            if kind == "down":
                r_in = in_ch if i == 0 else out_ch
            else:
                r_in = (prev_ch if i == 0 else out_ch) + (in_ch if i == n_layers - 1 else out_ch)
            self.resnets.append(ResnetBlock(r_in, out_ch, temb, g, eps))
        if attention:
            self.attentions = nn.ModuleList(SpatialTransformer(out_ch, cfg.heads, cfg.cross_attention_dim, g)
                                            for _ in range(n_layers))
        if attention and video:
            # the audio modules' inner width is the level's input width (down: per layer),
            # see docs/authors_behaviours.md#b24
            inner = [(in_ch if i == 0 else out_ch) if kind == "down" else in_ch for i in range(n_layers)]
            self.audio_modules = nn.ModuleList(EmotiveAudioModule(out_ch, inner[i], cfg.heads, g, level)
                                               for i in range(n_layers))
        if video:
            self.motion_modules = nn.ModuleList(MotionModule(out_ch, cfg.motion_heads, g) for _ in range(n_layers))
        if resample and kind == "down":
            self.downsamplers = nn.ModuleList([Downsample(out_ch)])
        elif resample:
            self.upsamplers = nn.ModuleList([Upsample(out_ch)])

    def forward(self, x, temb, context, skips=None, write=None, inputs: DenoiseInputs | None = None):
        outputs = []
        for i, resnet in enumerate(self.resnets):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)
            x = resnet(x, temb)
            if hasattr(self, "attentions"):
                attn = self.attentions[i]
                x = attn(x, context, write=write, read=inputs.bank if inputs else None,
                         cache=inputs.cache if inputs else None)
                if inputs is not None:
                    x = self.audio_modules[i](x, inputs.drive, inputs.cache)
                    motion = _motion_features(inputs.bank, attn.first_block_key, *x.shape[-2:])
                    x = self.motion_modules[i](x, motion, inputs.frames)
            outputs.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            outputs.append(x)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x)
        return x, outputs


class MidLevel(nn.Module):
    """resnet -> spatial transformer (-> audio -> motion) -> resnet, at the lowest resolution."""

    def __init__(self, cfg: UNetConfig, video: bool):
        super().__init__()
        ch, temb, g, eps = cfg.block_out_channels[-1], cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps
        self.attentions = nn.ModuleList([SpatialTransformer(ch, cfg.heads, cfg.cross_attention_dim, g)])
        if video:
            self.audio_modules = nn.ModuleList([EmotiveAudioModule(ch, ch, cfg.heads, g, level=3)])
            self.motion_modules = nn.ModuleList([MotionModule(ch, cfg.motion_heads, g)])
        self.resnets = nn.ModuleList([ResnetBlock(ch, ch, temb, g, eps) for _ in range(2)])

    def forward(self, x, temb, context, write=None, inputs: DenoiseInputs | None = None):
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, context, write=write, read=inputs.bank if inputs else None,
                               cache=inputs.cache if inputs else None)
        if inputs is not None:
            x = self.audio_modules[0](x, inputs.drive, inputs.cache)
            motion = _motion_features(inputs.bank, self.attentions[0].first_block_key, *x.shape[-2:])
            x = self.motion_modules[0](x, motion, inputs.frames)
        return self.resnets[1](x, temb)


class _UNet(nn.Module):
    video = False

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        widths, n = cfg.block_out_channels, cfg.layers_per_block
        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], cfg.time_embed_dim)
        self.down_blocks = nn.ModuleList()
        for i, out_ch in enumerate(widths):
            in_ch = widths[max(i - 1, 0)]
            self.down_blocks.append(UNetLevel(cfg, "down", in_ch, out_ch, n, attention=i < 3, video=self.video,
                                              level=i, resample=i < 3))
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(widths))
        for i, out_ch in enumerate(rev):
            self.up_blocks.append(UNetLevel(cfg, "up", rev[min(i + 1, 3)], out_ch, n + 1, attention=i > 0,
                                            video=self.video, level=3 - i, resample=i < 3,
                                            prev_ch=rev[max(i - 1, 0)]))
        self.mid_block = MidLevel(cfg, self.video)
        for name, module in self.named_modules():
            if isinstance(module, SpatialTransformerBlock):
                module.bank_key = name

    def _temb(self, t: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        t = t.reshape(-1).expand(batch) if t.numel() == 1 else t
        emb = timestep_embedding(t, self.config.block_out_channels[0], self.config.flip_sin_to_cos,
                                 self.config.freq_shift)
        return self.time_embedding(emb.to(dtype))

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype


class ReferenceNet(_UNet):
    """SD1.5 UNet that reads the reference image (+ motion frames) once per clip and writes its
    norm1 tokens of every spatial transformer block; its own output is never used (no conv_out)."""

    video = False

    def forward(self, latents: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """latents [halves * 3, 4, h, w] ([ref, m1, m2] per half), context [halves, 81, 768] -> bank."""
        bank: dict[str, torch.Tensor] = {}
        temb = self._temb(torch.zeros((), device=latents.device), latents.shape[0], self.dtype)
        x = self.conv_in(latents)
        skips = [x]
        for block in self.down_blocks:
            x, out = block(x, temb, context, write=bank)
            skips += out
        x = self.mid_block(x, temb, context, write=bank)
        for block in self.up_blocks:
            x, _ = block(x, temb, context, skips=skips, write=bank)
        return bank


class DenoisingUNet(_UNet):
    """The video UNet: reference-aware spatial attention, emotive audio attention, motion modules."""

    video = True

    def __init__(self, cfg: UNetConfig):
        super().__init__(cfg)
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, cfg.block_out_channels[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(cfg.block_out_channels[0], cfg.out_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, inputs: DenoiseInputs) -> torch.Tensor:
        """latents [(B F), 4, h, w] -> v-prediction of the same shape."""
        temb = self._temb(t, latents.shape[0] // inputs.frames, self.dtype)
        x = self.conv_in(latents)
        if inputs.face is not None:
            x = x + inputs.face
        skips = [x]
        reuse = inputs.reuse
        if reuse is not None and reuse.shallow:
            x, out = self.down_blocks[0](x, temb, inputs.context, inputs=inputs)
            skips += out[:-1]  # the downsampled map only feeds the skipped levels
            x = reuse.deep
        else:
            for block in self.down_blocks:
                x, out = block(x, temb, inputs.context, inputs=inputs)
                skips += out
            x = self.mid_block(x, temb, inputs.context, inputs=inputs)
            for block in self.up_blocks[:-1]:
                x, _ = block(x, temb, inputs.context, skips=skips, inputs=inputs)
            if reuse is not None:
                reuse.deep = x
        x, _ = self.up_blocks[-1](x, temb, inputs.context, skips=skips, inputs=inputs)
        return self.conv_out(torch.nn.functional.silu(self.conv_norm_out(x)))
