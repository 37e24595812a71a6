"""Write frames (+ speech) to an MP4: H.264 yuv420p and AAC through PyAV's bundled FFmpeg.

Streaming: frames may come as an iterator of batches, each encoded as it arrives, with the audio
interleaved up to the same time, so memory does not grow with the length. The file is written
under a temporary name and renamed at the end: an error or a cancel leaves no half-written MP4.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import torch

from .conditioning import FPS
from .errors import InputError

log = logging.getLogger("EmoCAST")

Frames = Union[torch.Tensor, np.ndarray]


@dataclass(frozen=True)
class VideoInfo:
    """What was written: the encoded size (odd sides padded to even) and the muxed audio length."""

    path: Path
    frames: int
    fps: float
    width: int
    height: int
    audio_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def to_uint8(frames: Frames) -> np.ndarray:
    """[F, H, W, 3] (or [H, W, 3]) float 0..1 or uint8 -> uint8, as the authors: clip(x*255), truncate."""
    if torch.is_tensor(frames):
        frames = frames.detach().to("cpu")
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be [frames, height, width, 3] RGB, got shape {frames.shape}.",
                         hint="Pass a ComfyUI IMAGE batch (float 0..1) or uint8 frames.")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise InputError(f"frames must be float in 0..1 or uint8, got {frames.dtype}.")
    return np.clip(frames * 255, 0, 255).astype(np.uint8)


def prepare_output(path: str | Path) -> Path:
    """The output path with its folder created; InputError now when it cannot be written (not after a long run)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"the output {path} is a folder.", hint="Give a file name ending in .mp4.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".probe"):
            pass
    except OSError as e:
        raise InputError(f"cannot write the output {path}: {e.strerror or e}.",
                         hint="Choose an output path in a folder you can write to.") from None
    return path


def write_mp4(
    path: str | Path,
    frames: Frames | Iterable[Frames],
    *,
    fps: float = FPS,
    audio=None,
    crf: int = 18,
    preset: str = "medium",
    audio_bitrate: int = 128_000,
) -> VideoInfo:
    """Encode `frames` (one array / tensor, or an iterator of batches) to an H.264 MP4.

    audio: an AUDIO dict, a `Speech`, an audio file path or None; muxed as AAC and cut or padded
           with silence to exactly frames / fps seconds.
    crf:   x264 quality, 0 (lossless) .. 51; 18 is visually lossless, 23 is x264's default.
    Odd widths / heights are padded by one edge-replicated row / column (yuv420p needs even sides).
    """
    import av

    if not 0 <= crf <= 51:
        raise InputError(f"crf must be in 0..51, got {crf}.")
    if fps <= 0:
        raise InputError(f"fps must be > 0, got {fps}.")
    path = prepare_output(path)
    batches = [frames] if isinstance(frames, (torch.Tensor, np.ndarray)) else frames
    wave, sr = _audio(audio)
    rate = Fraction(fps).limit_denominator(1001)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    count, size, audio_done = 0, None, 0
    try:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
            video = a_stream = None
            for batch in batches:
                batch = to_uint8(batch)
                if size is None:
                    size = batch.shape[1:3]
                    video = out.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
                    video.width, video.height = size[1] + size[1] % 2, size[0] + size[0] % 2
                    video.pix_fmt = "yuv420p"
                    if size[0] % 2 or size[1] % 2:
                        log.info("Padding odd frame size %dx%d to %dx%d for H.264.", size[1], size[0],
                                 video.width, video.height)
                    if wave is not None:
                        a_stream = out.add_stream("aac", rate=sr, layout="mono" if len(wave) == 1 else "stereo")
                        a_stream.bit_rate = audio_bitrate
                elif batch.shape[1:3] != size:
                    raise InputError(f"frame size changed from {size[1]}x{size[0]} to "
                                     f"{batch.shape[2]}x{batch.shape[1]} at frame {count}.")
                if size[0] % 2 or size[1] % 2:
                    batch = np.pad(batch, ((0, 0), (0, size[0] % 2), (0, size[1] % 2), (0, 0)), mode="edge")
                for image in batch:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                    frame.pts = count
                    out.mux(video.encode(frame))
                    count += 1
                if a_stream is not None:
                    audio_done = _push_audio(out, a_stream, wave, sr, audio_done, round(count * sr / fps))
            if count == 0:
                raise InputError("no frames to write.", hint="The frame source was empty.")
            out.mux(video.encode(None))
            if a_stream is not None:
                _push_audio(out, a_stream, wave, sr, audio_done, round(count * sr / fps))
                out.mux(a_stream.encode(None))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return VideoInfo(path, count, float(fps), size[1] + size[1] % 2, size[0] + size[0] % 2,
                     round(count * sr / fps) / sr if wave is not None else 0.0)


def _audio(audio) -> tuple[np.ndarray | None, int]:
    """[C <= 2, N] float32 planar samples and the rate, or (None, 0)."""
    if audio is None:
        return None, 0
    from .preprocess.audio import Speech, as_comfy_audio

    audio = audio.to_comfy() if isinstance(audio, Speech) else as_comfy_audio(audio)
    wave = audio["waveform"][0].numpy()
    if len(wave) > 2:
        log.info("Mixing %d audio channels down to mono for AAC.", len(wave))
        wave = wave.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(wave, dtype=np.float32), audio["sample_rate"]


def _push_audio(out, stream, wave: np.ndarray, sr: int, start: int, stop: int) -> int:
    """Encode samples [start, stop), zero-padded past the end of `wave`; returns `stop`."""
    import av

    if stop <= start:
        return start
    chunk = wave[:, start:stop]
    if chunk.shape[1] < stop - start:
        chunk = np.pad(chunk, ((0, 0), (0, stop - start - chunk.shape[1])))
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp",
                                       layout="mono" if len(wave) == 1 else "stereo")
    frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
    out.mux(stream.encode(frame))
    return stop
