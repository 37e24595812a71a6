"""GPU memory of EmoCAST's network at the released size (random weights): full load fp16, fp8, block swap.

    python benchmarks/gpu_memory.py [--sizes 256 512] [--frames 16] [--budgets 2 1]

For each setting: torch.cuda.max_memory_allocated during one clip (1 denoising step, CFG on) against
emocast.pipeline.memory's estimate, and (block swap) that the frames equal the full load's. Random
weights give meaningless frames but the same tensors, so the same memory. Needs CUDA.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from emocast.conditioning import AudioFeatures, FaceConditioning, SamplingSettings
from emocast.conditioning import EmotionConditioning, EmotionKeyframe
from emocast.models import fp8, offload
from emocast.models.config import UNetConfig
from emocast.models.net import EmoCASTNet
from emocast.pipeline.clips import generate
from emocast.pipeline.memory import estimate

GiB = 2 ** 30


def random_net(dtype) -> EmoCASTNet:
    net = EmoCASTNet.build(UNetConfig.sd15(), device="meta").to_empty(device="cuda")
    g = torch.Generator("cuda").manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name and p.ndim == 1:
                p.fill_(1)
            else:
                p.normal_(0, 0.02, generator=g)
        for b in net.buffers():
            b.zero_()  # built on meta: the values do not matter for memory
    return net.to(dtype).eval().requires_grad_(False)


class PoolCodec:
    """A stand-in VAE (8x average pool / nearest upsample): no diffusers needed, tiny next to the UNet."""

    def encode(self, pixels):
        return torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4].half()

    def decode(self, latents, batch=1):
        return torch.nn.functional.interpolate(latents[:, :3].float(), scale_factor=8).clamp(-1, 1)


def inputs(size: int, frames: int):
    n = [(size // 8 // 2 ** i) ** 2 for i in range(4)]
    g = torch.Generator().manual_seed(0)
    face = FaceConditioning(pixels=torch.rand(3, size, size, generator=g) * 2 - 1,
                            face_region=torch.ones(3, size, size), embedding=torch.randn(512, generator=g),
                            masks={k: [torch.ones(m) for m in n] for k in ("full", "face", "lip")})
    audio = AudioFeatures(torch.randn(frames, 12, 768, generator=g), num_frames=frames)
    return face, audio


def run(net, vae, face, audio, emotion, settings):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    out = generate(net, vae, face, audio, emotion, settings)
    torch.cuda.synchronize()
    return out, (torch.cuda.max_memory_allocated() - base) / GiB, base / GiB, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--budgets", type=float, nargs="+", default=[2.0, 0.5])
    args = ap.parse_args()
    g = torch.Generator().manual_seed(1)
    emotion = EmotionConditioning(keyframes=(EmotionKeyframe(0.0, torch.randn(77, 768, generator=g)),),
                                  uncond=torch.randn(77, 768, generator=g))
    vae = PoolCodec()  # the real VAE's decode memory is estimated separately
    net = random_net(torch.float16)
    weights = offload.nbytes(net) / GiB
    print(f"net fp16 weights {weights:.2f} GiB; largest block {offload.smallest_budget(net) / GiB:.3f} GiB")
    for size in args.sizes:
        face, audio = inputs(size, args.frames)
        settings = SamplingSettings(steps=1, clip_length=args.frames)
        est = estimate(net.config, size, args.frames, torch.float16, True)
        full, peak, base, dt = run(net, vae, face, audio, emotion, settings)
        print(f"{size}px full fp16: weights {base:.2f} GiB + working peak {peak:.2f} GiB "
              f"(estimate unet {est.unet / GiB:.2f}, vae {est.vae / GiB:.2f}), {dt:.1f} s")
        cpu_net = copy.deepcopy(net).cpu()
        for budget in args.budgets:
            swap = offload.attach(cpu_net, "cuda", int(budget * GiB))
            try:
                out, peak_s, base_s, dt_s = run(cpu_net, vae, face, audio, emotion, settings)
            finally:
                swap.detach()
            same = torch.equal(out.nan_to_num(), full.nan_to_num())
            diff = (out.nan_to_num() - full.nan_to_num()).abs().max().item()
            print(f"{size}px block swap {budget} GiB: resident {base_s:.2f} GiB + peak {peak_s:.2f} GiB "
                  f"(meter peak {swap.meter.peak / GiB:.2f}), equal={same} maxdiff={diff:.2e}, {dt_s:.1f} s")
        q = fp8.quantize_(copy.deepcopy(cpu_net)).cuda()
        out, peak8, base8, dt8 = run(q, vae, face, audio, emotion, settings)
        print(f"{size}px fp8 weights: {base8:.2f} GiB + peak {peak8:.2f} GiB, {dt8:.1f} s")
        del q, cpu_net
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
