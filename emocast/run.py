"""Files in, video out: photo + speech + emotion -> MP4, with loaded models (the CLI's job).

The same steps the ComfyUI graph wires as nodes: face -> audio -> emotion -> sampler -> paste-back
-> video, streamed clip by clip so memory does not grow with the audio length.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .conditioning import SamplingSettings
from .pipeline.clips import Progress, generate_clips

log = logging.getLogger("EmoCAST")


@dataclass
class Models:
    """Everything a generation needs, loaded (see emocast.demo.models / emocast.loading)."""

    net: object
    vae: object
    text: object
    wav2vec2: object
    analyser: object
    landmarker: object


def log_progress():
    """A progress callback that logs about ten lines per run, with the elapsed time."""
    started = time.perf_counter()

    def report(p: Progress) -> None:
        if p.step == 1 or p.step == p.total or p.step % max(1, p.total // 10) == 0:
            log.info("clip %d/%d, step %d/%d (%.0f s)", p.clip + 1, p.clips, p.step, p.total,
                     time.perf_counter() - started)
    return report


def generate_video(models: Models, image, audio, emotion, out: str | Path, settings: SamplingSettings, *,
                   size: int = 512, paste_back: bool = True, crop_margin: Optional[float] = None,
                   face_index: Optional[int] = None, no_face: str = "error", progress=None):
    """Generate `out` (MP4 with the speech) and return its VideoInfo.

    image: path / PIL image / array; audio: path or ComfyUI AUDIO dict; emotion: a prompt, or an
    EmotionSchedule (emocast.emotion.schedule.parse_schedule).
    """
    from .preprocess import crop
    from .preprocess.audio import fit_audio, load_speech
    from .preprocess.face import CROP_MARGIN, prepare_face
    from .models.wav2vec2 import extract_features
    from .video import write_mp4

    if isinstance(image, (str, Path)):
        image = crop.open_image(image)
    face = prepare_face(image, models.analyser, models.landmarker, size=size,
                        crop_margin=CROP_MARGIN if crop_margin is None else crop_margin, face_index=face_index,
                        no_face=no_face)
    speech = load_speech(audio)
    features = extract_features(models.wav2vec2, speech, clip_length=settings.clip_length)
    conditioning = models.text.encode(emotion)
    log.info("%d frames (%.2f s of speech) in %d clips of %d, %d steps each, at %d px", features.num_frames,
             features.seconds, -(-features.num_frames // settings.clip_length), settings.clip_length,
             settings.steps, size)

    def frames():
        for clip in generate_clips(models.net, models.vae, face, features, conditioning, settings, progress=progress or log_progress()):
            clip = clip.permute(0, 2, 3, 1)  # [n, H, W, 3]
            if paste_back and face.crop is not None and face.source is not None:
                clip, _ = crop.paste_back(clip, face.crop, face.source)
            yield clip

    with torch.inference_mode():
        return write_mp4(out, frames(), fps=features.fps, audio=fit_audio(speech.to_comfy(), features.num_frames,
                                                                          features.fps))
