"""ComfyUI's VAE (core VAELoader) against the library's diffusers VAE on the same weights (a script).

    python benchmarks/compare_host_vae.py --comfyui /path/to/ComfyUI [--size 256] [--frames 3]

Run it with a Python that has ComfyUI's requirements and diffusers (e.g. ComfyUI's own venv). It
writes a real-size sd-vae-ft-mse state dict (rule weights, see emocast.demo.tiny) in the original
LDM naming that users download (vae-ft-mse-840000-ema-pruned.safetensors), loads it both ways
(comfy.sd.VAE as VAELoader does; emocast.models.vae.load_vae), and compares in fp32 on the CPU:
encode of the demo portrait through the node pack's adapter (nodes.host.HostVAECodec) against
VAECodec.encode (posterior mean * 0.18215), and decode of the same latents.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_pack(name: str = "emocast_pack"):
    """The node pack as ComfyUI imports it (a package named after its folder)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", required=True, help="ComfyUI source folder")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 8)")
    ap.add_argument("--frames", type=int, default=3, help="batch of images (the sampler encodes 3)")
    ap.add_argument("--core-dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="ComfyUI VAE dtype (on GPUs it picks bf16 unless --fp32-vae / --fp16-vae); ours stays fp32")
    a = ap.parse_args()

    sys.path.insert(0, str(Path(a.comfyui).resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported (no CUDA here)
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import comfy.diffusers_convert
    import comfy.sd
    import comfy.utils

    pack = load_pack()
    host = sys.modules[f"{pack.__name__}.nodes.host"]
    from importlib import import_module

    lib_vae = import_module(f"{pack.__name__}.emocast.models.vae")
    tiny = import_module(f"{pack.__name__}.emocast.demo.tiny")

    torch.manual_seed(0)
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in lib_vae.default_config().items() if not k.startswith("_")}
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoencoderKL(**cfg).state_dict().items()}
    diffusers_sd = {k: tiny.rule_value(k, s) for k, s in shapes.items()}
    ldm_sd = comfy.diffusers_convert.convert_vae_state_dict(diffusers_sd)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vae-ft-mse-840000-ema-pruned.safetensors"
        save_file({k: v.contiguous() for k, v in ldm_sd.items()}, str(path))
        t0 = time.perf_counter()
        ours = lib_vae.load_vae(path, dtype=torch.float32)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        core_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.core_dtype]
        core = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)), dtype=core_dtype)
        t_core = time.perf_counter() - t0
    codec = host.HostVAECodec(core)

    image = Image.open(tiny.DEMO_IMAGE).convert("RGB").resize((a.size, a.size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    x = torch.cat([x.roll(7 * i, -1) for i in range(a.frames)])  # a few different images

    with torch.no_grad():
        t0 = time.perf_counter()
        z_ours = ours.encode(x)
        t_enc_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        z_core = codec.encode(x)
        t_enc_core = time.perf_counter() - t0
        z_core2 = codec.encode(x)
        d_ours = ours.decode(z_ours, batch=a.frames)
        d_core = codec.decode(z_ours, batch=a.frames)

    def stats(p, q):
        diff = (p.float() - q.float()).abs()
        return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "value_range": float(p.abs().max())}

    report = {
        "comfyui": str(Path(a.comfyui).resolve()),
        "vae": "real-size sd-vae-ft-mse architecture, rule weights, LDM key names (as the released .safetensors)",
        "size": a.size, "frames": a.frames,
        "core_vae_dtype": str(core.vae_dtype), "core_device": str(core.device),
        "encode_latents(x0.18215)": stats(z_ours, z_core),
        "encode_deterministic(core twice)": float((z_core - z_core2).abs().max()),
        "decode_pixels[-1,1]_ours_unclamped_vs_core_clamped": stats(d_ours.clamp(-1, 1), d_core),
        "decode_values_outside_[-1,1]_in_ours": float((d_ours.abs() > 1).float().mean()),
        "load_seconds": {"library": round(t_ours, 2), "core": round(t_core, 2)},
        "encode_seconds": {"library": round(t_enc_ours, 2), "core": round(t_enc_core, 2)},
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
