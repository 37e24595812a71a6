"""The example workflows follow the registry's convention: example_workflows/ with same-name thumbnails, loaders
carrying properties.models (the frontend's missing-models dialog), and inputs the pack ships."""
from __future__ import annotations

import ast
import importlib
import json

import pytest
from PIL import Image

from emocast import model_files as mf
from pack_fixtures import ROOT, load_pack

TEMPLATES = sorted((ROOT / "example_workflows").glob("*.json"))
LOADERS = {"EmoCAST_LoadModel", "VAELoader", "EmoCAST_LoadTextEncoder", "EmoCAST_LoadFaceAnalysis",
           "EmoCAST_LoadAudioEncoder"}


def test_templates_in_the_registry_folder_with_thumbnails():
    assert [p.stem for p in TEMPLATES] == ["emocast_basic", "emocast_emotion_schedule", "emocast_long_audio"]
    assert not (ROOT / "workflows").exists()
    for p in TEMPLATES:
        with Image.open(p.with_suffix(".jpg")) as im:
            assert im.format == "JPEG" and 320 <= im.width <= 1024
        assert (ROOT / "example_workflows" / "api" / f"{p.stem}_api.json").is_file()


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_every_loader_names_its_files_with_url_and_folder(path):
    nodes = json.loads(path.read_text(encoding="utf-8"))["nodes"]
    loaders = [n for n in nodes if n["type"] in LOADERS]
    assert {n["type"] for n in loaders} == LOADERS
    by_url = {r.source_url(): r for r in mf.REMOTES}
    for node in loaders:
        models = node["properties"].get("models")
        assert models, node["type"]
        for m in models:
            remote = by_url[m["url"]]  # a real published URL from the model table
            assert m["url"].startswith("https://huggingface.co/") and m["directory"] == remote.kind.key
            assert f"{m['directory']}/{m['name']}" == remote.dest  # the README's folder and file name
            assert remote.choice in node["widgets_values"]
    face = next(n for n in loaders if n["type"] == "EmoCAST_LoadFaceAnalysis")
    assert len(face["properties"]["models"]) == 5  # the whole antelopev2 folder


def _example_inputs() -> dict:
    """nodes/host.py's EXAMPLE_INPUTS, read from the source (the module imports ComfyUI)."""
    tree = ast.parse((ROOT / "nodes" / "host.py").read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "EXAMPLE_INPUTS")
    return ast.literal_eval(node.value)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_inputs_ship_with_the_pack(path):
    shipped = _example_inputs()
    named = [n["widgets_values"][0] for n in json.loads(path.read_text(encoding="utf-8"))["nodes"]
             if n["type"] in ("LoadImage", "LoadAudio")]
    assert len(named) == 2
    for name in named:
        assert (ROOT / "emocast" / "demo" / "assets" / shipped[name]).is_file(), name


def test_pack_copies_the_example_inputs_once_and_never_over_a_file(tmp_path):
    from comfy_host import StubHost

    stub = StubHost().install(tmp_path / "models", tmp_path / "output")
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "emocast_example_speech.wav").write_bytes(b"the user's own file")
    stub.folder_paths.get_input_directory = lambda: str(inputs)
    try:
        pack = load_pack(f"emocast_templates_pack_{tmp_path.name}", ROOT)
        host = importlib.import_module(f"{pack.__name__}.nodes.host")
        portrait = inputs / "emocast_example_portrait.png"
        assert portrait.read_bytes() == (host.ASSETS / "portrait_astronaut_512.png").read_bytes()
        assert (inputs / "emocast_example_speech.wav").read_bytes() == b"the user's own file"
        assert sorted(p.name for p in inputs.iterdir()) == sorted(host.EXAMPLE_INPUTS)  # no temp file left
    finally:
        stub.uninstall()
