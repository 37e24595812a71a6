"""EmoCAST Sample: the clip loop (emocast.pipeline.clips) under ComfyUI's memory manager, progress and Cancel."""
from __future__ import annotations

import logging

import torch

from ..emocast.conditioning import SamplingSettings
from ..emocast.pipeline.presets import PRESET_NAMES, apply_preset
from ..emocast.pipeline.solvers import SAMPLERS
from . import host
from .types import ANY_VAE, AUDIO_FEATURES, EMOTION, FACE, IMAGE, LOGGER, MODEL, SAMPLING, VIDEO

log = logging.getLogger(LOGGER)

_DEFAULTS = SamplingSettings()


def working_memory(net, size: int, clip_length: int, cfg: float, dtype: torch.dtype, vae_batch: int = 1) -> int:
    """Bytes one clip needs beyond the weights (emocast.pipeline.memory: from the tensors' sizes)."""
    from ..emocast.pipeline.memory import estimate

    return estimate(net.config, size, clip_length, dtype, cfg > 1.0, vae_batch=vae_batch).peak


def _what_fits(net, size: int, clip_length: int, cfg: float, dtype: torch.dtype):
    """fits(free bytes) -> a hint naming a resolution that would fit, for load_models' refusal."""
    from ..emocast.models import offload

    def fits(free: int):
        block = offload.smallest_budget(net)
        for smaller in range(size - 64, 191, -64):
            if working_memory(net, smaller, clip_length, cfg, dtype) + block <= free:
                return (f"Resolution {smaller} (EmoCAST Encode Face) would fit; so may fp8 weights (Load Model "
                        "weight_dtype) or closing other programs using the device.")
        return "Even 192 px does not fit: free memory on the device (close other programs) or run with --cpu."
    return fits


def sample_clips(model, vae, face, audio_features, emotion, settings: SamplingSettings, vram_budget_gb: float,
                 unique_id=None, torch_compile: bool = False):
    """The clips as [n, H, W, 3] float32 tensors on the CPU, under ComfyUI's memory manager, progress (with
    step previews) and Cancel; memory is released when the generator ends (or is closed)."""
    from ..emocast.models import compile as compiled
    from ..emocast.pipeline.clips import generate_clips

    if host.is_host_vae(vae):
        host.check_host_vae(vae)
    host.use_host_attention()
    features, steps, size = audio_features.features, settings.steps, face.size
    net = model.model
    need = working_memory(net, size, settings.clip_length, settings.cfg_scale, model.dtype, settings.vae_batch)
    release = host.load_models([model.patcher, vae.patcher], need, vram_budget_gb,
                               fits=_what_fits(net, size, settings.clip_length, settings.cfg_scale, model.dtype))
    preview = None
    try:
        from ..emocast.models import offload

        swapping = offload.is_managed(net)
        keep = [] if swapping else [model.patcher]  # block swap: never load the network whole
        if torch_compile and not swapping:
            compiled.compile_denoiser(net)
        else:
            if torch_compile:
                log.warning("EmoCAST: torch_compile is off for this run: the network runs with block swap.")
            compiled.uncompile(net)
        codec = host.HostVAECodec(vae, keep_loaded=keep) if host.is_host_vae(vae) else vae.model
        clips = audio_features.clips
        total = clips * steps
        log.info("EmoCAST: %d frames (%.2f s) in %d clips of %d, %d steps each (%s), %d px, cfg %g, seed %d.",
                 features.num_frames, features.seconds, clips, settings.clip_length, steps, settings.sampler, size,
                 settings.cfg_scale, settings.seed)
        progress = host.Progress(total, unique_id)
        preview = host.LatentPreview(net)
        for k, clip in enumerate(generate_clips(net, codec, face, features, emotion, settings,
                                                device=host.compute_device(),
                                                progress=lambda p: progress.step(p.step, preview.image()))):
            clip = clip.permute(0, 2, 3, 1)
            progress.step((k + 1) * steps, preview=clip[-1])
            yield clip
    finally:
        if preview is not None:
            preview.close()
        release()
        host.empty_cache()


def _settings(audio_features, steps, cfg, seed, pose_weight, face_weight, lip_weight, vae_batch, **knobs):
    return SamplingSettings(steps=steps, cfg_scale=cfg, seed=seed, pose_weight=pose_weight, face_weight=face_weight,
                            lip_weight=lip_weight, clip_length=audio_features.clip_length, vae_batch=vae_batch,
                            **knobs)


def _with_preset(settings: SamplingSettings, preset: str) -> SamplingSettings:
    """exact keeps the steps widget; the other presets bring their own step count."""
    return settings if preset == "exact" else apply_preset(settings, preset)


VRAM_BUDGET = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                         "tooltip": "GB of GPU memory the network's weights may use. 0 (default): load it whole when "
                                    "it fits beside the working memory, else block swap within the free memory (also "
                                    "with --lowvram / --novram). Block swap keeps the weights in RAM and moves each "
                                    "block to the GPU when needed: same frames, slower."})


class Sample:
    DESCRIPTION = ("Generates the talking video, clip by clip (each clip continues from the last two frames of the "
                   "previous one), with the authors' DDIM sampler and classifier-free guidance. Frames are the "
                   "square crop at the face resolution; EmoCAST Paste Back puts them into the full image.")
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = (IMAGE,)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("The video frames [frame_count, resolution, resolution, 3] at 25 fps.",)

    @classmethod
    def INPUT_TYPES(cls):
        d = _DEFAULTS
        weight = {"min": 0.0, "max": 3.0, "step": 0.05}
        return {"required": {
            "model": (MODEL, {"tooltip": "From EmoCAST Load Model."}),
            "vae": (ANY_VAE, {"tooltip": "sd-vae-ft-mse: core Load VAE (vae-ft-mse-840000-ema-pruned.safetensors) "
                                         "or EmoCAST Load VAE."}),
            "face": (FACE, {"tooltip": "From EmoCAST Encode Face (sets the resolution)."}),
            "audio_features": (AUDIO_FEATURES, {"tooltip": "From EmoCAST Encode Audio (sets the length and the "
                                                           "frames per clip)."}),
            "emotion": (EMOTION, {"tooltip": "From EmoCAST Encode Emotion or EmoCAST Emotion Schedule."}),
            "steps": ("INT", {"default": d.steps, "min": 1, "max": 200,
                              "tooltip": "Denoising steps per clip (the authors use 40; fewer is faster and rougher)."}),
            "cfg": ("FLOAT", {"default": d.cfg_scale, "min": 0.0, "max": 20.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (3.5 by the authors); <= 1 turns guidance off "
                                         "and halves the work."}),
            "seed": ("INT", {"default": d.seed, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                             "tooltip": "Seed of the noise (drawn on the CPU). Same seed and settings on the same "
                                        "machine: the same video; on another GPU or the CPU: equal within float "
                                        "noise (other kernels), not bit for bit."}),
            "pose_weight": ("FLOAT", {"default": d.pose_weight, **weight,
                                      "tooltip": "How strongly the speech moves the whole head (full-frame audio branch)."}),
            "face_weight": ("FLOAT", {"default": d.face_weight, **weight,
                                      "tooltip": "How strongly the speech drives the face (face-mask audio branch)."}),
            "lip_weight": ("FLOAT", {"default": d.lip_weight, **weight,
                                     "tooltip": "How strongly the speech drives the lips (lip-mask audio branch)."}),
            "vae_batch": ("INT", {"default": d.vae_batch, "min": 1, "max": 64,
                                  "tooltip": "Frames decoded per VAE call. 1 (default) decodes frame by frame like the "
                                             "authors, giving their exact frames; more is slightly faster on a GPU "
                                             "and changes pixels by float noise only."}),
        }, "optional": {
            "preset": (list(PRESET_NAMES), {"default": "exact", "tooltip": PRESET_TOOLTIP}),
            "vram_budget_gb": VRAM_BUDGET,
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def sample(self, model, vae, face, audio_features, emotion, steps, cfg, seed, pose_weight, face_weight,
               lip_weight, vae_batch, preset="exact", vram_budget_gb=0.0, unique_id=None):
        settings = _settings(audio_features, steps, cfg, seed, pose_weight, face_weight, lip_weight, vae_batch)
        return self.run(model, vae, face, audio_features, emotion, _with_preset(settings, preset), vram_budget_gb,
                        unique_id)

    def run(self, model, vae, face, audio_features, emotion, settings: SamplingSettings, vram_budget_gb=0.0,
            unique_id=None, torch_compile=False):
        frames = torch.empty((audio_features.features.num_frames, face.size, face.size, 3), dtype=torch.float32,
                             device=host.intermediate_device())
        done = 0
        for clip in sample_clips(model, vae, face, audio_features, emotion, settings, vram_budget_gb, unique_id,
                                 torch_compile):
            frames[done:done + clip.shape[0]] = clip
            done += clip.shape[0]
        return (frames,)


class SampleAdvanced(Sample):
    DESCRIPTION = ("EmoCAST Sample with every speed knob: the solver, the steps that use classifier-free guidance "
                   "and deep-feature reuse (the presets of EmoCAST Sample are set combinations of these). With "
                   "ddim, a window of 0..1 and reuse 1 it is the authors' sampler.")

    @classmethod
    def INPUT_TYPES(cls):
        spec = super().INPUT_TYPES()
        spec["optional"].pop("preset")
        spec["required"].update({
            "sampler": (list(SAMPLERS), {"default": "ddim", "tooltip": "ddim: the authors' solver (their frames at 40 "
                                   "steps). dpm++2m / unipc: multistep solvers for the same schedule, close to "
                                   "ddim-40 in 10-20 steps."}),
            "cfg_start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                    "tooltip": "Guidance starts at this fraction of the steps (0 = the first)."}),
            "cfg_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                  "tooltip": "Guidance stops at this fraction of the steps (1 = runs to the end). "
                                             "Steps outside the window run the conditional frames only: half the "
                                             "work."}),
            "reuse": ("INT", {"default": 1, "min": 1, "max": 5,
                              "tooltip": "Run the whole UNet every N steps and only its outermost level in "
                                         "between, on the deep features kept from the last full step (1 = off)."}),
        })
        spec["optional"]["torch_compile"] = ("BOOLEAN", {
            "default": False, "tooltip": "torch.compile the denoiser, meant for CUDA GPUs (no gain measured on the "
                                         "CPU). Compiles for minutes on the first run (and once more for each new "
                                         "size or step kind); frames within float noise of the eager ones, not "
                                         "bit-identical. Off with block swap; falls back to eager, with a warning, "
                                         "when compiling fails."})
        return spec

    def sample(self, model, vae, face, audio_features, emotion, steps, cfg, seed, pose_weight, face_weight,
               lip_weight, vae_batch, sampler="ddim", cfg_start=0.0, cfg_end=1.0, reuse=1, vram_budget_gb=0.0,
               torch_compile=False, unique_id=None):
        settings = _settings(audio_features, steps, cfg, seed, pose_weight, face_weight, lip_weight, vae_batch,
                             sampler=sampler, cfg_window=(cfg_start, cfg_end), reuse=reuse)
        return self.run(model, vae, face, audio_features, emotion, settings, vram_budget_gb, unique_id,
                        torch_compile)


class SampleToVideo:
    DESCRIPTION = ("EmoCAST Sample for long speech: each clip is pasted back (optional) and encoded into an MP4 as "
                   "soon as it is made, so memory holds one clip, not the whole video (10 minutes of 512 px frames "
                   "as an IMAGE batch are ~45 GB). Outputs a VIDEO for core Save Video.")
    CATEGORY = SAMPLING
    FUNCTION = "sample"
    RETURN_TYPES = (VIDEO,)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("The MP4 (H.264 + the speech as AAC) at 25 fps; connect it to Save Video.",)

    @classmethod
    def INPUT_TYPES(cls):
        spec = Sample.INPUT_TYPES()
        spec["required"]["audio"] = ("AUDIO", {"tooltip": "The audio output of EmoCAST Encode Audio (muxed as AAC)."})
        spec["required"]["paste_back"] = ("BOOLEAN", {"default": True, "tooltip": "Put each clip back into the "
                                                      "full portrait (as EmoCAST Paste Back) before encoding."})
        return spec

    def sample(self, model, vae, face, audio_features, emotion, steps, cfg, seed, pose_weight, face_weight,
               lip_weight, vae_batch, audio, paste_back, preset="exact", vram_budget_gb=0.0, unique_id=None):
        from ..emocast.errors import InputError
        from ..emocast.preprocess.crop import paste_back as paste
        from ..emocast.video import write_mp4

        if paste_back and (face.crop is None or face.source is None):
            raise InputError("this face conditioning has no crop box or source image to paste back into.",
                             hint="Connect the face output of EmoCAST Encode Face, or turn paste_back off.")
        settings = _with_preset(_settings(audio_features, steps, cfg, seed, pose_weight, face_weight, lip_weight,
                                          vae_batch), preset)

        def frames():
            for clip in sample_clips(model, vae, face, audio_features, emotion, settings, vram_budget_gb, unique_id):
                yield paste(clip, face.crop, face.source)[0] if paste_back else clip

        path = host.temp_video_path()
        write_mp4(path, frames(), fps=audio_features.features.fps, audio=audio)
        return (host.video_from_file(path),)


PRESET_TOOLTIP = ("Speed: exact = the authors' DDIM with guidance at every step (their frames; uses the steps "
                  "widget). balanced = DPM-Solver++ 2M, 14 steps, guidance on the first 60% of them. "
                  "fast = 6 steps, guidance on the first half, deep features reused every other step. "
                  "balanced and fast bring their own step count and trade quality for speed (README: Speed presets); "
                  "EmoCAST Sample (Advanced) sets each knob.")

NODE_CLASS_MAPPINGS = {"EmoCAST_Sample": Sample, "EmoCAST_SampleAdvanced": SampleAdvanced,
                       "EmoCAST_SampleToVideo": SampleToVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_Sample": "EmoCAST Sample", "EmoCAST_SampleAdvanced": "EmoCAST Sample (Advanced)",
                              "EmoCAST_SampleToVideo": "EmoCAST Sample to Video"}
