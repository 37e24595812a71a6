"""`python -m emocast`: the demo end to end, generate on the exported tiny models, and its errors."""
import pytest

from conftest import ROOT, run_cli


def probe(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        return frames, float(v.average_rate), v.width, v.height, float(c.streams.audio[0].duration *
                                                                        c.streams.audio[0].time_base)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    out = run_cli("demo", "--out", str(d / "demo.mp4"), "--export-models", str(d / "models"), "--steps", "1")
    return d, out


@pytest.mark.slow
def test_demo_writes_the_video_with_its_speech(demo_run):
    d, out = demo_run
    assert out.returncode == 0, out.stderr[-2000:]
    frames, fps, w, h, audio_s = probe(d / "demo.mp4")
    assert (frames, fps, w, h) == (124, 25.0, 512, 512)  # 4.95 s of speech -> ceil(4.95 * 25) frames, pasted back
    assert abs(audio_s - 124 / 25) < 1 / 25
    assert "random" in out.stdout.lower()


@pytest.mark.slow
def test_exported_models_verify_and_generate_with_an_emotion_schedule(demo_run, tmp_path):
    d, _ = demo_run
    models = d / "models"
    assert run_cli("verify-checkpoint", str(models / "emocast" / "emocast_tiny.safetensors")).returncode == 0
    schedule = tmp_path / "emotion.txt"
    schedule.write_text("# calm, then angry in the middle of the second clip\n"
                        "0.0: A person is talking calmly.\n"
                        "0.9 @1.5: The person becomes furious.\n")
    out = run_cli("generate", "--image", str(ROOT / "emocast/demo/assets/portrait_astronaut_512.png"),
                  "--audio", str(ROOT / "emocast/demo/assets/speech_en_16k.wav"),
                  "--emotion-schedule", str(schedule), "--models", str(models), "--out", str(tmp_path / "o.mp4"),
                  "--size", "128", "--steps", "1", "--clip-length", "12")
    assert out.returncode == 0, out.stderr[-2000:]
    assert probe(tmp_path / "o.mp4")[:4] == (124, 25.0, 512, 512)


@pytest.mark.parametrize("args,message", [
    (["generate", "--image", "missing.png", "--audio", "x.wav", "--prompt", "p", "--models", ".",
      "--out", "o.mp4"], "image file not found: missing.png"),
    (["generate", "--image", "LICENSE", "--audio", "x.wav", "--prompt", "p", "--models", "/nonexistent",
      "--out", "o.mp4"], "models folder not found"),
    (["verify-checkpoint", "LICENSE"], "error:"),
])
@pytest.mark.slow
def test_bad_input_is_one_clear_line_and_exit_code_2(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_bad_schedule_names_its_line(tmp_path):
    schedule = tmp_path / "s.txt"
    schedule.write_text("0.0: calm\nsoon: angry\n")
    out = run_cli("generate", "--image", "LICENSE", "--audio", "LICENSE", "--emotion-schedule", str(schedule),
                  "--models", str(tmp_path), "--out", "o.mp4")
    assert out.returncode == 2 and "line 2" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_generate_with_a_vram_budget_gives_the_same_video_and_fp8_a_close_one(demo_run, tmp_path):
    import av
    import numpy as np
    import soundfile as sf

    d, _ = demo_run
    wave, sr = sf.read(str(ROOT / "emocast/demo/assets/speech_en_16k.wav"), dtype="float32")
    sf.write(str(tmp_path / "short.wav"), wave[:sr // 2], sr)  # 13 frames: one clip of 16

    def generate(name, *extra):
        out = run_cli("generate", "--image", str(ROOT / "emocast/demo/assets/portrait_astronaut_512.png"),
                      "--audio", str(tmp_path / "short.wav"), "--prompt", "happy", "--models", str(d / "models"),
                      "--out", str(tmp_path / name), "--size", "128", "--steps", "1", "--no-paste-back", *extra)
        assert out.returncode == 0, out.stderr[-2000:]
        with av.open(str(tmp_path / name)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)

    full = generate("full.mp4")
    assert np.array_equal(generate("swap.mp4", "--vram-budget", "0.05"), full)
    assert 0 < np.abs(generate("fp8.mp4", "--weights", "fp8") - full).mean() < 25  # of 255: near, not equal (~25 dB)
    out = run_cli("generate", "--image", str(ROOT / "emocast/demo/assets/portrait_astronaut_512.png"), "--audio",
                  str(tmp_path / "short.wav"), "--prompt", "happy", "--models", str(d / "models"),
                  "--out", str(tmp_path / "x.mp4"), "--compile", "--vram-budget", "1")
    assert out.returncode == 2 and "torch.compile cannot run with block swap" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.mp4").exists()
