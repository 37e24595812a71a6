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
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..models.audio_attention import AudioDrive
from ..models.net import EmoCASTNet
from ..models.transformer import ReferenceBank
from ..models.unet import DenoiseInputs, FeatureReuse
from .scheduler import DDIMZeroSNR
from .solvers import make_solver

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


@dataclass
class SampleStats:
    """What the denoiser did, summed over the clips it is passed to.

    passes:         CFG halves run through the denoising UNet: a guided step counts 2 (its batch of
                    two), a conditional-only step 1; feature-reuse steps count too, and again in
    shallow_passes: the passes that ran only the outer levels on reused deep features.
    denoise_s:      seconds in the step loops (the ReferenceNet pass and decoding not included).
    """

    passes: int = 0
    shallow_passes: int = 0
    denoise_s: float = 0.0


def guided_steps(steps: int, window: tuple[float, float]) -> list[bool]:
    """Which steps use CFG: step i when start <= i / steps < end (window (0, 1): every step)."""
    start, end = window
    return [start <= i / steps < end for i in range(steps)]


def step_plan(steps: int, cfg: bool, window: tuple[float, float], reuse: int) -> list[tuple[bool, bool]]:
    """(guided, shallow) per step. A shallow step reuses the deep features of the last full step; a
    full step comes every `reuse` steps and whenever the batch changes (guided <-> conditional-only)."""
    guided = guided_steps(steps, window) if cfg else [False] * steps
    plan, last_full = [], -steps
    for i, g in enumerate(guided):
        shallow = reuse > 1 and i > 0 and guided[i - 1] == g and i - last_full < reuse
        last_full = last_full if shallow else i
        plan.append((g, shallow))
    return plan


def prepare_clip(net: EmoCASTNet, vae, clip: ClipInputs, cfg: bool):
    """(conditional context, unconditional context, reference bank) of one clip."""
    halves, f = (2 if cfg else 1), clip.frames
    # Text-guided emotive attention context: [77 text ; 4 face] tokens per frame.
    ctx_cond = torch.cat([clip.text, clip.face_cond.expand(f, -1, -1)], dim=1)
    ctx_uncond = torch.cat([clip.text_uncond, clip.face_uncond])
    # ReferenceNet: once per clip, batch [r, m1, m2] per half; the context tiles [u, c] over it. With an
    # emotion schedule the clip's middle frame stands for the clip (one keyframe: every frame is the same).
    ref_ctx = torch.stack([ctx_uncond, ctx_cond[f // 2]]) if cfg else ctx_cond[f // 2:f // 2 + 1]
    dtype = net.dtype
    tokens = net.reference_unet(reference_latents(vae, clip.reference).to(dtype).repeat(halves, 1, 1, 1), ref_ctx)
    # The authors' reader keeps these tokens in float16 even in fp32 runs; bf16 stays bf16.
    # See docs/authors_behaviours.md#b14.
    bank = ReferenceBank(tokens, halves, cfg).to(torch.bfloat16 if dtype == torch.bfloat16 else torch.float16)
    return ctx_cond, ctx_uncond, bank


def denoise_inputs(clip: ClipInputs, ctx_cond, ctx_uncond, weights, bank: ReferenceBank, guided: bool,
                    reuse: bool) -> DenoiseInputs:
    """The denoiser's inputs for a [uncond; cond] batch (guided) or the conditional frames only."""
    halves, f = (2 if guided else 1), clip.frames
    drive = AudioDrive(
        audio=_halves(clip.audio, torch.zeros_like(clip.audio), guided),
        emotion=clip.text.repeat(halves, 1, 1),
        masks={k: [m.expand(halves * f, -1) for m in levels] for k, levels in clip.masks.items()},
        weights=weights,
    )
    return DenoiseInputs(context=_halves(ctx_cond, ctx_uncond.expand(f, -1, -1), guided),
                         face=_halves(clip.face_features, torch.zeros_like(clip.face_features), guided),
                         drive=drive, bank=bank if guided or not bank.cfg else bank.conditional(), frames=f,
                         cache={}, reuse=FeatureReuse() if reuse else None)


@torch.no_grad()
def sample_clip(net: EmoCASTNet, vae, clip: ClipInputs, noise: torch.Tensor, *, steps: int, cfg_scale: float,
                weights: tuple[float, float, float], scheduler: Optional[DDIMZeroSNR] = None,
                callback: Optional[StepCallback] = None, sampler: str = "ddim",
                cfg_window: tuple[float, float] = (0.0, 1.0), reuse: int = 1,
                stats: Optional[SampleStats] = None) -> torch.Tensor:
    """Denoise `noise` [frames, 4, h, w] into clip latents [frames, 4, h, w] float32 (not decoded).

    sampler: "ddim" (the authors'), "dpm++2m" or "unipc" (a fresh solver per clip).
    cfg_window: with CFG, the fraction of the steps that are guided (`guided_steps`); the others run
        the conditional frames only, reading the reference bank exactly as the guided batch's
        conditional half does (the bank is always written with both halves).
    reuse: a full UNet call every `reuse` steps, the calls between run on its deep features (1: off).
    Latents, the guidance mix and the solver stay float32 whatever the network's dtype.
    """
    cfg = cfg_scale > 1.0
    dtype = net.dtype
    solver = make_solver(sampler, steps, scheduler)
    ctx_cond, ctx_uncond, bank = prepare_clip(net, vae, clip, cfg)
    inputs: dict[bool, DenoiseInputs] = {}  # guided / conditional-only, built when first needed
    plan = step_plan(steps, cfg, cfg_window, reuse)

    timer = _Timer(noise.device) if stats is not None else None
    latents = noise.float()
    for i, t in enumerate(solver.timesteps):
        guided, shallow = plan[i]
        if guided not in inputs:
            inputs[guided] = denoise_inputs(clip, ctx_cond, ctx_uncond, weights, bank, guided, reuse > 1)
        step_inputs = inputs[guided]
        if step_inputs.reuse is not None:
            step_inputs.reuse.shallow = shallow
        n = 2 if guided else 1
        v = net.denoising_unet(latents.repeat(n, 1, 1, 1).to(dtype), torch.tensor(t, device=latents.device),
                               step_inputs).float()
        if guided:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + cfg_scale * (v_cond - v_uncond)
        latents = solver.step(v, t, latents)
        if stats is not None:
            stats.passes += n
            stats.shallow_passes += n if shallow else 0
        if callback is not None:
            callback(i)
    if timer is not None:
        stats.denoise_s += timer.stop()
    return latents


class _Timer:
    """Wall seconds of GPU work too: synchronises once at the start and once at the end, never per step."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._sync()
        self.t0 = time.perf_counter()

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def stop(self) -> float:
        self._sync()
        return time.perf_counter() - self.t0
