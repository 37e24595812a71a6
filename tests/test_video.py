"""MP4 writing: real H.264 + AAC encode, decoded back with PyAV."""
import av
import numpy as np
import pytest
import torch

from emocast.errors import InputError
from emocast.preprocess.audio import Speech
from emocast.video import to_uint8, write_mp4


def probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"fps": v.average_rate, "codec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt,
                "size": (v.width, v.height), "audio": None}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            info["audio"] = (a.codec_context.name, a.codec_context.sample_rate, float(a.duration * a.time_base),
                             sum(f.samples for f in c.decode(audio=0)) / a.codec_context.sample_rate)
    return info, np.stack(frames)


def test_float_conversion_truncates_like_the_authors():
    x = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.7, -0.2, 0.00392]).reshape(1, 1, -1, 1).expand(1, 1, -1, 3)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 127, 254, 255, 255, 0, 0]
    u8 = np.full((2, 4, 4, 3), 7, np.uint8)
    assert to_uint8(u8) is u8


def test_streamed_batches_with_speech(tmp_path):
    ramp = torch.linspace(0, 1, 48)[None, None, :, None] * 0.5  # smooth frames, brighter each frame
    frames = (ramp + torch.linspace(0, 0.5, 30)[:, None, None, None]).expand(30, 64, 48, 3)
    speech = Speech(torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 440) * 0.5)  # 1.0 s for 1.2 s of video
    info = write_mp4(tmp_path / "a.mp4", (frames[i:i + 7] for i in range(0, 30, 7)), audio=speech, crf=10)
    assert (info.frames, info.width, info.height, info.audio_seconds) == (30, 48, 64, 1.2)
    got, decoded = probe(tmp_path / "a.mp4")
    assert got["fps"] == 25 and got["codec"] == "h264" and got["pix_fmt"] == "yuv420p"
    assert decoded.shape == (30, 64, 48, 3)
    codec, sr, stream_s, decoded_s = got["audio"]
    assert codec == "aac" and sr == 16000
    assert abs(stream_s - 1.2) < 0.04 and abs(decoded_s - 1.2) < 0.04  # within one frame
    ref = to_uint8(frames).astype(np.float32)
    assert np.abs(decoded.astype(np.float32) - ref).mean() < 2  # in order, and H.264 at crf 10 is close


def test_odd_size_is_padded_and_audio_is_cut(tmp_path):
    frames = np.full((5, 33, 21, 3), 200, np.uint8)
    audio = {"waveform": torch.zeros(1, 2, 48000 * 3), "sample_rate": 48000}
    info = write_mp4(tmp_path / "odd.mp4", frames, fps=25, audio=audio)
    assert (info.width, info.height) == (22, 34)
    got, decoded = probe(tmp_path / "odd.mp4")
    assert got["size"] == (22, 34) and decoded.shape[0] == 5
    assert np.abs(decoded.astype(int) - 200).max() <= 3  # the padded edge repeats the image
    assert abs(got["audio"][2] - 0.2) < 0.04


def test_no_audio_and_other_fps(tmp_path):
    info = write_mp4(tmp_path / "n.mp4", torch.zeros(12, 16, 16, 3), fps=30)
    got, decoded = probe(tmp_path / "n.mp4")
    assert got["fps"] == 30 and got["audio"] is None and decoded.shape[0] == 12 and info.seconds == 0.4


def test_bad_frames_leave_no_file(tmp_path):
    with pytest.raises(InputError, match="no frames"):
        write_mp4(tmp_path / "e.mp4", iter([]))
    with pytest.raises(InputError, match="RGB"):
        write_mp4(tmp_path / "c.mp4", torch.zeros(2, 8, 8, 4))
    with pytest.raises(InputError, match="frame size changed"):
        write_mp4(tmp_path / "s.mp4", iter([torch.zeros(2, 8, 8, 3), torch.zeros(2, 10, 8, 3)]))
    assert list(tmp_path.iterdir()) == []
