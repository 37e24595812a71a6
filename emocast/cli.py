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
from .options import add_face_args, add_inputs, add_model_args, add_sampling_args

log = logging.getLogger("EmoCAST")


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
    add_inputs(p)
    p.add_argument("--out", required=True, help="output MP4")
    add_face_args(p)
    add_model_args(p)
    add_sampling_args(p)

    p = sub.add_parser("compare-samplers", help="render the same clip(s) with each speed preset: time, denoiser "
                                                "passes and PSNR / SSIM / max abs vs exact")
    add_inputs(p)
    p.add_argument("--presets", default="exact,balanced,fast", help="comma-separated presets (exact is the reference)")
    p.add_argument("--seconds", type=float, default=None, help="use only the first SECONDS of the audio")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    add_face_args(p)
    add_model_args(p)
    add_sampling_args(p)

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
    add_face_args(g)
    add_model_args(p)
    add_sampling_args(p)

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
