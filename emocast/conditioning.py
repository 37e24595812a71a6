"""The typed bundles that flow one way through the pack: inputs -> conditioning -> sampler -> frames.

Each bundle is produced by one preprocessing step and consumed by the sampler; nodes pass them
between each other unchanged (they are frozen: a node that needs a variant uses
`dataclasses.replace`). Tensors live on the CPU in float32 until the sampler moves them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from .constants import FPS, MASK_NAMES  # noqa: F401 (re-exported: most modules import them from here)


@dataclass(frozen=True)
class CropBox:
    """Where the square model crop sits in the user's original image (pixels, exclusive end).

    `x0, y0, x1, y1` may reach outside the image (the crop is then padded); `image_size` is the
    original `(width, height)`.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    image_size: tuple[int, int]

    @property
    def side(self) -> int:
        return self.x1 - self.x0


@dataclass(frozen=True)
class FaceConditioning:
    """Everything the model takes from the reference portrait.

    pixels:      [3, H, W] float32 in [-1, 1], the square model-resolution portrait.
    face_region: [3, H, W] float32 in {0, 1}, the expanded face rectangle (FaceLocator input).
    embedding:   [512] float32 insightface identity embedding, not L2-normalised (zeros = none).
    masks:       "full" / "face" / "lip" -> 4 levels; level i is [(H/8/2^i)^2] in [0, 1]
                 (row-major flattened square map) used by the emotive audio attention.
    crop:        where `pixels` came from in the original image, for paste-back (None: whole image).
    source:      the original image as [h, w, 3] float32 in [0, 1] (for paste-back), or None.
    """

    pixels: torch.Tensor
    face_region: torch.Tensor
    embedding: torch.Tensor
    masks: dict[str, list[torch.Tensor]]
    crop: Optional[CropBox] = None
    source: Optional[torch.Tensor] = None

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])


@dataclass(frozen=True)
class AudioFeatures:
    """wav2vec2 features resampled to the video frame rate.

    features:   [T, L, D] hidden states of the L encoder layers per video frame; T may be padded
                beyond `num_frames` (the authors pad to whole clips).
    num_frames: the true number of video frames the audio lasts (ceil(seconds * fps)); the output
                is trimmed to it.
    fps:        frames per second of `features` (25 for EmoCAST).
    """

    features: torch.Tensor
    num_frames: int
    fps: float = FPS

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: the authors' defaults (configs/inference/default.yaml) unless changed.

    clip_length: frames generated per clip (the model sees clip_length + motion_frames <= 32).
    pose_weight / face_weight / lip_weight: scales of the full / face / lip audio branches.
    vae_batch:   frames decoded per VAE call. 1 decodes frame by frame like the authors (their exact
                 frames); more is a little faster on a GPU and moves pixels by float noise (~1e-5),
                 which the motion-frame feedback of later clips amplifies (~5e-4 after 3 clips).
    sampler / cfg_window / reuse: the speed knobs (emocast.pipeline.presets): "ddim", "dpm++2m" or
                 "unipc"; the fraction [start, end) of the steps that use CFG (the others run the
                 conditional frames only); a full UNet call every `reuse` steps (1 = off). The
                 defaults are the authors' sampling (the `exact` preset).
    """

    steps: int = 40
    cfg_scale: float = 3.5
    seed: int = 42
    pose_weight: float = 1.0
    face_weight: float = 1.0
    lip_weight: float = 1.0
    clip_length: int = 16
    motion_frames: int = 2
    vae_batch: int = 1
    sampler: str = "ddim"
    cfg_window: tuple[float, float] = (0.0, 1.0)
    reuse: int = 1

    def __post_init__(self):
        from .errors import ConfigError
        from .pipeline.solvers import SAMPLERS

        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}.", hint=f"Use one of {', '.join(SAMPLERS)}.")
        start, end = self.cfg_window
        if not 0.0 <= start <= end <= 1.0:
            raise ConfigError(f"cfg_window must be 0 <= start <= end <= 1, got {start:g}, {end:g}.")
        if self.reuse < 1:
            raise ConfigError(f"reuse must be at least 1 (1 = off), got {self.reuse}.")

        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}.",
                              hint="40 is the authors' default; fewer is faster and rougher.")
        if self.cfg_scale < 0:
            raise ConfigError(f"cfg_scale must be >= 0, got {self.cfg_scale}.",
                              hint="3.5 is the authors' default; 1 or less turns guidance off.")
        if self.clip_length < 1:
            raise ConfigError(f"clip_length must be at least 1, got {self.clip_length}.",
                              hint="16 is what the model was trained with.")
        if self.clip_length + self.motion_frames > 32:
            raise ConfigError(
                f"clip_length {self.clip_length} + motion_frames {self.motion_frames} exceeds the 32 "
                "positions of the motion modules.",
                hint="Use clip_length <= 30 (16 is what the model was trained with).",
            )
        if self.vae_batch < 1:
            raise ConfigError(f"vae_batch must be at least 1, got {self.vae_batch}.",
                              hint="1 decodes frame by frame (the authors' exact frames).")

    @property
    def motion_scale(self) -> tuple[float, float, float]:
        return (self.pose_weight, self.face_weight, self.lip_weight)


@dataclass(frozen=True)
class EmotionKeyframe:
    """One emotion prompt taking effect at `time_s` seconds, scaled by `intensity` (1 = as written)."""

    time_s: float
    embedding: torch.Tensor  # [77, 768] CLIP last_hidden_state of the prompt
    intensity: float = 1.0
    prompt: str = ""


@dataclass(frozen=True)
class EmotionConditioning:
    """CLIP text conditioning for the emotive attentions, possibly changing over time.

    keyframes:    at least one; a single prompt is the one-keyframe case.
    uncond:       [77, 768] CLIP("") embedding, the classifier-free-guidance negative.
    neutral:      [77, 768] embedding of the neutral prompt that intensity scales from (None: the
                  intensity of every keyframe must be 1).
    transition_s: length of the smooth transition into each keyframe, in seconds.
    """

    keyframes: tuple[EmotionKeyframe, ...]
    uncond: torch.Tensor
    neutral: Optional[torch.Tensor] = None
    transition_s: float = 0.0

    def per_frame(self, num_frames: int, fps: float = FPS) -> torch.Tensor:
        """[num_frames, 77, 768] conditioning of every video frame."""
        from .emotion.schedule import frame_embeddings

        return frame_embeddings(self, num_frames, fps)
