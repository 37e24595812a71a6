"""The working-memory estimate (emocast.pipeline.memory) scales with what it is made of."""
import torch

from emocast.models.config import UNetConfig
from emocast.pipeline.memory import estimate


def test_estimate_scales_with_resolution_frames_guidance_and_dtype():
    cfg = UNetConfig.sd15()
    base = estimate(cfg, 512, 16, torch.float16, True)
    assert 1.5 * 2 ** 30 < base.unet < 4 * 2 ** 30  # a 512 px clip of 16 frames with guidance: a few GiB
    quarter = estimate(cfg, 256, 16, torch.float16, True)
    assert 3 < base.unet / quarter.unet <= 4.0 and base.vae == 4 * quarter.vae  # ~ pixels (the context cache does not grow)
    fewer = estimate(cfg, 512, 8, torch.float16, True)
    assert 1.8 < base.unet / fewer.unet < 2.0  # frames (the reference bank does not grow with them)
    no_cfg = estimate(cfg, 512, 16, torch.float16, False)
    assert base.unet == 2 * no_cfg.unet  # guidance doubles the batch (and the reference bank)
    fp32 = estimate(cfg, 512, 16, torch.float32, True)
    assert 1.8 < fp32.unet / base.unet < 2.0  # the bank stays fp16
    assert base.peak == max(base.unet, base.vae) and estimate(cfg, 512, 16, torch.float16, True, vae_batch=4).vae \
        == 4 * base.vae
