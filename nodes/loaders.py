"""Loader nodes for the EmoCAST network and (optionally) the library's own VAE."""
from __future__ import annotations

from ..emocast import model_files
from . import host
from .types import LIB_VAE, LOADERS, MODEL

_DTYPE_TOOLTIP = ("Precision of the weights and the computation. auto: what ComfyUI picks for diffusion models: fp16 on "
                  "most NVIDIA GPUs; fp32 on the CPU, with --force-fp32 and where fp16 is unreliable (GTX 16xx); bf16 "
                  "with --bf16-unet (the authors ran fp16 on GPU; bf16, Ampere or newer, suits runs where fp16 "
                  "overflows).")


def _load_progress():
    """A `progress(done, total)` callback for loading: the progress bar about 100 times, each a Cancel point."""
    bars: list = []  # created on the first call, when the total is known

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(host.Progress(total))
        if done % max(1, total // 100) == 0 or done == total:
            bars[0].step(done)
    return update


class LoadModel:
    DESCRIPTION = ("Loads the EmoCAST network (the authors' net.pth, or a .safetensors made from it with "
                   "`python -m emocast convert-checkpoint`) from models/emocast. ComfyUI moves it to the GPU "
                   "when EmoCAST Sample runs and may offload it when other models need the memory.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The EmoCAST network (ReferenceNet, denoising UNet, face / image / audio projections).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": host.weights_combo(model_files.EMOCAST),
            "dtype": (list(host.DTYPES), {"default": host.DTYPE_AUTO, "tooltip": _DTYPE_TOOLTIP}),
        }, "optional": {
            "weight_dtype": (["default", "fp8_e4m3fn"], {"default": "default", "tooltip": (
                "How the weights are stored. default: in dtype. fp8_e4m3fn: 1 byte per weight (half of fp16's "
                "memory), each layer upcast to dtype as it runs; frames change slightly (see the README).")}),
            **host.download_input(),
        }}

    def load(self, ckpt_name, dtype, weight_dtype="default", download_if_missing=False):
        from ..emocast.models.checkpoint import load_net

        path = host.resolve_file(model_files.EMOCAST, ckpt_name, download_if_missing)
        torch_dtype = host.resolve_dtype(dtype)
        net = load_net(path, torch_dtype, host.offload_device(), progress=_load_progress(), weight_dtype=weight_dtype)
        return (host.ManagedModel(net, host.manage(net), torch_dtype, ckpt_name),)


class LoadVAE:
    DESCRIPTION = ("Loads sd-vae-ft-mse with EmoCAST's own loader (diffusers AutoencoderKL) from models/vae: a "
                   "single file in original or diffusers naming, with an optional <name>.json config beside it. "
                   "Use it for VAEs ComfyUI's Load VAE cannot read (other shapes, e.g. the tiny test models) or "
                   "to pick the VAE precision per graph; for sd-vae-ft-mse itself core Load VAE gives the same "
                   "latents (see the README).")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (LIB_VAE,)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The VAE for EmoCAST Sample only (not for core VAE Encode / Decode nodes).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": host.weights_combo(model_files.VAE),
            "dtype": (list(host.DTYPES), {"default": host.DTYPE_AUTO, "tooltip": _DTYPE_TOOLTIP}),
        }, "optional": host.download_input()}

    def load(self, vae_name, dtype, download_if_missing=False):
        from ..emocast.models.vae import load_vae

        path = host.resolve_file(model_files.VAE, vae_name, download_if_missing)
        torch_dtype = host.resolve_dtype(dtype)
        codec = load_vae(path, dtype=torch_dtype, device=host.offload_device())
        return (host.ManagedModel(codec, host.manage(codec.model), torch_dtype, vae_name),)


NODE_CLASS_MAPPINGS = {"EmoCAST_LoadModel": LoadModel, "EmoCAST_LoadVAE": LoadVAE}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_LoadModel": "EmoCAST Load Model", "EmoCAST_LoadVAE": "EmoCAST Load VAE"}
