"""The generate options (argparse groups), shared by the CLI's commands and by batch jobs, which take
the same settings by name."""
from __future__ import annotations

import argparse


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .conditioning import SamplingSettings

    d = SamplingSettings()
    g = p.add_argument_group("sampling")
    g.add_argument("--preset", choices=("exact", "balanced", "fast"), default="exact",
                   help="speed preset (default exact: the authors' DDIM 40 steps; see README 'Speed presets'); "
                        "--steps / --sampler / --cfg-window / --reuse override its parts")
    g.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (default: the preset's, {d.steps} for exact)")
    g.add_argument("--sampler", choices=("ddim", "dpm++2m", "unipc"), default=None,
                   help="solver (default: the preset's)")
    g.add_argument("--cfg-window", metavar="START,END", default=None,
                   help="guide only the steps whose fraction done is in [START, END), e.g. 0,0.5 "
                        "(default: the preset's)")
    g.add_argument("--reuse", type=int, default=None,
                   help="run the whole UNet every N steps, the outer levels only in between "
                        "(1 = off; default: the preset's)")
    g.add_argument("--cfg", type=float, default=d.cfg_scale, help=f"guidance scale (default {d.cfg_scale})")
    g.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    g.add_argument("--pose-weight", type=float, default=d.pose_weight, help="scale of the full-frame audio branch")
    g.add_argument("--face-weight", type=float, default=d.face_weight, help="scale of the face audio branch")
    g.add_argument("--lip-weight", type=float, default=d.lip_weight, help="scale of the lip audio branch")
    g.add_argument("--clip-length", type=int, default=d.clip_length, help="frames per clip (default 16)")
    g.add_argument("--vae-batch", type=int, default=d.vae_batch,
                   help="frames per VAE decode call (default 1: frame by frame, the authors' exact frames)")
    g.add_argument("--size", type=int, default=None, help="model resolution (default 512; 128 for the demo)")
    g.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="compute precision (auto: fp16 on CUDA where safe, fp32 on GTX 16xx, pre-Pascal GPUs and "
                        "the CPU; bf16 needs an Ampere or newer GPU)")
    g.add_argument("--device", default="auto", help="torch device (auto: cuda when available)")
    g.add_argument("--vram-budget", type=float, default=0.0, metavar="GB",
                   help="block swap: keep the network's weights in RAM and move blocks to the device within GB "
                        "(0: load it whole; same frames, slower)")
    g.add_argument("--weights", choices=("default", "fp8"), default="default",
                   help="weight storage: fp8 halves the network's weight memory vs fp16 (frames change slightly)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser (meant for CUDA GPUs, no gain measured on the CPU; compiles "
                        "for minutes first; frames within float noise, not bit-identical; not with --vram-budget)")


def add_inputs(p: argparse.ArgumentParser) -> None:
    """Portrait, speech, emotion and the models folder (generate and compare-samplers)."""
    p.add_argument("--image", required=True, help="portrait image (any size; the face is cropped and pasted back)")
    p.add_argument("--audio", required=True, help="speech audio (wav, mp3, flac, m4a, ...)")
    emo = p.add_mutually_exclusive_group(required=True)
    emo.add_argument("--prompt", help='emotion prompt, e.g. "A person is talking with happy emotion."')
    emo.add_argument("--emotion-schedule", metavar="FILE",
                     help="emotion keyframes, one per line: '<seconds> [@intensity]: <prompt>'")
    p.add_argument("--models", default=None, help="ComfyUI-style models folder (default: ComfyUI's, when found)")


def add_face_args(p) -> None:
    p.add_argument("--no-paste-back", action="store_true", help="write the square crop instead of the full image")
    p.add_argument("--face-index", type=int, default=None, help="which face when there are several (0 = leftmost; "
                                                                "default: the largest)")
    p.add_argument("--no-face", choices=("error", "whole image"), default="error",
                   help="what to do when no face is found (default: error)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model files (default: the preferred file of each models sub-folder)")
    m.add_argument("--checkpoint", help="EmoCAST net (models/emocast/)")
    m.add_argument("--vae", help="SD VAE (models/vae/)")
    m.add_argument("--clip", help="CLIP ViT-L/14 text encoder (models/text_encoders/)")
    m.add_argument("--wav2vec2", help="wav2vec2-base-960h (models/audio_encoders/)")
    m.add_argument("--landmarker", default="auto",
                   choices=("auto", "mediapipe tasks", "mediapipe face mesh", "insightface 2d106"),
                   help="face landmarks for the masks (auto: mediapipe when available)")
