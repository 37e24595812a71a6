"""The one adapter between the EmoCAST nodes and ComfyUI: the only module that imports the host.

Model folders (registered with `folder_paths.add_model_folder_path`, so extra_model_paths.yaml
keeps working), devices and dtypes from `comfy.model_management`, ModelPatcher wrapping, memory
checks, the progress bar + Cancel, and ComfyUI's VAE behind the library's codec interface.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths

from ..emocast import model_files
from ..emocast.errors import InputError, MissingModelError
from ..emocast.models.placement import misplaced
from ..emocast.models.vae import LATENT_SCALE
from ..emocast.weights import SUFFIXES, resolve_dtype as _resolve_dtype
from .types import LOGGER

log = logging.getLogger(LOGGER)

#: Landmarker choices that need no file (then every .task file found in the mediapipe folders).
LANDMARKER_AUTO, LANDMARKER_MESH, LANDMARKER_IF106 = "auto", "mediapipe face mesh", "insightface 2d106"
#: Dtype choices of the model loaders.
DTYPE_AUTO = "auto"
DTYPES = (DTYPE_AUTO, "fp16", "bf16", "fp32")


# ---------------------------------------------------------------------------------------------- folders

def register_model_folders() -> None:
    """models/<key> for every model kind; appends, so paths from extra_model_paths.yaml stay first."""
    for kind in model_files.KINDS:
        folder_paths.add_model_folder_path(kind.key, os.path.join(folder_paths.models_dir, kind.key))


#: The example workflows' inputs (public domain portrait, synthesized speech) -> the pack's file.
EXAMPLE_INPUTS = {"emocast_example_portrait.png": "portrait_astronaut_512.png",
                  "emocast_example_speech.wav": "speech_en_16k.wav"}
ASSETS = Path(__file__).resolve().parents[1] / "emocast" / "demo" / "assets"


def copy_example_inputs() -> None:
    """Put the templates' portrait and speech into ComfyUI's input folder, never over an existing file."""
    get = getattr(folder_paths, "get_input_directory", None)
    if get is None:
        return
    target = Path(get())
    for name, source in EXAMPLE_INPUTS.items():
        dest = target / name
        if dest.exists():
            continue
        try:
            target.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(ASSETS / source, tmp)
            os.replace(tmp, dest)
        except OSError as e:
            log.warning("EmoCAST: could not copy the example input %s to %s (%s).", name, target, e)


def _folders(kind: model_files.ModelKind) -> list[str]:
    try:
        return list(folder_paths.get_folder_paths(kind.key))
    except KeyError:
        return []


def _with_downloadable(found: list[str], kind: model_files.ModelKind) -> list[str]:
    """The files found, then the published names not among them (so a template's default validates and
    download_if_missing can fetch it)."""
    return found + [n for n in model_files.choices(kind) if n not in found]


def weights_combo(kind: model_files.ModelKind) -> tuple[list[str], dict]:
    """A combo input of a kind's weights files (our own keys accept any extension: filtered here), with a
    tooltip saying where the files are and come from."""
    try:
        names = folder_paths.get_filename_list(kind.key)
    except KeyError:
        names = []
    files = sorted(n for n in names if n.lower().endswith(SUFFIXES))
    return _with_downloadable(files, kind), {"tooltip": f"File in models/{kind.key}. Source: {kind.source}."}


DOWNLOAD_TOOLTIP = ("Download the chosen model from its source (Hugging Face) into ComfyUI's models folder when it "
                    "is not there: progress on this node, resumable, checked against the published sha256. Off: "
                    "nothing is downloaded.")


def download_input() -> dict:
    return {"download_if_missing": ("BOOLEAN", {"default": False, "tooltip": DOWNLOAD_TOOLTIP})}


def missing_model(kind: model_files.ModelKind, name: str, folders: Sequence[str]) -> MissingModelError:
    where = ", ".join(folders) or f"models/{kind.key} (no such folder is registered)"
    fetchable = name in model_files.choices(kind)
    return MissingModelError(
        f"{kind.what} {name!r} not found; searched {where}.",
        hint=f"Get it from {kind.source}; put it in one of those folders (or list your own folder under "
             f"'{kind.key}:' in extra_model_paths.yaml), then press R in ComfyUI to refresh the lists."
             + (" Or turn on download_if_missing on this node, or run `python -m emocast download-models "
                f"--models {folder_paths.models_dir}`." if fetchable else "")
             + " The EmoCAST Doctor node (or `python -m emocast doctor`) checks every model file.")


class _BytesProgress:
    """ComfyUI's progress bar over a download's bytes, about 200 updates, each a Cancel point."""

    def __init__(self):
        self.progress: Optional[Progress] = None
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            self.progress = Progress(max(total, 1))
        step = max(total // 200, 1)
        if done // step != self.last or done >= total:
            self.last = done // step
            self.progress.step(min(done, self.progress.total))


def download(kind: model_files.ModelKind, name: str) -> None:
    """download_if_missing: fetch `name` into ComfyUI's models/<key> (the README's layout), verified."""
    from ..emocast.download import fetch

    wanted = [r for r in model_files.REMOTES if r.kind is kind and r.choice == name]
    if not wanted:
        raise MissingModelError(f"{kind.what} {name!r} not found, and it is not a file EmoCAST can download "
                                f"({', '.join(model_files.choices(kind))}).",
                                hint=f"Choose one of those with download_if_missing on, or get {name!r} yourself.")
    for remote in wanted:
        dest = Path(folder_paths.models_dir) / remote.dest
        if not dest.is_file():
            log.info("EmoCAST: downloading %s to %s", remote.source_url(), dest)
            fetch(remote, dest, _BytesProgress())


def resolve_file(kind: model_files.ModelKind, name: str, download_if_missing: bool = False) -> Path:
    """Full path of a file chosen in a combo; MissingModelError names the file, folders and source."""
    if not name:
        raise missing_model(kind, "(none selected)", _folders(kind))
    path = folder_paths.get_full_path(kind.key, name)
    if path is None and download_if_missing:
        download(kind, name)
        path = folder_paths.get_full_path(kind.key, name)
    if path is None:
        raise missing_model(kind, name, _folders(kind))
    return Path(path)


def _pack_roots() -> list[Path]:
    """models/insightface/models (insightface's own layout) first, then models/insightface itself."""
    folders = [Path(f) for f in _folders(model_files.INSIGHTFACE)]
    return [f / "models" for f in folders] + folders


def _is_pack(d: Path) -> bool:
    return d.is_dir() and d.name != "models" and (any(d.glob("*.onnx")) or any(d.glob("*/*.onnx")))


def insightface_packs() -> list[str]:
    """Pack folders with .onnx files (antelopev2 first); some zips nest the folder twice, find_pack copes."""
    found = []
    for root in _pack_roots():
        if root.is_dir():
            found += [d.name for d in sorted(root.iterdir()) if _is_pack(d)]
    found = sorted(dict.fromkeys(found), key=lambda n: (n not in model_files.INSIGHTFACE.prefer, n))
    return _with_downloadable(found, model_files.INSIGHTFACE)


def resolve_pack(name: str, download_if_missing: bool = False) -> Path:
    for attempt in range(2):
        for root in _pack_roots():
            if _is_pack(root / name):
                return root / name
        if not download_if_missing or attempt:
            break
        download(model_files.INSIGHTFACE, name)
    raise missing_model(model_files.INSIGHTFACE, name, [str(r) for r in _pack_roots()])


def task_files() -> list[str]:
    """mediapipe .task files in the registered mediapipe folders (relative names)."""
    found = []
    for folder in _folders(model_files.LANDMARKER):
        if os.path.isdir(folder):
            found += [p.relative_to(folder).as_posix() for p in sorted(Path(folder).rglob("*.task"))]
    return sorted(dict.fromkeys(found))


def resolve_task(name: str) -> Path:
    for folder in _folders(model_files.LANDMARKER):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise missing_model(model_files.LANDMARKER, name, _folders(model_files.LANDMARKER))


def landmarker_choices() -> list[str]:
    return [LANDMARKER_AUTO, LANDMARKER_MESH, LANDMARKER_IF106] + task_files()


def doctor_report() -> str:
    """emocast.doctor's report over ComfyUI's registered model folders (extra_model_paths.yaml included)."""
    from ..emocast import doctor

    checks = doctor.run_checks(lambda kind: [Path(f) for f in _folders(kind)], f" --models {folder_paths.models_dir}")
    return doctor.report(checks, f"ComfyUI models: {folder_paths.models_dir}")


# ---------------------------------------------------------------------------------------------- devices

def compute_device() -> torch.device:
    return mm.get_torch_device()


def offload_device() -> torch.device:
    return mm.unet_offload_device()


def intermediate_device() -> torch.device:
    return mm.intermediate_device()


#: Parameters of the released EmoCAST Net: ComfyUI weighs fp16 against fp32 by what fits in memory.
NET_PARAMS = 2_490_000_000
_OURS = (torch.float16, torch.bfloat16, torch.float32)


def resolve_dtype(choice: str, device: Optional[torch.device] = None, model_params: int = NET_PARAMS) -> torch.dtype:
    """A dtype choice as a torch dtype; auto: the diffusion-model dtype ComfyUI picks (`unet_dtype`).

    That honours --force-fp32, --fp32-unet, --bf16-unet, --fp16-unet, and ComfyUI's judgement of the
    GPU: fp16 where it is fast and right, bf16 where fp16 is not but bf16 is (should_use_bf16), fp32
    on GPUs where fp16 gives NaNs (GTX 16xx) or runs slowly (Pascal, unless fp32 does not fit), and
    on the CPU. Where ComfyUI would store one dtype and compute in another (`unet_manual_cast`, e.g.
    fp8 weights), EmoCAST's plain layers take the compute dtype. A named choice is checked against the
    GPU (emocast.weights.check_cuda_dtype: bf16 needs Ampere or newer).
    """
    device = device or compute_device()
    if choice != DTYPE_AUTO:
        return _resolve_dtype(choice, device)
    if not hasattr(mm, "unet_dtype"):  # very old hosts
        return torch.float16 if device.type == "cuda" and mm.should_use_fp16(device) else torch.float32
    dtype = mm.unet_dtype(device=device, model_params=model_params, supported_dtypes=list(_OURS))
    # ComfyUI may store weights in a dtype its own layers cast from (fp16 on a GTX 16xx, computed in fp32);
    # plain torch layers compute in what they store, so take the compute dtype.
    cast = mm.unet_manual_cast(dtype, device, list(_OURS)) if hasattr(mm, "unet_manual_cast") else None
    dtype = cast or dtype
    if dtype not in _OURS:
        fallback = torch.float16 if device.type == "cuda" and mm.should_use_fp16(device) else torch.float32
        log.warning("EmoCAST computes in fp16 / bf16 / fp32 only; ComfyUI chose %s, using %s.", dtype, fallback)
        dtype = fallback
    return dtype


class Managed(torch.nn.Module):
    """A library module as ComfyUI's ModelPatcher sees it.

    The patcher writes bookkeeping attributes (`device`, `model_loaded_weight_memory`, ...) on the
    module it manages; the library's modules expose `device` as a read-only property, so the
    patcher manages this holder and moving the holder moves the module inside.
    """

    def __init__(self, module: torch.nn.Module, device: torch.device):
        super().__init__()
        self.inner = module
        self.device = device


def manage(module: torch.nn.Module) -> object:
    """A ModelPatcher (CoreModelPatcher where the host has it) for a module loaded on the offload device."""
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    named = type(type(module).__name__, (Managed,), {})  # ComfyUI logs "Requested to load <class name>"
    holder = named(module, offload_device())
    patcher = patcher_class(holder, load_device=compute_device(), offload_device=offload_device())
    if hasattr(mm, "archive_model_dtypes"):  # newer ComfyUI (dynamic VRAM) records the weights' dtypes
        mm.archive_model_dtypes(holder)
    return patcher


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:.2f} GiB"


def check_loaded(patchers: Sequence[object], device: torch.device) -> None:
    """Every weight and buffer of our models on `device` (ComfyUI's own models, e.g. the core VAE, may stream
    their weights; ours cannot): refuse with the modules ComfyUI left behind, never compute on the CPU."""
    for patcher in patchers:
        held = patcher.model
        if not isinstance(held, Managed):
            continue
        bad = misplaced(held.inner, device)
        if bad:
            where = sorted({str(d) for _, d in bad})
            raise InputError(
                f"ComfyUI left {type(held).__name__} on {', '.join(where)} instead of {device} ({len(bad)} weights, "
                f"e.g. {bad[0][0]}): with --novram or too little free memory it keeps weights off the GPU and "
                "streams them layer by layer, which EmoCAST's models (plain torch layers) cannot do, so they "
                "would compute on the CPU (hours for EmoCAST's network) or fail.",
                hint="Set vram_budget_gb on EmoCAST Sample (block swap: the weights stay in RAM and visit the "
                     "GPU block by block, what --lowvram / --novram get), free GPU memory, or start ComfyUI with "
                     "--cpu to run on the CPU on purpose.")


def _low_vram() -> bool:
    """ComfyUI started with --lowvram / --novram (or chose it for a small card)."""
    state, states = getattr(mm, "vram_state", None), getattr(mm, "VRAMState", None)
    return states is not None and state in (getattr(states, "LOW_VRAM", None), getattr(states, "NO_VRAM", None))


def load_models(patchers: Sequence[object], memory_required: int, vram_budget_gb: float = 0.0,
                fits: Optional[Callable[[int], Optional[str]]] = None) -> Callable[[], None]:
    """Put EmoCAST's network (the first patcher) and the others on the compute device; returns `release()`.

    Full load when the device holds the weights plus `memory_required` bytes of working memory after
    ComfyUI freed other models; otherwise (and always with --lowvram / --novram, or a `vram_budget_gb`)
    block swap: the weights stay in RAM and the network's blocks visit the GPU within the free memory
    (or the budget). Refuses only when even one block beside the working memory does not fit; then
    `fits(free_bytes)` names an option that would.
    """
    from ..emocast.models import offload

    device = compute_device()
    net_patcher, others = patchers[0], list(patchers[1:])
    net = net_patcher.model.inner
    weights = net_patcher.model_size()
    swap_needed = vram_budget_gb > 0 or _low_vram()
    if others:  # the VAE, with room for the network and the working memory: ComfyUI unloads what it must
        mm.load_models_gpu(others, memory_required=memory_required + (0 if swap_needed else weights),
                           force_full_load=True)
    free = mm.get_free_memory(device)
    if not swap_needed and weights + memory_required <= free:
        mm.load_models_gpu(list(patchers), memory_required=memory_required, force_full_load=True)
        check_loaded(patchers, device)
        return lambda: None
    budget = int(vram_budget_gb * 2 ** 30) if vram_budget_gb > 0 else int(free - memory_required)
    budget = min(budget, int(free - memory_required))
    smallest = offload.smallest_budget(net)
    if budget < smallest:
        option = fits(free) if fits is not None else None
        raise InputError(
            f"not enough free memory on {device}: one clip needs about {gib(memory_required)} of working memory "
            f"and block swap at least {gib(smallest)} for the largest block of the network, but {gib(free)} is free.",
            hint=option or "Close other programs using the device, or lower the resolution or frames_per_clip.")
    log.info("EmoCAST: %s of weights, %s free on %s beside %s of working memory: block swap within %s.",
             gib(weights), gib(free), device, gib(memory_required), gib(budget))
    swap = offload.attach(net, device, budget)
    return swap.detach


def empty_cache() -> None:
    mm.soft_empty_cache()


# ---------------------------------------------------------------------------------------------- attention

def use_host_attention() -> bool:
    """Route EmoCAST's attention through ComfyUI's `optimized_attention`, the backend its flags chose
    (--use-sage-attention, --use-flash-attention, xformers, pytorch, split / sub-quadratic); it takes
    q / k / v as [B, N, heads x dim] with `heads`, the library's own layout. False on a host without it."""
    from ..emocast.models import attention

    try:
        from comfy.ldm.modules.attention import optimized_attention
    except ImportError:
        return False
    attention.set_backend(lambda q, k, v, heads: optimized_attention(q, k, v, heads))
    return True


# ---------------------------------------------------------------------------------------------- progress

def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's progress bar over `total` steps; every update is also a Cancel point."""

    def __init__(self, total: int, node_id: Optional[str] = None):
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.total = total

    def step(self, done: int, preview=None) -> None:
        """preview: an [H, W, 3] frame, or ComfyUI's ("JPEG", image, size) tuple."""
        check_interrupt()
        if torch.is_tensor(preview):
            preview = _preview(preview)
        self.bar.update_absolute(done, self.total, preview)


class LatentPreview:
    """ComfyUI's step previews (latent2rgb or TAESD, as the user set --preview-method) of the latents the
    denoiser is working on: a forward hook on the denoising UNet keeps the middle frame's predicted
    clean latents x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v (conditional half), SD1.5's latent space."""

    def __init__(self, net):
        from ..emocast.pipeline.scheduler import DDIMZeroSNR

        self.x0: Optional[torch.Tensor] = None
        self.previewer = None
        try:
            import comfy.latent_formats
            import latent_preview

            self.previewer = latent_preview.get_previewer(compute_device(), comfy.latent_formats.SD15())
        except ImportError:
            pass
        self.abar = DDIMZeroSNR().alphas_cumprod
        self.handle = net.denoising_unet.register_forward_hook(self._keep) if self.previewer else None

    def _keep(self, module, args, v) -> None:
        latents, t, inputs = args
        f = inputs.frames
        a = self.abar[int(t)].item()
        mid = latents.shape[0] - f + f // 2  # the last (conditional) half's middle frame
        self.x0 = (a ** 0.5 * latents[mid:mid + 1] - (1 - a) ** 0.5 * v[mid:mid + 1]).float()

    def image(self):
        if self.previewer is None or self.x0 is None:
            return None
        return self.previewer.decode_latent_to_preview_image("JPEG", self.x0)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def _preview(frame: torch.Tensor, max_size: int = 512):
    """("JPEG", PIL image, max size) of an [H, W, 3] 0..1 frame, as ComfyUI's previews."""
    from PIL import Image

    pixels = (frame.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(pixels), max_size)


# ---------------------------------------------------------------------------------------------- video

def temp_video_path(prefix: str = "emocast") -> Path:
    """A new .mp4 path in ComfyUI's temp folder (core Save Video copies it to the output folder)."""
    import uuid

    folder = Path(folder_paths.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{prefix}_{uuid.uuid4().hex[:12]}.mp4"


def video_from_file(path: Path):
    """ComfyUI's VIDEO (VideoFromFile) of an MP4 on disk: what core Save Video / Get Video Components take."""
    try:
        from comfy_api.latest import InputImpl
        return InputImpl.VideoFromFile(str(path))
    except ImportError:
        from comfy_api.input_impl import VideoFromFile
        return VideoFromFile(str(path))


# ---------------------------------------------------------------------------------------------- VAE

class HostVAECodec:
    """ComfyUI's VAE (core VAELoader) behind the library's codec interface.

    encode(pixels [N, 3, H, W] in [-1, 1]) -> latents * 0.18215, the posterior mean (ComfyUI's
    DiagonalGaussianRegularizer returns the mode = mean, unscaled); decode(latents, batch) ->
    [-1, 1] pixels. ComfyUI computes in its own VAE dtype (fp32 on CPU; bf16 on recent GPUs,
    --fp32-vae / --fp16-vae change it) and returns results on its intermediate device; they go
    back to the caller's device. Each call lets ComfyUI load the VAE, which may unload other
    models when memory is short, so `keep_loaded` patchers are reloaded after every call.
    """

    def __init__(self, vae, keep_loaded: Sequence[object] = ()):
        self.vae = vae
        self.keep_loaded = list(keep_loaded)

    def _restore(self) -> None:
        if self.keep_loaded:
            mm.load_models_gpu(self.keep_loaded, force_full_load=True)
            check_loaded(self.keep_loaded, compute_device())

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        images = ((pixels.float() + 1) / 2).movedim(1, -1)  # ComfyUI takes [N, H, W, 3] in 0..1 (and maps x*2-1)
        latents = self.vae.encode(images)
        self._restore()
        return (latents.float() * LATENT_SCALE).to(pixels.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch: int = 1) -> torch.Tensor:
        z = latents.float() / LATENT_SCALE
        out = torch.cat([self.vae.decode(z[i:i + batch]) for i in range(0, z.shape[0], batch)])
        self._restore()
        return (out.movedim(-1, 1) * 2 - 1).to(latents.device)  # ComfyUI returns [N, H, W, 3] clamped 0..1


@dataclass(frozen=True)
class ManagedModel:
    """A loaded library model and the ModelPatcher that moves it (EMOCAST_MODEL, EmoCAST_LoadVAE's VAE, ...).

    `model` is what the library calls (EmoCASTNet, VAECodec, Wav2Vec2Encoder); ComfyUI finds the
    patcher through `patcher` / `get_models()` to unload it when memory is needed elsewhere.
    """

    model: object
    patcher: object
    dtype: torch.dtype
    name: str = ""

    def get_models(self):
        return [self.patcher]


def is_host_vae(vae) -> bool:
    """True for ComfyUI's VAE object (core VAELoader), False for EmoCAST_LoadVAE's ManagedModel."""
    return not isinstance(vae, ManagedModel)


#: sd-vae-ft-mse's latent format as ComfyUI's VAE describes it: 4 channels, images, 1/8 of the size.
SD_LATENT_FORMAT = {"latent_channels": 4, "latent_dim": 2, "downscale_ratio": 8}


def check_host_vae(vae) -> None:
    """Refuse a core VAE whose latents cannot be sd-vae-ft-mse's (Flux, SD3, video VAEs) before anything loads."""
    found = {k: getattr(vae, k, v) for k, v in SD_LATENT_FORMAT.items()}
    if found != SD_LATENT_FORMAT:
        ratio = found["downscale_ratio"]
        raise InputError(
            f"the VAE connected to EmoCAST Sample is not an SD1.5 VAE: its latents have {found['latent_channels']} "
            f"channels{' (a video VAE)' if found['latent_dim'] != 2 else ''}"
            f"{f' at 1/{ratio} of the image size' if isinstance(ratio, int) else ''}; EmoCAST works in "
            "sd-vae-ft-mse's latent space (4 channels, 1/8 of the image size).",
            hint="Load vae-ft-mse-840000-ema-pruned.safetensors with Load VAE (or use EmoCAST Load VAE); "
                 "SDXL, SD3, Flux and video VAEs do not fit.")
