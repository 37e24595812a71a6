"""Audio nodes: load wav2vec2, and turn speech into per-frame features plus the matching AUDIO / frame count."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..emocast import model_files
from ..emocast.conditioning import FPS, SamplingSettings
from . import host
from .types import AUDIO, AUDIO_ENCODER, AUDIO_FEATURES, CONDITIONING, FLOAT, INT, LOADERS

#: The ui key EmoCAST Encode Audio reports under (read by web/js/emocast.js).
UI_KEY = "emocast_audio"
#: Working memory asked for while wav2vec2 encodes (ComfyUI frees other models to fit it).
ENCODE_MEMORY = 1 << 30


@dataclass(frozen=True)
class EncodedAudio:
    """EMOCAST_AUDIO: wav2vec2 features at 25 fps, padded to whole clips of `clip_length` frames."""

    features: object  # emocast.conditioning.AudioFeatures
    clip_length: int

    @property
    def clips(self) -> int:
        return math.ceil(self.features.num_frames / self.clip_length)


class LoadAudioEncoder:
    DESCRIPTION = ("Loads wav2vec2-base-960h, the speech encoder EmoCAST was trained with, from "
                   "models/audio_encoders (a single model.safetensors renamed, or with a <name>.json config "
                   "beside it). It runs in fp32; ComfyUI moves it to the GPU while it encodes.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (AUDIO_ENCODER,)
    RETURN_NAMES = ("audio_encoder",)
    OUTPUT_TOOLTIPS = ("The wav2vec2 speech encoder for EmoCAST Encode Audio.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "wav2vec2": host.weights_combo(model_files.WAV2VEC2),
        }, "optional": host.download_input()}

    def load(self, wav2vec2, download_if_missing=False):
        import torch

        from ..emocast.models.wav2vec2 import load_wav2vec2

        encoder = load_wav2vec2(host.resolve_file(model_files.WAV2VEC2, wav2vec2, download_if_missing), device=host.offload_device())
        return (host.ManagedModel(encoder, host.manage(encoder.model), torch.float32, wav2vec2),)


class EncodeAudio:
    DESCRIPTION = ("Speech -> wav2vec2 features at 25 fps (the video's frame rate), padded to whole clips as the "
                   "authors do. Also returns the audio cut or padded to exactly the video's length, the frame "
                   "count and the fps, for Create Video.")
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = (AUDIO_FEATURES, AUDIO, INT, FLOAT)
    RETURN_NAMES = ("audio_features", "audio", "frame_count", "fps")
    OUTPUT_TOOLTIPS = ("Speech features for EmoCAST Sample (it takes its clip length from here).",
                       "The input audio trimmed / zero-padded to exactly frame_count / fps seconds (for Create Video).",
                       "Number of video frames: ceil(seconds x 25).",
                       "Frames per second of the video (25, the model's training rate).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "audio": (AUDIO, {"tooltip": "The speech (any sample rate / channels; mixed to mono, resampled to 16 kHz)."}),
            "audio_encoder": (AUDIO_ENCODER, {"tooltip": "From EmoCAST Load Audio Encoder."}),
            "frames_per_clip": ("INT", {
                "default": SamplingSettings.clip_length, "min": 1, "max": 30,
                "tooltip": "Frames generated per clip (16: what the model was trained with). The features are "
                           "padded to whole clips, and EmoCAST Sample uses this clip length."}),
        }}

    def encode(self, audio, audio_encoder, frames_per_clip):
        from ..emocast.preprocess.audio import fit_audio, load_speech
        from ..emocast.models.wav2vec2 import extract_features

        SamplingSettings(clip_length=frames_per_clip)  # validates the clip length with the sampler's own rule
        speech = load_speech(audio)
        host.load_models([audio_encoder.patcher], ENCODE_MEMORY)
        try:
            features = extract_features(audio_encoder.model, speech, clip_length=frames_per_clip, fps=FPS)
        finally:
            host.empty_cache()
        encoded = EncodedAudio(features, frames_per_clip)
        fitted = fit_audio(audio, features.num_frames, features.fps)
        info = {"frames": features.num_frames, "seconds": round(features.seconds, 3), "clips": encoded.clips,
                "frames_per_clip": frames_per_clip, "fps": float(features.fps)}
        return {"ui": {UI_KEY: [info]},
                "result": (encoded, fitted, features.num_frames, float(features.fps))}


NODE_CLASS_MAPPINGS = {"EmoCAST_LoadAudioEncoder": LoadAudioEncoder, "EmoCAST_EncodeAudio": EncodeAudio}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_LoadAudioEncoder": "EmoCAST Load Audio Encoder",
                              "EmoCAST_EncodeAudio": "EmoCAST Encode Audio"}
