"""Seconds per clip and peak VRAM of each speed preset on a GPU (a script, not a test).

    python benchmarks/bench_gpu_presets.py [--presets exact,balanced,fast] [--size 512] [--frames 16]
           [--dtype fp16] [--json OUT] [--tiny] [--device cuda]

Real-size EmoCAST Net (2.49 B parameters, built as benchmarks/bench_pipeline.py does: zero weights,
values do not matter for speed) and SD VAE shapes, random conditioning, one clip per preset after a
one-step warm-up. Per preset: ReferenceNet + denoising loop + VAE decode seconds, denoiser seconds,
denoiser passes, peak CUDA memory, PSNR / max abs of the frames vs the first preset (meaningless with
the zero weights of the real-size Net; the tiny Net has the demo's rule weights). Needs only torch, diffusers, transformers and safetensors.
Without CUDA it prints a message and exits 0, unless --tiny (the tiny demo Net at 128 px, 6 frames:
checks the script itself on a CPU in seconds) or --device cpu. --compile adds every preset again with the
denoiser compiled (torch.compile), for the exact tier's compiled speed beside the eager one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(tiny: bool, device, dtype):
    import torch
    from diffusers import AutoencoderKL

    from emocast.models.net import EmoCASTNet
    from emocast.models.vae import VAECodec, default_config

    if tiny:
        from emocast.demo.tiny import tiny_net, tiny_vae

        return tiny_net(dtype, device), tiny_vae(dtype=dtype, device=device)
    net = EmoCASTNet.build().to_empty(device=device)
    from emocast.models.motion import sinusoid_table

    for p in net.parameters():
        p.data.zero_()
    for b in net.buffers():
        b.data.copy_(sinusoid_table(b.shape[1], b.shape[2]))
    net = net.to(dtype).eval().requires_grad_(False)
    cfg = {k: v for k, v in default_config().items() if not k.startswith("_")}
    return net, VAECodec(AutoencoderKL(**cfg).to(device, dtype))


def clip_inputs(net, size: int, frames: int, device, dtype):
    """Random conditioning of one clip, as generate_clips would hand it to the sampler."""
    import torch

    from emocast.pipeline.sampler import ClipInputs

    g = torch.Generator().manual_seed(0)
    to = dict(device=device, dtype=dtype)
    with torch.no_grad():
        face_emb = torch.randn(1, 512, generator=g).to(**to)
        region = torch.zeros(frames, 3, size, size, **to)
        audio = torch.randn(frames, 5, 12, 768, generator=g).mul(0.5).to(**to)
        clip = ClipInputs(
            reference=(torch.rand(3, 3, size, size, generator=g) * 2 - 1).to(device),
            text=torch.randn(1, 77, 768, generator=g).expand(frames, -1, -1).to(**to),
            text_uncond=torch.randn(77, 768, generator=g).to(**to),
            face_cond=net.imageproj(face_emb)[0], face_uncond=net.imageproj(torch.zeros_like(face_emb))[0],
            face_features=net.face_locator(region), audio=net.audioproj(audio),
            masks={k: [torch.rand(1, (size // 8 // 2**i) ** 2, generator=g).to(**to) for i in range(4)]
                   for k in ("full", "face", "lip")})
    noise = torch.randn(frames, 4, size // 8, size // 8, generator=g).to(device)
    return clip, noise


def psnr(a, b) -> float:
    from emocast.compare import psnr as _psnr

    return _psnr(a, b)


def run_preset(net, vae, clip, noise, settings, device):
    import torch

    from emocast.pipeline.sampler import SampleStats, sample_clip

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stats, t0 = SampleStats(), time.perf_counter()
    with torch.no_grad():
        latents = sample_clip(net, vae, clip, noise, steps=settings.steps, cfg_scale=settings.cfg_scale,
                              weights=settings.motion_scale, sampler=settings.sampler, cfg_window=settings.cfg_window,
                              reuse=settings.reuse, stats=stats)
        video = vae.decode(latents, batch=settings.vae_batch)
    if cuda:
        torch.cuda.synchronize()
    rec = {"clip_s": time.perf_counter() - t0, "denoise_s": stats.denoise_s, "denoiser_passes": stats.passes,
           "shallow_passes": stats.shallow_passes, "steps": settings.steps, "sampler": settings.sampler,
           "cfg_window": list(settings.cfg_window), "reuse": settings.reuse,
           "finite": bool(torch.isfinite(video).all())}
    rec["video"] = (video.float() / 2 + 0.5).clamp(0, 1).cpu()
    if cuda:
        rec["peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return rec


def settings_for(base, name: str):
    """A preset name, or a custom "sampler:steps:start-end:reuse" (e.g. dpm++2m:8:0-0.5:2)."""
    from dataclasses import replace

    from emocast.pipeline.presets import SPEED_PRESETS, apply_preset

    if name in SPEED_PRESETS:
        return apply_preset(base, name)
    sampler, steps, window, reuse = name.split(":")
    start, end = (float(x) for x in window.split("-"))
    return replace(base, sampler=sampler, steps=int(steps), cfg_window=(start, end), reuse=int(reuse))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="exact,balanced,fast",
                    help="presets or custom sampler:steps:start-end:reuse entries; the first is the reference")
    ap.add_argument("--size", type=int, default=None, help="default 512 (128 with --tiny)")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default 16; 6 with --tiny)")
    ap.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default=None, help="default fp16 on CUDA, fp32 on CPU")
    ap.add_argument("--device", default=None, help="default cuda")
    ap.add_argument("--vae-batch", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="the tiny demo Net (tests the script on a CPU)")
    ap.add_argument("--compile", action="store_true",
                    help="then the same presets with the denoiser compiled (emocast.models.compile; an untimed run "
                         "of each compiles its shapes first), named <preset>+compile")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from emocast.conditioning import SamplingSettings
    from emocast.pipeline.presets import apply_preset

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and not args.tiny and args.device is None:
        print("bench_gpu_presets: no CUDA device here; skipped (use --tiny to check the script on the CPU).")
        return 0
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[
        args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    size, frames = args.size or (128 if args.tiny else 512), args.frames or (6 if args.tiny else 16)
    t0 = time.perf_counter()
    net, vae = build(args.tiny, device, dtype)
    clip, noise = clip_inputs(net, size, frames, device, dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{'tiny' if args.tiny else 'real-size'} Net on {where}, "
          f"{size} px, {frames} frames, {str(dtype).removeprefix('torch.')}, built in {time.perf_counter() - t0:.1f} s",
          flush=True)
    base = SamplingSettings(clip_length=frames, vae_batch=args.vae_batch)
    run_preset(net, vae, clip, noise, apply_preset(base, "exact", steps=1), device)  # warm-up (kernels, allocator)
    results = {}
    names = [p.strip() for p in args.presets.split(",") if p.strip()]
    runs = [(name, name, False) for name in names] + [(f"{n}+compile", n, True) for n in names if args.compile]
    for label, name, compiled in runs:
        if compiled:
            from emocast.models.compile import compile_denoiser

            compile_denoiser(net)
            t1 = time.perf_counter()
            run_preset(net, vae, clip, noise, settings_for(base, name), device)
            print(f"  {label}: compiled its shapes in {time.perf_counter() - t1:.0f} s", flush=True)
        results[label] = rec = run_preset(net, vae, clip, noise, settings_for(base, name), device)
        first = results[next(iter(results))]
        ratio = first["denoise_s"] / rec["denoise_s"]
        video = rec.pop("video")
        first.setdefault("video", video)
        rec["psnr_vs_first"], rec["max_abs_vs_first"] = psnr(video, first["video"]), float((video - first["video"]).abs().max())
        print(f"  {label:9s} {rec['sampler']:8s} {rec['steps']:2d} steps  clip {rec['clip_s']:7.2f} s  "
              f"denoiser {rec['denoise_s']:7.2f} s ({ratio:.2f}x vs {next(iter(results))})  "
              f"passes {rec['denoiser_passes']}" + (f" ({rec['shallow_passes']} shallow)" if rec["shallow_passes"] else "")
              + (f"  peak VRAM {rec['peak_vram_gib']:.2f} GiB" if "peak_vram_gib" in rec else "")
              + f"  PSNR {rec['psnr_vs_first']:.1f} dB, max abs {rec['max_abs_vs_first']:.3f}", flush=True)
    for rec in results.values():
        rec.pop("video", None)
    if args.json:
        Path(args.json).write_text(json.dumps({"size": size, "frames": frames, "dtype": str(dtype), "device": str(device),
                                               "tiny": args.tiny, "presets": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
