"""Speech in: decode a file or ComfyUI's AUDIO dict, check it, mix to mono, resample to 16 kHz.

Resampling uses soxr at "HQ" through `librosa.resample(res_type="soxr_hq")`: the exact call the
authors' `librosa.load(path, sr=16000)` makes, so a 44.1 / 48 kHz input gives the samples their
code saw (mono mix first, as `librosa.to_mono`, then resample). Files are read with soundfile
(wav, flac, ogg, mp3: librosa's first choice too) and, failing that, decoded with PyAV's bundled
FFmpeg (m4a / aac, opus, video files, ...). Features live in `models/wav2vec2.py`.
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ..conditioning import FPS
from ..errors import InputError, MissingDependencyError, MissingModelError

log = logging.getLogger("EmoCAST")

#: wav2vec2's sample rate.
SAMPLE_RATE = 16000
#: Peak amplitude below which the speech counts as silent (-80 dBFS): we warn and go on.
SILENCE_PEAK = 1e-4
#: The vocal-isolation model the authors use (MDX-Net, through the audio-separator package).
VOCALS_MODEL = "Kim_Vocal_2.onnx"

AudioSource = Union[str, Path, dict, "Speech"]


@dataclass(frozen=True)
class Speech:
    """Mono speech ready for wav2vec2.

    samples:     [N] float32 on the CPU, nominally in [-1, 1].
    sample_rate: samples per second (16000 after `load_speech`).
    """

    samples: torch.Tensor
    sample_rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.samples.numel() / self.sample_rate

    def to_comfy(self) -> dict:
        """As ComfyUI's AUDIO dict ([1, 1, N] waveform)."""
        return {"waveform": self.samples.reshape(1, 1, -1).clone(), "sample_rate": self.sample_rate}


def load_speech(source: AudioSource, *, vocals_model: str | Path | None = None) -> Speech:
    """Speech from a file path or an AUDIO dict: checked, mono, 16 kHz.

    vocals_model: path to an audio-separator model (the authors use Kim_Vocal_2.onnx) to isolate
    the voice from music / noise first; None (default) uses the audio as it is.
    """
    if isinstance(source, Speech) and source.sample_rate == SAMPLE_RATE and not vocals_model:
        return source  # already loaded and checked
    audio = separate_vocals(source, vocals_model) if vocals_model else as_comfy_audio(source)
    wave, sr = audio["waveform"][0].numpy(), audio["sample_rate"]
    mono = np.ascontiguousarray(np.mean(wave, axis=0, dtype=np.float32))  # librosa.to_mono
    check_samples(mono, sr, _name(source), warn_silent=False)  # extract_features warns once
    if sr != SAMPLE_RATE:
        import librosa

        mono = librosa.resample(mono, orig_sr=sr, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    return Speech(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), SAMPLE_RATE)


def as_comfy_audio(source: AudioSource) -> dict:
    """A file (decoded at its own rate and channels) or an AUDIO dict, as a checked AUDIO dict.

    The waveform is [1, C, N] float32 on the CPU; of a batch B > 1 only the first item is kept.
    """
    if isinstance(source, Speech):
        return source.to_comfy()
    if isinstance(source, dict):
        return _checked_dict(source)
    wave, sr = decode_audio(source)
    return {"waveform": torch.from_numpy(wave)[None], "sample_rate": sr}


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """([C, N] float32, sample rate) of an audio file: soundfile first, then PyAV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file not found: {path}", hint="Check the path (and the file's extension).")
    import soundfile as sf

    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(wave.T), int(sr)
    except sf.SoundFileError as exc:  # not a format libsndfile reads: let FFmpeg try
        first = exc
    import av

    try:
        return _decode_with_av(path)
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InputError(
            f"could not decode the audio file {path.name} (soundfile: {first}; PyAV: {exc}).",
            hint="Use wav, flac, mp3, ogg or m4a/aac, or re-encode the file, e.g. "
            "ffmpeg -i input -ar 16000 -ac 1 speech.wav",
        ) from None


def _decode_with_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise ValueError("the file has no audio stream")
        stream = container.streams.audio[0]
        sr, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout.name, rate=sr)
        chunks = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    if not chunks:
        raise ValueError("the audio stream holds no samples")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1)[:channels], dtype=np.float32), int(sr)


def _checked_dict(audio: dict) -> dict:
    if "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(
            f"an AUDIO input needs the keys 'waveform' and 'sample_rate'; got {sorted(audio)}.",
            hint="Connect a ComfyUI audio output (e.g. Load Audio).",
        )
    wave, sr = audio["waveform"], audio["sample_rate"]
    if not torch.is_tensor(wave) or not wave.is_floating_point():
        raise InputError(
            f"the AUDIO waveform must be a float tensor, got {type(wave).__name__} "
            f"{getattr(wave, 'dtype', '')}.",
            hint="ComfyUI audio is float in [-1, 1], shaped [batch, channels, samples].",
        )
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.number)) or sr <= 0 or int(sr) != sr:
        raise InputError(f"the AUDIO sample_rate must be a positive integer, got {sr!r}.")
    if wave.ndim not in (1, 2, 3):
        raise InputError(f"the AUDIO waveform must be [batch, channels, samples], got shape {tuple(wave.shape)}.")
    wave = wave.reshape((1,) * (3 - wave.ndim) + tuple(wave.shape))
    if wave.shape[0] > 1:
        log.warning("AUDIO input has a batch of %d; EmoCAST uses the first item only.", wave.shape[0])
    return {"waveform": wave[:1].detach().to("cpu", torch.float32).contiguous(), "sample_rate": int(sr)}


def check_samples(samples: np.ndarray, sample_rate: int, name: str = "the audio", *,
                  warn_silent: bool = True) -> None:
    """Reject empty or non-finite audio; warn (and go on) on silence.

    Silence is not an error: normalisation maps it to zeros (0 / sqrt(0 + 1e-7)), never NaN, and
    a silent stretch is legitimate input (the face should rest).
    """
    if samples.size == 0:
        raise InputError(f"{name} is empty (0 samples).", hint="Use a file or node output that holds speech.")
    bad = ~np.isfinite(samples)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name} contains {int(bad.sum())} NaN/inf samples (first at {first / sample_rate:.3f} s).",
            hint="Re-encode the file, or check the node that produced this audio.",
        )
    peak = float(np.abs(samples).max())
    if warn_silent and peak < SILENCE_PEAK:
        log.warning(
            "%s is silent (peak %.2g < %.0e): the features are those of silence and the face "
            "will barely move.", name, peak, SILENCE_PEAK,
        )


def fit_audio(audio: AudioSource, num_frames: int, fps: float = FPS) -> dict:
    """The AUDIO cut or zero-padded to exactly num_frames / fps seconds ([1, C, n], CPU float32).

    For the node's AUDIO output, so video and sound end on the same frame.
    """
    if num_frames < 0 or fps <= 0:
        raise InputError(f"cannot fit audio to {num_frames} frames at {fps} fps.")
    audio = as_comfy_audio(audio)
    wave, sr = audio["waveform"], audio["sample_rate"]
    n = round(num_frames * sr / fps)
    wave = wave[..., :n] if wave.shape[-1] >= n else torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
    return {"waveform": wave.contiguous(), "sample_rate": sr}


def separate_vocals(source: AudioSource, model_path: str | Path) -> dict:
    """The vocal stem of `source` (AUDIO dict) through the optional audio-separator package.

    The authors run Kim_Vocal_2 before wav2vec2; speech recorded without music does not need it.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise MissingModelError(
            f"vocal-isolation model not found: {model_path}",
            hint=f"Put {VOCALS_MODEL} there (UVR's public models: "
            "https://github.com/TRvlvr/model_repo/releases/tag/all_public_uvr_models), "
            "or turn vocal isolation off.",
        )
    try:
        from audio_separator.separator import Separator
    except ImportError:
        raise MissingDependencyError(
            "vocal isolation needs the 'audio-separator' package, which is not installed.",
            hint='pip install "audio-separator[cpu]"   (or "audio-separator[gpu]" with CUDA)',
        ) from None
    import soundfile as sf

    audio = as_comfy_audio(source)  # decoded here, so the separator only ever reads a plain wav
    with tempfile.TemporaryDirectory(prefix="emocast_vocals_") as tmp:
        src = Path(tmp) / "input.wav"
        sf.write(str(src), audio["waveform"][0].numpy().T, audio["sample_rate"], subtype="FLOAT")
        separator = Separator(output_dir=tmp, output_single_stem="vocals", model_file_dir=str(model_path.parent))
        separator.load_model(model_filename=model_path.name)
        outputs = separator.separate(str(src))
        if not outputs:
            raise InputError(f"audio-separator returned no vocal stem for {_name(source)}.")
        wave, sr = decode_audio(Path(tmp) / outputs[0])  # an absolute path stays absolute
    return {"waveform": torch.from_numpy(wave)[None], "sample_rate": sr}


def frame_count(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """Video frames the audio lasts: ceil(seconds * fps), in the authors' float arithmetic."""
    return math.ceil(num_samples / sample_rate * fps)


def _name(source: AudioSource) -> str:
    return "the AUDIO input" if isinstance(source, dict) else f"the audio file {Path(source).name}"


def stack_neighbours(features: torch.Tensor, start: int = 0, stop: int | None = None,
                     radius: int = 2) -> torch.Tensor:
    """[T, L, D] -> [stop-start, 2*radius+1, L, D]: frames i-2..i+2 per frame i, clamped to [0, T-1].

    The clamp uses the whole sequence, so calling it per clip equals slicing the full result.
    """
    total = features.shape[0]
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise InputError(f"frame range [{start}, {stop}) is outside the {total} audio frames.")
    idx = (torch.arange(start, stop)[:, None] + torch.arange(-radius, radius + 1)[None]).clamp(0, total - 1)
    return features[idx.to(features.device)]
