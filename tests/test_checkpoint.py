"""Checkpoint I/O: strict, safe, ~1x-memory loading, the CLI, and one readable error per wrong file.

Wrong files are made small: the real key names with tiny tensors, or real-size safetensors files
that are sparse (a header plus a hole: gigabytes declared, nothing written).
"""
import json
import math
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from conftest import FIXTURES, run_cli
from emocast.errors import CheckpointError, InputError, MissingModelError
from emocast import weights
from emocast.models import checkpoint as ck

REAL = {k: tuple(s) for k, s in json.loads((FIXTURES / "weights/emocast_net_keys.json").read_text())["keys"].items()}
TINY_NAMES = {k: (2,) for k in REAL}  # the real key names, 2-element tensors


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.register_buffer("pe", torch.zeros(1, 2, 3))


def small_sd(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(v.shape, generator=g).to(dtype) for k, v in Small().state_dict().items()}


def meta_small():
    with torch.device("meta"):
        return Small()


def save(sd, path):
    (save_file if path.suffix == ".safetensors" else torch.save)(sd, str(path))
    return path


def sparse_safetensors(path, shapes, dtype="F16"):
    """A valid .safetensors whose data is a hole: real-size layouts cost no disk and no time."""
    header, off = {}, 0
    for k, s in shapes.items():
        n = math.prod(s) * {"F16": 2, "F32": 4}[dtype]
        header[k] = {"dtype": dtype, "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + off)
    return path


def inspect(path):
    return weights.inspect_checkpoint(path, ck.NET_FILE)


def error(path, expected=TINY_NAMES):
    with pytest.raises(CheckpointError, match=re.escape(Path(path).name)) as e:  # the message names the file
        ck.load_into(nn.Module(), path, expected=expected)
    return str(e.value)


# ------------------------------------------------------------------------------------------- loading

@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".pt", ".ckpt"])
@pytest.mark.parametrize("dtype", [None, "fp32", "fp16", "bf16"])
def test_load_into_meta_model_is_exact_in_every_dtype(tmp_path, suffix, dtype):
    sd = small_sd()
    model = ck.load_into(meta_small(), save(sd, tmp_path / f"w{suffix}"), dtype)
    want = weights.resolve_dtype(dtype) or torch.float32
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu" and v.dtype == want, k  # buffers are cast too (like net.to(weight_dtype))
        assert torch.equal(v, sd[k].to(want)), k
    assert isinstance(model.proj.weight, nn.Parameter) and model.proj.weight.requires_grad
    assert "pe" in dict(model.named_buffers())


def test_loaded_model_owns_its_memory(tmp_path):
    """The file may be deleted or replaced after loading: nothing stays mapped."""
    path = save(small_sd(), tmp_path / "w.pth")
    model = ck.load_into(meta_small(), path)
    path.write_bytes(b"overwritten")
    path.unlink()
    assert torch.equal(model.proj.weight, small_sd()["proj.weight"])


def test_fp16_file_loads_as_fp32_and_progress_ticks(tmp_path):
    path = save(small_sd(torch.float16), tmp_path / "w.safetensors")
    ticks = []
    model = ck.load_into(meta_small(), path, torch.float32, progress=lambda i, n: ticks.append((i, n)))
    assert model.proj.weight.dtype == torch.float32
    assert ticks == [(i, 5) for i in range(1, 6)]


@pytest.mark.parametrize("wrap", [
    lambda sd: {"state_dict": sd, "epoch": 3, "global_step": 100},
    lambda sd: {"module": sd},
    lambda sd: {"net": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"module." + k: v for k, v in sd.items()},
    lambda sd: {"net." + k: v for k, v in sd.items()},
])
def test_nested_or_prefixed_state_dicts_are_unwrapped(tmp_path, wrap):
    torch.save(wrap(small_sd()), tmp_path / "w.pth")
    info = inspect(tmp_path / "w.pth")
    assert set(info.shapes) == set(small_sd()) and info.unwrapped
    ck.load_into(meta_small(), tmp_path / "w.pth")


def test_prefixed_safetensors_and_legacy_pth_load(tmp_path):
    ck.load_into(meta_small(), save({"module." + k: v for k, v in small_sd().items()}, tmp_path / "w.safetensors"))
    torch.save(small_sd(), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    model = ck.load_into(meta_small(), tmp_path / "old.pth", "fp16")
    assert torch.equal(model.norm.bias, small_sd()["norm.bias"].half())


def test_inspect_reads_only_the_safetensors_header(tmp_path):
    path = sparse_safetensors(tmp_path / "real.safetensors", REAL)  # 5 GB declared, nothing on disk
    info = inspect(path)
    assert info.shapes == REAL and info.size == path.stat().st_size > 4.9e9
    assert info.dtype_summary() == "fp16" and info.numel == 2_494_635_668


def test_net_layout_comes_from_the_model_and_equals_the_release_manifest():
    layout = ck.net_layout()
    assert layout.shapes == REAL
    assert len(layout.buffers) == 42 and all(k.endswith("pos_encoder.pe") for k in layout.buffers)


def test_convert_streams_to_safetensors_with_metadata(tmp_path):
    sd = small_sd()
    out = ck.convert_checkpoint(save(sd, tmp_path / "w.pth"), tmp_path / "out/w16.safetensors", "fp16",
                                expected={k: tuple(v.shape) for k, v in sd.items()})
    with safe_open(str(out.path), "pt") as f:
        assert f.metadata()["source"] == "w.pth" and f.metadata()["dtype"] == "fp16"
        for k in sd:
            assert torch.equal(f.get_tensor(k), sd[k].half())
    assert not list(tmp_path.glob("out/*.partial"))


# ------------------------------------------------------------------------------------------- diagnosis

def test_layout_mismatch_groups_missing_unexpected_and_shapes(tmp_path):
    keys = list(TINY_NAMES)
    sd = {k: torch.zeros(2) for k in keys[10:]} | {f"extra.{i}": torch.zeros(1) for i in range(7)}
    sd[keys[20]] = torch.zeros(3)
    msg = error(save(sd, tmp_path / "w.pth"))
    assert "w.pth does not have the EmoCAST Net layout: 10 of 2832 expected entries missing, 7 unexpected, " \
           "1 with another shape." in msg
    assert "missing (10): " + ", ".join(keys[:5]) + ", ... (5 more)" in msg
    assert "unexpected (7): extra.0" in msg
    assert f"other shape (1): {keys[20]} [3] in the file, [2] expected" in msg
    assert "Hint: Use EmoCAST's net.pth from https://huggingface.co/Jmaomao/EmoCAST" in msg
    diff = ck.compare_layout({k: tuple(v.shape) for k, v in sd.items()}, TINY_NAMES)
    assert (len(diff.missing), len(diff.unexpected), len(diff.mismatched)) == (10, 7, 1)


def test_hallo_checkpoint_is_recognised(tmp_path):
    hallo = {k: torch.zeros(2) for k in TINY_NAMES if not any(m in k for m in ck.EMOCAST_ONLY)}
    msg = error(save(hallo, tmp_path / "net.pth"))
    assert "net.pth looks like a Hallo net.pth, not EmoCAST's" in msg and "attn_audioemo" in msg
    assert "176 of 2832 expected entries missing" in msg and "Jmaomao/EmoCAST" in msg


def test_sd15_unets_are_recognised(tmp_path):
    diffusers = {k.removeprefix("reference_unet."): torch.zeros(2) for k in TINY_NAMES
                 if k.startswith("reference_unet.")}
    assert "is a bare diffusers UNet (e.g. SD1.5's unet)" in error(save(diffusers, tmp_path / "unet.safetensors"))
    ldm = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2),
           "first_stage_model.encoder.conv_in.weight": torch.zeros(2), "cond_stage_model.x": torch.zeros(1)}
    msg = error(save(ldm, tmp_path / "v1-5-pruned.ckpt"))
    assert "v1-5-pruned.ckpt is a Stable Diffusion checkpoint (original 'model.diffusion_model.' keys)" in msg
    assert "trained weights of both UNets are in net.pth" in msg


def test_animatediff_motion_module_is_recognised(tmp_path):
    mm = {k.removeprefix("denoising_unet."): torch.zeros(2) for k in TINY_NAMES if "motion_modules." in k}
    msg = error(save(mm, tmp_path / "mm_sd_v15_v2.ckpt"))
    assert "mm_sd_v15_v2.ckpt is an AnimateDiff motion module" in msg and "not needed" in msg


@pytest.mark.parametrize("keys,what,folder", [
    (["encoder.down_blocks.0.resnets.0.conv1.weight", "decoder.conv_in.weight"], "an SD VAE", "vae"),
    (["text_model.embeddings.token_embedding.weight"], "a CLIP text encoder", "text_encoders"),
    (["feature_extractor.conv_layers.0.conv.weight", "encoder.pos_conv_embed.conv.bias"], "a wav2vec2 audio encoder",
     "audio_encoders"),
])
def test_companion_models_picked_by_mistake_are_named_with_their_folder(tmp_path, keys, what, folder):
    msg = error(save({k: torch.zeros(2) for k in keys}, tmp_path / "picked.safetensors"))
    assert f"picked.safetensors is {what}, not the EmoCAST Net" in msg
    assert f"Put it in models/{folder}/" in msg and "Jmaomao/EmoCAST" in msg


def test_truncated_files_say_incomplete_with_the_size(tmp_path):
    for name in ("net.pth", "net.safetensors"):
        full = save({k: torch.zeros(1000) for k in list(TINY_NAMES)[:50]}, tmp_path / f"full_{name}")
        cut = tmp_path / name
        cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="is incomplete or damaged") as e:
            inspect(cut)
        assert f"{name} is incomplete or damaged ({cut.stat().st_size:,} bytes on disk" in str(e.value)
        assert "Download it again" in e.value.hint
    with pytest.raises(CheckpointError, match="the full file is about 3.98 GB in fp16"):
        ck.load_into(nn.Module(), cut, expected={"w": (1_990_000_000,)})


def test_empty_folder_lfs_html_and_unknown_files(tmp_path):
    (tmp_path / "empty.pth").touch()
    assert "empty.pth is empty (0 bytes): the download did not complete." in error(tmp_path / "empty.pth")
    (tmp_path / "lfs.pth").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 4989723472\n")
    assert "is a Git LFS pointer" in error(tmp_path / "lfs.pth")
    (tmp_path / "page.safetensors").write_text("<!DOCTYPE html><html>Sign in</html>")
    assert "is a web page" in error(tmp_path / "page.safetensors")
    (tmp_path / "net.onnx").write_bytes(b"\x08\x07")
    assert "unsupported weights format '.onnx'" in error(tmp_path / "net.onnx")
    (tmp_path / "junk.pth").write_bytes(b"hello, not weights")
    assert "junk.pth is not a PyTorch or safetensors file" in error(tmp_path / "junk.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    assert "tensor.pth holds a Tensor, not a state dict" in error(tmp_path / "tensor.pth")
    folder = tmp_path / "emocast"
    folder.mkdir()
    (folder / "net.pth").touch()
    with pytest.raises(CheckpointError, match="is a folder, not a weights file") as e:
        inspect(folder)
    assert f"{folder} is a folder, not a weights file (the folder holds net.pth)." in str(e.value)
    assert e.value.hint == f"Pass the file itself, e.g. {folder / 'net.pth'}."


def test_missing_file_names_file_folder_and_download(tmp_path):
    with pytest.raises(MissingModelError, match="net.pth not found") as e:
        ck.load_into(meta_small(), tmp_path / "emocast" / "net.pth")
    assert e.value.message == f"net.pth not found in {tmp_path / 'emocast'} (the folder does not exist)."
    assert "https://huggingface.co/Jmaomao/EmoCAST" in e.value.hint and isinstance(e.value, FileNotFoundError)


def test_pickles_needing_code_are_refused_not_run(tmp_path):
    import argparse

    torch.save({"args": argparse.Namespace(lr=1), "state_dict": small_sd()}, tmp_path / "train.pth")
    msg = error(tmp_path / "train.pth")
    assert "train.pth is not a plain state dict" in msg and "argparse.Namespace" in msg
    assert "never unpickles arbitrary code" in msg


# ------------------------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_verify_accepts_the_released_layout_from_its_header(tmp_path):
    out = run_cli("verify-checkpoint", sparse_safetensors(tmp_path / "net.safetensors", REAL))
    assert out.returncode == 0, out.stderr
    assert "EmoCAST Net layout, UNet widths 320/640/1280/1280" in out.stdout
    assert "2,832 entries, 2,493,427,348 parameters (+ 1,208,320 buffer values), fp16, 4.99 GB" in out.stdout


@pytest.mark.slow
def test_cli_verify_diagnoses_hallo_with_exit_2(tmp_path):
    hallo = {k: s for k, s in REAL.items() if not any(m in k for m in ck.EMOCAST_ONLY)}
    out = run_cli("verify-checkpoint", sparse_safetensors(tmp_path / "net.safetensors", hallo))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: net.safetensors looks like a Hallo net.pth")
    assert "missing (176):" in out.stderr and "hint: Download EmoCAST's net.pth" in out.stderr
    missing = run_cli("verify-checkpoint", tmp_path / "nope.pth")
    assert missing.returncode == 2 and "nope.pth not found in" in missing.stderr


@pytest.mark.slow
def test_cli_convert_then_verify_a_tiny_net(tmp_path):
    from emocast.demo.tiny import key_shapes

    src = sparse_safetensors(tmp_path / "tiny.safetensors", key_shapes("net"), "F32")
    out = run_cli("convert-checkpoint", src, "--out", tmp_path / "tiny_bf16.safetensors", "--dtype", "bf16")
    assert out.returncode == 0, out.stderr
    assert "tiny_bf16.safetensors: 2,832 entries, bf16" in out.stdout and "(from tiny.safetensors)" in out.stdout
    ver = run_cli("verify-checkpoint", tmp_path / "tiny_bf16.safetensors")
    assert ver.returncode == 0 and "UNet widths 32/64/96/96 (not the released 320/640/1280/1280)" in ver.stdout
    same = run_cli("convert-checkpoint", src, "--out", src)
    assert same.returncode == 2 and "is the input file" in same.stderr


@pytest.mark.slow
def test_cli_convert_refuses_a_wrong_layout_and_writes_nothing(tmp_path):
    mm = {k.removeprefix("denoising_unet."): torch.zeros(2) for k in TINY_NAMES if "motion_modules." in k}
    out = run_cli("convert-checkpoint", save(mm, tmp_path / "mm.ckpt"), "--out", tmp_path / "x.safetensors")
    assert out.returncode == 2 and "AnimateDiff motion module" in out.stderr
    assert not list(tmp_path.glob("x.safetensors*"))


def test_convert_rejects_bad_output_names(tmp_path):
    src = save(small_sd(), tmp_path / "w.pth")
    with pytest.raises(InputError, match="must end in .safetensors"):
        ck.convert_checkpoint(src, tmp_path / "w.pt")


def test_safetensors_header_is_validated_before_reading(tmp_path):
    path = save(small_sd(), tmp_path / "w.safetensors")
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["proj.bias"]["shape"] = [4]  # 3 floats on disk, 4 declared
    blob = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    path.write_bytes(raw[:8] + blob + raw[8 + n:])
    assert "byte ranges do not match the shapes of ['proj.bias']" in error(path)


@pytest.mark.slow
def test_the_emocast_net_loads_in_one_call(tmp_path):
    """The real model class, tiny widths: meta build + load_into, every tensor materialised in bf16."""
    from emocast.demo.tiny import key_shapes
    from emocast.models.net import EmoCASTNet

    path = sparse_safetensors(tmp_path / "tiny.safetensors", key_shapes("net"), "F32")
    net = ck.load_into(EmoCASTNet.build(ck.net_config(key_shapes("net"))), path, "bf16")
    assert {(t.device.type, t.dtype) for t in net.state_dict().values()} == {("cpu", torch.bfloat16)}
    net = ck.load_net(path, "fp16")  # widths from the file, one open, eval mode
    assert net.config.block_out_channels == (32, 64, 96, 96) and not net.training
    assert {t.dtype for t in net.state_dict().values()} == {torch.float16}
