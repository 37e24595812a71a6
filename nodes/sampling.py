"""EmoCAST Sample: the clip loop (emocast.pipeline.clips) under ComfyUI's memory manager, progress and Cancel."""
from __future__ import annotations

import logging

import torch

from ..emocast.conditioning import SamplingSettings
from ..emocast.pipeline.presets import PRESET_NAMES, apply_preset
from ..emocast.pipeline.solvers import SAMPLERS
from . import host
from .types import ANY_VAE, AUDIO_FEATURES, EMOTION, FACE, IMAGE, LOGGER, MODEL, SAMPLING

log = logging.getLogger(LOGGER)

#: Peak working memory of one clip, in units of (CFG halves x (frames + 3 reference images) x latent
#: pixels x first UNet width x bytes per value); see `working_memory`. Measured on the CPU with the tiny
#: model (peak RSS growth at 128 / 256 px, 8 frames: ~94 units + a fixed ~70 MB; its 768-wide attention
#: does not shrink with its 32-wide first level, so real widths need relatively less). Not measured on a
#: GPU: at 512 px, 16 frames, fp16 this asks for ~4.5 GiB beside the ~4.6 GiB of weights.
ACTIVATION_FACTOR = 48
_DEFAULTS = SamplingSettings()


def working_memory(net, size: int, clip_length: int, cfg: float, dtype: torch.dtype) -> int:
    """Bytes one clip needs beyond the weights: a heuristic scaled from the largest activation.

    The biggest tensors live at the UNet's first level: (2 with CFG) x (frames + source + 2
    motion frames) feature maps of the first width at the latent size, held by several attention
    and ResNet layers at once plus the reference bank; the VAE decodes `vae_batch` frames at a
    time on top (small next to that at the default 4).
    """
    halves = 2 if cfg > 1.0 else 1
    width = net.config.block_out_channels[0]
    per_value = torch.empty((), dtype=dtype).element_size()
    return int(ACTIVATION_FACTOR * halves * (clip_length + 3) * (size // 8) ** 2 * width * per_value)


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
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def sample(self, model, vae, face, audio_features, emotion, steps, cfg, seed, pose_weight, face_weight,
               lip_weight, vae_batch, preset="exact", unique_id=None):
        settings = SamplingSettings(steps=steps, cfg_scale=cfg, seed=seed, pose_weight=pose_weight,
                                    face_weight=face_weight, lip_weight=lip_weight,
                                    clip_length=audio_features.clip_length, vae_batch=vae_batch)
        if preset != "exact":  # exact keeps the steps widget; the others bring their own step count
            settings = apply_preset(settings, preset)
        return self.run(model, vae, face, audio_features, emotion, settings, unique_id)

    def run(self, model, vae, face, audio_features, emotion, settings: SamplingSettings, unique_id=None):
        from ..emocast.pipeline.clips import generate_clips

        steps, cfg, seed = settings.steps, settings.cfg_scale, settings.seed
        if host.is_host_vae(vae):
            host.check_host_vae(vae)
        features = audio_features.features
        net_patcher = model.patcher
        vae_patcher = vae.patcher  # core VAE and ManagedModel both expose theirs
        need = working_memory(model.model, face.size, settings.clip_length, cfg, model.dtype)
        host.load_models([net_patcher, vae_patcher], need)
        codec = host.HostVAECodec(vae, keep_loaded=[net_patcher]) if host.is_host_vae(vae) else vae.model
        clips = audio_features.clips
        total = clips * steps
        log.info("EmoCAST: %d frames (%.2f s) in %d clips of %d, %d steps each (%s), %d px, cfg %g, seed %d.",
                 features.num_frames, features.seconds, clips, settings.clip_length, steps, settings.sampler,
                 face.size, cfg, seed)
        progress = host.Progress(total, unique_id)
        frames = torch.empty((features.num_frames, face.size, face.size, 3), dtype=torch.float32,
                             device=host.intermediate_device())
        done = 0
        try:
            for k, clip in enumerate(generate_clips(model.model, codec, face, features, emotion, settings,
                                                    device=host.compute_device(),
                                                    progress=lambda p: progress.step(p.step))):
                frames[done:done + clip.shape[0]] = clip.permute(0, 2, 3, 1)
                done += clip.shape[0]
                progress.step((k + 1) * steps, preview=frames[done - 1])
        finally:
            host.empty_cache()
        return (frames,)


class SampleAdvanced(Sample):
    DESCRIPTION = ("EmoCAST Sample with every speed knob: the solver, the steps that use classifier-free guidance "
                   "and deep-feature reuse (the presets of EmoCAST Sample are set combinations of these). With "
                   "ddim, a window of 0..1 and reuse 1 it is the authors' sampler.")

    @classmethod
    def INPUT_TYPES(cls):
        spec = super().INPUT_TYPES()
        spec.pop("optional")
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
        return spec

    def sample(self, model, vae, face, audio_features, emotion, steps, cfg, seed, pose_weight, face_weight,
               lip_weight, vae_batch, sampler="ddim", cfg_start=0.0, cfg_end=1.0, reuse=1, unique_id=None):
        settings = SamplingSettings(steps=steps, cfg_scale=cfg, seed=seed, pose_weight=pose_weight,
                                    face_weight=face_weight, lip_weight=lip_weight,
                                    clip_length=audio_features.clip_length, vae_batch=vae_batch, sampler=sampler,
                                    cfg_window=(cfg_start, cfg_end), reuse=reuse)
        return self.run(model, vae, face, audio_features, emotion, settings, unique_id)


PRESET_TOOLTIP = ("Speed: exact = the authors' DDIM with guidance at every step (their frames; uses the steps "
                  "widget). balanced = DPM-Solver++ 2M, 14 steps, guidance on the first 60% of them. "
                  "fast = 6 steps, guidance on the first half, deep features reused every other step. "
                  "balanced and fast bring their own step count and trade quality for speed (README: Speed presets); "
                  "EmoCAST Sample (Advanced) sets each knob.")

NODE_CLASS_MAPPINGS = {"EmoCAST_Sample": Sample, "EmoCAST_SampleAdvanced": SampleAdvanced}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_Sample": "EmoCAST Sample", "EmoCAST_SampleAdvanced": "EmoCAST Sample (Advanced)"}
