"""Emotion over time: per-frame text conditioning from keyframes."""
from __future__ import annotations

import torch

from ..errors import InputError


def frame_embeddings(emotion, num_frames: int, fps: float) -> torch.Tensor:
    """[num_frames, 77, 768] embedding of every frame (one keyframe: the same for all frames)."""
    if not emotion.keyframes:
        raise InputError("the emotion conditioning has no keyframe.")
    if len(emotion.keyframes) > 1 or emotion.keyframes[0].intensity != 1.0:
        raise NotImplementedError("emotion schedules arrive with issue 7")
    return emotion.keyframes[0].embedding.unsqueeze(0).expand(num_frames, -1, -1)
