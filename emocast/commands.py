"""What each CLI subcommand does (argument parsing lives in cli.py and options.py)."""
from __future__ import annotations

from .run import device_dtype, job_emotion, load_models, models_folder, render, sampling_settings






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
    sampling_settings(args)
    check_model_size(args.size or 512)
    image, speech, out = open_image(args.image), load_speech(args.audio), prepare_output(args.out)
    device, dtype = device_dtype(args.device, args.dtype)
    info = render(load_models(models_dir, args, device, dtype), args, emotion, out, image=image, speech=speech)
    _report(info, t0)
    return 0










def batch(args):
    """Many jobs (JSONL) -> DIR/<name>.mp4 + DIR/report.jsonl, in this process or on a Ray cluster."""
    from .batch import run_batch
    from .batch_ray import run_ray

    return run_batch(args, run_ray)


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
    device, dtype = device_dtype(args.device, args.dtype)
    models = load_models(models_folder(args.models), args, device, dtype)
    settings = sampling_settings(args, preset="exact")
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
