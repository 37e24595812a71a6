"""`python -m emocast`: the library from the command line, as thin as the nodes.

    python -m emocast demo [--out demo.mp4] [--export-models DIR]
    python -m emocast generate --image I --audio A --prompt P [--models DIR] --out OUT.mp4
    python -m emocast batch JOBS.jsonl --out DIR [--models DIR] [--ray local|auto|ADDRESS]
    python -m emocast verify-checkpoint PATH
    python -m emocast convert-checkpoint net.pth --out emocast_fp16.safetensors [--dtype fp16]
    python -m emocast download-models [--models DIR] [--only net,vae,clip,wav2vec2,insightface,landmarker]
    python -m emocast doctor [--models DIR]
    python -m emocast compare-samplers --image I --audio A --prompt P [--models DIR] [--presets exact,fast]

Errors meant for the user print one line (plus a hint) and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from .errors import EmoCASTError

log = logging.getLogger("EmoCAST")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
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


def _add_inputs(p: argparse.ArgumentParser) -> None:
    """Portrait, speech, emotion and the models folder (generate and compare-samplers)."""
    p.add_argument("--image", required=True, help="portrait image (any size; the face is cropped and pasted back)")
    p.add_argument("--audio", required=True, help="speech audio (wav, mp3, flac, m4a, ...)")
    emo = p.add_mutually_exclusive_group(required=True)
    emo.add_argument("--prompt", help='emotion prompt, e.g. "A person is talking with happy emotion."')
    emo.add_argument("--emotion-schedule", metavar="FILE",
                     help="emotion keyframes, one per line: '<seconds> [@intensity]: <prompt>'")
    p.add_argument("--models", default=None, help="ComfyUI-style models folder (default: ComfyUI's, when found)")


def _add_face_args(p) -> None:
    p.add_argument("--no-paste-back", action="store_true", help="write the square crop instead of the full image")
    p.add_argument("--face-index", type=int, default=None, help="which face when there are several (0 = leftmost; "
                                                                "default: the largest)")
    p.add_argument("--no-face", choices=("error", "whole image"), default="error",
                   help="what to do when no face is found (default: error)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model files (default: the preferred file of each models sub-folder)")
    m.add_argument("--checkpoint", help="EmoCAST net (models/emocast/)")
    m.add_argument("--vae", help="SD VAE (models/vae/)")
    m.add_argument("--clip", help="CLIP ViT-L/14 text encoder (models/text_encoders/)")
    m.add_argument("--wav2vec2", help="wav2vec2-base-960h (models/audio_encoders/)")
    m.add_argument("--landmarker", default="auto",
                   choices=("auto", "mediapipe tasks", "mediapipe face mesh", "insightface 2d106"),
                   help="face landmarks for the masks (auto: mediapipe when available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emocast", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="generate a video on the bundled portrait and speech with tiny random weights "
                                    "(no download; frames look like noise)")
    p.add_argument("--out", default="demo.mp4", help="output MP4 (default demo.mp4)")
    p.add_argument("--export-models", metavar="DIR", default=None,
                   help="also write the tiny random models into DIR in the ComfyUI models layout")
    p.add_argument("--steps", type=int, default=4, help="DDIM steps (default 4)")

    p = sub.add_parser("generate", help="generate a talking video from a portrait, speech and an emotion prompt")
    _add_inputs(p)
    p.add_argument("--out", required=True, help="output MP4")
    _add_face_args(p)
    _add_model_args(p)
    _add_sampling_args(p)

    p = sub.add_parser("compare-samplers", help="render the same clip(s) with each speed preset: time, denoiser "
                                                "passes and PSNR / SSIM / max abs vs exact")
    _add_inputs(p)
    p.add_argument("--presets", default="exact,balanced,fast", help="comma-separated presets (exact is the reference)")
    p.add_argument("--seconds", type=float, default=None, help="use only the first SECONDS of the audio")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    _add_face_args(p)
    _add_model_args(p)
    _add_sampling_args(p)

    p = sub.add_parser("batch", help="many videos from a JSONL of jobs, resumable, in this process or on a Ray "
                                     "cluster (--ray)")
    p.add_argument("jobs", help="JSONL file: one job a line (image, audio, prompt or emotion_schedule, optional "
                                "name and generate settings); relative paths are from the file's folder")
    p.add_argument("--out", required=True, help="output folder: <name>.mp4 per job and report.jsonl")
    p.add_argument("--models", default=None, help="ComfyUI-style models folder (default: ComfyUI's, when found)")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on Ray: 'local' starts a local cluster, 'auto' or host:port joins one")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray workers, each loading the models once (default: one per GPU, else one per CPU)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0, help="GPUs per Ray worker (default 1; 0.5 "
                                                                        "puts two workers on a GPU)")
    g = p.add_argument_group("job defaults (a job's own keys win)")
    _add_face_args(g)
    _add_model_args(p)
    _add_sampling_args(p)

    p = sub.add_parser("verify-checkpoint", help="check that a file has the EmoCAST net.pth layout (exit 0 if so)")
    p.add_argument("path", help="net.pth or .safetensors")

    p = sub.add_parser("convert-checkpoint", help="convert net.pth to safetensors (optionally fp16 / bf16)")
    p.add_argument("path", help="net.pth or .safetensors")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="stored precision (default fp16)")

    from .model_files import PARTS

    p = sub.add_parser("download-models", help="download the model files into a ComfyUI-style models folder "
                                               "(verified, resumable; skips files already there)")
    p.add_argument("--models", default=None, help="models folder (default: ComfyUI's, when found)")
    p.add_argument("--only", default=None, help=f"comma-separated parts (default all): {','.join(PARTS)}")

    p = sub.add_parser("doctor", help="check Python packages, devices, FFmpeg and every model file "
                                      "(exit 0 if all needed parts are there)")
    p.add_argument("--models", default=None, help="models folder (default: ComfyUI's, when found)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        from . import commands

        return getattr(commands, args.command.replace("-", "_"))(args) or 0
    except EmoCASTError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
