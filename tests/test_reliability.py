"""Bad inputs and faults (docs/reliability.md): a rejected input is one error line (+ hint) and exit 2, before
any model loads, with no traceback and no output file; an odd input that is accepted has a documented fallback.

The CLI runs in-process (`emocast.cli.main`), so each refusal costs milliseconds.
"""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import ROOT
from emocast.cli import main
from emocast.errors import Cancelled, InputError

PORTRAIT = ROOT / "emocast" / "demo" / "assets" / "portrait_astronaut_512.png"
SPEECH = ROOT / "emocast" / "demo" / "assets" / "speech_en_16k.wav"
PROMPT = "A person is talking with happy emotion."


def generate_args(tmp_path, **change):
    """`generate` arguments on the bundled inputs; change={"image": path, "steps": 0, ...}; None drops one."""
    args = {"image": PORTRAIT, "audio": SPEECH, "prompt": PROMPT, "models": tmp_path, "out": tmp_path / "out.mp4",
            "size": 128, "steps": 1, **change}
    argv = ["generate"]
    for k, v in args.items():
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def refused(capsys, argv, *words):
    """Run the CLI; assert exit 2, one `error:` line naming `words`, a `hint:` line, no traceback; return it."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ") and all(w in lines[0] for w in words), err
    assert len(lines) >= 2 and lines[1].startswith("hint: "), err  # a hint may continue with an example
    assert not any(line.startswith("error: ") for line in lines[1:]), err
    return lines[0]


def no_output_left(folder: Path):
    assert not [p.name for p in folder.rglob("*") if p.suffix in (".mp4", ".partial", ".probe")]


# ---------------------------------------------------------------------------------------------- images

def test_a_text_file_named_png_is_one_line_not_a_pil_traceback(tmp_path, capsys):
    notes = tmp_path / "notes.png"
    notes.write_text("shopping list: milk, eggs\n")
    refused(capsys, generate_args(tmp_path, image=notes), "the image notes.png cannot be read as a picture")
    no_output_left(tmp_path)


def test_a_truncated_photo_is_refused_with_its_name(tmp_path, capsys):
    half = tmp_path / "half.png"
    data = PORTRAIT.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    refused(capsys, generate_args(tmp_path, image=half), "half.png cannot be read as a picture")


def test_a_tiny_image_is_refused_with_its_size(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8), "white").save(tmp_path / "icon.png")
    refused(capsys, generate_args(tmp_path, image=tmp_path / "icon.png"), "icon.png is 8x8 px", "16 to 16384")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height (1-bit grey) but holds almost no data: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path, capsys):
    _png_header_only(tmp_path / "bomb.png", 30000, 30000)  # 900 megapixels, a few bytes on disk
    refused(capsys, generate_args(tmp_path, image=tmp_path / "bomb.png"), "bomb.png is too large to open safely")


def test_a_missing_image_names_the_path(tmp_path, capsys):
    refused(capsys, generate_args(tmp_path, image=tmp_path / "gone.png"), "image file not found", "gone.png")


@pytest.mark.slow
def test_a_huge_photo_with_a_small_face_is_cropped_around_the_face(tmp_path):
    """Fallback: the face is found in the full photo, a square around it is cropped and resized."""
    import cv2
    from PIL import Image

    from emocast.demo.face_models import write_tiny_insightface
    from emocast.preprocess import face as F
    from emocast.preprocess.landmarks import Insightface106Landmarker

    rgb = np.asarray(Image.open(PORTRAIT).convert("RGB"))
    photo = np.full((3000, 4000, 3), 200, np.uint8)  # 12 megapixels, the face about 400x500 px of it
    photo[1600:, 2600:] = cv2.resize(rgb, (1400, 1400))
    analyser = F.FaceAnalyser(write_tiny_insightface(tmp_path / "insightface"), det_size=640)
    (face,) = analyser.detect(photo)
    x0, y0, x1, y1 = face.bbox
    fc = F.prepare_face(photo, analyser, Insightface106Landmarker(analyser), size=128)
    assert fc.source.shape == (3000, 4000, 3) and fc.pixels.shape == (3, 128, 128)
    box = fc.crop
    assert box.x0 <= x0 and box.y0 <= y0 and x1 <= box.x1 and y1 <= box.y1 and box.side < 1600  # around the face


# ---------------------------------------------------------------------------------------------- audio

def test_a_missing_audio_file_names_the_path(tmp_path, capsys):
    refused(capsys, generate_args(tmp_path, audio=tmp_path / "gone.wav"), "audio file not found", "gone.wav")


def test_a_file_that_is_not_audio(tmp_path, capsys):
    (tmp_path / "speech.wav").write_text("not a wave file")
    refused(capsys, generate_args(tmp_path, audio=tmp_path / "speech.wav"), "could not decode the audio file speech.wav")


def test_an_empty_wav(tmp_path, capsys):
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    refused(capsys, generate_args(tmp_path, audio=tmp_path / "empty.wav"), "empty.wav is empty (0 samples)")


def test_a_nan_filled_float_wav(tmp_path, capsys):
    wave = np.full(16000, np.nan, np.float32)
    wave[:100] = 0.1
    sf.write(tmp_path / "nan.wav", wave, 16000, subtype="FLOAT")
    refused(capsys, generate_args(tmp_path, audio=tmp_path / "nan.wav"), "nan.wav contains 15900 NaN/inf samples",
            "first at 0.006 s")


# ---------------------------------------------------------------------------------------------- emotion

def test_an_empty_prompt_is_refused(tmp_path, capsys):
    refused(capsys, generate_args(tmp_path, prompt="   "), "the emotion prompt is empty")


@pytest.mark.parametrize("text,words", [
    ("0.0: calm\nsoon: angry\n", ("line 2", "time 'soon' is not a number")),
    ("0.0 calm\n", ("line 1", "no ':'")),
    ("0: calm\n2: sad\n1: angry\n", ("line 3", "not after the previous keyframe")),
    ("0 @3: furious\n", ("line 1", "intensity 3.0 is outside 0.0..2.0")),
    ("0:\n", ("line 1", "no prompt after ':'")),
    ("# only a comment\n", ("has no keyframe",)),
    ("f1.5: calm\n", ("line 1", "frame 'f1.5'")),
])
def test_schedule_mistakes_name_their_line(tmp_path, capsys, text, words):
    (tmp_path / "emotion.txt").write_text(text)
    refused(capsys, generate_args(tmp_path, prompt=None, emotion_schedule=tmp_path / "emotion.txt"), *words)


def test_a_missing_schedule_file(tmp_path, capsys):
    refused(capsys, generate_args(tmp_path, prompt=None, emotion_schedule=tmp_path / "gone.txt"),
            "emotion schedule file not found", "gone.txt")


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("change,words", [
    ({"steps": 0}, ("steps must be at least 1, got 0",)),
    ({"cfg": -1}, ("cfg_scale must be >= 0, got -1.0",)),
    ({"size": 100}, ("model size must be a multiple of 64, got 100",)),
    ({"clip_length": 0}, ("clip_length must be at least 1, got 0",)),
    ({"clip_length": 31}, ("clip_length 31 + motion_frames 2 exceeds the 32",)),
    ({"vae_batch": 0}, ("vae_batch must be at least 1, got 0",)),
])
def test_settings_out_of_range(tmp_path, capsys, change, words):
    line = refused(capsys, generate_args(tmp_path, **change), *words)
    assert "error: " in line


def test_settings_errors_carry_the_fix_for_the_nodes_too():
    from emocast.conditioning import SamplingSettings
    from emocast.errors import ConfigError

    for bad in ({"steps": 0}, {"cfg_scale": -1}, {"clip_length": 0}, {"vae_batch": 0}, {"clip_length": 31}):
        with pytest.raises(ConfigError) as e:
            SamplingSettings(**bad)
        assert e.value.hint, bad


# ---------------------------------------------------------------------------------------------- outputs

def test_an_unwritable_output_path(tmp_path, capsys):
    (tmp_path / "taken").write_text("a file where a folder should be")
    refused(capsys, generate_args(tmp_path, out=tmp_path / "taken" / "o.mp4"), "cannot write the output",
            "taken/o.mp4")


def test_an_output_that_is_a_folder(tmp_path, capsys):
    refused(capsys, generate_args(tmp_path, out=tmp_path), "is a folder")


def test_a_missing_output_folder_is_created_and_probed_clean(tmp_path):
    from emocast.video import prepare_output

    out = prepare_output(tmp_path / "new" / "deeper" / "o.mp4")
    assert out.parent.is_dir() and list(out.parent.iterdir()) == []


@pytest.mark.parametrize("fault", [RuntimeError("boom"), Cancelled("cancelled at step 3 of 8.")])
def test_an_error_or_cancel_mid_video_leaves_no_partial_mp4(tmp_path, fault):
    from emocast.video import write_mp4

    (tmp_path / "o.mp4").write_bytes(b"the previous run's video")

    def frames():
        yield torch.rand(4, 64, 64, 3)
        raise fault
    with pytest.raises(type(fault)):
        write_mp4(tmp_path / "o.mp4", frames(), audio=str(SPEECH))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]  # no .partial left behind
    assert (tmp_path / "o.mp4").read_bytes() == b"the previous run's video"  # and the old file untouched


# ---------------------------------------------------------------------------------------------- model files

def models_with(tmp_path, name: str, data: bytes) -> Path:
    d = tmp_path / "models"
    (d / "emocast").mkdir(parents=True)
    (d / "emocast" / name).write_bytes(data)
    return d


def test_a_zero_byte_checkpoint(tmp_path, capsys):
    models = models_with(tmp_path, "net.pth", b"")
    refused(capsys, generate_args(tmp_path, models=models), "net.pth is empty (0 bytes)")


def test_a_git_lfs_pointer(tmp_path, capsys):
    models = models_with(tmp_path, "net.pth", b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 5\n")
    refused(capsys, generate_args(tmp_path, models=models), "net.pth is a Git LFS pointer")


def test_no_net_in_the_models_folder(tmp_path, capsys):
    (tmp_path / "models" / "emocast").mkdir(parents=True)
    rc = main([str(a) for a in generate_args(tmp_path, models=tmp_path / "models")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: no ") and "looked in" in err and "Traceback" not in err


class _Payload:
    """Unpickling this runs `open(marker, "w")`, i.e. creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    models = tmp_path / "models"
    (models / "emocast").mkdir(parents=True)
    torch.save({"conv.weight": torch.zeros(2), "hook": _Payload(marker)}, models / "emocast" / "net.pth")
    rc = main([str(a) for a in generate_args(tmp_path, models=models)])
    err = capsys.readouterr().err
    assert rc == 2 and "net.pth is not a plain state dict" in err and "open" in err
    assert "Traceback" not in err and not marker.exists()  # weights_only refused it: nothing ran
    with open(models / "emocast" / "net.pth", "rb") as f:  # the payload is live: an unsafe load would run it
        torch.load(f, weights_only=False)["hook"].close()
    assert marker.exists()


def test_another_model_in_the_net_slot_is_named(tmp_path, capsys):
    from safetensors.torch import save_file

    models = tmp_path / "models"
    (models / "emocast").mkdir(parents=True)
    save_file({"encoder.down_blocks.0.resnets.0.conv1.weight": torch.zeros(2), "decoder.conv_in.weight":
               torch.zeros(2)}, str(models / "emocast" / "vae.safetensors"))
    rc = main([str(a) for a in generate_args(tmp_path, models=models)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: vae.safetensors is an SD VAE, not the EmoCAST Net")
    assert "Put it in models/vae/" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- runtime

def test_non_finite_latents_name_the_clip_and_step_with_the_precision_hint(tiny_case):
    from emocast.demo.tiny import tiny_net
    from emocast.pipeline.guards import NonFiniteError, check_finite

    net = tiny_net()
    with torch.no_grad():
        net.denoising_unet.conv_out.bias.fill_(float("nan"))  # a damaged weight: every latent becomes NaN
    with pytest.raises(NonFiniteError, match=r"clip 1 of 1: the network produced \d+ NaN / inf values in fp32 after step 2") as e:
        tiny_case.generate(net=net, steps=2)
    assert "verify-checkpoint" in e.value.hint and isinstance(e.value, InputError)
    half = torch.tensor([1.0, float("inf")], dtype=torch.float16)
    with pytest.raises(NonFiniteError, match=r"clip 3 of 4: the VAE produced 1 NaN / inf values in fp16 after step 7") as e:
        check_finite(half, 2, 4, "the VAE", torch.float16, step=7)
    assert "bf16" in e.value.hint and "fp32" in e.value.hint
    check_finite(torch.ones(3), 0, 1, "the network", torch.float32)  # finite: nothing


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status on this OS")


@pytest.mark.slow
def test_twenty_runs_keep_memory_flat_and_give_the_same_frames(tiny_case):
    import gc

    first = tiny_case.generate(steps=1)
    rss = []
    for _ in range(20):
        again = tiny_case.generate(steps=1)
        gc.collect()
        rss.append(_rss_mb())
    assert torch.equal(again, first)
    warm = rss[4]  # allocator caches settle over the first runs
    assert max(rss[4:]) <= warm * 1.03, rss


def test_a_failed_weights_export_leaves_no_file(tmp_path):
    from emocast.weights import save_weights

    shared = torch.zeros(4)
    with pytest.raises(RuntimeError, match="share memory"):  # safetensors refuses aliased tensors mid-write
        save_weights({"a": shared, "b": shared}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
    save_weights({"a": torch.ones(2)}, tmp_path / "w.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
