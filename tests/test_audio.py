"""Speech loading, wav2vec2 loading and features (tiny rule-weight model), long-audio paths, bad input."""
import json
import logging
import math
import shutil

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from emocast.demo.tiny import CONFIGS, DEMO_AUDIO, tiny_state_dict
from emocast.errors import CheckpointError, InputError, MissingDependencyError, MissingModelError
from emocast.models.wav2vec2 import WAV2VEC2_URL, Windowing, extract_features, load_wav2vec2, normalize_waveform
from emocast.preprocess.audio import Speech, fit_audio, frame_count, load_speech, separate_vocals, stack_neighbours

TINY = CONFIGS / "tiny_wav2vec2"


def sine(seconds=1.0, sr=16000, freq=440.0, channels=1):
    t = np.arange(int(seconds * sr), dtype=np.float64) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * freq * t + c) for c in range(channels)]).astype(np.float32)


def peak_hz(x, sr):
    return float(np.argmax(np.abs(np.fft.rfft(x))) * sr / len(x))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("w2v")
    shutil.copytree(TINY, d, dirs_exist_ok=True)
    save_file(tiny_state_dict("wav2vec2"), str(d / "model.safetensors"))
    return d


@pytest.fixture(scope="module")
def encoder(tiny_dir):
    return load_wav2vec2(tiny_dir)


@pytest.fixture(scope="module")
def speech():
    return load_speech(DEMO_AUDIO)


# ---------------------------------------------------------------- loading speech


def test_wav_is_read_as_librosa_does(speech):
    ref, sr = sf.read(DEMO_AUDIO, dtype="float32")
    assert sr == 16000 and speech.sample_rate == 16000
    assert torch.equal(speech.samples, torch.from_numpy(ref))


@pytest.mark.slow
def test_48k_stereo_dict_is_mixed_and_resampled_like_librosa(tmp_path):
    wave = sine(1.0, 48000, channels=2)
    sf.write(tmp_path / "s.wav", wave.T, 48000, subtype="FLOAT")
    got = load_speech({"waveform": torch.from_numpy(wave)[None], "sample_rate": 48000}).samples.numpy()
    import librosa

    ref, _ = librosa.load(tmp_path / "s.wav", sr=16000)
    assert got.shape == (16000,) and np.array_equal(got, ref)
    assert peak_hz(got, 16000) == pytest.approx(440, abs=1)
    mid = got[1000:-1000]  # mono mix of phase-shifted channels: amplitude 0.5*cos(0.5)
    assert np.abs(mid).max() == pytest.approx(0.5 * math.cos(0.5), abs=5e-3)


@pytest.mark.parametrize("ext,fmt", [("flac", None), ("ogg", None), ("mp3", None), ("m4a", "aac")])
def test_compressed_files(tmp_path, ext, fmt):
    wave, sr = sine(1.0, 44100, channels=2), 44100
    path = tmp_path / f"s.{ext}"
    if fmt is None:
        sf.write(path, wave.T, sr)
    else:  # soundfile cannot write (or read) AAC: encode it with PyAV
        with av.open(str(path), "w") as out:
            stream = out.add_stream(fmt, rate=sr, layout="stereo")
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
            frame.sample_rate = sr
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    got = load_speech(path)
    assert got.sample_rate == 16000
    assert got.seconds == pytest.approx(1.0, abs=0.1)  # codecs add priming / padding
    assert peak_hz(got.samples.numpy(), 16000) == pytest.approx(440, abs=2)


def test_speech_to_comfy_round_trip(speech):
    audio = speech.to_comfy()
    assert audio["waveform"].shape == (1, 1, speech.samples.numel()) and audio["sample_rate"] == 16000
    assert torch.equal(load_speech(audio).samples, speech.samples)


@pytest.mark.parametrize("bad,match", [
    ({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000}, "empty"),
    ({"waveform": torch.tensor([[[0.1, float("nan"), 0.2, float("inf")]]]), "sample_rate": 16000}, "2 NaN/inf"),
    ({"waveform": torch.zeros(1, 1, 10, dtype=torch.int16), "sample_rate": 16000}, "float tensor"),
    ({"waveform": torch.zeros(1, 1, 10), "sample_rate": 0}, "positive integer"),
    ({"waveform": torch.zeros(1, 1, 1, 10), "sample_rate": 16000}, "shape"),
    ({"samples": torch.zeros(10)}, "'waveform' and 'sample_rate'"),
])
def test_bad_audio_dicts(bad, match):
    with pytest.raises(InputError, match=match):
        load_speech(bad)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_speech(tmp_path / "nope.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="could not decode the audio file junk.wav"):
        load_speech(junk)


def test_batch_uses_first_item(caplog):
    wave = torch.stack([torch.from_numpy(sine(0.1)), torch.zeros(1, 1600)])
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        got = load_speech({"waveform": wave, "sample_rate": 16000})
    assert torch.equal(got.samples, wave[0, 0]) and "first item" in caplog.text


def test_fit_audio():
    audio = {"waveform": torch.ones(1, 2, 48000), "sample_rate": 48000}
    cut = fit_audio(audio, 10, 25)
    assert cut["waveform"].shape == (1, 2, 19200) and cut["sample_rate"] == 48000
    padded = fit_audio(Speech(torch.ones(16000)).to_comfy(), 30, 25)["waveform"]
    assert padded.shape == (1, 1, 19200) and padded[..., :16000].eq(1).all() and padded[..., 16000:].eq(0).all()


def test_vocal_isolation_needs_model_then_package(tmp_path, monkeypatch):
    with pytest.raises(MissingModelError, match="Kim_Vocal_2.onnx"):
        separate_vocals(DEMO_AUDIO, tmp_path / "Kim_Vocal_2.onnx")
    model = tmp_path / "Kim_Vocal_2.onnx"
    model.write_bytes(b"0")
    monkeypatch.setitem(__import__("sys").modules, "audio_separator", None)  # absent even if installed
    with pytest.raises(MissingDependencyError, match="pip install"):
        load_speech(DEMO_AUDIO, vocals_model=model)


# ---------------------------------------------------------------- wav2vec2 loading


def test_single_file_with_prefix_fp16_legacy_names_and_sidecar(tmp_path, tiny_dir, encoder):
    sd = tiny_state_dict("wav2vec2")
    legacy = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        legacy["wav2vec2." + k] = v.half()
    legacy["lm_head.weight"] = torch.zeros(32, 64, dtype=torch.float16)  # the CTC head is dropped
    save_file(legacy, str(tmp_path / "w2v_tiny_fp16.safetensors"))
    shutil.copy(tiny_dir / "config.json", tmp_path / "w2v_tiny_fp16.json")
    enc = load_wav2vec2(tmp_path / "w2v_tiny_fp16.safetensors")
    got, want = enc.model.state_dict(), encoder.model.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k].half().float()) for k in got)
    assert enc.normalize and enc.dtype == torch.float32


def test_pt_file_and_folded_weight_norm(tmp_path, encoder, speech):
    sd = {k: v for k, v in encoder.model.state_dict().items() if "pos_conv_embed.conv.parametrizations" not in k}
    sd["encoder.pos_conv_embed.conv.weight"] = encoder.model.encoder.pos_conv_embed.conv.weight.detach().clone()
    torch.save(sd, tmp_path / "folded.pt")
    shutil.copy(TINY / "config.json", tmp_path / "folded.json")
    a = extract_features(load_wav2vec2(tmp_path / "folded.pt"), speech).features
    b = extract_features(encoder, speech).features
    assert (a - b).abs().max() < 1e-5


def test_missing_model_names_file_place_and_source(tmp_path):
    with pytest.raises(MissingModelError, match="wav2vec2-base-960h.safetensors") as err:
        load_wav2vec2(tmp_path / "wav2vec2-base-960h.safetensors")
    msg = str(err.value)
    assert "wav2vec2-base-960h.safetensors" in msg and str(tmp_path) in msg and WAV2VEC2_URL in msg
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "config.json").write_text("{}")
    with pytest.raises(MissingModelError, match="model.safetensors or pytorch_model.bin"):
        load_wav2vec2(tmp_path / "folder")


def test_wrong_architecture_is_a_checkpoint_error(tmp_path):
    save_file(tiny_state_dict("wav2vec2"), str(tmp_path / "tiny.safetensors"))  # no sidecar: base-960h config
    with pytest.raises(CheckpointError, match=r"50 with another shape[\s\S]*It has hidden size 64") as err:
        load_wav2vec2(tmp_path / "tiny.safetensors")
    assert "facebook/wav2vec2-base-960h" in str(err.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="junk.safetensors is incomplete or damaged") as err:
        load_wav2vec2(tmp_path / "junk.safetensors")
    assert WAV2VEC2_URL in err.value.hint


def test_bundled_base_config_builds_base_960h():
    from emocast.models.wav2vec2 import BASE_960H_CONFIG, build_wav2vec2

    cfg = json.loads(BASE_960H_CONFIG.read_text())
    assert cfg["hidden_size"] == 768 and cfg["num_hidden_layers"] == 12 and cfg["conv_dim"] == [512] * 7
    tiny = json.loads((TINY / "config.json").read_text())
    arch = ("conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
            "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "layer_norm_eps", "hidden_act")
    assert {k: cfg[k] for k in arch} == {k: tiny[k] for k in arch}
    with pytest.raises(CheckpointError, match="'hubert' model"):
        build_wav2vec2({"model_type": "hubert"}, {})


# ---------------------------------------------------------------- features


def test_normalisation_matches_hf_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    x = (np.random.default_rng(0).standard_normal(12345) * 0.3 + 0.05).astype(np.float32)
    fe = Wav2Vec2FeatureExtractor.from_pretrained(str(TINY))
    ref = np.squeeze(fe(x, sampling_rate=16000).input_values)
    assert np.array_equal(normalize_waveform(x), ref)
    assert not np.isnan(normalize_waveform(np.zeros(100, np.float32))).any()


def test_frame_count_is_the_authors_float_ceil():
    assert frame_count(79209) == 124 and frame_count(640) == 1 and frame_count(641) == 2
    assert all(frame_count(n) == math.ceil(n / 16000 * 25) for n in range(1, 200000, 997))


def test_features_shapes_padding_and_determinism(encoder, speech):
    f16 = extract_features(encoder, speech, clip_length=16)
    f5 = extract_features(encoder, speech, clip_length=5)
    raw = extract_features(encoder, speech, clip_length=-1)
    assert (f16.num_frames, f5.num_frames, raw.num_frames) == (124, 124, 124)
    assert f16.features.shape == (128, 2, 64) and f5.features.shape == (125, 2, 64)
    assert raw.features.shape == (124, 2, 64) and raw.features.dtype == torch.float32
    assert torch.equal(raw.features, extract_features(encoder, speech, clip_length=-1).features)
    assert not torch.allclose(f16.features[:124], raw.features, atol=1e-3)  # padding is seen by the model


def test_layer_outputs_are_the_stock_hidden_states(encoder, speech):
    from emocast.models.wav2vec2 import encode

    x = torch.from_numpy(normalize_waveform(speech.samples.numpy()))[None]
    with torch.inference_mode():
        stock = encoder.model(x, output_hidden_states=True).hidden_states
        ours = encode(encoder, encoder.model.feature_extractor(x).transpose(1, 2))
    assert len(stock) == 3 and torch.equal(ours, torch.stack(stock[1:], dim=2)[0])


def test_stack_neighbours_matches_the_authors_loop_and_per_clip_slices():
    feats = torch.randn(23, 3, 4, generator=torch.Generator().manual_seed(0))
    ref = torch.stack([torch.stack([feats[max(min(i + j, 22), 0)] for j in range(-2, 3)]) for i in range(23)])
    full = stack_neighbours(feats)
    assert full.shape == (23, 5, 3, 4) and torch.equal(full, ref)
    assert torch.equal(torch.cat([stack_neighbours(feats, a, min(a + 8, 23)) for a in range(0, 23, 8)]), ref)
    with pytest.raises(InputError, match="outside"):
        stack_neighbours(feats, 20, 30)


def test_silence_warns_and_gives_finite_features(encoder, caplog):
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        feats = extract_features(encoder, Speech(torch.zeros(16000)))
    assert "silent" in caplog.text and torch.isfinite(feats.features).all()
    assert feats.num_frames == 25 and feats.features.shape == (32, 2, 64)
    # the normalisation removes a DC offset: a constant signal is exactly silence, speech is not
    assert torch.equal(extract_features(encoder, Speech(torch.full((16000,), 0.3))).features, feats.features)
    assert (extract_features(encoder, Speech(torch.sin(torch.arange(16000) * 0.05))).features
            - feats.features).abs().mean() > 0.01


def test_short_and_wrong_rate_speech(encoder):
    with pytest.raises(InputError, match="at least one video frame"):
        extract_features(encoder, Speech(torch.full((100,), 0.1)))
    noise = torch.randn(640, generator=torch.Generator().manual_seed(0))
    one = extract_features(encoder, Speech(noise), clip_length=-1)
    assert one.num_frames == 1 and one.features.shape == (1, 2, 64)
    with pytest.raises(InputError, match="16000 Hz"):
        extract_features(encoder, Speech(torch.zeros(48000), 48000))


def tiled(speech, seconds):
    reps = math.ceil(seconds / speech.seconds)
    return Speech(speech.samples.repeat(reps)[: int(seconds * 16000)])


def test_chunked_conv_features_are_exact(encoder, speech):
    long = tiled(speech, 30)
    whole = extract_features(encoder, long, windowing=Windowing(max_exact_s=None, chunk_s=1e9)).features
    chunked = extract_features(encoder, long, windowing=Windowing(max_exact_s=None, chunk_s=2.3)).features
    assert (whole - chunked).abs().max() < 2e-5


def test_chunk_statistics_avoid_float64_on_devices_without_it():
    from emocast.models.wav2vec2 import float64_device

    cpu = torch.device("cpu")
    assert float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1) and float64_device(cpu) == cpu
    assert float64_device(torch.device("mps")) == cpu  # MPS has no float64: the chunk statistics go to the CPU


def test_windowed_encoder_close_to_exact(encoder, speech):
    long = tiled(speech, 60)
    exact = extract_features(encoder, long, windowing=Windowing(max_exact_s=None)).features
    win = extract_features(encoder, long, windowing=Windowing(max_exact_s=0, window_s=20, context_s=10)).features
    assert win.shape == exact.shape
    diff = (win - exact).abs()
    # tiny random weights attend almost uniformly (the worst case for windows): measured 0.026 / 0.24
    assert diff.mean() < 0.04 and diff.max() < 0.4
    whole = extract_features(encoder, long, windowing=Windowing(max_exact_s=0, window_s=61)).features
    assert (whole - exact).abs().max() < 2e-5  # one window holding everything is the exact path


def test_windowing_settings_are_checked():
    from emocast.errors import ConfigError

    with pytest.raises(ConfigError, match="window_s and chunk_s must be > 0"):
        Windowing(window_s=0)
    with pytest.raises(ConfigError, match="max_exact_s must be >= 0"):
        Windowing(max_exact_s=-1)
