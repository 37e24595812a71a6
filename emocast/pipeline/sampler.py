"""One clip: reference features, classifier-free guidance and the DDIM loop (docs/authors_behaviours.md B8-B19).

Batch layout: CFG halves are [uncond, cond] (uncond first); video frames are folded into the batch,
[(half frame), C, h, w]. What the unconditional half sees, as the authors built it:
- text tokens CLIP(""), face tokens ImageProj(zeros) (not zero tokens), no FaceLocator features,
  zero audio tokens, no reference tokens in self-attention;
- but the *conditional* emotion text as the query of the audio-emotion attention (harmless: with
  zero audio tokens and no q/k/v bias its output is the to_out bias whatever the query).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..models.audio_attention import AudioDrive
from ..models.net import EmoCASTNet
from ..models.transformer import ReferenceBank
from ..models.unet import DenoiseInputs
from .scheduler import DDIMZeroSNR

log = logging.getLogger("EmoCAST")

#: Called after every denoising step with (step index within the clip); may raise to cancel.
StepCallback = Callable[[int], None]


@dataclass
class ClipInputs:
    """Conditioning of one clip of `frames` frames, on the compute device and dtype.

    reference:   [3, 3, H, W] in [-1, 1]: source image, then the two motion frames.
    text:        [frames, 77, 768] conditional emotion text per frame.
    text_uncond: [77, 768] CLIP("").
    face_cond / face_uncond: [4, 768] ImageProj(embedding) / ImageProj(zeros).
    face_features: [frames, C0, h, w] FaceLocator output of the face region.
    audio:       [frames, 32, 768] AudioProj tokens.
    masks:       "full" / "face" / "lip" -> per level [N] (same for every frame).
    """

    reference: torch.Tensor
    text: torch.Tensor
    text_uncond: torch.Tensor
    face_cond: torch.Tensor
    face_uncond: torch.Tensor
    face_features: torch.Tensor
    audio: torch.Tensor
    masks: dict[str, list[torch.Tensor]]

    @property
    def frames(self) -> int:
        return self.text.shape[0]


def _halves(cond: torch.Tensor, uncond: torch.Tensor, cfg: bool) -> torch.Tensor:
    return torch.cat([uncond, cond]) if cfg else cond


def reference_latents(vae, reference: torch.Tensor) -> torch.Tensor:
    """VAE latents of [source, m1, m2]. Like the authors' image processor, a batch with no
    negative value is taken as [0, 1] and mapped to [-1, 1] again (docs/authors_behaviours.md#b10)."""
    if reference.min() >= 0:
        log.warning("every pixel of the reference is >= 0.5: mapped to [-1, 1] a second time, as the authors' "
                    "pipeline does (a very bright portrait loses contrast; darken it slightly to avoid this).")
        reference = reference * 2 - 1
    return vae.encode(reference)


@torch.no_grad()
def sample_clip(net: EmoCASTNet, vae, clip: ClipInputs, noise: torch.Tensor, *, steps: int, cfg_scale: float,
                weights: tuple[float, float, float], scheduler: Optional[DDIMZeroSNR] = None,
                callback: Optional[StepCallback] = None) -> torch.Tensor:
    """Denoise `noise` [frames, 4, h, w] into clip latents [frames, 4, h, w] (not decoded)."""
    scheduler = scheduler or DDIMZeroSNR()
    cfg = cfg_scale > 1.0
    halves, f = (2 if cfg else 1), clip.frames
    dtype = net.dtype

    # Text-guided emotive attention context: [77 text ; 4 face] tokens per frame.
    ctx_cond = torch.cat([clip.text, clip.face_cond.expand(f, -1, -1)], dim=1)
    ctx_uncond = torch.cat([clip.text_uncond, clip.face_uncond])
    context = _halves(ctx_cond, ctx_uncond.expand(f, -1, -1), cfg)
    face = _halves(clip.face_features, torch.zeros_like(clip.face_features), cfg)
    drive = AudioDrive(
        audio=_halves(clip.audio, torch.zeros_like(clip.audio), cfg),
        emotion=clip.text.repeat(halves, 1, 1),
        masks={k: [m.expand(halves * f, -1) for m in levels] for k, levels in clip.masks.items()},
        weights=weights,
    )

    # ReferenceNet: once per clip, batch [r, m1, m2] per half; the context tiles [u, c] over it. With an
    # emotion schedule the clip's middle frame stands for the clip (one keyframe: every frame is the same).
    ref_ctx = torch.stack([ctx_uncond, ctx_cond[f // 2]]) if cfg else ctx_cond[f // 2:f // 2 + 1]
    tokens = net.reference_unet(reference_latents(vae, clip.reference).to(dtype).repeat(halves, 1, 1, 1), ref_ctx)
    # The authors' reader keeps these tokens in float16 even in fp32 runs; bf16 stays bf16.
    # See docs/authors_behaviours.md#b14.
    bank = ReferenceBank(tokens, halves, cfg).to(torch.bfloat16 if dtype == torch.bfloat16 else torch.float16)
    inputs = DenoiseInputs(context=context, face=face, drive=drive, bank=bank, frames=f, cache={})

    latents = noise
    for i, t in enumerate(scheduler.timesteps(steps)):
        v = net.denoising_unet(latents.repeat(halves, 1, 1, 1), torch.tensor(t, device=latents.device), inputs)
        if cfg:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + cfg_scale * (v_cond - v_uncond)
        latents = scheduler.step(v, t, latents, steps)
        if callback is not None:
            callback(i)
    return latents
