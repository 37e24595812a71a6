"""The networks: the released checkpoint's exact layout, built without memory, and their parts."""
import json

import pytest
import torch

from emocast.demo.tiny import config, key_shapes
from emocast.models.audio_attention import EmotiveAudioModule
from emocast.models.config import UNetConfig
from emocast.models.net import EmoCASTNet
from emocast.errors import ConfigError


def test_real_size_layout_equals_released_checkpoint(fixtures):
    manifest = json.loads((fixtures / "weights" / "emocast_net_keys.json").read_text())
    net = EmoCASTNet.build(UNetConfig.sd15())  # meta: no memory
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert ours == manifest["keys"]
    assert len(ours) == manifest["total_state_dict_entries"] == 2832
    params = sum(p.numel() for p in net.parameters())
    assert params == manifest["total_params"] == 2_493_427_348
    assert {k for k, _ in net.named_buffers()} == set(manifest["buffer_keys"])
    assert all(p.is_meta for p in net.parameters())


def test_tiny_layout_equals_conformance_key_list():
    net = EmoCASTNet.build(UNetConfig.from_diffusers(config("tiny_unet/config.json")))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == key_shapes("net")


def test_widths_are_recovered_from_a_checkpoint():
    assert UNetConfig.from_shapes(key_shapes("net")) == UNetConfig.from_diffusers(config("tiny_unet/config.json"))


def test_config_rejects_a_non_sd15_unet():
    cfg = config("tiny_unet/config.json")
    with pytest.raises(ConfigError, match="Stable Diffusion 1.5"):
        UNetConfig.from_diffusers({**cfg, "down_block_types": ["DownBlock2D"] * 4})
    with pytest.raises(ConfigError, match="4 UNet levels"):
        UNetConfig.from_diffusers({**cfg, "block_out_channels": [32, 64, 96]})
    with pytest.raises(ConfigError, match="SD2"):
        UNetConfig.from_diffusers({**cfg, "use_linear_projection": True})


def test_audio_module_widths_follow_the_block_input(fixtures):
    """docs/authors_behaviours.md#b24: the audio modules' inner width is the level's input width."""
    net = EmoCASTNet.build(UNetConfig.sd15())
    inner = {name: m.proj_in.out_channels for name, m in net.denoising_unet.named_modules()
             if isinstance(m, EmotiveAudioModule)}
    assert inner["down_blocks.0.audio_modules.0"] == 320
    assert inner["down_blocks.1.audio_modules.0"] == 320 and inner["down_blocks.1.audio_modules.1"] == 640
    assert inner["down_blocks.2.audio_modules.0"] == 640 and inner["down_blocks.2.audio_modules.1"] == 1280
    assert all(inner[f"up_blocks.1.audio_modules.{i}"] == 640 for i in range(3))
    assert inner["up_blocks.3.audio_modules.2"] == 320


@pytest.mark.slow
def test_motion_modules_run_only_where_the_authors_ran_them(tiny_case, monkeypatch):
    """docs/authors_behaviours.md#b20: the authors' trace counts the motion-module calls; levels without
    attention run none."""
    expected = tiny_case.trace["motion_module_forward_calls"]
    calls = {name: 0 for name in expected}
    for name in expected:
        module = tiny_case.net.denoising_unet.get_submodule(name)
        original = module.forward

        def counted(*a, _name=name, _f=original, **k):
            calls[_name] += 1
            return _f(*a, **k)
        monkeypatch.setattr(module, "forward", counted)
    tiny_case.generate()
    assert calls == expected


def test_vae_of_another_shape_is_named_not_a_state_dict_dump(tmp_path):
    """A Flux / SD3-like VAE (16 latent channels) where sd-vae-ft-mse's shapes are expected."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from emocast.errors import CheckpointError
    from emocast.models.vae import load_vae

    cfg = {k: v for k, v in config("tiny_vae/config.json").items() if not k.startswith("_")}
    other = AutoencoderKL(**{**cfg, "latent_channels": 16})
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    (tmp_path / "vae.json").write_text(json.dumps(cfg))  # the shapes the loader expects: 4 latent channels
    with pytest.raises(CheckpointError, match="does not have the SD VAE layout") as e:
        load_vae(tmp_path / "vae.safetensors")
    assert "encoder.conv_out.weight [32, 64, 3, 3] in the file, [8, 64, 3, 3] expected" in str(e.value)
    assert "Flux" in e.value.hint
