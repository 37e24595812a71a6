"""Device and dtype safety: the sampler runs where it was asked to, in a dtype the GPU computes right,
and stops with a clear message (never a silent CPU run, never NaN frames spoiling the clips after).

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
from emocast.pipeline import clips as clips_module
from emocast.pipeline import sampler
from emocast.pipeline.clips import generate, generate_clips
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
    """The bright-reference warning and the finite check read values, which the meta device does not have."""
    monkeypatch.setattr(sampler, "reference_latents", lambda vae, reference: vae.encode(reference))
    monkeypatch.setattr(clips_module, "check_finite", lambda values, *a, **k: None)


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


@pytest.mark.slow
def test_network_reloaded_around_vae_calls_between_clips(on_meta):
    """ComfyUI unloads the network to load the VAE and loads it again, layer by layer: clip 2 still runs."""
    net = tiny_net().to(META)
    vae = ReloadingVAE(MetaVAE(), net, unload=lambda m: m.to_empty(device="cpu"),
                       reload=lambda m: move_like_comfy(m, META))
    clips = list(generate_clips(net, vae, *inputs(clips=2)))
    assert len(clips) == 2 and vae.calls == 4  # encode + decode per clip


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------- dtype

@pytest.mark.parametrize("capability, name, auto", [
    ((9, 0), "NVIDIA H200", torch.float16), ((8, 6), "NVIDIA GeForce RTX 3060", torch.float16),
    ((7, 5), "Tesla T4", torch.float16), ((6, 1), "NVIDIA GeForce GTX 1080", torch.float16),
    ((7, 5), "NVIDIA GeForce GTX 1660 SUPER", torch.float32), ((7, 5), "NVIDIA GeForce GTX 1650", torch.float32),
    ((5, 2), "NVIDIA GeForce GTX 980", torch.float32)])
def test_cli_dtype_follows_the_gpu(monkeypatch, caplog, capability, name, auto):
    from emocast.run import device_dtype as _device_dtype
    from emocast.weights import resolve_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert _device_dtype("cuda:0", "auto") == (torch.device("cuda", 0), auto)
    assert resolve_dtype("fp32", "cuda") == torch.float32
    if capability[0] >= 8:
        assert resolve_dtype("bf16", "cuda") == torch.bfloat16
    else:
        with pytest.raises(InputError, match=f"bf16 needs .*Ampere.*{name}") as e:
            resolve_dtype("bf16", "cuda")
        assert "auto" in e.value.hint
    caplog.clear()
    assert resolve_dtype("fp16", "cuda") == torch.float16  # asked for: done, with a warning where unsafe
    assert ("fp16 as asked" in caplog.text) == (auto == torch.float32)


def test_cpu_dtypes_need_no_gpu_query(monkeypatch):
    from emocast.run import device_dtype as _device_dtype
    from emocast.weights import resolve_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: pytest.fail("asked the GPU"))
    assert _device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("fp16") == torch.float16


@pytest.mark.slow
def test_nan_in_one_clip_stops_the_run_there(monkeypatch):
    """A NaN in clip 2's latents: the run stops at clip 2 with the dtype hint, clip 3 is never sampled.
    (bf16: CPU fp16 kernels are slow; the fp16 hint is checked below.)"""
    from dataclasses import replace

    from emocast.demo.tiny import tiny_vae

    calls = []

    def poisoned(*args, **kwargs):
        latents = real(*args, **kwargs)
        calls.append(1)
        return latents.index_fill(0, torch.tensor([1]), float("nan")) if len(calls) == 2 else latents

    real = clips_module.sample_clip
    monkeypatch.setattr(clips_module, "sample_clip", poisoned)
    face, audio, emotion, settings = inputs(clips=3)
    run = generate_clips(tiny_net().to(torch.bfloat16), tiny_vae(), face, audio, emotion,
                         replace(settings, steps=1, cfg_scale=1.0), device="cpu")
    first = next(run)
    assert first.shape == (FRAMES, 3, SIZE, SIZE) and first.isfinite().all()
    with pytest.raises(InputError, match=r"clip 2 of 3: the network produced \d+ NaN / inf values in bf16") as e:
        next(run)
    assert len(calls) == 2 and "fp32" in e.value.hint


@pytest.mark.parametrize("dtype, made_by, hint", [(torch.float16, "the network", "bf16 (NVIDIA Ampere or newer)"),
                                                  (torch.bfloat16, "the network", "fp32"),
                                                  (torch.float32, "the network", "verify"),
                                                  (torch.float16, "the VAE", "bf16")])
def test_finite_check_hints(dtype, made_by, hint):
    clips_module.check_finite(torch.ones(2, dtype=dtype), 0, 1, made_by, dtype)
    with pytest.raises(InputError, match=f"clip 3 of 4: {made_by} produced 1 NaN / inf") as e:
        clips_module.check_finite(torch.tensor([1.0, float("inf")], dtype=dtype), 2, 4, made_by, dtype)
    assert hint in e.value.hint


# ---------------------------------------------------------------------------------------------- face models

@pytest.fixture
def insightface_calls(monkeypatch):
    """The real insightface FaceAnalysis, recording what EmoCAST passes to it."""
    app = pytest.importorskip("insightface.app")
    calls = []

    class Recorded(app.FaceAnalysis):
        def __init__(self, *args, **kwargs):
            calls.append({"providers": kwargs.get("providers")})
            super().__init__(*args, **kwargs)

        def prepare(self, ctx_id, **kwargs):
            calls[-1]["ctx_id"] = ctx_id
            return super().prepare(ctx_id, **kwargs)

    monkeypatch.setattr(app, "FaceAnalysis", Recorded)
    return calls


@pytest.fixture(scope="module")
def insightface_pack(tmp_path_factory):
    from emocast.demo.face_models import write_tiny_insightface

    return write_tiny_insightface(tmp_path_factory.mktemp("insightface") / "models")


def _sessions(analyser):
    return {name: model.session.get_providers() for name, model in analyser.app.models.items()}


def test_face_analysis_runs_on_the_cpu_by_default(insightface_pack, insightface_calls):
    from emocast.preprocess.face import FaceAnalyser

    analyser = FaceAnalyser(insightface_pack)
    assert insightface_calls == [{"providers": ["CPUExecutionProvider"], "ctx_id": -1}]
    assert set(map(tuple, _sessions(analyser).values())) == {("CPUExecutionProvider",)}


def test_face_analysis_on_the_chosen_gpu(insightface_pack, insightface_calls, monkeypatch, caplog):
    """cuda:1 -> onnxruntime's CUDA provider on device 1 (insightface's ctx_id 1), CPU behind it."""
    import onnxruntime

    from emocast.preprocess.face import FaceAnalyser, onnx_providers

    assert onnx_providers("cuda:1")[0] == ["CPUExecutionProvider"] and "onnxruntime-gpu" in caplog.text  # no CUDA
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    analyser = FaceAnalyser(insightface_pack, device=torch.device("cuda", 1))
    assert insightface_calls == [{"providers": [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"],
                                  "ctx_id": 1}]
    assert "recognition" in analyser.app.models  # this CPU-only onnxruntime fell back to its CPU provider


def test_face_analysis_releases_its_sessions(insightface_pack, insightface_calls):
    import gc
    import weakref

    import numpy as np
    from PIL import Image

    from emocast.demo.tiny import DEMO_IMAGE
    from emocast.preprocess.face import FaceAnalyser

    analyser = FaceAnalyser(insightface_pack)
    rgb = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))
    before = analyser.detect(rgb)
    session = weakref.ref(analyser.app.models["detection"].session)
    analyser.release()
    gc.collect()
    assert session() is None and len(insightface_calls) == 1  # gone, not reloaded yet
    after = analyser.detect(rgb)
    assert len(insightface_calls) == 2 and [f.bbox for f in after] == [f.bbox for f in before]
