"""Files in, video out: photo + speech + emotion -> MP4, with loaded models (the CLI's job).

The same steps the ComfyUI graph wires as nodes: face -> audio -> emotion -> sampler -> paste-back
-> video, streamed clip by clip so memory does not grow with the audio length.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from .conditioning import SamplingSettings
from .pipeline.clips import Progress, generate_clips

if TYPE_CHECKING:  # for the annotations only: importing them here would load every network's module
    from .models.clip_text import TextEncoder
    from .models.net import EmoCASTNet
    from .models.vae import VAECodec
    from .models.wav2vec2 import Wav2Vec2Encoder
    from .preprocess.face import FaceAnalyser
    from .preprocess.landmarks import Landmarker

log = logging.getLogger("EmoCAST")


@dataclass
class Models:
    """Everything a generation needs, loaded (`load_models` below from a models folder; the tiny demo
    ones: emocast.demo.models)."""

    net: EmoCASTNet
    vae: VAECodec
    text: TextEncoder
    wav2vec2: Wav2Vec2Encoder
    analyser: FaceAnalyser
    landmarker: Landmarker


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


# ---------------------------------------------------------------- the CLI's generate, step by step (also batch)

def device_dtype(device: str, dtype: str):
    import torch

    from .weights import resolve_dtype

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    return dev, resolve_dtype(dtype, dev)


def sampling_settings(args, preset: str | None = None, **overrides):
    from .conditioning import SamplingSettings
    from .pipeline.presets import apply_preset, parse_window

    knobs = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("reuse", args.reuse),
                               ("cfg_window", parse_window(args.cfg_window))) if v is not None}
    base = SamplingSettings(cfg_scale=args.cfg, seed=args.seed, pose_weight=args.pose_weight,
                            face_weight=args.face_weight, lip_weight=args.lip_weight, clip_length=args.clip_length,
                            vae_batch=args.vae_batch, **overrides)
    return apply_preset(base, preset or args.preset, **knobs)


def models_folder(models):
    """The models folder: `models` or ComfyUI's, checked to exist."""
    from pathlib import Path

    from . import model_files as mf
    from .errors import InputError

    models_dir = Path(models) if models else mf.comfyui_models_dir()
    if models_dir is None or not models_dir.is_dir():
        raise InputError(f"models folder not found: {models or '(none given, no ComfyUI models folder found)'}.",
                         hint="Pass --models DIR (a folder with emocast/, vae/, text_encoders/, audio_encoders/, "
                              "insightface/ sub-folders) or set COMFYUI_MODELS.")
    return models_dir


def job_emotion(args):
    """Check the image and audio files exist; the prompt (checked), or the parsed emotion schedule file."""
    from pathlib import Path

    from .emotion.schedule import EmotionSchedule, KeyframeSpec, parse_schedule
    from .errors import InputError

    for p, what in ((args.image, "image"), (args.audio, "audio")):
        if not Path(p).is_file():
            raise InputError(f"{what} file not found: {p}", hint=f"Check the --{what} path.")
    if not args.emotion_schedule:
        EmotionSchedule((KeyframeSpec(0.0, args.prompt),), transition_s=0.0)  # checks the prompt
        return args.prompt
    path = Path(args.emotion_schedule)
    if not path.is_file():
        raise InputError(f"emotion schedule file not found: {path}", hint="Check the --emotion-schedule path.")
    return parse_schedule(path.read_text())


def load_models(models_dir, args, device, dtype):
    """Every model from a models folder (args: checkpoint, vae, clip, wav2vec2, landmarker choices) -> run.Models."""
    from . import model_files as mf
    from .models.checkpoint import load_net
    from .models.clip_text import load_text_encoder
    from .models.vae import load_vae
    from .models.wav2vec2 import load_wav2vec2
    from .preprocess.face import FaceAnalyser
    from .preprocess.landmarks import load_landmarker

    swap = getattr(args, "vram_budget", 0) > 0
    net = load_net(mf.find_model(models_dir, mf.EMOCAST, args.checkpoint), dtype=dtype,
                   device="cpu" if swap else device, weight_dtype=getattr(args, "weights", "default"))
    if swap:  # block swap: the weights stay in RAM, each block visits `device` within the budget
        from .models import offload

        offload.attach(net, device, int(args.vram_budget * 2 ** 30))
    if getattr(args, "compile", False):
        from .models.compile import compile_denoiser

        compile_denoiser(net)
    analyser = FaceAnalyser(models_dir / mf.INSIGHTFACE.key)
    tasks = mf.candidates(models_dir, mf.LANDMARKER)
    return Models(
        net=net,
        vae=load_vae(mf.find_model(models_dir, mf.VAE, args.vae), dtype=dtype, device=device),
        text=load_text_encoder(mf.find_model(models_dir, mf.CLIP, args.clip), device=device),
        wav2vec2=load_wav2vec2(mf.find_model(models_dir, mf.WAV2VEC2, args.wav2vec2), device=device),
        analyser=analyser,
        landmarker=load_landmarker(args.landmarker, task_file=tasks[0] if tasks else None, analyser=analyser),
    )


def render(models, args, emotion, out, progress=None, image=None, speech=None):
    """One video with loaded models: the generate settings in `args` (shared by generate and batch);
    `image` / `speech` when already opened, else read from args.image / args.audio."""
    return generate_video(models, args.image if image is None else image,
                          args.audio if speech is None else speech, emotion, out, sampling_settings(args), size=args.size or 512,
                          paste_back=not args.no_paste_back, face_index=args.face_index, no_face=args.no_face,
                          progress=progress)
