"""What each CLI subcommand does (argument parsing lives in cli.py)."""
from __future__ import annotations


def _device_dtype(device: str, dtype: str):
    import torch

    from .weights import resolve_dtype

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    return dev, resolve_dtype(dtype, dev)


def _settings(args, preset: str | None = None, **overrides):
    from .conditioning import SamplingSettings
    from .pipeline.presets import apply_preset, parse_window

    knobs = {k: v for k, v in (("steps", args.steps), ("sampler", args.sampler), ("reuse", args.reuse),
                               ("cfg_window", parse_window(args.cfg_window))) if v is not None}
    base = SamplingSettings(cfg_scale=args.cfg, seed=args.seed, pose_weight=args.pose_weight,
                            face_weight=args.face_weight, lip_weight=args.lip_weight, clip_length=args.clip_length,
                            vae_batch=args.vae_batch, **overrides)
    return apply_preset(base, preset or args.preset, **knobs)


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
    """Portrait + speech + emotion -> MP4, every model read from a ComfyUI-style models folder.

    Every input and setting is checked before minutes of model loading (docs/reliability.md).
    """
    import time

    from .preprocess.audio import load_speech
    from .preprocess.crop import check_model_size, open_image
    from .video import prepare_output

    t0 = time.perf_counter()
    models_dir = models_folder(args.models)
    emotion = job_emotion(args)
    _settings(args)
    check_model_size(args.size or 512)
    image, speech, out = open_image(args.image), load_speech(args.audio), prepare_output(args.out)
    device, dtype = _device_dtype(args.device, args.dtype)
    info = render(load_models(models_dir, args, device, dtype), args, emotion, out, image=image, speech=speech)
    _report(info, t0)
    return 0


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
    from .run import Models

    swap = getattr(args, "vram_budget", 0) > 0
    net = load_net(mf.find_model(models_dir, mf.EMOCAST, args.checkpoint), dtype=dtype,
                   device="cpu" if swap else device, weight_dtype=getattr(args, "weights", "default"))
    if swap:  # block swap: the weights stay in RAM, each block visits `device` within the budget
        from .models import offload

        offload.attach(net, device, int(args.vram_budget * 2 ** 30))
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
    from .run import generate_video

    return generate_video(models, args.image if image is None else image,
                          args.audio if speech is None else speech, emotion, out, _settings(args), size=args.size or 512,
                          paste_back=not args.no_paste_back, face_index=args.face_index, no_face=args.no_face,
                          progress=progress)


def batch(args):
    """Many jobs (JSONL) -> DIR/<name>.mp4 + DIR/report.jsonl, in this process or on a Ray cluster."""
    from .batch import run_batch

    return run_batch(args)


def compare_samplers(args):
    """Render the same clip(s) with each speed preset; print time, passes and quality vs exact (+ JSON)."""
    from .compare import compare_rows, format_table, run_presets, write_json
    from .errors import InputError
    from .pipeline.presets import PRESET_NAMES
    from .preprocess.audio import Speech, load_speech
    from .preprocess.face import CROP_MARGIN, prepare_face
    from .models.wav2vec2 import extract_features

    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = [p for p in presets if p not in PRESET_NAMES]
    if unknown or not presets:
        raise InputError(f"unknown preset(s) {', '.join(unknown) or '(none)'}.", hint=f"Use {','.join(PRESET_NAMES)}.")
    emotion = job_emotion(args)
    device, dtype = _device_dtype(args.device, args.dtype)
    models = load_models(models_folder(args.models), args, device, dtype)
    settings = _settings(args, preset="exact")
    speech = load_speech(args.audio)
    if args.seconds:
        speech = Speech(speech.samples[:max(1, int(args.seconds * speech.sample_rate))], speech.sample_rate)
    from .preprocess.crop import open_image

    face = prepare_face(open_image(args.image), models.analyser, models.landmarker, size=args.size or 512,
                        crop_margin=CROP_MARGIN, face_index=args.face_index, no_face=args.no_face)
    features = extract_features(models.wav2vec2, speech, clip_length=settings.clip_length)
    conditioning = models.text.encode(emotion)
    knobs = {k: getattr(settings, k) for k in ("sampler", "steps", "cfg_window", "reuse")
             if getattr(args, k, None) is not None}
    results = run_presets(models.net, models.vae, face, features, conditioning, settings, presets, overrides=knobs)
    rows = compare_rows(results, presets)
    print(f"{features.num_frames} frames at {face.size} px, {len(results[0].frames)} compared per preset")
    print(format_table(rows))
    if args.json:
        write_json(args.json, {"frames": features.num_frames, "size": face.size,
                                      "presets": {r["preset"]: r for r in rows}})
        print(f"wrote {args.json}")
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


def download_models(args):
    """Fetch the model files (opt-in; see emocast/download.py)."""
    from .download import cli

    return cli(args.models, args.only)


def doctor(args):
    """One screen on what is installed and which model files are where (exit 1 when a needed part is missing)."""
    from .doctor import cli

    return cli(args.models)
