"""Speed and memory of the EmoCAST sampler (a script, not a test).

    python benchmarks/bench_pipeline.py [--only tiny|realsize|gpu] [--threads 2]
           [--oracle-tools DIR --oracle-src DIR --oracle-python PY --oracle-models DIR]

Scenarios, each in a fresh subprocess so peak RSS is its own:
  tiny      the PUBLIC conformance case (tiny rule weights, 128 px, 6 frames, 4 steps, CFG 3.5).
  realsize  the real-size architecture (2.49 B-parameter Net, SD VAE shapes; weights zero, values do
            not matter for speed) at --size px, --clip-length frames, --steps steps, CFG, on the CPU.
  gpu       (CUDA only) real size at 512 px, 16 frames, fp16.
  compile   (only with --only compile: ~10 min, ~2x the weights' RAM) real size on the CPU, random weights:
            one CFG denoiser call eager vs `--compile` in the same process (fastest of --repeat calls
            each, alternating), compile seconds, peak RSS, max abs vs eager.
  presets   each speed preset (exact / balanced / fast): on the tiny PUBLIC case, run in full (denoiser
            seconds, passes, PSNR / max abs vs exact); at real size on the CPU, the cost of one call of
            each kind (guided / conditional-only, full / shallow) times the preset's step plan
            (a full 40-step run is too long there). benchmarks/bench_gpu_presets.py runs them on a GPU.
Reported per scenario: seconds per denoising step (one CFG-batched denoiser call + DDIM step),
ReferenceNet / VAE times, end-to-end seconds per generated second of video (25 fps), peak RSS (and
peak CUDA memory). With --oracle-* the authors' own pipeline (shared tools/oracle/bench.py) runs
the same two CPU scenarios in the same session and the ratios are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_net(net, vae, rec):
    """Wrap the denoiser / ReferenceNet / VAE to record wall times (no numeric effect)."""
    import torch

    def wrap(obj, name, key):
        orig = getattr(obj, name)

        def timed(*a, **k):
            sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
            sync()
            t0 = time.perf_counter()
            out = orig(*a, **k)
            sync()
            rec.setdefault(key, []).append(time.perf_counter() - t0)
            return out
        setattr(obj, name, timed)

    wrap(net.denoising_unet, "forward", "denoiser_s")
    wrap(net.reference_unet, "forward", "reference_s")
    wrap(vae, "decode", "vae_decode_s")
    wrap(vae, "encode", "vae_encode_s")


def _run(net, vae, face, audio, emotion, settings, rec):
    import torch

    from emocast.pipeline.clips import generate

    _timed_net(net, vae, rec)
    steps = []
    t0 = time.perf_counter()
    last = [t0]

    def progress(p):
        now = time.perf_counter()
        steps.append(now - last[0])
        last[0] = now
    video = generate(net, vae, face, audio, emotion, settings, progress=progress)
    wall = time.perf_counter() - t0
    rec.update(wall_s=wall, frames=int(video.shape[0]), seconds_of_video=video.shape[0] / 25,
               s_per_video_second=wall / (video.shape[0] / 25), s_per_step_incl_reference=steps,
               s_per_denoiser_step=sum(rec["denoiser_s"]) / len(rec["denoiser_s"]),
               peak_rss_mib=peak_rss_mib())
    if torch.cuda.is_available():
        rec["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return rec


def worker_tiny(args) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    import conformance_pipeline as cp

    from emocast.demo.tiny import tiny_net, tiny_vae, write_tiny_text_encoder
    from emocast.models.clip_text import load_text_encoder

    case = ROOT / "tests/fixtures/cases/PUBLIC"
    params = json.loads((case / "case.json").read_text())["params"]
    net, vae = tiny_net(), tiny_vae()
    text = load_text_encoder(write_tiny_text_encoder(Path(args.tmp) / "te"))
    face, audio = cp.case_inputs(case, params)
    emotion = text.encode(params["prompt_emo"])
    settings = cp.case_settings(params)
    runs = []
    for _ in range(args.repeat):
        runs.append(_run(net, vae, face, audio, emotion, settings, {}))
    rec = runs[-1]
    rec["wall_s_all_runs"] = [r["wall_s"] for r in runs]
    return {"scenario": "tiny", "threads": torch.get_num_threads(), **rec}


def worker_realsize(args, device="cpu", dtype_name="fp32") -> dict:
    import torch
    from diffusers import AutoencoderKL

    from emocast.conditioning import (AudioFeatures, EmotionConditioning, EmotionKeyframe, FaceConditioning,
                                      SamplingSettings)
    from emocast.models.net import EmoCASTNet
    from emocast.models.vae import VAECodec, default_config

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    t0 = time.perf_counter()
    net = EmoCASTNet.build()
    net = net.to_empty(device=device)
    for name, p in net.named_parameters():
        p.data.zero_()
    from emocast.models.motion import sinusoid_table
    for name, b in net.named_buffers():
        b.data.copy_(sinusoid_table(b.shape[1], b.shape[2]))
    net = net.to(dtype).eval().requires_grad_(False)
    cfg = {k: v for k, v in default_config().items() if not k.startswith("_")}
    vae = VAECodec(AutoencoderKL(**cfg).to(device, dtype))
    build_s = time.perf_counter() - t0
    s, f = args.size, args.clip_length
    g = torch.Generator().manual_seed(0)
    face = FaceConditioning(pixels=torch.rand(3, s, s, generator=g) * 2 - 1,
                            face_region=torch.zeros(3, s, s),
                            embedding=torch.randn(512, generator=g),
                            masks={k: [torch.rand((s // 8 // 2**i) ** 2, generator=g) for i in range(4)]
                                   for k in ("full", "face", "lip")})
    frames = f * args.clips
    audio = AudioFeatures(torch.randn(frames, 12, 768, generator=g) * 0.5, num_frames=frames)
    emotion = EmotionConditioning((EmotionKeyframe(0.0, torch.randn(77, 768, generator=g)),),
                                  uncond=torch.randn(77, 768, generator=g))
    settings = SamplingSettings(steps=args.steps, cfg_scale=args.cfg, clip_length=f, vae_batch=args.vae_batch)
    rec = _run(net, vae, face, audio, emotion, settings, {"build_s": build_s})
    return {"scenario": f"realsize-{device}-{dtype_name}", "size": s, "clip_length": f, "steps": args.steps,
            "threads": torch.get_num_threads(),
            "net_params": sum(p.numel() for p in net.parameters()), **rec}


def _realsize_parts(args, device="cpu", dtype_name="fp32"):
    """Real-size Net (zero weights) and one clip's sampler inputs (benchmarks/bench_gpu_presets.py builds them)."""
    import torch

    import bench_gpu_presets as gp

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    net, vae = gp.build(False, torch.device(device), dtype)
    clip, noise = gp.clip_inputs(net, args.size, args.clip_length, torch.device(device), dtype)
    return net, vae, clip, noise


def worker_presets(args) -> dict:
    """Tiny: every preset run in full. Real size (CPU): per-call cost x each preset's step plan."""
    import torch

    from emocast.compare import psnr
    from emocast.pipeline.presets import SPEED_PRESETS, apply_preset
    from emocast.pipeline.sampler import SampleStats, denoise_inputs, prepare_clip, step_plan

    sys.path.insert(0, str(ROOT / "tests"))
    import conformance_pipeline as cp

    from emocast.demo.tiny import tiny_net, tiny_vae, write_tiny_text_encoder
    from emocast.models.clip_text import load_text_encoder
    from emocast.pipeline.clips import generate

    case = ROOT / "tests/fixtures/cases/PUBLIC"
    params = json.loads((case / "case.json").read_text())["params"]
    net, vae = tiny_net(), tiny_vae()
    text = load_text_encoder(write_tiny_text_encoder(Path(args.tmp) / "te"))
    face, audio = cp.case_inputs(case, params)
    emotion = text.encode(params["prompt_emo"])
    base = cp.case_settings(params)
    tiny, exact = {}, None
    for name in SPEED_PRESETS:
        stats = SampleStats()
        video = generate(net, vae, face, audio, emotion, apply_preset(base, name), stats=stats)
        exact = video if exact is None else exact
        tiny[name] = {"denoise_s": stats.denoise_s, "passes": stats.passes, "shallow_passes": stats.shallow_passes,
                      "psnr_vs_exact": psnr(video, exact), "max_abs_vs_exact": float((video - exact).abs().max())}

    net, vae, clip, noise = _realsize_parts(args)
    ctx_c, ctx_u, bank = prepare_clip(net, vae, clip, cfg=True)
    cost = {}
    with torch.no_grad():
        for guided in (True, False):
            inputs = denoise_inputs(clip, ctx_c, ctx_u, (1.0, 1.0, 1.0), bank, guided, reuse=True)
            x = noise.repeat(2 if guided else 1, 1, 1, 1)
            for shallow in (False, True):
                inputs.reuse.shallow = shallow
                t0 = time.perf_counter()
                net.denoising_unet(x, torch.tensor(999), inputs)
                cost[guided, shallow] = time.perf_counter() - t0
    real = {}
    for name, knobs in SPEED_PRESETS.items():
        plan = step_plan(knobs["steps"], True, knobs["cfg_window"], knobs["reuse"])
        real[name] = {"est_denoise_s": sum(cost[step] for step in plan), "steps": knobs["steps"]}
    return {"scenario": "presets", "threads": torch.get_num_threads(), "tiny": tiny, "realsize": real,
            "realsize_call_s": {f"{'guided' if g else 'cond'}-{'shallow' if sh else 'full'}": c
                                for (g, sh), c in cost.items()}, "size": args.size, "clip_length": args.clip_length}


def worker_compile(args) -> dict:
    """Real size on the CPU: one guided denoiser call, eager vs `--compile` (emocast.models.compile), same process.

    Random weights (zeros could let a compiler skip work), alternating calls so the machine's load hits both;
    the figure is the fastest of --repeat calls each. Also the compile time, the peak RSS it adds (freezing
    packs a second copy of the weights) and how far the compiled output is from the eager one."""
    import torch

    from emocast.models.compile import compile_denoiser
    from emocast.pipeline.sampler import denoise_inputs, prepare_clip

    net, vae, clip, noise = _realsize_parts(args)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # fan-in scaled, so activations stay O(1) through 2.49 B parameters
            p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.02))
    unet = net.denoising_unet
    eager = unet.forward
    rss0 = peak_rss_mib()
    with torch.no_grad():
        ctx_c, ctx_u, bank = prepare_clip(net, vae, clip, cfg=True)
        inputs = denoise_inputs(clip, ctx_c, ctx_u, (1.0, 1.0, 1.0), bank, True, reuse=False)
        x, t = noise.repeat(2, 1, 1, 1), torch.tensor(500)

        def call(fn):
            t0 = time.perf_counter()
            y = fn(x, t, inputs)
            return y, time.perf_counter() - t0
        y_eager, _ = call(eager)  # warm-up
        rss_eager = peak_rss_mib()
        compiled = compile_denoiser(net)
        y_comp, compile_s = call(compiled)
        times = {"eager": [], "compiled": []}
        for _ in range(args.repeat):
            times["eager"].append(call(eager)[1])
            times["compiled"].append(call(compiled)[1])
    d = (y_comp - y_eager).abs()
    best = {k: min(v) for k, v in times.items()}
    return {"scenario": "compile", "threads": torch.get_num_threads(), "size": args.size,
            "clip_length": args.clip_length, "freezing": compiled.freezing, "error": compiled.error,
            "compile_s": compile_s, "calls_s": times, "eager_s": best["eager"], "compiled_s": best["compiled"],
            "speedup": best["eager"] / best["compiled"], "max_abs_vs_eager": float(d.max()),
            "mean_abs_vs_eager": float(d.mean()), "mean_abs_output": float(y_eager.abs().mean()),
            "peak_rss_mib_before": rss0, "peak_rss_mib_eager": rss_eager, "peak_rss_mib": peak_rss_mib()}


def print_compile(r: dict) -> None:
    print(f"  --compile, real size {r['size']} px x {r['clip_length']} frames, one CFG call (freezing "
          f"{r['freezing']}): eager {r['eager_s']:.1f} s, compiled {r['compiled_s']:.1f} s ({r['speedup']:.2f}x), "
          f"compile {r['compile_s']:.0f} s, max / mean abs vs eager {r['max_abs_vs_eager']:.2g} / "
          f"{r['mean_abs_vs_eager']:.2g} (outputs ~{r['mean_abs_output']:.2g}), peak RSS "
          f"{r['peak_rss_mib_eager'] / 1024:.1f} -> {r['peak_rss_mib'] / 1024:.1f} GiB")


def print_presets(r: dict) -> None:
    print(f"  speed presets (tiny PUBLIC case in full; real size {r['size']} px x {r['clip_length']} frames on the "
          f"CPU: per-call cost {', '.join(f'{k} {v:.1f} s' for k, v in r['realsize_call_s'].items())} x step plan)")
    tiny_exact, real_exact = r["tiny"]["exact"]["denoise_s"], r["realsize"]["exact"]["est_denoise_s"]
    for name, t in r["tiny"].items():
        e = r["realsize"][name]
        print(f"    {name:9s} tiny {t['denoise_s']:6.2f} s ({tiny_exact / t['denoise_s']:.2f}x), {t['passes']} passes, "
              f"PSNR {t['psnr_vs_exact']:.1f} dB, max abs {t['max_abs_vs_exact']:.3f} | real size est. "
              f"{e['est_denoise_s']:.0f} s per clip ({real_exact / e['est_denoise_s']:.2f}x)")


def run_worker(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--threads", str(args.threads), "--size", str(args.size),
           "--clip-length", str(args.clip_length), "--steps", str(args.steps), "--cfg", str(args.cfg),
           "--clips", str(args.clips), "--repeat", str(args.repeat), "--tmp", args.tmp,
           "--vae-batch", str(args.vae_batch)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_oracle(args) -> dict:
    """The authors' pipeline on the same scenarios (their bench.py, in their environment)."""
    out = Path(args.tmp) / "oracle-bench"
    cmd = [args.oracle_python, str(Path(args.oracle_tools) / "bench.py"), "--src", args.oracle_src,
           "--models", args.oracle_models, "--out", str(out), "--threads", str(args.threads),
           "--size", str(args.size), "--clip-length", str(args.clip_length), "--steps", str(args.steps),
           "--cfg", str(args.cfg), "--clips", str(args.clips),
           "--case", str(ROOT / "tests/fixtures/cases/PUBLIC"), "--repeat", str(args.repeat)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "bench.json").read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["tiny", "realsize", "gpu", "presets", "compile"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--clip-length", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--clips", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="tiny: runs in one process (the first warms up)")
    ap.add_argument("--vae-batch", type=int, default=4)
    ap.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp") + "/emocast-bench")
    ap.add_argument("--oracle-tools", help="shared tools/oracle folder (their bench.py)")
    ap.add_argument("--oracle-src", default=os.environ.get("ORACLE_SRC"))
    ap.add_argument("--oracle-python", help="python of the oracle venv")
    ap.add_argument("--oracle-models", default=os.environ.get("TINY_MODELS"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    Path(args.tmp).mkdir(parents=True, exist_ok=True)

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        rec = {"tiny": worker_tiny, "realsize": worker_realsize, "presets": worker_presets, "compile": worker_compile,
               "gpu": lambda a: worker_realsize(a, "cuda", "fp16")}[args.worker](args)
        print(json.dumps(rec))
        return

    import torch

    names = [args.only] if args.only else ["tiny", "realsize", "presets"] + (["gpu"] if torch.cuda.is_available() else [])
    results = {n: run_worker(n, args) for n in names}
    oracle = run_oracle(args) if args.oracle_tools else None
    print(f"\nEmoCAST sampler benchmark ({args.threads} threads)")
    for n, r in results.items():
        if n in ("presets", "compile"):
            (print_presets if n == "presets" else print_compile)(r)
            continue
        print(f"  {r['scenario']:22s} {r['s_per_denoiser_step']:.3f} s/denoiser step, reference "
              f"{sum(r['reference_s']):.2f} s, VAE decode {sum(r['vae_decode_s']):.2f} s, "
              f"{r['s_per_video_second']:.1f} s per second of video, peak RSS {r['peak_rss_mib']:.0f} MiB"
              + (f", peak CUDA {r['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in r else ""))
    if oracle:
        print("  the authors' pipeline, same machine, same run (ratio > 1: ours is faster):")
        runs = oracle.get("scenarios", {}).get("realsize", {}).get("runs")
        if runs and "compile" in results:
            theirs, mine = runs[-1]["s_per_denoising_step"], results["compile"]
            print(f"    realsize  {theirs:.3f} s/denoiser step vs ours eager {mine['eager_s']:.3f} "
                  f"(x{theirs / mine['eager_s']:.2f}), --compile {mine['compiled_s']:.3f} "
                  f"(x{theirs / mine['compiled_s']:.2f})")
        for key, ours in (("public", "tiny"), ("realsize", "realsize")):
            runs = oracle.get("scenarios", {}).get(key, {}).get("runs")
            if not runs or ours not in results:
                continue
            theirs, mine = runs[-1], results[ours]
            print(f"    {key:9s} {theirs['s_per_denoising_step']:.3f} s/denoiser step "
                  f"(x{theirs['s_per_denoising_step'] / mine['s_per_denoiser_step']:.2f}), VAE decode "
                  f"{theirs['vae_decode_s']:.2f} s (x{theirs['vae_decode_s'] / sum(mine['vae_decode_s']):.2f}), "
                  f"whole pipeline {theirs['wall_inference_process_s']:.1f} s vs ours {mine['wall_s']:.1f} s, peak RSS "
                  f"{oracle['scenarios'][key].get('peak_rss_mib', float('nan')):.0f} vs {mine['peak_rss_mib']:.0f} MiB")
    (Path(args.tmp) / "bench_pipeline.json").write_text(json.dumps({"ours": results, "oracle": oracle}, indent=1))


if __name__ == "__main__":
    main()
