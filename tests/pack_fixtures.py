"""Loading the node pack the way ComfyUI does, against the stand-in host, and running API-format graphs.

Imported by the node tests (pytest fixtures live in test_nodes.py); also the core-node stand-ins
the example workflows use (LoadImage / LoadAudio / VAELoader / CreateVideo / SaveVideo / PreviewImage).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "example_workflows"
#: ComfyUI's sys.modules name for a custom node folder: its path with "." -> "_x_".
PACK_NAME = str(ROOT).replace(".", "_x_")
#: The tiny models' names in place of the real ones in the shipped workflows.
TINY_NAMES = {"ckpt_name": "emocast_tiny.safetensors", "vae_name": "emocast_tiny_vae.safetensors",
              "clip_name": "emocast_tiny_clip.safetensors", "wav2vec2": "emocast_tiny_wav2vec2.safetensors",
              "insightface": "emocast_tiny"}
#: Small settings the tiny models need (and that keep the test fast).
TINY_SETTINGS = {"resolution": 128, "steps": 1, "frames_per_clip": 4}
#: Seconds of the demo speech LoadAudio's stand-in returns: 8 frames = 2 clips of 4.
AUDIO_SECONDS = 0.3


def load_pack(name: str = PACK_NAME, root: Path = ROOT):
    """importlib spec_from_file_location on the pack's __init__.py, as ComfyUI's load_custom_node does."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(root) / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def lib(pack, dotted: str):
    """A library module as the pack imported it, e.g. lib(pack, "emocast.errors")."""
    return importlib.import_module(f"{pack.__name__}.{dotted}")


def read_api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}_api.json").read_text(encoding="utf-8"))


def tiny(graph: dict, **extra) -> dict:
    """The graph with the tiny models' names and settings (and `extra` inputs) substituted."""
    out = json.loads(json.dumps(graph))
    for node in out.values():
        for key, value in {**TINY_NAMES, **TINY_SETTINGS, **extra}.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    return out


def order(graph: dict) -> list[str]:
    done: list[str] = []
    while len(done) < len(graph):
        before = len(done)
        for nid, node in graph.items():
            deps = {v[0] for v in node["inputs"].values() if isinstance(v, list)}
            if nid not in done and deps <= set(done):
                done.append(nid)
        if len(done) == before:
            raise ValueError(f"cycle or dangling link among {set(graph) - set(done)}")
    return done


def check_inputs(cls, inputs: dict, nid: str) -> None:
    """What ComfyUI's validate_inputs checks for a V1 node: required inputs, combos, min / max, VALIDATE_INPUTS."""
    spec = cls.INPUT_TYPES()
    for name, (kind, *rest) in spec.get("required", {}).items():
        assert name in inputs, f"node {nid} {cls.__name__}: required input {name!r} missing"
    for group in ("required", "optional"):
        for name, (kind, *rest) in spec.get(group, {}).items():
            if name not in inputs or isinstance(inputs[name], list):
                continue
            opts, value = (rest[0] if rest else {}), inputs[name]
            if isinstance(kind, list):
                assert value in kind, f"node {nid}: {name}={value!r} not in {kind}"
            if "min" in opts:
                assert value >= opts["min"], f"node {nid}: {name}={value} < {opts['min']}"
            if "max" in opts:
                assert value <= opts["max"], f"node {nid}: {name}={value} > {opts['max']}"
    unknown = set(inputs) - set(spec.get("required", {})) - set(spec.get("optional", {}))
    assert not unknown, f"node {nid} {cls.__name__}: unknown inputs {unknown}"
    if hasattr(cls, "VALIDATE_INPUTS"):
        import inspect

        args = inspect.signature(cls.VALIDATE_INPUTS).parameters
        result = cls.VALIDATE_INPUTS(**{k: v for k, v in inputs.items() if k in args and not isinstance(v, list)})
        assert result is True, f"node {nid}: {result}"


def run_graph(pack, graph: dict, core: dict) -> tuple[dict, dict]:
    """Execute an API-format graph: our nodes through their FUNCTION, core nodes through `core` stand-ins.

    Returns ({node id: output tuple}, {node id: ui dict}).
    """
    outputs, ui = {}, {}
    for nid in order(graph):
        node = graph[nid]
        inputs = {k: (outputs[v[0]][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        cls = pack.NODE_CLASS_MAPPINGS.get(node["class_type"])
        if cls is None:
            outputs[nid] = core[node["class_type"]](**inputs)
            continue
        check_inputs(cls, node["inputs"], nid)
        if "unique_id" in cls.INPUT_TYPES().get("hidden", {}).values() or \
                "UNIQUE_ID" in cls.INPUT_TYPES().get("hidden", {}).values():
            inputs["unique_id"] = nid
        result = getattr(cls(), cls.FUNCTION)(**inputs)
        if isinstance(result, dict):
            ui[nid] = result.get("ui", {})
            result = result["result"]
        assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES), (nid, type(result))
        outputs[nid] = result
    return outputs, ui


class CoreVAE:
    """Stand-in for ComfyUI's comfy.sd.VAE with its semantics (benchmarks/compare_host_vae.py measures the
    real one against the library): encode([B, H, W, 3] 0..1) -> unscaled posterior mean; decode -> [B, H, W, 3]
    clamped 0..1; a `patcher`."""

    latent_channels, latent_dim, downscale_ratio = 4, 2, 8  # what comfy.sd.VAE sets for an SD1.5 VAE

    def __init__(self, codec, patcher):
        self.codec, self.patcher = codec, patcher

    @torch.no_grad()
    def encode(self, pixels):
        x = pixels.movedim(-1, 1) * 2 - 1
        return self.codec.model.encode(x.to(self.codec.device)).latent_dist.mean.float().cpu()

    @torch.no_grad()
    def decode(self, z):
        out = self.codec.model.decode(z.to(self.codec.device)).sample
        return ((out + 1) / 2).clamp(0, 1).movedim(1, -1).float().cpu()


def core_nodes(pack, models_dir: Path, out_dir: Path, seconds: float = AUDIO_SECONDS) -> dict:
    """Stand-ins for the core nodes of the example workflows."""
    import comfy.model_patcher
    from PIL import Image

    tiny_mod = lib(pack, "emocast.demo.tiny")
    audio_mod = lib(pack, "emocast.preprocess.audio")
    vae_mod = lib(pack, "emocast.models.vae")
    video_mod = lib(pack, "emocast.video")

    def load_image(image):
        rgb = np.asarray(Image.open(tiny_mod.DEMO_IMAGE).convert("RGB"), np.float32) / 255
        return torch.from_numpy(rgb)[None], torch.zeros((1,) + rgb.shape[:2])

    def load_audio(audio):
        wave = audio_mod.as_comfy_audio(str(tiny_mod.DEMO_AUDIO))
        n = round(seconds * wave["sample_rate"])
        return ({"waveform": wave["waveform"][..., :n].contiguous(), "sample_rate": wave["sample_rate"]},)

    def vae_loader(vae_name):
        codec = vae_mod.load_vae(models_dir / "vae" / vae_name)
        holder = torch.nn.ModuleDict({"first_stage_model": codec.model})  # like comfy.sd.VAE's patcher target
        return (CoreVAE(codec, comfy.model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))),)

    def preview_image(images):
        assert images.ndim == 4 and images.shape[-1] == 3
        return ()

    def create_video(images, fps, audio=None):
        return ({"images": images, "fps": fps, "audio": audio},)

    def save_video(video, filename_prefix, format, codec):
        path = out_dir / f"{Path(filename_prefix).name}_00001_.mp4"
        video_mod.write_mp4(path, video["images"], fps=video["fps"], audio=video["audio"])
        return ()

    return {"LoadImage": load_image, "LoadAudio": load_audio, "VAELoader": vae_loader,
            "PreviewImage": preview_image, "CreateVideo": create_video, "SaveVideo": save_video}
