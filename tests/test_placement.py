"""Placement: the sampler runs where it was asked to, or refuses with a clear message.

The `meta` device stands in for the GPU (the real thing runs in benchmarks/gpu_smoke.py): a module
on meta computes shapes only, and a CPU tensor meeting a meta one is exactly the device mismatch a
GPU run hits. Host behaviours come from tests/placement_emulation.py (ComfyUI moving only the layers
with weights, --novram moving nothing, the network unloaded and loaded again around VAE calls).
"""
from __future__ import annotations

import functools

import pytest
import torch

from emocast.conditioning import (AudioFeatures, EmotionConditioning, EmotionKeyframe, FaceConditioning,
                                  SamplingSettings)
from emocast.demo.tiny import tiny_state_dict
from emocast.models.net import EmoCASTNet
from emocast.errors import InputError
from emocast.models.placement import check_placement, misplaced
from emocast.pipeline import sampler
from emocast.pipeline.clips import generate_clips
from placement_emulation import ReloadingVAE, move_like_comfy, move_nothing

META = torch.device("meta")
SIZE, FRAMES = 64, 4


@functools.lru_cache(maxsize=1)
def _weights():
    return tiny_state_dict("net")


def tiny_net():
    """A fresh tiny Net sharing one set of rule weights (moves replace tensors, never change them)."""
    from emocast.demo.tiny import config
    from emocast.models.config import UNetConfig

    net = EmoCASTNet.build(UNetConfig.from_diffusers(config("tiny_unet/config.json")))
    net.load_state_dict(_weights(), strict=True, assign=True)
    return net.eval().requires_grad_(False)


class MetaVAE:
    """The VAE is not under test here: latents of the right shape on the stand-in device, pixels on the CPU."""

    def encode(self, pixels):
        return torch.zeros(pixels.shape[0], 4, SIZE // 8, SIZE // 8, device=pixels.device)

    def decode(self, latents, batch=1):
        return torch.zeros(latents.shape[0], 3, SIZE, SIZE)


def inputs(clips: int = 1):
    g = torch.Generator().manual_seed(0)
    face = FaceConditioning(pixels=torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1,
                            face_region=torch.zeros(3, SIZE, SIZE),
                            embedding=torch.randn(512, generator=g),
                            masks={k: [torch.ones((SIZE // 8 // 2 ** i) ** 2) for i in range(4)]
                                   for k in ("full", "face", "lip")})
    audio = AudioFeatures(torch.randn(clips * FRAMES, 12, 768, generator=g), num_frames=clips * FRAMES)
    emotion = EmotionConditioning((EmotionKeyframe(0.0, torch.randn(77, 768, generator=g)),),
                                  uncond=torch.randn(77, 768, generator=g))
    return face, audio, emotion, SamplingSettings(steps=2, clip_length=FRAMES)


@pytest.fixture
def on_meta(monkeypatch):
    """The bright-reference warning reads a pixel value, which the meta device does not have."""
    monkeypatch.setattr(sampler, "reference_latents", lambda vae, reference: vae.encode(reference))


def test_comfyui_moves_leave_the_frame_table_behind():
    """The emulation does what ComfyUI's patcher does: every weight moves, the buffer-only modules do not."""
    net = tiny_net()
    move_like_comfy(net, META)
    assert all(p.device == META for p in net.parameters())
    assert {b.device for n, b in net.named_buffers()} == {torch.device("cpu")}  # the 42 `pe` tables
    assert not misplaced(net, META)  # constants that follow the input's device are not held against it


def test_sampler_runs_after_layer_by_layer_moves(on_meta):
    net = tiny_net()
    move_like_comfy(net, META)
    clips = list(generate_clips(net, MetaVAE(), *inputs()))  # device: the network's own (meta)
    assert [c.shape for c in clips] == [(FRAMES, 3, SIZE, SIZE)]


def test_network_reloaded_around_vae_calls_between_clips(on_meta):
    """ComfyUI unloads the network to load the VAE and loads it again, layer by layer: clip 2 still runs."""
    net = tiny_net().to(META)
    vae = ReloadingVAE(MetaVAE(), net, unload=lambda m: m.to_empty(device="cpu"),
                       reload=lambda m: move_like_comfy(m, META))
    clips = list(generate_clips(net, vae, *inputs(clips=2)))
    assert len(clips) == 2 and vae.calls == 4  # encode + decode per clip


def test_network_unloaded_and_not_reloaded_stops_at_the_next_clip(on_meta):
    net = tiny_net().to(META)
    vae = ReloadingVAE(MetaVAE(), net, unload=lambda m: m.to_empty(device="cpu"), reload=None, around=("decode",))
    run = generate_clips(net, vae, *inputs(clips=2), device=META)
    assert next(run).shape == (FRAMES, 3, SIZE, SIZE)
    with pytest.raises(InputError, match=r"clip 2 of 2.*not on meta") as e:
        next(run)
    assert "(cpu)" in e.value.message and "not brought back whole" in e.value.message and ".to('meta')" in e.value.hint


def test_novram_nothing_moved_is_refused_not_run_on_the_cpu():
    net = tiny_net()
    move_nothing(net, META)
    with pytest.raises(InputError, match=r"not on meta: \d+ of its \d+ weights are elsewhere.*\(cpu\)"):
        next(generate_clips(net, MetaVAE(), *inputs(), device=META))


def test_some_weights_left_behind_are_named():
    """Low-VRAM loading moves layers until a budget is spent; what is left is named, not run on the CPU."""
    net = tiny_net()
    size = sum(p.numel() * p.element_size() for p in net.parameters())
    move_like_comfy(net, META, budget_bytes=size // 2)
    with pytest.raises(InputError, match=r"not on meta") as e:
        check_placement(net, META)
    assert "up_blocks" in str(e.value) or "audioproj" in str(e.value)


def test_offload_managed_modules_are_accepted():
    """Modules the block-swap offload brings in just before use may stay on the offload device."""
    net = tiny_net().to(META)
    net.denoising_unet.up_blocks.to_empty(device="cpu")
    with pytest.raises(InputError, match="denoising_unet.up_blocks"):
        check_placement(net, META)
    net.denoising_unet.up_blocks._emocast_offload = True
    check_placement(net, META)
    check_placement(net, META, allow=lambda m: m is net.denoising_unet.up_blocks)


def test_cuda_and_cuda_0_are_the_same_device():
    from emocast.models.placement import same_device

    assert same_device(torch.device("cuda"), torch.device("cuda", 0))
    assert not same_device(torch.device("cuda", 1), torch.device("cuda", 0))
    assert not same_device(torch.device("cpu"), torch.device("cuda"))
