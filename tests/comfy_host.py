"""A minimal stand-in for the ComfyUI host modules the node pack imports (ComfyUI is not on PyPI).

`StubHost.install(models_dir)` puts `folder_paths`, `comfy`, `comfy.utils`, `comfy.model_management`
and `comfy.model_patcher` into sys.modules, with the same names, signatures and behaviour the pack
relies on (checked against ComfyUI 0.3.64's source): folder_paths keys that accept any extension
when registered by a pack, ModelPatcher writing `device` and bookkeeping attributes on the module
it manages, load_models_gpu moving models, the interrupt flag that throw_exception... raises once.
It records what the pack did (progress updates, loads, cache frees) for the tests to check.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import torch

SUPPORTED_PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
#: Core keys as ComfyUI registers them (name -> extensions); the pack adds its own.
CORE_KEYS = ("checkpoints", "vae", "text_encoders", "audio_encoders", "diffusion_models")


class InterruptProcessingException(Exception):
    pass


class StubHost:
    def __init__(self):
        self.progress: list[tuple] = []  # (node_id, value, total, has_preview)
        self.loads: list[dict] = []
        self.cache_frees = 0
        self.interrupt = False
        self.interrupt_after: int | None = None  # raise at the n-th interrupt check
        self.checks = 0
        self.free_memory = 64 << 30
        self.total_memory = 128 << 30
        self.modules: dict[str, types.ModuleType] = {}
        #: ComfyUI's command-line flags the dtype choice reads, and the kind of GPU it judges
        self.args = types.SimpleNamespace(force_fp32=False, fp32_unet=False, bf16_unet=False, fp16_unet=False)
        self.gpu = "ampere"  # or "gtx1660" (fp16 gives NaNs), "pre-pascal"
        self.attention_calls = 0  # calls of comfy.ldm.modules.attention.optimized_attention
        self.previews = 0  # latent previews decoded (latent_preview's previewer)

    # ------------------------------------------------------------------ folder_paths
    def _folder_paths(self, models_dir: Path, output_dir: Path) -> types.ModuleType:
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(models_dir)
        fp.supported_pt_extensions = set(SUPPORTED_PT_EXTENSIONS)
        fp.folder_names_and_paths = {k: ([os.path.join(models_dir, k)], set(SUPPORTED_PT_EXTENSIONS))
                                     for k in CORE_KEYS}

        def add_model_folder_path(folder_name, full_folder_path, is_default=False):
            if folder_name in fp.folder_names_and_paths:
                paths = fp.folder_names_and_paths[folder_name][0]
                if full_folder_path not in paths:
                    paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
            else:
                fp.folder_names_and_paths[folder_name] = ([full_folder_path], set())

        def get_folder_paths(folder_name):
            return fp.folder_names_and_paths[folder_name][0][:]

        def get_filename_list(folder_name):
            paths, exts = fp.folder_names_and_paths[folder_name]
            out = []
            for base in paths:
                if not os.path.isdir(base):
                    continue
                for root, _dirs, files in os.walk(base, followlinks=True):
                    for f in files:
                        rel = os.path.relpath(os.path.join(root, f), base).replace(os.sep, "/")
                        if not exts or os.path.splitext(f)[1].lower() in exts:
                            out.append(rel)
            return sorted(set(out))

        def get_full_path(folder_name, filename):
            if folder_name not in fp.folder_names_and_paths:
                return None
            filename = os.path.relpath(os.path.join("/", filename), "/")
            for base in fp.folder_names_and_paths[folder_name][0]:
                path = os.path.join(base, filename)
                if os.path.isfile(path):
                    return path
            return None

        def get_full_path_or_raise(folder_name, filename):
            path = get_full_path(folder_name, filename)
            if path is None:
                raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
            return path

        fp.add_model_folder_path = add_model_folder_path
        fp.get_folder_paths = get_folder_paths
        fp.get_filename_list = get_filename_list
        fp.get_full_path = get_full_path
        fp.get_full_path_or_raise = get_full_path_or_raise
        fp.get_output_directory = lambda: str(output_dir)
        fp.get_temp_directory = lambda: str(Path(output_dir).parent / "temp")
        return fp

    # ------------------------------------------------------------------ comfy
    def _model_management(self) -> types.ModuleType:
        mm = types.ModuleType("comfy.model_management")
        host = self
        mm.InterruptProcessingException = InterruptProcessingException
        mm.OOM_EXCEPTION = torch.cuda.OutOfMemoryError

        def interrupt_current_processing(value=True):
            host.interrupt = value

        def processing_interrupted():
            return host.interrupt

        def throw_exception_if_processing_interrupted():
            host.checks += 1
            if host.interrupt_after is not None and host.checks >= host.interrupt_after:
                host.interrupt_after, host.interrupt = None, True
            if host.interrupt:
                host.interrupt = False
                raise InterruptProcessingException()

        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            host.loads.append({"models": list(models), "memory_required": memory_required,
                               "force_full_load": force_full_load})
            for m in models:
                m.patch_model(m.load_device)

        mm.interrupt_current_processing = interrupt_current_processing
        mm.processing_interrupted = processing_interrupted
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        mm.load_models_gpu = load_models_gpu
        mm.load_model_gpu = lambda m: load_models_gpu([m])
        mm.get_torch_device = lambda: torch.device("cpu")

        def gpu(device) -> bool:
            return device is None or torch.device(device).type != "cpu"

        def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
            if not gpu(device) or host.args.force_fp32:
                return False
            return manual_cast if host.gpu == "gtx1660" else host.gpu != "pre-pascal"  # 16xx: fp16 storage only

        def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
            return gpu(device) and not host.args.force_fp32 and host.gpu == "ampere"

        def unet_dtype(device=None, model_params=0, supported_dtypes=(torch.float16, torch.bfloat16, torch.float32),
                       weight_dtype=None):
            """ComfyUI 0.3.64's choice, without its fp8 branches: command-line flags first, then the first
            supported dtype the GPU computes well, then one it can store (computed with manual casts)."""
            a = host.args
            for flag, dtype in (("fp32_unet", torch.float32), ("bf16_unet", torch.bfloat16),
                                ("fp16_unet", torch.float16)):
                if getattr(a, flag):
                    return dtype
            for manual_cast in (False, True):
                for dt in supported_dtypes:
                    if dt == torch.float16 and should_use_fp16(device, model_params, manual_cast=manual_cast):
                        return dt
                    if dt == torch.bfloat16 and should_use_bf16(device, model_params, manual_cast=manual_cast):
                        return dt
            return torch.float32

        def unet_manual_cast(weight_dtype, inference_device, supported_dtypes=(torch.float16, torch.bfloat16,
                                                                                 torch.float32)):
            """The dtype ComfyUI's own layers compute in when the weights' dtype cannot (None: the same)."""
            if weight_dtype in (torch.float32, torch.float64):
                return None
            fp16, bf16 = should_use_fp16(inference_device), should_use_bf16(inference_device)
            if (fp16 and weight_dtype == torch.float16) or (bf16 and weight_dtype == torch.bfloat16):
                return None
            for dt in supported_dtypes:
                if (dt == torch.float16 and fp16) or (dt == torch.bfloat16 and bf16):
                    return dt
            return torch.float32

        mm.should_use_fp16, mm.should_use_bf16 = should_use_fp16, should_use_bf16
        mm.unet_dtype, mm.unet_manual_cast = unet_dtype, unet_manual_cast
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.intermediate_device = lambda: torch.device("cpu")
        mm.vae_device = lambda: torch.device("cpu")
        mm.get_free_memory = lambda dev=None, torch_free_too=False: host.free_memory
        mm.get_total_memory = lambda dev=None, torch_total_too=False: host.total_memory

        def soft_empty_cache(force=False):
            host.cache_frees += 1

        mm.soft_empty_cache = soft_empty_cache
        mm.VRAMState = types.SimpleNamespace(DISABLED=0, NO_VRAM=1, LOW_VRAM=2, NORMAL_VRAM=3, HIGH_VRAM=4, SHARED=5)
        mm.vram_state = mm.VRAMState.NORMAL_VRAM
        mm.module_size = lambda module: sum(t.nelement() * t.element_size() for t in module.state_dict().values())
        return mm

    def _model_patcher(self, mm) -> types.ModuleType:
        mp = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            """Writes on the managed module what ComfyUI's does (device included)."""

            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
                self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
                if not hasattr(model, "device") or model.device is None:
                    model.device = offload_device
                model.model_loaded_weight_memory = 0
                model.lowvram_patch_counter = 0
                model.model_lowvram = False
                model.current_weight_patches_uuid = None

            def model_size(self):
                if self.size <= 0:
                    self.size = mm.module_size(self.model)
                return self.size

            def patch_model(self, device_to=None, lowvram_model_memory=0, load_weights=True,
                            force_patch_weights=False):
                self.model.to(device_to)
                self.model.device = device_to
                self.model.model_loaded_weight_memory = self.model_size()
                return self.model

            def unpatch_model(self, device_to=None, unpatch_weights=True):
                if device_to is not None:
                    self.model.to(device_to)
                    self.model.device = device_to
                self.model.model_loaded_weight_memory = 0

        mp.ModelPatcher = ModelPatcher
        return mp

    def _utils(self) -> types.ModuleType:
        utils = types.ModuleType("comfy.utils")
        host = self
        utils.PROGRESS_BAR_HOOK = None

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current, self.node_id = total, 0, node_id

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.total = total
                self.current = min(value, self.total)
                host.progress.append((self.node_id, self.current, self.total, preview is not None))

            def update(self, value):
                self.update_absolute(self.current + value)

        utils.ProgressBar = ProgressBar
        return utils

    def _attention(self) -> types.ModuleType:
        """comfy.ldm.modules.attention: optimized_attention as attention_pytorch ([B, N, heads x dim] layout)."""
        attention = types.ModuleType("comfy.ldm.modules.attention")
        host = self

        def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                                skip_output_reshape=False):
            host.attention_calls += 1
            b, _, dim = q.shape
            q, k, v = (t.view(b, -1, heads, dim // heads).transpose(1, 2) for t in (q, k, v))
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return out.transpose(1, 2).reshape(b, -1, dim)

        attention.optimized_attention = optimized_attention
        return attention

    def _latent_preview(self):
        """latent_preview.get_previewer with SD1.5's latent2rgb factors, and comfy.latent_formats.SD15."""
        formats = types.ModuleType("comfy.latent_formats")
        host = self

        class SD15:
            latent_channels = 4
            scale_factor = 0.18215
            latent_rgb_factors = [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                                  [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]]
            taesd_decoder_name = "taesd_decoder"

        class Latent2RGBPreviewer:
            def __init__(self, factors):
                self.factors = torch.tensor(factors)

            def decode_latent_to_preview_image(self, preview_format, x0):
                from PIL import Image

                host.previews += 1
                rgb = x0[0].permute(1, 2, 0).cpu().float() @ self.factors
                pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().numpy()
                return preview_format, Image.fromarray(pixels), 512

        preview = types.ModuleType("latent_preview")
        preview.get_previewer = lambda device, latent_format: Latent2RGBPreviewer(latent_format.latent_rgb_factors)
        formats.SD15 = SD15
        return formats, preview

    def _comfy_api(self):
        """comfy_api.latest.InputImpl.VideoFromFile: a VIDEO that knows its file and its components."""
        api, latest = types.ModuleType("comfy_api"), types.ModuleType("comfy_api.latest")
        api.__path__ = []

        class VideoFromFile:
            def __init__(self, file):
                self.file = file

            def get_dimensions(self):
                import av
                with av.open(self.file) as c:
                    return c.streams.video[0].width, c.streams.video[0].height

            def save_to(self, path, format=None, codec=None, metadata=None):
                import shutil
                shutil.copyfile(self.file, path)

        latest.InputImpl = types.SimpleNamespace(VideoFromFile=VideoFromFile)
        api.latest = latest
        return api, latest

    # ------------------------------------------------------------------ install
    def install(self, models_dir: Path, output_dir: Path) -> "StubHost":
        comfy = types.ModuleType("comfy")
        comfy.__path__ = []  # a package
        mm = self._model_management()
        mp = self._model_patcher(mm)
        utils = self._utils()
        comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, utils
        attention = self._attention()
        ldm, ldm_modules = types.ModuleType("comfy.ldm"), types.ModuleType("comfy.ldm.modules")
        ldm.__path__, ldm_modules.__path__ = [], []
        comfy.ldm, ldm.modules, ldm_modules.attention = ldm, ldm_modules, attention
        formats, preview = self._latent_preview()
        comfy.latent_formats = formats
        api, latest = self._comfy_api()
        self.modules = {"folder_paths": self._folder_paths(models_dir, output_dir), "comfy": comfy,
                        "comfy.model_management": mm, "comfy.model_patcher": mp, "comfy.utils": utils,
                        "comfy.ldm": ldm, "comfy.ldm.modules": ldm_modules, "comfy.ldm.modules.attention": attention,
                        "comfy.latent_formats": formats, "latent_preview": preview, "comfy_api": api,
                        "comfy_api.latest": latest}
        sys.modules.update(self.modules)
        return self

    def uninstall(self) -> None:
        for name, module in self.modules.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]

    @property
    def mm(self):
        return self.modules["comfy.model_management"]

    @property
    def folder_paths(self):
        return self.modules["folder_paths"]
