"""The clip loop: any audio length in clips of N frames, each seeded by the last two frames of the
previous clip (docs/authors_behaviours.md B1-B5).

- One CPU random generator for the whole video: clip k's initial noise is the (k+1)-th draw.
- Clip 0's motion frames are the source image itself; clip k > 0 uses the last two decoded,
  clamped frames of clip k-1 (mapped back to [-1, 1]); with 1-frame clips, the last two frames
  generated so far (the source image standing in before the first).
- Frames are decoded and handed out clip by clip, so memory does not grow with the audio length;
  the total is trimmed to the audio's true frame count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from ..conditioning import AudioFeatures, EmotionConditioning, FaceConditioning, SamplingSettings
from ..errors import Cancelled, InputError
from ..models.net import EmoCASTNet
from ..models.placement import check_placement
from ..preprocess.audio import stack_neighbours
from .guards import check_finite
from .sampler import ClipInputs, SampleStats, sample_clip
from .scheduler import DDIMZeroSNR


@dataclass(frozen=True)
class Progress:
    """One denoising step done: `step` of `total` over the whole video, inside clip `clip` of `clips`."""

    step: int
    total: int
    clip: int
    clips: int


ProgressCallback = Callable[[Progress], None]


def plan_clips(audio: AudioFeatures, clip_length: int) -> int:
    """Number of clips; the features must be padded to exactly that many clips (as the authors do)."""
    clips = math.ceil(audio.num_frames / clip_length)
    if audio.num_frames < 1:
        raise InputError("the audio is shorter than one video frame (40 ms).", hint="Use a longer speech clip.")
    if audio.features.shape[0] != clips * clip_length:
        raise InputError(
            f"the audio features hold {audio.features.shape[0]} frames, but {audio.num_frames} frames in clips of "
            f"{clip_length} need exactly {clips * clip_length}: they were padded for another clip length.",
            hint="Encode the audio with the same frames-per-clip as the sampler.")
    return clips


def generate_clips(net: EmoCASTNet, vae, face: FaceConditioning, audio: AudioFeatures,
                   emotion: EmotionConditioning, settings: SamplingSettings, *,
                   device: Optional[torch.device] = None,
                   progress: Optional[ProgressCallback] = None,
                   should_cancel: Optional[Callable[[], bool]] = None,
                   stats: Optional[SampleStats] = None) -> Iterator[torch.Tensor]:
    """Yield the frames of each clip, [n, 3, H, W] float32 in [0, 1] on the CPU, trimmed to the audio.

    `device`: where to compute (a host passes its compute device; default: where the network's first
    layer is). Before every clip the whole network must be there (a host may move it between clips,
    e.g. around VAE calls); otherwise InputError, never a silent run elsewhere.
    `stats`, when given, sums what the denoiser did.
    """
    f = settings.clip_length
    clips = plan_clips(audio, f)
    device, dtype = torch.device(device) if device is not None else net.device, net.dtype
    check_placement(net, device)
    size = face.size
    if size % 64:
        raise InputError(f"the model resolution must be a multiple of 64, got {size}.")
    total = clips * settings.steps
    scheduler = DDIMZeroSNR()

    text = emotion.per_frame(clips * f, audio.fps)
    to = dict(device=device, dtype=dtype)
    with torch.no_grad():
        face_emb = face.embedding.reshape(1, -1).to(**to)
        face_cond = net.imageproj(face_emb)[0]
        face_uncond = net.imageproj(torch.zeros_like(face_emb))[0]
        region = face.face_region.unsqueeze(0).to(**to).expand(f, -1, -1, -1)
        face_features = net.face_locator(region)
    masks = {k: [m.reshape(1, -1).to(**to) for m in levels] for k, levels in face.masks.items()}
    source = face.pixels.unsqueeze(0).float()
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    motion = source.expand(settings.motion_frames, -1, -1, -1)
    emitted = 0
    for k in range(clips):
        if k:  # the first clip was checked before any work
            check_placement(net, device, what=f"at clip {k + 1} of {clips}, the EmoCAST network",
                            why="It was moved after the previous clip (a host unloading it to make room for "
                                "the VAE, say) and not brought back whole.")
        frames = slice(k * f, (k + 1) * f)
        with torch.no_grad():
            audio_tokens = net.audioproj(stack_neighbours(audio.features, k * f, (k + 1) * f).to(**to))
        clip = ClipInputs(
            reference=torch.cat([source, motion]).to(device), text=text[frames].to(**to),
            text_uncond=emotion.uncond.to(**to), face_cond=face_cond, face_uncond=face_uncond,
            face_features=face_features, audio=audio_tokens, masks=masks)
        noise = torch.randn((1, 4, f, size // 8, size // 8), generator=generator, dtype=dtype)
        noise = noise[0].transpose(0, 1).to(device)

        def on_step(i: int, k: int = k) -> None:
            if should_cancel is not None and should_cancel():
                raise Cancelled(f"cancelled at step {k * settings.steps + i + 1} of {total}.")
            if progress is not None:
                progress(Progress(k * settings.steps + i + 1, total, k, clips))

        latents = sample_clip(net, vae, clip, noise, steps=settings.steps, cfg_scale=settings.cfg_scale,
                              weights=settings.motion_scale, scheduler=scheduler, callback=on_step,
                              sampler=settings.sampler, cfg_window=settings.cfg_window, reuse=settings.reuse,
                              stats=stats)
        check_finite(latents, k, clips, "the network", dtype, step=settings.steps)
        video = vae.decode(latents, batch=settings.vae_batch)
        check_finite(video, k, clips, "the VAE", video.dtype)
        video = (video / 2 + 0.5).clamp(0, 1).float().cpu()
        # the last motion_frames frames so far: with clips shorter than that, earlier ones fill in
        motion = torch.cat([motion, video[-settings.motion_frames:] * 2 - 1])[-settings.motion_frames:]
        keep = min(f, audio.num_frames - emitted)
        emitted += keep
        yield video[:keep]


def generate(net: EmoCASTNet, vae, face: FaceConditioning, audio: AudioFeatures, emotion: EmotionConditioning,
             settings: SamplingSettings, **kwargs) -> torch.Tensor:
    """All frames, [F, 3, H, W] float32 in [0, 1], F = the audio's frame count."""
    return torch.cat(list(generate_clips(net, vae, face, audio, emotion, settings, **kwargs)))
