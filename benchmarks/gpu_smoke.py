"""GPU smoke test: does EmoCAST run right on one CUDA GPU, how fast, in how much memory (a script, not a test).

    python benchmarks/gpu_smoke.py [--budget 420] [--steps 3] [--dtypes fp16,bf16,fp32]
    python benchmarks/gpu_smoke.py --tiny        # CPU: tiny configs, the CUDA-only parts skipped (says so)

Needs only torch, diffusers, transformers, safetensors and numpy (no librosa / av / insightface /
onnxruntime on this path). On a machine without diffusers, carry its wheel (pure Python; on Python
3.12 its other needs are usually present) and put it on the path first:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_smoke.py --budget 420 2>&1 | tee $OUT/gpu_smoke.log

Sections, most important first, each skipped (saying so) when the wall-clock budget left cannot fit it:
  env        GPU name, compute capability, memory, versions.
  public     the tiny PUBLIC conformance case (tiny rule weights, 128 px) on the device, TF32 off,
             against the authors' golden video: max / mean abs difference (fp32 ~1e-4 expected, not
             bit equality: GPU kernels differ from the CPU's), and the same in fp16 / bf16.
  realsize   the real-size Net (2.49 B parameters, sd15_unet_config.json) and real-size VAE with
             random weights at 512 px, 16 frames, one clip of --steps steps with CFG 3.5, per dtype
             (fp16, then bf16, then fp32), with SDPA restricted to the flash / memory-efficient kernels
             (the math fallback, ~8.6 GB of scores at 512 px, forbidden): finite outputs, seconds per
             denoising step, peak CUDA memory (torch.cuda.max_memory_allocated, reset per dtype).
  placement  ComfyUI's loading behaviours emulated on the device (tests/placement_emulation.py) on the
             3-clip OWN_MULTI3 case: layer-by-layer moves (frame tables left behind) must run and match a
             whole-model move; --novram, a half-spent low-VRAM budget and a network unloaded by a VAE
             call and not loaded again must be refused with InputError.
Prints a compact summary; writes everything to $OUT/gpu_smoke.json when OUT is set (after every
section, so a run cut short keeps what it measured), else to --json if given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
CASE = ROOT / "tests/fixtures/cases/PUBLIC"
DTYPES = ("fp16", "bf16", "fp32")


class Budget:
    """Wall-clock budget of the whole run: a section starts only when its estimate fits what is left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()

    def fits(self, need_s: float) -> bool:
        return self.left >= need_s


def torch_dtype(name: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def no_math_sdpa(device):
    """Only the flash / memory-efficient SDPA kernels (CPU: its flash kernel); a shape they cannot take fails."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION] + ([SDPBackend.EFFICIENT_ATTENTION] if device.type == "cuda" else [])
    with sdpa_kernel(backends):
        yield


def gib(n: float) -> float:
    return round(n / 2 ** 30, 3)


def cuda_mem(device, rec: dict, key: str) -> None:
    import torch

    if device.type == "cuda":
        rec[key] = gib(torch.cuda.max_memory_allocated(device))


# ---------------------------------------------------------------------------------------------- sections

def section_env(device, args) -> dict:
    import numpy
    import torch

    rec = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "device": str(device), "tiny": args.tiny}
    for name in ("diffusers", "transformers", "safetensors"):
        try:
            rec[name] = __import__(name).__version__
        except ImportError as e:
            rec[name] = f"missing ({e})"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        rec.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=gib(p.total_memory),
                   bf16_supported=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return rec


def section_public(device, args, budget: Budget) -> dict:
    """The PUBLIC conformance case on `device` against the authors' golden video (TF32 off)."""
    import tempfile

    import torch

    import conformance_pipeline as cp
    from emocast.demo.tiny import tiny_net, tiny_vae, write_tiny_text_encoder
    from emocast.models.clip_text import load_text_encoder
    from emocast.pipeline.clips import generate

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    params = json.loads((CASE / "case.json").read_text())["params"]
    face, audio = cp.case_inputs(CASE, params)
    with tempfile.TemporaryDirectory() as tmp:
        emotion = load_text_encoder(write_tiny_text_encoder(Path(tmp) / "te")).encode(params["prompt_emo"])
    golden = cp.load(CASE / "golden" / "video.pt")
    out = {}
    for name in ("fp32", "fp16", "bf16") if device.type == "cuda" else ("fp32",):  # CPU half: slow, no news
        if not budget.fits(20):
            out[name] = {"skipped": f"budget: {budget.left:.0f} s left"}
            continue
        t0 = time.perf_counter()
        dtype = torch_dtype(name)
        try:
            net, vae = tiny_net(dtype, device), tiny_vae(dtype, device)
            video = generate(net, vae, face, audio, emotion, cp.case_settings(params), device=device)
        except Exception as e:
            out[name] = {"error": error(e)}
            continue
        video = video.permute(1, 0, 2, 3)
        d = (video - golden).abs()
        out[name] = {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "finite": bool(video.isfinite().all()),
                     "uint8_differ": float((video.mul(255).round() != golden.mul(255).round()).float().mean()),
                     "s": round(time.perf_counter() - t0, 2)}
        if name == "fp32":
            out[name]["within_conformance_tolerance"] = not cp.check(out[name] | {
                "video_max_abs": out[name]["max_abs"], "video_mean_abs": out[name]["mean_abs"]})
    return out


def random_net(cfg, dtype, device, seed: int = 0):
    """The Net with random weights (the tiny models' rule: fan-in scaled normals, norms near 1), on `device`
    in `dtype` from the start, so building never holds an fp32 copy."""
    import torch

    from emocast.models.motion import sinusoid_table
    from emocast.models.net import EmoCASTNet

    net = EmoCASTNet.build(cfg).to(dtype).to_empty(device=device)
    g = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            x = torch.randn(p.shape, generator=g, device=device, dtype=torch.float32)
            if p.ndim >= 2:
                x *= p[0].numel() ** -0.5
            elif "norm" in name and name.endswith(".weight"):
                x = 1 + 0.1 * x
            else:
                x *= 0.02
            p.copy_(x)
        for b in net.buffers():  # the motion modules' frame-position tables
            b.copy_(sinusoid_table(b.shape[1], b.shape[2]))
    return net.eval().requires_grad_(False)


def random_vae(cfg: dict, dtype, device):
    import torch
    from diffusers import AutoencoderKL

    from emocast.models.vae import VAECodec

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoencoderKL(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    return VAECodec(model.to(dtype))


def random_inputs(size: int, frames: int, token_dim: int):
    import torch

    from emocast.conditioning import AudioFeatures, EmotionConditioning, EmotionKeyframe, FaceConditioning

    g = torch.Generator().manual_seed(0)
    face = FaceConditioning(pixels=torch.rand(3, size, size, generator=g) * 2 - 1,
                            face_region=(torch.rand(3, size, size, generator=g) > 0.5).float(),
                            embedding=torch.randn(512, generator=g),
                            masks={k: [(torch.rand((size // 8 // 2 ** i) ** 2, generator=g) > 0.5).float()
                                       for i in range(4)] for k in ("full", "face", "lip")})
    audio = AudioFeatures(torch.randn(frames, 12, 768, generator=g) * 0.5, num_frames=frames)
    emotion = EmotionConditioning((EmotionKeyframe(0.0, torch.randn(77, token_dim, generator=g)),),
                                  uncond=torch.randn(77, token_dim, generator=g))
    return face, audio, emotion


def timed(obj, name: str, rec: list, device, finite: list | None = None) -> None:
    """Record the wall time (and whether the output is finite) of every call of obj.name."""
    orig = getattr(obj, name)

    def call(*a, **k):
        sync(device)
        t0 = time.perf_counter()
        out = orig(*a, **k)
        sync(device)
        rec.append(time.perf_counter() - t0)
        if finite is not None:
            finite.append(bool(out.isfinite().all()))
        return out
    setattr(obj, name, call)


def run_realsize(device, dtype_name: str, args, restrict: bool = True) -> dict:
    import torch

    from emocast import bundled_config
    from emocast.conditioning import SamplingSettings
    from emocast.demo.tiny import config as tiny_config
    from emocast.errors import InputError
    from emocast.models.config import UNetConfig
    from emocast.pipeline.clips import generate

    dtype = torch_dtype(dtype_name)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    cfg = UNetConfig.from_diffusers(tiny_config("tiny_unet/config.json")) if args.tiny else UNetConfig.sd15()
    vae_cfg = tiny_config("tiny_vae/config.json") if args.tiny else bundled_config("sd_vae_ft_mse_config.json")
    rec: dict = {"size": args.size, "frames": args.frames, "steps": args.steps, "cfg": args.cfg,
                 "sdpa": "flash/efficient only" if restrict else "any kernel (math allowed)"}
    t0 = time.perf_counter()
    net = random_net(cfg, dtype, device)
    vae = random_vae(vae_cfg, dtype, device)
    sync(device)
    rec["build_s"] = round(time.perf_counter() - t0, 2)
    rec["net_params"] = sum(p.numel() for p in net.parameters())
    if device.type == "cuda":
        rec["weights_gib"] = gib(torch.cuda.memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    face, audio, emotion = random_inputs(args.size, args.frames, cfg.cross_attention_dim)
    steps, refs, decodes, finite = [], [], [], []
    timed(net.denoising_unet, "forward", steps, device, finite)
    timed(net.reference_unet, "forward", refs, device)
    timed(vae, "decode", decodes, device)
    settings = SamplingSettings(steps=args.steps, cfg_scale=args.cfg, clip_length=args.frames, vae_batch=4)
    t0, video = time.perf_counter(), None
    try:
        with no_math_sdpa(device) if restrict else nullcontext():
            video = generate(net, vae, face, audio, emotion, settings, device=device)
    except InputError as e:  # the per-clip finite check (random weights): keep the timings
        rec["stopped"] = e.message
    finally:
        cuda_mem(device, rec, "peak_gib")
        if device.type == "cuda" and "weights_gib" in rec:
            rec["activations_peak_gib"] = round(rec["peak_gib"] - rec["weights_gib"], 3)
            rec["fits_8gb_card"] = rec["peak_gib"] < 7.0  # an 8 GB card: ~7.4 GiB, less the CUDA context
    rec["clip_s"] = round(time.perf_counter() - t0, 2)
    rec["denoiser_step_s"] = [round(s, 4) for s in steps]
    later = steps[1:] or steps
    rec["s_per_step"] = round(sum(later) / len(later), 4)  # the first call also warms kernels up
    rec["reference_s"] = round(sum(refs), 3)
    rec["vae_decode_s"] = round(sum(decodes), 3)
    rec["denoiser_finite"] = all(finite)
    rec["frames_finite"] = video is not None and bool(video.isfinite().all())
    if video is not None:
        rec["frames_std"] = round(float(video.std()), 4)
    del net, vae
    return rec


def section_realsize(device, args, budget: Budget) -> dict:
    out, per_step = {}, None
    for name in args.dtypes:
        if device.type == "cuda" and name == "bf16":
            import torch

            if not torch.cuda.is_bf16_supported():
                out[name] = {"skipped": "this GPU has no bf16"}
                continue
        # before the first run nothing is known: ask for a minute; then scale the measured fp16 step
        need = 60 if per_step is None else 30 + (args.steps + 1) * per_step * (8 if name == "fp32" else 1.5)
        if not budget.fits(need):
            out[name] = {"skipped": f"budget: {budget.left:.0f} s left, about {need:.0f} s needed"}
            continue
        try:
            out[name] = run_realsize(device, name, args)
        except Exception as e:  # a smoke test reports every failure and goes on
            out[name] = {"error": error(e)}
            free_cuda(device)
            if budget.fits(need):  # which kernel was missing? the same run with SDPA's math fallback allowed
                try:
                    out[name] = run_realsize(device, name, args, restrict=False) | {
                        "error_flash_efficient_only": out[name]["error"]}
                except Exception as e2:
                    out[name]["error_any_kernel"] = error(e2)
                    free_cuda(device)
        per_step = per_step or out[name].get("s_per_step")
    return out


def error(e: Exception) -> dict:
    return {"message": f"{type(e).__name__}: {e}"[:1500], "trace": traceback.format_exc()[-2500:]}


def free_cuda(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def section_placement(device, args, budget: Budget) -> dict:
    if not budget.fits(30):
        return {"skipped": f"budget: {budget.left:.0f} s left, about 30 s needed"}
    try:
        import placement_emulation
    except ImportError as e:
        return {"skipped": f"tests/placement_emulation.py not available ({e})"}
    return placement_emulation.run_all(device)


# ---------------------------------------------------------------------------------------------- main

def summary(res: dict) -> str:
    env = res.get("env", {})
    lines = [f"EmoCAST GPU smoke: {env.get('gpu', env.get('device'))} (capability {env.get('capability', '-')}), "
             f"torch {env.get('torch')}, diffusers {env.get('diffusers')}, {res.get('wall_s', 0):.0f} s"]
    for section in ("public", "realsize", "placement"):
        if "error" in res.get(section, {}):
            lines.append(f"  {section} FAILED: {res[section]['error']['message'][:500]}")
    for name, r in res.get("public", {}).items():
        if isinstance(r, dict) and "max_abs" in r:
            lines.append(f"  PUBLIC {name}: max abs {r['max_abs']:.3g}, mean abs {r['mean_abs']:.3g}, "
                         f"finite {r['finite']}, {r['s']:.1f} s")
        elif isinstance(r, dict):
            lines.append(f"  PUBLIC {name}: {r.get('skipped') or str(r.get('error', {}).get('message'))[:300]}")
    for name, r in ({} if "error" in res.get("realsize", {}) else res.get("realsize", {})).items():
        if "s_per_step" in r:
            mem = (f", peak {r['peak_gib']:.2f} GiB (weights {r['weights_gib']:.2f}, 8 GB card: "
                   f"{'fits' if r['fits_8gb_card'] else 'no'})" if "peak_gib" in r else "")
            lines.append(f"  real-size {name} {r['size']} px x {r['frames']}: {r['s_per_step']:.3f} s/step "
                         f"(first {r['denoiser_step_s'][0]:.2f}), reference {r['reference_s']:.2f} s, "
                         f"VAE decode {r['vae_decode_s']:.2f} s{mem}, finite {r['denoiser_finite']}"
                         f"/{r['frames_finite']}, SDPA {r['sdpa']}")
            if "stopped" in r:
                lines.append(f"    stopped: {r['stopped'][:300]}")
            if "error_flash_efficient_only" in r:
                lines.append(f"    flash/efficient only FAILED: {r['error_flash_efficient_only']['message'][:300]}")
        else:
            lines.append(f"  real-size {name}: {r.get('skipped') or str(r.get('error', {}).get('message'))[:300]}"
                         + (f"; with any kernel: {r['error_any_kernel']['message'][:200]}"
                            if "error_any_kernel" in r else ""))
    pl = res.get("placement", {})
    if "skipped" in pl:
        lines.append(f"  placement: {pl['skipped']}")
    elif "error" not in pl:
        for name, r in pl.items():
            lines.append(f"  placement {name}: {'ok' if r.get('ok') else 'FAILED'} {r.get('detail', '')}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny Net / VAE configs at 64 px, 4 frames (CPU check)")
    ap.add_argument("--budget", type=float, default=420, help="wall-clock seconds for all sections")
    ap.add_argument("--steps", type=int, default=3, help="denoising steps of the real-size clip")
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--size", type=int, help="pixels (default 512; 64 with --tiny)")
    ap.add_argument("--frames", type=int, help="frames per clip (default 16; 4 with --tiny)")
    ap.add_argument("--dtypes", default=",".join(DTYPES), help="real-size dtypes, in order")
    ap.add_argument("--sections", default="env,public,realsize,placement")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    args.size = args.size or (64 if args.tiny else 512)
    args.frames = args.frames or (4 if args.tiny else 16)
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    if args.tiny and "--dtypes" not in " ".join(sys.argv):
        args.dtypes = ["fp32", "bf16"]  # CPU fp16 is slow and not a path anyone runs
    budget, t0 = Budget(args.budget), time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda_only = device.type != "cuda"
    if cuda_only and not args.tiny:
        print("no CUDA device: running the CPU-possible parts with --tiny configs")
        args.tiny, args.size, args.frames, args.dtypes = True, 64, 4, ["fp32", "bf16"]
    res: dict = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "budget_s": args.budget,
                 "skipped": []}
    if cuda_only:
        res["skipped"].append("CUDA parts (no CUDA device): peak CUDA memory, TF32-off GPU kernels, "
                              "flash / memory-efficient SDPA kernels; the real-size Net at 512 px")
    paths = [Path(os.environ["OUT"]) / "gpu_smoke.json"] if os.environ.get("OUT") else []
    paths += [Path(args.json)] if args.json else []

    def save():
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(res, indent=1))

    sections = {"env": lambda: section_env(device, args), "public": lambda: section_public(device, args, budget),
                "realsize": lambda: section_realsize(device, args, budget),
                "placement": lambda: section_placement(device, args, budget)}
    for name in args.sections.split(","):
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} ...", flush=True)
        try:
            res[name] = sections[name]()
        except Exception as e:
            res[name] = {"error": error(e)}
        save()
    print(summary(res))
    for s in res["skipped"]:
        print(f"  skipped: {s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
