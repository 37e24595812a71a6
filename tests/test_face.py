"""Face detection, choice, identity and the full photo -> FaceConditioning path.

insightface's own FaceAnalysis runs the tiny self-made ONNX pack (emocast.demo.face_models) on the
real bundled photo, so every error path below goes through the real library code.
"""
import logging
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from emocast.demo.face_models import write_tiny_insightface
from emocast.demo.tiny import DEMO_IMAGE
from emocast.errors import InputError, MissingDependencyError, MissingModelError
from emocast.preprocess import face as F
from emocast.preprocess.landmarks import Insightface106Landmarker

RGB = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))
TWO = np.concatenate([RGB[:, 100:350], RGB[:, 100:350]], 1)                       # 512 x 500, two faces
SMALL = np.pad(cv2.resize(RGB, (256, 256)), ((128, 128), (128, 128), (0, 0)), constant_values=200)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return write_tiny_insightface(tmp_path_factory.mktemp("insightface") / "models")


@pytest.fixture(scope="module")
def analyser(pack):
    return F.FaceAnalyser(pack, det_size=640)


@pytest.fixture(scope="module")
def landmarker(analyser):
    return Insightface106Landmarker(analyser)


def test_tiny_pack_is_classified_by_real_insightface(analyser, pack):
    assert set(analyser.app.models) == {"detection", "recognition", "landmark_2d_106"}
    assert analyser.pack_dir == pack.resolve()
    assert sum(p.stat().st_size for p in pack.glob("*.onnx")) < 200_000


def test_detects_the_real_face(analyser):
    faces = analyser.detect(RGB)
    assert len(faces) == 1
    f = faces[0]
    x0, y0, x1, y1 = f.bbox  # the face (mesh silhouette) spans x 179-271, y 71-177
    assert 150 < x0 < 190 and 260 < x1 < 300 and 40 < y0 < 80 and 160 < y1 < 200 and f.score > 0.9
    assert f.kps.shape == (5, 2) and f.landmarks_106.shape == (106, 2)
    assert f.embedding.shape == (512,) and f.embedding.dtype == np.float32
    assert 10 < np.linalg.norm(f.embedding) < 40  # not normalised (docs/authors_behaviours.md#b30)


def test_embedding_is_deterministic_and_depends_on_the_pixels(analyser):
    a, b = analyser.detect(RGB)[0].embedding, analyser.detect(RGB.copy())[0].embedding
    brighter = analyser.detect(np.clip(RGB.astype(int) + 6, 0, 255).astype(np.uint8))[0].embedding
    assert np.array_equal(a, b)
    cos = a @ brighter / np.linalg.norm(a) / np.linalg.norm(brighter)
    assert not np.array_equal(a, brighter) and 0.9 < cos < 0.9999


def test_prepare_face_builds_the_conditioning(analyser, landmarker):
    fc = F.prepare_face(Image.open(DEMO_IMAGE), analyser, landmarker, size=256)
    assert fc.pixels.shape == fc.face_region.shape == (3, 256, 256)
    assert fc.pixels.min() >= -1 and fc.pixels.max() <= 1 and fc.size == 256
    assert set(fc.face_region.unique().tolist()) == {0.0, 1.0}
    assert {k: [t.numel() for t in v] for k, v in fc.masks.items()} == {k: [1024, 256, 64, 16] for k in ("full", "face", "lip")}
    assert torch.equal(fc.embedding, torch.from_numpy(analyser.detect(RGB)[0].embedding))
    assert fc.crop.side == 282 and fc.crop.image_size == (512, 512) and fc.crop.y0 == 0  # 2.2 x 128 px face
    assert fc.source.shape == (512, 512, 3) and fc.source.dtype == torch.float32
    from emocast.preprocess.crop import crop, to_uint8
    crop_u8 = to_uint8(crop(fc.source.numpy(), fc.crop, 256))  # the crop is resized once, then exact
    assert torch.equal(fc.pixels, torch.from_numpy(crop_u8).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5))


def test_a_face_mask_larger_than_the_crop_is_refused_not_wrapped(analyser, landmarker):
    # 3 x the 106 px tall face > the 282 px crop: the authors' slicing would draw a strip along the edge
    with pytest.raises(InputError, match="larger than the 256 px crop") as e:
        F.prepare_face(Image.open(DEMO_IMAGE), analyser, landmarker, size=256, face_expand_ratio=3.0)
    assert "crop_margin (now 0.6)" in e.value.hint and "face_expand_ratio" in e.value.hint
    fc = F.prepare_face(Image.open(DEMO_IMAGE), analyser, landmarker, size=256, face_expand_ratio=2.0)
    assert fc.masks["face"][0].max() > 0.5  # 2 x the face still fits: a real face mask


def test_whole_image_framing_reproduces_the_authors_pixels(analyser, landmarker):
    from emocast.preprocess.masks import pixel_values
    fc = F.prepare_face(Image.open(DEMO_IMAGE), analyser, landmarker,
                        crop_margin=None)
    assert fc.crop == F.CropBox(0, 0, 512, 512, (512, 512))
    assert torch.equal(fc.pixels, pixel_values(Image.open(DEMO_IMAGE), 512))


def test_no_face_raises_with_the_fallback_hint(analyser, landmarker):
    grey = np.full((300, 400, 3), 128, np.uint8)
    with pytest.raises(InputError, match="no face found in the 400x300 reference image") as e:
        F.prepare_face(grey, analyser, landmarker)
    assert "no_face='whole image'" in e.value.hint


def test_no_face_whole_image_falls_back_like_the_authors(analyser, landmarker, caplog):
    grey = np.full((300, 400, 3), 128, np.uint8)
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        fc = F.prepare_face(grey, analyser, landmarker, size=128, no_face=F.NO_FACE_WHOLE_IMAGE)
    assert "zero identity embedding" in caplog.text and "whole crop" in caplog.text
    assert torch.equal(fc.embedding, torch.zeros(512))
    assert fc.crop == F.CropBox(50, 0, 350, 300, (400, 300))  # the centre square
    assert fc.face_region.mean() > 0.95  # face rectangle = the whole crop


def test_several_faces_use_the_largest_and_say_how_many(analyser, landmarker, caplog):
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        fc = F.prepare_face(TWO, analyser, landmarker, size=128)
    assert "Found 2 faces" in caplog.text and "face_index" in caplog.text
    right = F.prepare_face(TWO, analyser, landmarker, size=128, face_index=1)
    left = F.prepare_face(TWO, analyser, landmarker, size=128, face_index=0)
    assert left.crop.x0 < right.crop.x0
    assert fc.crop in (left.crop, right.crop)
    with pytest.raises(InputError, match="face_index 2 is out of range: found 2"):
        F.prepare_face(TWO, analyser, landmarker, face_index=2)


def test_tiny_face_reports_found_and_needed_size(analyser, landmarker):
    with pytest.raises(InputError, match=r"too small to animate: 51x64 px, needs at least 64 px"):
        F.prepare_face(SMALL, analyser, landmarker)
    fc = F.prepare_face(SMALL, analyser, landmarker, size=128, min_face_px=32)
    assert fc.crop.side < 200


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray(RGB).convert("RGBA"),
    lambda: Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE),
    lambda: RGB.astype(np.uint16) * 257,                                              # 16-bit RGB
    lambda: RGB[7:480, 3:333],                                                        # odd size, portrait
    lambda: cv2.resize(RGB, (1000, 1000)),
    lambda: torch.from_numpy(RGB / 255.0).float()[None],                             # ComfyUI IMAGE
])
def test_any_photo_mode_and_size(analyser, landmarker, make):
    fc = F.prepare_face(make(), analyser, landmarker, size=128)
    assert fc.pixels.shape == (3, 128, 128) and fc.embedding.abs().sum() > 0


@pytest.mark.parametrize("make", [lambda: Image.fromarray(RGB).convert("L"),
                                  lambda: Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)])  # I;16
def test_greyscale_photos_run(analyser, landmarker, make):
    # the tiny stand-in detector is colour-based and sees no face in grey; real detectors do
    fc = F.prepare_face(make(), analyser, landmarker, size=128, no_face=F.NO_FACE_WHOLE_IMAGE)
    assert fc.pixels.shape == (3, 128, 128)
    assert torch.equal(fc.pixels[0], fc.pixels[2])


def test_bad_arguments(analyser, landmarker):
    with pytest.raises(InputError, match="no_face"):
        F.prepare_face(RGB, analyser, landmarker, no_face="skip")
    with pytest.raises(InputError, match="multiple of 64"):
        F.prepare_face(RGB, analyser, landmarker, size=500)


def test_find_pack_comfyui_layouts(tmp_path, pack):
    comfy = tmp_path / "models" / "insightface"
    for rel in ("models/antelopev2", "models/buffalo_l/buffalo_l"):
        shutil.copytree(pack, comfy / rel)
    assert F.find_pack(comfy) == comfy / "models" / "antelopev2"                # models/insightface
    assert F.find_pack(comfy / "models") == comfy / "models" / "antelopev2"     # .../insightface/models
    assert F.find_pack(comfy, "buffalo_l") == comfy / "models" / "buffalo_l" / "buffalo_l"  # nested zip
    assert F.find_pack(pack) == pack                                             # the pack itself
    with pytest.raises(MissingModelError, match="antelopev2") as e:
        F.find_pack(tmp_path / "nowhere")
    assert "nowhere/antelopev2" in str(e.value) and "models/insightface/models/antelopev2" in e.value.hint


def test_pack_without_detector_or_recogniser(tmp_path, pack):
    (tmp_path / "nodet").mkdir()
    shutil.copy(pack / "rec_tiny.onnx", tmp_path / "nodet")
    with pytest.raises(MissingModelError, match="no face detector"):
        F.FaceAnalyser(tmp_path / "nodet")
    (tmp_path / "norec").mkdir()
    shutil.copy(pack / "det_tiny.onnx", tmp_path / "norec")
    with pytest.raises(MissingModelError, match="no recognition model"):
        F.FaceAnalyser(tmp_path / "norec")


def test_buffalo_recogniser_warns_about_the_embedding_space(tmp_path, pack, caplog):
    shutil.copytree(pack, tmp_path / "buffalo_l")
    (tmp_path / "buffalo_l" / "rec_tiny.onnx").rename(tmp_path / "buffalo_l" / "w600k_r50.onnx")
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        F.FaceAnalyser(tmp_path)
    assert "glintr100" in caplog.text and "w600k_r50" in caplog.text


def test_missing_insightface_names_the_pip_line(monkeypatch, pack):
    monkeypatch.setitem(sys.modules, "insightface.app", None)
    with pytest.raises(MissingDependencyError, match="insightface is not installed") as e:
        F.FaceAnalyser(pack)
    assert e.value.hint == "pip install insightface onnxruntime"


@pytest.mark.float_sensitive
def test_photo_to_the_authors_goldens_with_mediapipe(analyser):
    """Needs mediapipe 0.10.21 (legacy face mesh): the whole photo path lands on the MASKS goldens."""
    mp = pytest.importorskip("mediapipe")
    if not hasattr(mp, "solutions"):
        pytest.skip(f"mediapipe {mp.__version__} has no legacy face mesh (needs <= 0.10.21)")
    from conftest import FIXTURES
    from emocast.preprocess.landmarks import load_landmarker
    golden = FIXTURES / "cases" / "MASKS" / "golden"
    load = lambda name: torch.load(golden / name, weights_only=True)  # noqa: E731
    with load_landmarker("mediapipe face mesh") as landmarker:
        fc = F.prepare_face(Image.open(DEMO_IMAGE), analyser, landmarker, size=512, crop_margin=None)
    assert torch.equal(fc.pixels, load("source_image_pixels.pt"))
    assert torch.equal(fc.face_region, load("face_region.pt"))
    pyr = load("mask_pyramids.pt")
    assert all(torch.equal(g.flatten(), o) for k in pyr for g, o in zip(pyr[k], fc.masks[k]))
