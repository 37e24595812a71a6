"""The ComfyUI node pack against a stand-in host (tests/comfy_host.py), on the tiny demo models."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch

from comfy_host import StubHost
from pack_fixtures import (AUDIO_SECONDS, ROOT, TINY_SETTINGS, core_nodes, lib, load_pack, read_api, run_graph,
                           tiny)

#: Frozen once released: saved workflows refer to these IDs.
RELEASED_IDS = [
    "EmoCAST_LoadModel", "EmoCAST_LoadVAE", "EmoCAST_LoadTextEncoder", "EmoCAST_EncodeEmotion",
    "EmoCAST_EmotionSchedule", "EmoCAST_LoadFaceAnalysis", "EmoCAST_EncodeFace", "EmoCAST_LoadAudioEncoder",
    "EmoCAST_EncodeAudio", "EmoCAST_Sample", "EmoCAST_SampleAdvanced", "EmoCAST_SampleToVideo", "EmoCAST_PasteBack",
    "EmoCAST_Doctor",
]
CUSTOM_TYPES = {"EMOCAST_MODEL", "EMOCAST_TEXT_ENCODER", "EMOCAST_EMOTION", "EMOCAST_FACE_ANALYSIS", "EMOCAST_FACE",
                "EMOCAST_AUDIO_ENCODER", "EMOCAST_AUDIO", "EMOCAST_VAE"}
CORE_TYPES = {"IMAGE", "MASK", "AUDIO", "VIDEO", "VAE", "INT", "FLOAT", "STRING", "BOOLEAN"}
CATEGORIES = {"EmoCAST/loaders", "EmoCAST/conditioning", "EmoCAST/sampling", "EmoCAST/postprocess"}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    from emocast.demo.models import export_models

    d = tmp_path_factory.mktemp("comfy") / "models"
    export_models(d)
    return d


@pytest.fixture(scope="session")
def host(models_dir):
    stub = StubHost()
    # a user's extra_model_paths.yaml entry, registered before the pack (ComfyUI loads the yaml first)
    yaml_dir = models_dir.parent / "yaml_emocast"
    stub.install(models_dir, models_dir.parent / "output")
    stub.folder_paths.add_model_folder_path("emocast", str(yaml_dir))
    yield stub
    stub.uninstall()


@pytest.fixture(scope="session")
def pack(host):
    return load_pack()


@pytest.fixture
def fresh(host):
    """Clear what the stand-in host recorded (interrupts, progress, loads)."""
    host.progress.clear()
    host.loads.clear()
    host.interrupt, host.interrupt_after, host.checks = False, None, 0
    host.free_memory, host.total_memory = 64 << 30, 128 << 30
    host.gpu = "ampere"
    return host


# ---------------------------------------------------------------------------------------------- contract

def test_node_ids_are_the_released_ones(pack):
    assert list(pack.NODE_CLASS_MAPPINGS) == RELEASED_IDS
    assert list(pack.nodes.NODE_IDS) == RELEASED_IDS
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(RELEASED_IDS)
    assert all(name.startswith("EmoCAST ") for name in pack.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert pack.WEB_DIRECTORY == "./web/js" and (ROOT / "web" / "js" / "emocast.js").is_file()


@pytest.mark.parametrize("node_id", RELEASED_IDS)
def test_node_metadata(pack, node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert cls.CATEGORY in CATEGORIES
    assert len(cls.DESCRIPTION) > 40 and callable(getattr(cls, cls.FUNCTION))
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    assert all(t in CUSTOM_TYPES | CORE_TYPES for t in cls.RETURN_TYPES)
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for group in ("required", "optional"):
        for name, (kind, *rest) in spec.get(group, {}).items():
            assert name == name.lower() and " " not in name, name
            assert rest and rest[0].get("tooltip"), f"{node_id}.{name} has no tooltip"
            if isinstance(kind, str):
                assert set(kind.split(",")) <= CUSTOM_TYPES | CORE_TYPES, (name, kind)
    if cls.CATEGORY == "EmoCAST/loaders":
        assert not any(isinstance(k, str) and k in CUSTOM_TYPES for k, *_ in spec["required"].values())


def test_only_the_adapter_imports_the_host():
    import ast

    host_modules = {"comfy", "folder_paths", "server", "nodes", "comfy_api", "comfy_extras", "execution"}
    for path in sorted((ROOT / "nodes").glob("*.py")) + sorted((ROOT / "emocast").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                if name.split(".")[0] in host_modules:
                    assert path == ROOT / "nodes" / "host.py", f"{path.relative_to(ROOT)} imports {name}"


def test_sampler_accepts_both_vaes(pack):
    vae = pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"].INPUT_TYPES()["required"]["vae"][0]
    assert set(vae.split(",")) == {"VAE", "EMOCAST_VAE"}
    assert pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadVAE"].RETURN_TYPES == ("EMOCAST_VAE",)
    seed = pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"].INPUT_TYPES()["required"]["seed"][1]
    assert seed["control_after_generate"] is True


def test_folders_are_registered_without_wiping_user_paths(host, pack, models_dir):
    fp = host.folder_paths
    for key in ("emocast", "vae", "text_encoders", "audio_encoders", "insightface", "mediapipe"):
        assert str(models_dir / key) in fp.get_folder_paths(key), key
    assert fp.get_folder_paths("emocast")[0] == str(models_dir.parent / "yaml_emocast")  # the user's path kept first
    required = pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadModel"].INPUT_TYPES()["required"]
    assert required["ckpt_name"][0] == ["emocast_tiny.safetensors", "net.pth"]  # no .json sidecars; then the release
    assert pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadFaceAnalysis"].INPUT_TYPES()["required"]["insightface"][0] == \
        ["emocast_tiny", "antelopev2"]
    landmarkers = pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadFaceAnalysis"].INPUT_TYPES()["required"]["landmarker"][0]
    assert landmarkers[:3] == ["auto", "mediapipe face mesh", "insightface 2d106"]


def test_missing_model_names_file_folders_and_source(pack, models_dir):
    errors = lib(pack, "emocast.errors")
    with pytest.raises(errors.MissingModelError, match="'net.pth' not found") as e:
        pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadModel"]().load("net.pth", "auto")
    text = str(e.value)
    assert "'net.pth' not found" in text and str(models_dir / "emocast") in text
    assert "huggingface.co/Jmaomao/EmoCAST" in text and isinstance(e.value, FileNotFoundError)
    with pytest.raises(errors.MissingModelError, match="(?s)antelopev2.*insightface model zoo"):
        pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadFaceAnalysis"]().load("antelopev2", "auto")
    with pytest.raises(errors.MissingModelError, match="(?s)clip_l.safetensors.*text_encoders"):
        pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadTextEncoder"]().load("clip_l.safetensors")


def test_schedule_errors_are_reported_at_queue_time_with_the_line(pack):
    node = pack.NODE_CLASS_MAPPINGS["EmoCAST_EmotionSchedule"]
    default = node.INPUT_TYPES()["required"]["schedule"][1]["default"]
    assert node.VALIDATE_INPUTS(schedule=default) is True
    message = node.VALIDATE_INPUTS(schedule="0: calm\n\n2.5 @ 9: furious")
    assert isinstance(message, str) and "line 3" in message and "intensity 9" in message
    assert "line 2" in node.VALIDATE_INPUTS(schedule="0: calm\nsoon: happy")
    assert node.VALIDATE_INPUTS(schedule=None) is True  # fed by a link: checked when it runs


# ---------------------------------------------------------------------------------------------- small nodes

@pytest.fixture(scope="session")
def text_encoder(pack):
    return pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadTextEncoder"]().load("emocast_tiny_clip.safetensors")[0]


def test_encode_emotion_presets_and_custom(pack, text_encoder):
    presets = lib(pack, "emocast.emotion.presets").PRESETS
    node = pack.NODE_CLASS_MAPPINGS["EmoCAST_EncodeEmotion"]()
    (sad,) = node.encode(text_encoder, "sad", "ignored text")
    assert sad.keyframes[0].prompt == presets["sad"]
    (custom,) = node.encode(text_encoder, "custom", "  A person is talking, bored.  ")
    assert custom.keyframes[0].prompt == "A person is talking, bored."
    assert not torch.equal(sad.keyframes[0].embedding, custom.keyframes[0].embedding)
    with pytest.raises(ValueError, match="prompt is empty"):
        node.encode(text_encoder, "custom", "  ")
    web = json.loads((ROOT / "web" / "js" / "emocast_presets.json").read_text(encoding="utf-8"))
    assert web["presets"] == presets  # the web picker fills in the same texts


def test_emotion_schedule_node(pack, text_encoder):
    node = pack.NODE_CLASS_MAPPINGS["EmoCAST_EmotionSchedule"]()
    (emotion,) = node.encode(text_encoder, "0: calm\n1 @0.5: angry", 0.25, "neutral words")
    assert [k.time_s for k in emotion.keyframes] == [0.0, 1.0] and emotion.transition_s == 0.25
    assert emotion.neutral is not None
    with pytest.raises(ValueError, match="line 2"):
        node.encode(text_encoder, "0: calm\nx: angry", 0.5, "neutral")


# ---------------------------------------------------------------------------------------------- the workflow

@pytest.fixture(scope="module")
def basic_run(pack, host, models_dir, tmp_path_factory):
    """The shipped API-format basic workflow on the tiny models (core nodes replaced by stand-ins)."""
    out = tmp_path_factory.mktemp("out")
    host.progress.clear()
    host.loads.clear()
    graph = tiny(read_api("emocast_basic"))
    outputs, ui = run_graph(pack, graph, core_nodes(pack, models_dir, out))
    return graph, outputs, ui, out, list(host.progress), list(host.loads)


def _node(graph, class_type):
    return next(nid for nid, n in graph.items() if n["class_type"] == class_type)


@pytest.mark.slow
def test_basic_workflow_end_to_end(basic_run):
    graph, outputs, ui, out, progress, loads = basic_run
    frame_count = math.ceil(AUDIO_SECONDS * 25)
    sample, enc_audio = _node(graph, "EmoCAST_Sample"), _node(graph, "EmoCAST_EncodeAudio")
    (frames,) = outputs[sample]
    size = TINY_SETTINGS["resolution"]
    assert frames.shape == (frame_count, size, size, 3) and frames.dtype == torch.float32
    assert frames.device.type == "cpu" and 0 <= frames.min() and frames.max() <= 1
    features, audio, count, fps = outputs[enc_audio]
    assert count == frame_count and fps == 25.0 and features.clip_length == TINY_SETTINGS["frames_per_clip"]
    assert audio["waveform"].shape == (1, 1, round(frame_count / 25 * 16000))
    assert audio["waveform"].dtype == torch.float32 and audio["sample_rate"] == 16000
    assert ui[enc_audio]["emocast_audio"] == [{"frames": frame_count, "seconds": round(frame_count / 25, 3),
                                               "clips": 2, "frames_per_clip": 4, "fps": 25.0}]
    pasted, mask = outputs[_node(graph, "EmoCAST_PasteBack")]
    assert pasted.shape == (frame_count, 512, 512, 3) and mask.shape == (1, 512, 512)
    face, preview = outputs[_node(graph, "EmoCAST_EncodeFace")]
    assert preview.shape == (1, size, size, 3) and face.size == size
    # progress: one update per denoising step (2 clips x 1 step) plus one with a preview per clip
    loading = [p for p in progress if p[0] is None and p[2] > 1000]  # LoadModel: one tick per ~1% of the tensors
    assert loading and loading[-1][1] == loading[-1][2] and 90 <= len(loading) <= 110
    steps = [p for p in progress if p[0] == sample]
    assert steps[-1][1:3] == (2, 2) and sum(p[3] for p in steps) == 4  # a latent preview per step + a frame per clip
    net_loads = [entry for entry in loads if any(getattr(m.model, "inner", None) is not None for m in entry["models"])]
    assert net_loads and all(entry["force_full_load"] for entry in net_loads)
    # the saved video: H.264 + AAC, frame_count frames at 25 fps, the speech as long as the frames
    (mp4,) = out.glob("*.mp4")
    with av.open(str(mp4)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.width, v.height, v.average_rate) == (512, 512, 25)
        assert sum(1 for _ in c.decode(video=0)) == frame_count
    with av.open(str(mp4)) as c:
        assert abs(sum(f.samples for f in c.decode(audio=0)) / a.codec_context.sample_rate - frame_count / 25) < 0.03


@pytest.mark.slow
def test_cancel_raises_the_host_interrupt_and_leaves_nothing_behind(pack, fresh, basic_run):
    graph, outputs, *_ = basic_run
    sample = graph[_node(graph, "EmoCAST_Sample")]["inputs"]
    inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in sample.items()}
    node = pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]()
    fresh.interrupt_after = 2  # Cancel pressed during the second step's check
    frees = fresh.cache_frees
    with pytest.raises(fresh.mm.InterruptProcessingException, match="^$"):  # ComfyUI shows no message for Cancel
        node.sample(**inputs, unique_id="11")
    assert fresh.cache_frees == frees + 1  # memory freed on the way out
    (again,) = node.sample(**inputs, unique_id="11")
    assert torch.equal(again, outputs[_node(graph, "EmoCAST_Sample")][0])


@pytest.mark.slow
def test_a_cancelled_prompt_does_not_spoil_the_next_one_in_the_queue(pack, fresh, basic_run, models_dir, tmp_path):
    """Two API prompts of the same graph queued; Cancel hits the first: it saves nothing, the second completes."""
    graph, outputs, *_ = basic_run
    core = core_nodes(pack, models_dir, tmp_path)
    fresh.interrupt_after = 2
    with pytest.raises(fresh.mm.InterruptProcessingException):
        run_graph(pack, graph, core)
    assert not list(tmp_path.glob("*.mp4"))
    second, _ = run_graph(pack, graph, core)
    sample = _node(graph, "EmoCAST_Sample")
    assert torch.equal(second[sample][0], outputs[sample][0])
    assert len(list(tmp_path.glob("*.mp4"))) == 1


@pytest.mark.slow
def test_library_vae_gives_the_core_vae_frames(pack, fresh, basic_run):
    graph, outputs, *_ = basic_run
    (vae,) = pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadVAE"]().load("emocast_tiny_vae.safetensors", "fp32")
    sample = graph[_node(graph, "EmoCAST_Sample")]["inputs"]
    inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in sample.items()}
    (frames,) = pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]().sample(**{**inputs, "vae": vae})
    assert (frames - outputs[_node(graph, "EmoCAST_Sample")][0]).abs().max() < 1e-4


def _sample_inputs(graph, outputs):
    sample = graph[_node(graph, "EmoCAST_Sample")]["inputs"]
    return {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in sample.items()}


@pytest.mark.slow
def test_sampler_swaps_blocks_when_memory_is_short(pack, fresh, basic_run, monkeypatch):
    graph, outputs, *_ = basic_run
    inputs = _sample_inputs(graph, outputs)
    offload, sampling = lib(pack, "emocast.models.offload"), lib(pack, "nodes.sampling")
    net = inputs["model"].model
    need = sampling.working_memory(net, inputs["face"].size, 4, inputs["cfg"], inputs["model"].dtype)
    half = offload.nbytes(net) // 2
    fresh.free_memory = need + half  # half the weights (the tiny net's largest block is 40 % of it)
    swaps = []
    attach = offload.attach
    monkeypatch.setattr(offload, "attach", lambda *a, **kw: swaps.append(attach(*a, **kw)) or swaps[-1])
    (frames,) = pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]().sample(**inputs)
    assert torch.equal(frames, outputs[_node(graph, "EmoCAST_Sample")][0])  # the full load's frames
    (swap,) = swaps
    assert swap.meter.peak <= half + offload.smallest_budget(net) and swap.meter.peak < offload.nbytes(net)
    assert not offload.is_managed(net)
    assert not any(e["models"][0] is inputs["model"].patcher for e in fresh.loads)  # the net was never loaded whole


@pytest.mark.slow  # needs the workflow run (basic_run)
def test_advanced_sampler_compiles_on_request_never_with_block_swap(pack, fresh, basic_run, monkeypatch, caplog):
    graph, outputs, *_ = basic_run
    inputs = _sample_inputs(graph, outputs)
    inputs.pop("preset", None)  # the advanced sampler has the knobs instead
    compiled, offload = lib(pack, "emocast.models.compile"), lib(pack, "emocast.models.offload")
    net, eager = inputs["model"].model, outputs[_node(graph, "EmoCAST_Sample")][0]
    calls = []  # torch.compile itself (minutes; its frames: tests/test_compile.py) stands aside for the wiring
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    advanced = pack.NODE_CLASS_MAPPINGS["EmoCAST_SampleAdvanced"]()
    try:
        (frames,) = advanced.sample(**inputs, torch_compile=True)
        assert compiled.is_compiled(net) and calls == [{"dynamic": False, "options": {"freezing": True}}]
        assert torch.equal(frames, eager)
        pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]().sample(**inputs)  # a sampler without the toggle: eager again
        assert not compiled.is_compiled(net)
        need = lib(pack, "nodes.sampling").working_memory(net, inputs["face"].size, 4, inputs["cfg"],
                                                          inputs["model"].dtype)
        fresh.free_memory = need + offload.nbytes(net) // 2  # block swap for this run
        with caplog.at_level("WARNING"):
            advanced.sample(**inputs, torch_compile=True)
        assert not compiled.is_compiled(net) and "torch_compile is off for this run" in caplog.text
    finally:
        compiled.uncompile(net)


@pytest.mark.slow  # needs the workflow run (basic_run)
def test_sampler_refuses_only_when_one_block_cannot_fit_and_says_what_would(pack, fresh, basic_run):
    graph, outputs, *_ = basic_run
    inputs = _sample_inputs(graph, outputs)
    fresh.free_memory = 1 << 20
    with pytest.raises(ValueError, match="not enough free memory on cpu: one clip needs about") as e:
        pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]().sample(**inputs)
    assert "192 px" in e.value.hint or "Resolution" in e.value.hint


@pytest.mark.slow  # needs the workflow run (basic_run)
def test_hosted_attention_is_comfyuis_and_matches_sdpa(pack, fresh, basic_run):
    assert fresh.attention_calls > 0  # the workflow's sampler went through ComfyUI's optimized_attention
    attention = lib(pack, "emocast.models.attention")
    assert lib(pack, "nodes.host").use_host_attention() and attention._backend is not attention.sdpa_attention
    q, k, v = (torch.randn(2, n, 64, generator=torch.Generator().manual_seed(n)) for n in (10, 14, 14))
    before = fresh.attention_calls
    hosted = attention.multi_head_attention(q, k, v, 8)
    assert fresh.attention_calls == before + 1
    assert (hosted - attention.sdpa_attention(q, k, v, 8)).abs().max() < 1e-6


@pytest.mark.slow
def test_sample_to_video_streams_clips_into_an_mp4(pack, fresh, basic_run, tmp_path):
    graph, outputs, *_ = basic_run
    inputs = _sample_inputs(graph, outputs)
    audio = outputs[_node(graph, "EmoCAST_EncodeAudio")][1]
    fresh.previews = 0
    (video,) = pack.NODE_CLASS_MAPPINGS["EmoCAST_SampleToVideo"]().sample(**inputs, audio=audio, paste_back=True,
                                                                          unique_id="12")
    assert fresh.previews == 2  # one latent preview per denoising step (2 clips x 1 step)
    frame_count = math.ceil(AUDIO_SECONDS * 25)
    video.save_to(str(tmp_path / "saved.mp4"))
    with av.open(str(tmp_path / "saved.mp4")) as c:
        v = c.streams.video[0]
        assert (v.width, v.height) == (512, 512) and c.streams.audio
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == frame_count
    pasted = outputs[_node(graph, "EmoCAST_PasteBack")][0]  # the IMAGE path's frames, through H.264
    assert abs(torch.tensor(decoded[-1]).float() / 255 - pasted[-1]).mean() < 0.03


@pytest.mark.slow  # needs the workflow run (basic_run)
@pytest.mark.parametrize("latent", [{"latent_channels": 16}, {"latent_dim": 3, "downscale_ratio": (None, 8, 8)}])
def test_sampler_refuses_a_vae_of_another_latent_space(pack, fresh, basic_run, latent):
    graph, outputs, *_ = basic_run
    sample = graph[_node(graph, "EmoCAST_Sample")]["inputs"]
    inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in sample.items()}
    other = type("FluxLikeVAE", (type(inputs["vae"]),), latent)(inputs["vae"].codec, inputs["vae"].patcher)
    with pytest.raises(ValueError, match="not an SD1.5 VAE") as e:
        pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]().sample(**{**inputs, "vae": other})
    assert "vae-ft-mse-840000-ema-pruned" in e.value.hint and not fresh.loads  # refused before anything loads


@pytest.mark.slow  # needs the workflow run (basic_run)
def test_sampler_refuses_weights_comfyui_left_off_the_gpu(pack, fresh, basic_run, monkeypatch):
    """--novram: ComfyUI marks the model as loaded on the GPU but leaves plain torch layers where they are."""
    graph, outputs, *_ = basic_run
    sample = graph[_node(graph, "EmoCAST_Sample")]["inputs"]
    inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in sample.items()}
    monkeypatch.setattr(fresh.mm, "get_torch_device", lambda: torch.device("meta"))  # stands in for cuda:0
    monkeypatch.setattr(fresh.mm, "load_models_gpu", lambda models, **kw: None)  # NO_VRAM: nothing moves
    with pytest.raises(ValueError, match="left .* on cpu instead of meta") as e:
        pack.NODE_CLASS_MAPPINGS["EmoCAST_Sample"]().sample(**inputs)
    assert "--novram" in e.value.hint


def test_weights_comfyui_left_behind_in_a_partial_load_are_refused(pack, fresh, monkeypatch):
    """Low free memory: ComfyUI moves layer after layer until its budget is spent (tests/placement_emulation.py).
    The first layers are on the GPU, the rest are not: refused up front, naming them, both at load time and
    when the network is loaded again after a VAE call."""
    from placement_emulation import move_like_comfy

    host = lib(pack, "nodes.host")
    net = lib(pack, "emocast.demo.tiny").tiny_net()
    half = sum(p.numel() * p.element_size() for p in net.parameters()) // 2
    monkeypatch.setattr(fresh.mm, "get_torch_device", lambda: torch.device("meta"))  # stands in for cuda:0
    monkeypatch.setattr(fresh.mm, "load_models_gpu", lambda models, **kw: [
        move_like_comfy(m.model, m.load_device, half) for m in models])
    patcher = host.manage(net)
    with pytest.raises(ValueError, match=r"left EmoCASTNet on cpu instead of meta \(\d+ weights, e.g. ") as e:
        host.load_models([patcher], 0)
    assert "--novram" in e.value.hint and next(net.parameters()).device.type == "meta"  # the first layer moved
    codec = host.HostVAECodec(vae=type("CoreVAE", (), {"decode": lambda self, z: z.new_zeros(
        (z.shape[0], 8 * z.shape[2], 8 * z.shape[3], 3))})(), keep_loaded=[patcher])
    with pytest.raises(ValueError, match="left EmoCASTNet on cpu instead of meta"):
        codec.decode(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize("gpu, flag, want", [
    ("ampere", None, torch.float16), ("ampere", "force_fp32", torch.float32), ("ampere", "bf16_unet", torch.bfloat16),
    ("ampere", "fp32_unet", torch.float32), ("gtx1660", None, torch.float32),  # stored fp16, computed fp32 by ComfyUI
    ("gtx1660", "bf16_unet", torch.float32), ("pre-pascal", None, torch.float32)])
def test_auto_dtype_is_comfyui_choice_on_cuda(pack, fresh, monkeypatch, gpu, flag, want):
    host = lib(pack, "nodes.host")
    fresh.gpu = gpu
    if flag:
        monkeypatch.setattr(fresh.args, flag, True)
    assert host.resolve_dtype("auto", torch.device("cuda", 0)) == want
    assert host.resolve_dtype("auto") == torch.float32  # the CPU: ComfyUI computes even --bf16-unet weights in fp32


def test_named_dtype_is_checked_against_the_gpu(pack, fresh, monkeypatch):
    host = lib(pack, "nodes.host")
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    assert host.resolve_dtype("fp16", cuda) == torch.float16 and host.resolve_dtype("fp32", cuda) == torch.float32
    with pytest.raises(ValueError, match="bf16 needs .* Ampere") as e:
        host.resolve_dtype("bf16", cuda)
    assert "auto" in e.value.hint
    assert host.resolve_dtype("bf16") == torch.bfloat16  # the compute device (CPU here) is what counts


@pytest.mark.slow  # needs the workflow run (basic_run)
def test_nodes_do_not_mutate_inputs(pack, basic_run):
    graph, outputs, *_ = basic_run
    face, _ = outputs[_node(graph, "EmoCAST_EncodeFace")]
    frames = outputs[_node(graph, "EmoCAST_Sample")][0]
    before = frames.clone(), face.source.clone()
    pack.NODE_CLASS_MAPPINGS["EmoCAST_PasteBack"]().paste(frames, face)
    assert torch.equal(frames, before[0]) and torch.equal(face.source, before[1])


# ---------------------------------------------------------------------------------------------- workflows / web

def test_workflows_are_up_to_date_and_their_twins_agree():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_workflows.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("name", ["emocast_basic", "emocast_long_audio", "emocast_emotion_schedule"])
def test_ui_workflow_matches_its_api_twin(pack, name):
    ui = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text(encoding="utf-8"))
    api = read_api(name)
    nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "MarkdownNote"}
    assert set(nodes) == set(api)
    links = {link[0]: link for link in ui["links"]}
    for nid, node in nodes.items():
        assert api[nid]["class_type"] == node["type"]
        for slot in node["inputs"]:
            if slot["link"] is not None:
                _, src, src_slot, dst, dst_slot, _ = links[slot["link"]]
                assert api[nid]["inputs"][slot["name"]] == [str(src), src_slot] and dst == node["id"]
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        if cls is not None:  # widget values in INPUT_TYPES order (+ "fixed" after a control_after_generate seed)
            widgets = [(k, s) for g in ("required", "optional") for k, s in cls.INPUT_TYPES().get(g, {}).items()
                       if isinstance(s[0], list) or s[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]
            expected = []
            for k, s in widgets:
                v = api[nid]["inputs"][k]
                expected += [v] + (["fixed"] if s[1].get("control_after_generate") else [])
            assert node["widgets_values"] == expected, (nid, node["type"])


def test_workflows_use_the_real_model_names():
    text = (ROOT / "example_workflows" / "api" / "emocast_basic_api.json").read_text(encoding="utf-8")
    for name in ("net.pth", "vae-ft-mse-840000-ema-pruned.safetensors", "clip_l.safetensors",
                 "wav2vec2-base-960h.safetensors", "antelopev2"):
        assert f'"{name}"' in text
    assert not list((ROOT / "example_workflows").rglob("*tiny*"))


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed")
def test_web_extension():
    run = subprocess.run(["node", "--test", "tests/web/"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    for js in (ROOT / "web" / "js").glob("*.js"):  # every file is loaded by the frontend as an ES module
        check = subprocess.run(["node", "--check", str(js)], capture_output=True, text=True, cwd=ROOT)
        assert check.returncode == 0, check.stderr


# ---------------------------------------------------------------------------------------------- entry point

IMPORT_CHECK = r"""
import importlib, importlib.abc, json, logging, sys
sys.path.insert(0, TESTS)
hidden = set(HIDE)
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden or name == "emocast" or name.startswith("emocast."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
records = []
class Keep(logging.Handler):
    def emit(self, record): records.append(record.getMessage())
logging.getLogger("EmoCAST").addHandler(Keep())
from comfy_host import StubHost
StubHost().install(MODELS, MODELS + "/../out")
from pack_fixtures import load_pack
pack = load_pack(PACK, DST)
ids = list(pack.NODE_CLASS_MAPPINGS)
cfg = importlib.import_module(PACK + ".emocast.models.config").UNetConfig.sd15()  # bundled config, no top-level 'emocast'
print(json.dumps({"ids": ids, "warnings": records, "width": cfg.block_out_channels[0]}))
"""


def _import_pack_copy(tmp_path, models_dir, hide):
    """Copy the pack into custom_nodes/ComfyUI-EmoCAST and import it in a fresh interpreter, hiding modules."""
    dst = tmp_path / "custom_nodes" / "ComfyUI-EmoCAST"
    dst.mkdir(parents=True)
    for part in ("__init__.py", "nodes", "emocast", "web", "pyproject.toml"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / part)
    values = {"TESTS": str(ROOT / "tests"), "HIDE": hide, "MODELS": str(models_dir), "DST": str(dst),
              "PACK": str(dst).replace(".", "_x_")}
    code = "".join(f"{k} = {v!r}\n" for k, v in values.items()) + IMPORT_CHECK
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_entry_imports_without_optional_dependencies(tmp_path, models_dir):
    result = _import_pack_copy(tmp_path, models_dir, ["insightface", "librosa", "av", "onnxruntime", "mediapipe"])
    assert result["ids"] == RELEASED_IDS and result["warnings"] == [] and result["width"] == 320


@pytest.mark.slow
def test_a_family_that_cannot_import_is_skipped_with_one_warning(tmp_path, models_dir):
    result = _import_pack_copy(tmp_path, models_dir, ["cv2"])
    assert "EmoCAST_EncodeFace" not in result["ids"] and "EmoCAST_Sample" in result["ids"]
    face = [w for w in result["warnings"] if "face" in w]
    assert len(face) == 1 and "pip install opencv-python-headless" in face[0]
