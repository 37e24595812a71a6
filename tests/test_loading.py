"""The one strict state-dict matcher (emocast/models/loading.py), through every small-model loader."""
import functools

import pytest
import torch

from emocast.demo.models import demo_wav2vec2_config, demo_wav2vec2_state_dict
from emocast.demo.tiny import config, tiny_state_dict
from emocast.errors import CheckpointError
from emocast.models.clip_text import load_text_encoder
from emocast.models.loading import KeyRules, match_state_dict
from emocast.models.vae import load_vae
from emocast.models.wav2vec2 import load_wav2vec2
from emocast.weights import save_weights

#: loader, tiny weights, their config, a key to mis-shape, the folder the loader's models live in
LOADERS = {
    "vae": (load_vae, lambda: tiny_state_dict("vae"), lambda: config("tiny_vae/config.json"),
            "decoder.conv_out.bias"),
    "clip": (load_text_encoder, lambda: tiny_state_dict("text_encoder"),
             lambda: config("tiny_text_encoder/config.json"), "text_model.final_layer_norm.bias"),
    "wav2vec2": (load_wav2vec2, demo_wav2vec2_state_dict, demo_wav2vec2_config, "encoder.layer_norm.bias"),
}


@functools.cache
def weights_of(kind):
    """The loader's tiny weights, made once (the tests replace entries, never change a tensor)."""
    return LOADERS[kind][1]()


def write(tmp_path, kind, edit=None):
    cfg = LOADERS[kind][2]
    sd = dict(weights_of(kind))
    if edit:
        edit(sd)
    return save_weights(sd, tmp_path / f"{kind}_file.safetensors", cfg())


@pytest.mark.parametrize("kind", LOADERS)
def test_the_intact_file_loads(tmp_path, kind):
    assert LOADERS[kind][0](write(tmp_path, kind)) is not None


@pytest.mark.parametrize("kind", LOADERS)
def test_an_extra_key_is_refused_with_the_grouped_message(tmp_path, kind):
    with pytest.raises(CheckpointError) as e:
        LOADERS[kind][0](write(tmp_path, kind, lambda sd: sd.update({"decoder.extra_layer.weight": torch.zeros(3)})))
    msg = str(e.value)
    assert f"{kind}_file.safetensors does not have the" in msg
    assert "expected entries missing, 1 unexpected, 0 with another shape." in msg
    assert "\n  unexpected (1): decoder.extra_layer.weight" in msg and "missing (" not in msg
    assert e.value.hint


@pytest.mark.parametrize("kind", LOADERS)
def test_a_mis_shaped_key_is_refused_with_both_shapes(tmp_path, kind):
    key = LOADERS[kind][3]

    def grow(sd):
        sd[key] = torch.zeros(sd[key].shape[0] + 1)
    with pytest.raises(CheckpointError) as e:
        LOADERS[kind][0](write(tmp_path, kind, grow))
    msg = str(e.value)
    n = weights_of(kind)[key].shape[0]
    assert "0 unexpected, 1 with another shape." in msg
    assert f"other shape (1): {key.removeprefix('text_model.')} [{n + 1}] in the file, [{n}] expected" in msg


@pytest.mark.parametrize("slot,file,what,folder", [
    ("vae", "clip", "a CLIP text encoder", "text_encoders"),
    ("clip", "wav2vec2", "a wav2vec2 audio encoder", "audio_encoders"),
    ("wav2vec2", "vae", "an SD VAE", "vae"),
])
def test_a_model_in_the_wrong_slot_is_named_with_its_folder(tmp_path, slot, file, what, folder):
    path = write(tmp_path, file)
    path = path.rename(path.with_name("picked.safetensors"))  # no sidecar: the slot's own default config
    with pytest.raises(CheckpointError) as e:
        LOADERS[slot][0](path)
    assert f"picked.safetensors is {what}, not the" in str(e.value)
    assert f"Put it in models/{folder}/" in e.value.hint


def test_vae_with_pre_0_14_attention_names_loads_the_same_weights(tmp_path):
    sd = tiny_state_dict("vae")
    old = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
           .replace(".to_out.0.", ".proj_attn."): v for k, v in sd.items()}
    assert old.keys() != sd.keys()
    vae = load_vae(save_weights(old, tmp_path / "old.safetensors", config("tiny_vae/config.json")))
    got = vae.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_rules_rename_ignore_and_optional():
    expected = {"a.w": (2,), "b.w": (3,), "opt": (1,)}
    rules = KeyRules(renames=(("m.", ""), ("old.", "b.")), ignore=("head.",), optional=("opt",))
    sd = {"m.a.w": torch.zeros(2), "m.old.w": torch.ones(3), "head.x": torch.zeros(9)}
    out = match_state_dict(sd, expected, "f", rules, model="M", folder="m", hint="h")
    assert list(out) == ["a.w", "b.w"] and torch.equal(out["b.w"], torch.ones(3))
    with pytest.raises(CheckpointError, match=r"1 of 3 expected entries missing, 0 unexpected"):
        match_state_dict({"m.a.w": torch.zeros(2)}, expected, "f", rules, model="M", folder="m", hint="h")
    # an ignorable prefix never hides a key the model expects
    with pytest.raises(CheckpointError, match=r"other shape \(1\): head.x \[9\] in the file, \[4\] expected"):
        match_state_dict(sd, {**expected, "head.x": (4,)}, "f", rules, model="M", folder="m", hint="h")
