"""wav2vec2 (the network, its loader) and its speech features at the video frame rate, as the authors
compute them (docs/authors_behaviours.md#b31, #b4).

Per signal: zero-mean / unit-variance normalisation (eps 1e-7, float32), zero-padding of the
normalised signal to whole clips, the conv feature extractor (~50 Hz), linear interpolation
(align_corners=True) to one vector per video frame *before* the feature projection and the
transformer, and the outputs of every encoder layer -> [T, L, D].

We run the stock `Wav2Vec2Model` submodules one by one and read each layer's output with forward
hooks, so the result does not depend on how a transformers version records hidden states
(5.x dropped them from encoder calls). `hidden_states[1:]` in 4.x = the layer outputs, the last
one as the encoder returns it (after the final LayerNorm in stable-layer-norm models).

Long audio in bounded memory (the authors encode the whole signal at once). Measured on CPU with
the real-size base-960h architecture (random weights, fp32): encoding all at once costs +16 MB of
RAM per second of audio (60 s: +0.95 GB, 120 s: +1.9 GB), almost all in the conv stack (512
channels at 3.2 kHz), not in attention (SDPA keeps it linear).
* conv features: above `Windowing.chunk_s` the conv stack runs on chunks of the signal: +0.64 GB
  flat (300 s: same peak as 60 s). Exact (measured <= 4e-6): every conv is local, and the first
  layer's GroupNorm (one group per channel, over the whole signal) takes its statistics from a
  first pass over all chunks.
* transformer: global attention up to `Windowing.max_exact_s` (its time grows quadratically:
  300 s took 91 s, 600 s 390 s on 2 cores); above it, overlapping windows of `window_s` frames
  each seeing `context_s` more on both sides (600 s: 274 s). An approximation: with the tiny
  rule-weight model (near-uniform attention, the worst case for windows) on the demo speech
  tiled to 400 s, the default 60 s + 2 x 30 s windows differ from the exact features by mean
  0.013 / max 0.15 (features ~N(0, 1)); 20 s + 2 x 10 s: 0.030 / 0.29. Not measured on the
  trained weights.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import CONFIGS
from ..conditioning import FPS, AudioFeatures
from ..errors import CheckpointError, ConfigError, InputError
from ..preprocess.audio import SAMPLE_RATE, Speech, check_samples, frame_count
from ..weights import Download, locate, read_json, read_state_dict
from . import ModelWrapper
from .loading import KeyRules, match_state_dict

log = logging.getLogger("EmoCAST")

BASE_960H_CONFIG = CONFIGS / "wav2vec2_base_960h.json"
WAV2VEC2_URL = "https://huggingface.co/facebook/wav2vec2-base-960h"
WAV2VEC2_FILE = Download("model.safetensors", WAV2VEC2_URL)
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HEADS = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "classifier.", "projector.")
_NOT_CONFIG = ("architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "model_type")
_POS = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}


@dataclass(frozen=True)
class Windowing:
    """When and how to encode long audio in pieces (bounded memory; see the module docstring).

    max_exact_s: the transformer sees the whole audio (seconds, after padding) up to this length,
                 as the authors' code does; None = always; 0 = always windowed.
    window_s:    frames each transformer window keeps (seconds).
    context_s:   extra context on each side of a window (seconds); >= 2.6 s covers the
                 positional convolution, the rest is attention context.
    chunk_s:     audio per conv-feature chunk (seconds); memory only, the result is the same.
    """

    max_exact_s: float | None = 300.0
    window_s: float = 60.0
    context_s: float = 30.0
    chunk_s: float = 20.0

    def __post_init__(self):
        if self.max_exact_s is not None and self.max_exact_s < 0:
            raise ConfigError(f"max_exact_s must be >= 0 or None, got {self.max_exact_s}.")
        if self.window_s <= 0 or self.context_s < 0 or self.chunk_s <= 0:
            raise ConfigError(
                f"window_s and chunk_s must be > 0 and context_s >= 0; got window_s={self.window_s}, "
                f"context_s={self.context_s}, chunk_s={self.chunk_s}."
            )


@dataclass
class Wav2Vec2Encoder(ModelWrapper):
    """A loaded wav2vec2 (eval mode, no gradients) and whether its input is normalised."""

    model: torch.nn.Module
    normalize: bool = True
    source: str = ""

    @property
    def receptive_field(self) -> int:
        """Samples one conv feature frame sees (400 for wav2vec2-base)."""
        field = 1
        for k, s in zip(reversed(self.model.config.conv_kernel), reversed(self.model.config.conv_stride)):
            field = (field - 1) * s + k
        return field

    @property
    def hop(self) -> int:
        """Samples between conv feature frames (320)."""
        return math.prod(self.model.config.conv_stride)


# ---------------------------------------------------------------- loading


def load_wav2vec2(path: str | Path, *, device="cpu", dtype: torch.dtype = torch.float32) -> Wav2Vec2Encoder:
    """wav2vec2 from a local Hugging Face folder or a single weights file, never from the hub.

    Folder: config.json + model.safetensors (or pytorch_model.bin) [+ preprocessor_config.json].
    File (.safetensors / .bin / .pt / .pth, e.g. in ComfyUI's models/audio_encoders): the bundled
    wav2vec2-base-960h config, or `<file stem>.json` next to it; a `wav2vec2.` key prefix, fp16
    weights and the legacy `weight_g` / `weight_v` pos-conv names are accepted.
    """
    path = Path(path)
    weights, config = locate(
        path, _WEIGHT_FILES, lambda: read_json(BASE_960H_CONFIG), what="wav2vec2",
        hint=f"Download model.safetensors from {WAV2VEC2_URL} (facebook/wav2vec2-base-960h) and put it there (e.g. "
        "as models/audio_encoders/wav2vec2-base-960h.safetensors), or the whole folder (config.json, "
        "model.safetensors, preprocessor_config.json).",
    )
    if (path / "preprocessor_config.json").is_file():  # in a Hugging Face folder
        config["do_normalize"] = read_json(path / "preprocessor_config.json").get("do_normalize", True)
    encoder = build_wav2vec2(config, read_state_dict(weights, WAV2VEC2_FILE), source=str(weights))
    encoder.model.to(device=device, dtype=dtype)
    return encoder


def build_wav2vec2(config: dict, state_dict: dict, *, source: str = "") -> Wav2Vec2Encoder:
    """A Wav2Vec2Model from a config dict and a state dict, loaded strictly (heads dropped)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = dict(config)
    if config.get("model_type", "wav2vec2") != "wav2vec2":
        raise CheckpointError(
            f"{source or 'the audio encoder'} is a {config['model_type']!r} model, not wav2vec2.",
            hint=f"EmoCAST was trained with {WAV2VEC2_URL}.",
        )
    normalize = bool(config.pop("do_normalize", True))
    kwargs = {k: v for k, v in config.items() if k not in _NOT_CONFIG}
    model = Wav2Vec2Model(Wav2Vec2Config(**kwargs))
    expected = model.state_dict()
    sd = _match_keys(state_dict, expected, source)
    model.load_state_dict({**{k: expected[k] for k in expected if k not in sd}, **sd}, strict=True)
    model.eval().requires_grad_(False)
    return Wav2Vec2Encoder(model, normalize, source)


def _match_keys(sd: dict, expected: dict, source: str) -> dict:
    """Checkpoint keys renamed to the installed transformers' names, checked strictly (models/loading.py)."""
    parametrized = _POS + _WEIGHT_NORM["weight_g"] in expected
    pos = tuple((_POS + old, _POS + new) if parametrized else (_POS + new, _POS + old)
                for old, new in _WEIGHT_NORM.items())  # legacy weight_g / weight_v <-> parametrizations
    rules = KeyRules(renames=(("wav2vec2.", ""),) + pos, ignore=_HEADS, optional=("masked_spec_embed",))
    sd = dict(sd)
    for pre in ("", "wav2vec2."):
        if pre + _POS + "weight" in sd:  # weight norm already folded in: v = w, g = |w| over all dims but 2
            w = sd.pop(pre + _POS + "weight")
            g_key, v_key = (_POS + (new if parametrized else old) for old, new in _WEIGHT_NORM.items())
            sd[g_key], sd[v_key] = w.norm(dim=(0, 1), keepdim=True), w

    def width(renamed: dict) -> str:
        w = renamed.get("encoder.layer_norm.weight")
        return f"It has hidden size {w.shape[0]}." if w is not None else ""

    out = match_state_dict(sd, {k: tuple(v.shape) for k, v in expected.items()}, source or "the state dict",
                           rules, model="wav2vec2 audio encoder", folder="audio_encoders", note=width,
                           hint=f"EmoCAST needs facebook/wav2vec2-base-960h (hidden size 768, 12 layers): "
                                f"{WAV2VEC2_URL}. For another size put its config.json next to the file as "
                                "<file stem>.json.")
    return {k: v.to(expected[k].dtype) for k, v in out.items()}


# ---------------------------------------------------------------- features


def normalize_waveform(samples: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance in float32, as Wav2Vec2FeatureExtractor (silence stays 0)."""
    x = np.asarray(samples, dtype=np.float32)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


def extract_features(
    encoder: Wav2Vec2Encoder,
    speech: Speech,
    *,
    clip_length: int = 16,
    fps: float = FPS,
    windowing: Windowing = Windowing(),
) -> AudioFeatures:
    """[T, L, D] features per video frame; T padded to whole clips of `clip_length` (<= 0: none).

    Pass the sampler's clip length: the padding changes the features (the authors pad first).
    """
    if speech.sample_rate != SAMPLE_RATE:
        raise InputError(f"wav2vec2 needs {SAMPLE_RATE} Hz speech, got {speech.sample_rate} Hz.",
                         hint="Load it with emocast.preprocess.audio.load_speech, which resamples.")
    x = speech.samples.detach().cpu().numpy().astype(np.float32, copy=False).reshape(-1)
    check_samples(x, SAMPLE_RATE)
    num_frames = frame_count(x.size, SAMPLE_RATE, fps)
    seq_len = num_frames
    if clip_length > 0 and seq_len % clip_length:
        seq_len += clip_length - seq_len % clip_length
    hop = int(SAMPLE_RATE // fps)
    if x.size < hop or x.size + (seq_len - num_frames) * hop < encoder.receptive_field:
        raise InputError(
            f"the speech is {x.size / SAMPLE_RATE * 1000:.1f} ms long; at least one video frame "
            f"({max(hop, encoder.receptive_field) / SAMPLE_RATE * 1000:.0f} ms) is needed.",
            hint="Use a longer audio clip.",
        )
    if encoder.normalize:
        x = normalize_waveform(x)
    wave = torch.from_numpy(np.ascontiguousarray(x))
    wave = F.pad(wave, (0, (seq_len - num_frames) * hop))[None].to(encoder.device, encoder.dtype)
    seconds = wave.shape[1] / SAMPLE_RATE
    windowed = windowing.max_exact_s is not None and seconds > windowing.max_exact_s
    if windowed:
        log.info("%.0f s of audio: wav2vec2 attention runs on %g s windows with %g s of context on each "
                 "side (Windowing(max_exact_s=None) encodes it all at once, as the authors do).",
                 seconds, windowing.window_s, windowing.context_s)
    with torch.inference_mode():
        if seconds > windowing.chunk_s:
            conv = conv_features_chunked(encoder, wave, round(windowing.chunk_s * SAMPLE_RATE / encoder.hop))
        else:
            conv = encoder.model.feature_extractor(wave)
        frames = F.interpolate(conv, size=seq_len, mode="linear", align_corners=True).transpose(1, 2)
        if windowed:
            window, context = round(windowing.window_s * fps), round(windowing.context_s * fps)
            hidden = encode_windowed(encoder, frames, window, context)
        else:
            hidden = encode(encoder, frames)
    log.debug("wav2vec2: %d samples -> %d conv frames -> %d video frames (%s)",
              wave.shape[1], conv.shape[-1], seq_len, "windowed" if windowed else "exact")
    return AudioFeatures(hidden.to("cpu", torch.float32), num_frames, fps)


def encode(encoder: Wav2Vec2Encoder, frames: torch.Tensor) -> torch.Tensor:
    """Feature projection + transformer on [1, T, C] frame features -> [T, L, D] layer outputs."""
    model = encoder.model
    outputs: list[torch.Tensor] = []

    def keep(_module, _args, out):
        outputs.append(out[0] if isinstance(out, tuple) else out)  # 4.x layers return tuples

    hooks = [layer.register_forward_hook(keep) for layer in model.encoder.layers]
    try:
        hidden, _ = model.feature_projection(frames)
        last = model.encoder(hidden)[0]
    finally:
        for hook in hooks:
            hook.remove()
    outputs[-1] = last
    return torch.stack(outputs, dim=2)[0]


def encode_windowed(encoder: Wav2Vec2Encoder, frames: torch.Tensor, window: int, context: int) -> torch.Tensor:
    """`encode` on overlapping windows: frames [s, s+window) see [s-context, s+window+context).

    Windows at either end are shifted inwards so every window sees window + 2*context frames.
    """
    total, window = frames.shape[1], max(1, window)
    span, out = window + 2 * context, None
    for start in range(0, total, window):
        stop = min(total, start + window)
        lo = max(0, min(start - context, total - span))
        hi = min(total, lo + span)
        part = encode(encoder, frames[:, lo:hi])[start - lo: stop - lo].to("cpu", torch.float32)
        if out is None:
            out = torch.empty((total,) + part.shape[1:], dtype=torch.float32)
        out[start:stop] = part
    return out


def float64_device(device: torch.device) -> torch.device:
    """Where float64 statistics can run: the device itself, or the CPU for devices without float64
    (Apple MPS, DirectML), which would otherwise fail on audio longer than one chunk."""
    return device if device.type in ("cpu", "cuda", "meta") else torch.device("cpu")


def conv_features_chunked(encoder: Wav2Vec2Encoder, wave: torch.Tensor, chunk: int) -> torch.Tensor:
    """The conv feature extractor on [1, N] in chunks of `chunk` output frames -> [1, C, frames].

    Equal to `feature_extractor(wave)` up to float rounding: every conv is local; the first
    layer's GroupNorm (one group per channel, over the whole signal) gets its statistics from a
    first pass over all chunks.
    """
    model = encoder.model
    layers = model.feature_extractor.conv_layers
    field, hop = encoder.receptive_field, encoder.hop
    total = (wave.shape[1] - field) // hop + 1
    first, scale, shift = layers[0], None, None
    if model.config.feat_extract_norm == "group":
        k0, s0 = model.config.conv_kernel[0], model.config.conv_stride[0]
        n0 = (wave.shape[1] - k0) // s0 + 1
        step = chunk * hop // s0
        f64 = dict(device=float64_device(wave.device), dtype=torch.float64)
        acc = torch.zeros(2, first.conv.out_channels, **f64)
        for a in range(0, n0, step):
            h = first.conv(wave[:, None, a * s0: (min(n0, a + step) - 1) * s0 + k0]).to(**f64)[0]
            acc += torch.stack([h.sum(1), (h * h).sum(1)])
        mean = acc[0] / n0
        var = (acc[1] / n0 - mean * mean).clamp_min(0)
        norm = first.layer_norm
        scale = norm.weight.to(**f64) / torch.sqrt(var + norm.eps)
        shift = (norm.bias.to(**f64) - mean * scale)
        scale, shift = (t.to(wave.device, wave.dtype)[:, None] for t in (scale, shift))
    out = None
    for a in range(0, total, chunk):
        b = min(total, a + chunk)
        h = wave[:, None, a * hop: (b - 1) * hop + field]
        h = first.activation(first.conv(h) * scale + shift) if scale is not None else first(h)
        for layer in layers[1:]:
            h = layer(h)
        if out is None:
            out = torch.empty(1, h.shape[1], total, dtype=h.dtype, device=h.device)
        out[:, :, a:b] = h
    return out
