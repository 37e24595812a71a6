"""How a host moves (or leaves) a plain torch module, emulated for tests/test_device_safety.py (CPU, with the
`meta` device standing in for the GPU) and benchmarks/gpu_smoke.py (the same on CUDA, with real values).

ComfyUI's ModelPatcher.load (0.3.64 model_patcher.py, `_load_list` / `load`) moves module by module:
only modules whose parameters are all their own (leaf layers with weights) are listed, each is moved
with `m.to(device)`, in low-VRAM mode only until a memory budget is spent, and with --novram none at
all; just the "loaded completely" path ends with a whole-model `.to()`. So a module holding only a
buffer (the motion modules' frame-position table) stays where it was unless the whole model moves.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

CASES = Path(__file__).resolve().parent / "fixtures" / "cases"


def weight_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """ComfyUI's load list: modules with parameters of their own and none in their children."""
    out = []
    for name, m in module.named_modules():
        own = [n for n, _ in m.named_parameters(recurse=False)]
        if own and len(own) == sum(1 for _ in m.parameters()):
            out.append((name, m))
    return out


def move_like_comfy(module: nn.Module, device, budget_bytes: Optional[int] = None) -> list[str]:
    """Move the weight modules one by one (until `budget_bytes` is spent); returns the names moved."""
    moved, used = [], 0
    for name, m in weight_modules(module):
        size = sum(p.numel() * p.element_size() for p in m.parameters())
        if budget_bytes is not None and used + size > budget_bytes:
            continue
        m.to(device)
        used += size
        moved.append(name)
    return moved


def move_nothing(module: nn.Module, device) -> list[str]:
    """--novram: ComfyUI marks the model loaded and moves no plain torch layer."""
    return []


class ReloadingVAE:
    """A VAE codec around which the host unloads the network and loads it again, as ComfyUI may when
    each VAE call loads the VAE (nodes/host.py HostVAECodec restores the network after every call).

    `unload(net)` stands for ComfyUI freeing memory for the VAE; `reload(net)` for the restore.
    """

    def __init__(self, vae, net: nn.Module, unload: Callable[[nn.Module], None],
                 reload: Optional[Callable[[nn.Module], object]], around=("encode", "decode")):
        self.vae, self.net, self.unload, self.reload, self.around = vae, net, unload, reload, around
        self.calls = 0

    def _around(self, out, call: str):
        if call not in self.around:
            return out
        self.calls += 1
        self.unload(self.net)
        if self.reload is not None:
            self.reload(self.net)
        return out

    def encode(self, pixels):
        return self._around(self.vae.encode(pixels), "encode")

    def decode(self, latents, batch: int = 1):
        return self._around(self.vae.decode(latents, batch=batch), "decode")


# ---------------------------------------------------------------------------------------------- on a GPU

def _case(name: str, device, dtype=torch.float32):
    """A conformance case's tiny models (on the CPU) and inputs."""
    import tempfile

    import conformance_pipeline as cp
    from emocast.demo.tiny import tiny_net, tiny_vae, write_tiny_text_encoder
    from emocast.models.clip_text import load_text_encoder

    case = CASES / name
    params = json.loads((case / "case.json").read_text())["params"]
    face, audio = cp.case_inputs(case, params)
    with tempfile.TemporaryDirectory() as tmp:
        emotion = load_text_encoder(write_tiny_text_encoder(Path(tmp) / "te")).encode(params["prompt_emo"])
    return tiny_net(dtype), tiny_vae(dtype, device), (face, audio, emotion, cp.case_settings(params))


def run_all(device, dry_run_on_cpu: bool = False) -> dict:
    """The host behaviours on a real device: each scenario's outcome against a whole-model move.
    (`dry_run_on_cpu` only exercises this code: on the CPU nothing can be left elsewhere.)"""
    from emocast.errors import InputError
    from emocast.pipeline.clips import generate

    device = torch.device(device)
    if device.type != "cuda" and not dry_run_on_cpu:
        return {"skipped": "needs CUDA (tests/test_device_safety.py runs these on the CPU with the meta device)"}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = {}
    net, vae, inputs = _case("OWN_MULTI3", device)
    reference = generate(net.to(device), vae, *inputs, device=device)
    golden = torch.load(CASES / "OWN_MULTI3" / "golden" / "video.pt", weights_only=True).permute(1, 0, 2, 3)
    out["whole_move"] = {"ok": bool(reference.isfinite().all()),
                         "detail": f"3 clips, max abs vs golden {float((reference - golden).abs().max()):.3g}"}

    def scenario(name, mover, expect_error=False, vae_wrap=None):
        net, vae, inputs = _case("OWN_MULTI3", device)
        try:
            moved = mover(net)
            codec = vae_wrap(vae, net) if vae_wrap else vae
            video = generate(net, codec, *inputs, device=device)
        except InputError as e:
            out[name] = {"ok": expect_error, "detail": f"refused: {e.message[:300]}"}
            return
        d = float((video - reference).abs().max())
        out[name] = {"ok": not expect_error and d < 1e-5,
                     "detail": f"ran ({len(moved) if isinstance(moved, list) else '?'} modules moved), "
                               f"max abs vs whole move {d:.3g}"}

    scenario("leaf_moves", lambda n: move_like_comfy(n, device))
    scenario("novram", lambda n: move_nothing(n, device), expect_error=True)
    size = sum(p.numel() * p.element_size() for p in net.parameters())
    scenario("lowvram_half", lambda n: move_like_comfy(n, device, size // 2), expect_error=True)
    scenario("reload_around_vae", lambda n: move_like_comfy(n, device),
             vae_wrap=lambda v, n: ReloadingVAE(v, n, unload=lambda m: m.to("cpu"),
                                                reload=lambda m: move_like_comfy(m, device)))
    # the decode at the end of a clip unloads the network and nothing loads it again: the next clip refuses
    scenario("unloaded_by_vae_not_reloaded", lambda n: move_like_comfy(n, device), expect_error=True,
             vae_wrap=lambda v, n: ReloadingVAE(v, n, unload=lambda m: m.to("cpu"), reload=None, around=("decode",)))
    return out
