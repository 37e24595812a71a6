"""`python -m emocast doctor` on the tiny models exported in the ComfyUI layout: all there, one removed, one wrong."""
from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow  # exports the tiny models (~400 MB written)

from emocast.cli import main
from emocast.demo.models import export_models


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("doctor") / "models"
    return d, export_models(d)


@pytest.fixture
def models(exported, tmp_path):
    d = tmp_path / "models"
    shutil.copytree(exported[0], d)
    return d


def test_all_there_exits_0_and_lists_each_file(exported, capsys):
    d, files = exported
    assert main(["doctor", "--models", str(d)]) == 0
    out = capsys.readouterr().out
    for kind, path in files.items():
        assert str(path) in out, kind
    assert "EmoCAST Net layout" in out and "everything a run needs is there" in out
    for what in ("torch", "onnxruntime", "insightface", "landmarks", "PyAV"):
        assert f" {what} " in out


def test_missing_file_exits_1_and_names_the_fix(models, capsys):
    (models / "audio_encoders" / "emocast_tiny_wav2vec2.safetensors").unlink()
    assert main(["doctor", "--models", str(models)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("MISSING"))
    assert "audio_encoders" in line and "wav2vec2" in line
    assert (f"fix: python -m emocast download-models --models {models} --only wav2vec2, or get "
            f"https://huggingface.co/facebook/wav2vec2-base-960h/resolve/main/model.safetensors into "
            f"{models / 'audio_encoders'}") in out
    assert "missing or broken: audio_encoders" in out


def test_wrong_file_in_a_folder_is_bad(models, capsys):
    shutil.rmtree(models / "text_encoders")
    (models / "text_encoders").mkdir()
    shutil.copy(models / "vae" / "emocast_tiny_vae.safetensors", models / "text_encoders" / "clip_l.safetensors")
    shutil.rmtree(models / "insightface")
    assert main(["doctor", "--models", str(models)]) == 1
    out = capsys.readouterr().out
    assert "none looks like a CLIP ViT-L/14 text encoder" in out
    assert "--only insightface" in out and str(models / "insightface" / "models" / "antelopev2") in out


def test_doctor_node_reports_over_comfyui_folders(exported, tmp_path):
    import importlib

    from comfy_host import StubHost
    from pack_fixtures import ROOT, load_pack

    d, files = exported
    stub = StubHost().install(d, tmp_path / "output")
    try:
        pack = load_pack(f"emocast_doctor_pack_{tmp_path.name}", ROOT)
        node = pack.NODE_CLASS_MAPPINGS["EmoCAST_Doctor"]
        out = node().check()
        text = out["result"][0]
        assert out["ui"]["text"] == [text] and node.RETURN_TYPES == ("STRING",)
        for path in files.values():
            assert str(path) in text
        assert "everything a run needs is there" in text
        host = importlib.import_module(f"{pack.__name__}.nodes.host")
        hint = host.missing_model(host.model_files.EMOCAST, "net.pth", [str(d / "emocast")]).hint
        assert "EmoCAST Doctor" in hint and "download_if_missing" in hint
    finally:
        stub.uninstall()
