"""What each CLI subcommand does (argument parsing lives in cli.py)."""
from __future__ import annotations


def _device_dtype(device: str, dtype: str):
    import torch

    from .weights import resolve_dtype

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    return dev, resolve_dtype(dtype, dev)


def _settings(args, **overrides):
    from .conditioning import SamplingSettings

    return SamplingSettings(steps=args.steps, cfg_scale=args.cfg, seed=args.seed, pose_weight=args.pose_weight,
                            face_weight=args.face_weight, lip_weight=args.lip_weight, clip_length=args.clip_length,
                            vae_batch=args.vae_batch, **overrides)


def _report(info, t0: float) -> None:
    import time

    print(f"wrote {info.path}: {info.frames} frames at {info.fps:g} fps ({info.seconds:.2f} s), "
          f"{info.width}x{info.height}, audio {info.audio_seconds:.2f} s, in {time.perf_counter() - t0:.0f} s")


def demo(args):
    """The whole pipeline on the bundled portrait and speech with tiny random models (no download)."""
    import tempfile
    import time

    from .conditioning import SamplingSettings
    from .demo.models import DEMO_SIZE, demo_models, export_models
    from .demo.tiny import DEMO_AUDIO, DEMO_IMAGE
    from .emotion.presets import PRESETS
    from .preprocess.face import FaceAnalyser
    from .preprocess.landmarks import load_landmarker
    from .run import Models, generate_video

    t0 = time.perf_counter()
    if args.export_models:
        for kind, path in export_models(args.export_models).items():
            print(f"exported {kind:15s} {path}")
    print("demo: tiny RANDOM weights, so the frames look like noise; see README for the real models.")
    with tempfile.TemporaryDirectory() as work:
        m = demo_models(work)
        analyser = FaceAnalyser(m.insightface)
        models = Models(m.net, m.vae, m.text, m.wav2vec2, analyser, load_landmarker("auto", analyser=analyser))
        info = generate_video(models, DEMO_IMAGE, DEMO_AUDIO, PRESETS["happy"], args.out,
                              SamplingSettings(steps=args.steps), size=DEMO_SIZE)
    _report(info, t0)
    return 0


def generate(args):
    """Portrait + speech + emotion -> MP4, every model read from a ComfyUI-style models folder."""
    import time
    from pathlib import Path

    from . import model_files as mf
    from .emotion.schedule import parse_schedule
    from .emotion.text import load_text_encoder
    from .errors import InputError
    from .models.checkpoint import load_net
    from .models.vae import load_vae
    from .preprocess.face import FaceAnalyser
    from .preprocess.landmarks import load_landmarker
    from .preprocess.wav2vec2 import load_wav2vec2
    from .run import Models, generate_video

    t0 = time.perf_counter()
    models_dir = Path(args.models) if args.models else mf.comfyui_models_dir()
    if models_dir is None or not models_dir.is_dir():
        raise InputError(f"models folder not found: {args.models or '(none given, no ComfyUI models folder found)'}.",
                         hint="Pass --models DIR (a folder with emocast/, vae/, text_encoders/, audio_encoders/, "
                              "insightface/ sub-folders) or set COMFYUI_MODELS.")
    for p, what in ((args.image, "image"), (args.audio, "audio")):
        if not Path(p).is_file():
            raise InputError(f"{what} file not found: {p}")
    emotion = args.prompt
    if args.emotion_schedule:
        path = Path(args.emotion_schedule)
        if not path.is_file():
            raise InputError(f"emotion schedule file not found: {path}")
        emotion = parse_schedule(path.read_text())
    device, dtype = _device_dtype(args.device, args.dtype)
    swap = args.vram_budget > 0
    net = load_net(mf.find_model(models_dir, mf.EMOCAST, args.checkpoint), dtype=dtype,
                   device="cpu" if swap else device, weight_dtype=args.weights)
    if swap:
        from .models import offload

        offload.attach(net, device, int(args.vram_budget * 2 ** 30))
    size = args.size or 512
    analyser = FaceAnalyser(models_dir / mf.INSIGHTFACE.key)
    tasks = mf.candidates(models_dir, mf.LANDMARKER)
    models = Models(
        net=net,
        vae=load_vae(mf.find_model(models_dir, mf.VAE, args.vae), dtype=dtype, device=device),
        text=load_text_encoder(mf.find_model(models_dir, mf.CLIP, args.clip), device=device),
        wav2vec2=load_wav2vec2(mf.find_model(models_dir, mf.WAV2VEC2, args.wav2vec2), device=device),
        analyser=analyser,
        landmarker=load_landmarker(args.landmarker, task_file=tasks[0] if tasks else None, analyser=analyser),
    )
    info = generate_video(models, args.image, args.audio, emotion, args.out, _settings(args), size=size,
                          paste_back=not args.no_paste_back, face_index=args.face_index, no_face=args.no_face)
    _report(info, t0)
    return 0


def verify_checkpoint(args):
    """Exit 0 iff the file has the EmoCAST Net layout (header / memory map only: seconds on 5 GB)."""
    import math

    from .models.checkpoint import verify_net
    from .models.config import UNetConfig
    from .weights import gb

    info, layout = verify_net(args.path)
    params = sum(math.prod(s) for k, s in info.shapes.items() if k not in layout.buffers)
    widths, released = ("/".join(map(str, c.block_out_channels)) for c in (layout.config, UNetConfig.sd15()))
    print(f"OK {info.path}: EmoCAST Net layout, UNet widths {widths}"
          + ("" if widths == released else f" (not the released {released})"))
    print(f"  {len(info.shapes):,} entries, {params:,} parameters (+ {info.numel - params:,} buffer values), "
          f"{info.dtype_summary()}, {gb(info.size)}" + (f"; state dict {info.unwrapped}" if info.unwrapped else ""))
    return 0


def convert_checkpoint(args):
    """net.pth -> .safetensors in fp16 / bf16 / fp32, verified first, streamed one tensor at a time."""
    from pathlib import Path

    from .models.checkpoint import convert_checkpoint as convert
    from .weights import gb

    info = convert(args.path, args.out, args.dtype)
    print(f"wrote {info.path}: {len(info.shapes):,} entries, {info.dtype_summary()}, {gb(info.size)} "
          f"(from {Path(args.path).name})")
    return 0
