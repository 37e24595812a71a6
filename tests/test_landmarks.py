"""Landmark backends: the mediapipe mesh (skipped without mediapipe), the 2d106 fallback, errors.

The mediapipe tests need `mediapipe==0.10.21` (legacy face mesh, Python <= 3.12, numpy < 2) for
the exact-mesh check, and a face_landmarker.task file in EMOCAST_FACE_LANDMARKER_TASK for the
Tasks backend; both skip cleanly otherwise.
"""
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES
from emocast.demo.tiny import DEMO_IMAGE
from emocast.errors import InputError, MissingDependencyError, MissingModelError
from emocast.preprocess import landmarks as L
from emocast.preprocess import masks as M
from floats import assert_close

MESH_PX = np.load(FIXTURES / "cases" / "MASKS" / "inputs" / "landmarks_px_float64.npy")
RGB = np.asarray(Image.open(DEMO_IMAGE).convert("RGB"))
# 2d106 slots filled with the mesh vertices at the same facial features (contour, eyes, brows,
# mouth, nose): isolates what the 106 -> rectangle mapping loses from any detector error.
JAW = [127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356]
SLOTS_106 = (list(np.resize(JAW, 33)) + [33, 7, 163, 144, 145, 153, 154, 155, 133, 246]
             + [70, 63, 105, 66, 107, 55, 65, 52, 53] + list(M.LIP_IDS)
             + [168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 97, 326, 164]
             + [263, 249, 390, 373, 374, 380, 381, 382, 362, 466] + [300, 293, 334, 296, 336, 285, 295, 282, 283])


def iou(a, b):
    """IoU of two (x0, x1, y0, y1) boxes."""
    w = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[2], b[2]))
    area = lambda r: (r[1] - r[0]) * (r[3] - r[2])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def boxes(lm: L.Landmarks, size=512):
    maps = M.mask_maps_from_extents(*lm.extents(), size, size)
    return maps.face_box, maps.lip_box


def test_mesh_extents_are_the_authors():
    face, lip = L.Landmarks(MESH_PX, L.MESH).extents()
    assert face == M.extent(MESH_PX, M.SILHOUETTE_IDS) and lip == M.extent(MESH_PX, M.LIP_IDS)
    assert boxes(L.Landmarks(MESH_PX, L.MESH)) == ((170, 280, 61, 187), (180, 266, 131, 163))


def test_106_mapping_against_the_mesh_on_the_portrait():
    mesh_face, mesh_lip = boxes(L.Landmarks(MESH_PX, L.MESH))
    proxy = L.Landmarks(MESH_PX[SLOTS_106], L.IF106)
    face, lip = boxes(proxy)
    assert lip == mesh_lip                    # 2d106 mouth 52-71 spans the same outer lip corners
    assert iou(face, mesh_face) > 0.99        # with the forehead extension (FOREHEAD_RATIO 0.17)
    brows_only = L.Landmarks(MESH_PX[SLOTS_106], L.IF106)
    ratio, L.FOREHEAD_RATIO = L.FOREHEAD_RATIO, 0.0
    try:
        no_forehead = boxes(brows_only)[0]
    finally:
        L.FOREHEAD_RATIO = ratio
    assert round(iou(no_forehead, mesh_face), 3) == 0.857  # stopping at the brows loses the forehead


def test_tiny_2d106_through_insightface(tmp_path):
    from emocast.demo.face_models import write_tiny_insightface
    from emocast.preprocess.face import FaceAnalyser
    lmk = L.Insightface106Landmarker(FaceAnalyser(write_tiny_insightface(tmp_path)))
    found = lmk.detect(RGB)
    assert found.topology == L.IF106 and found.points.shape == (106, 2) and found.points.dtype == np.float64
    face, lip = boxes(found)
    mesh_face, mesh_lip = boxes(L.Landmarks(MESH_PX, L.MESH))
    assert iou(face, mesh_face) > 0.6 and iou(lip, mesh_lip) > 0.4  # a template, not a trained model
    assert lmk.detect(np.full((256, 256, 3), 128, np.uint8)) is None


def test_missing_mediapipe_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    for backend in ("mediapipe face mesh", "auto"):
        with pytest.raises(MissingDependencyError, match="mediapipe is not installed") as e:
            L.load_landmarker(backend)
        assert "pip install mediapipe" in e.value.hint and "0.10.21" in e.value.hint


def test_auto_falls_back_to_insightface_with_a_warning(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "mediapipe", None)

    class Analyser:
        app = type("App", (), {"models": {"landmark_2d_106": object()}})()
        pack_dir = "pack"

    assert isinstance(L.load_landmarker("auto", analyser=Analyser()), L.Insightface106Landmarker)
    assert "only approximates the authors'" in caplog.text
    # a face_landmarker.task in models/mediapipe but mediapipe not installed: the same fallback, no error
    assert isinstance(L.load_landmarker("auto", task_file="face_landmarker.task", analyser=Analyser()),
                      L.Insightface106Landmarker)


def test_landmarker_argument_errors(tmp_path):
    with pytest.raises(InputError, match="unknown landmark backend"):
        L.load_landmarker("dlib")
    with pytest.raises(InputError, match=".task file"):
        L.load_landmarker("mediapipe tasks")
    with pytest.raises(InputError, match="needs the face analyser"):
        L.load_landmarker("insightface 2d106")
    with pytest.raises(MissingModelError, match="face_landmarker.task") as e:
        L.find_task_file(tmp_path)
    assert str(tmp_path / "face_landmarker.task") in str(e.value) and L.TASK_URL in e.value.hint
    (tmp_path / "face_landmarker_v2_with_blendshapes.task").write_bytes(b"")
    assert L.find_task_file(tmp_path).name == "face_landmarker_v2_with_blendshapes.task"


def test_pack_without_2d106(monkeypatch):
    analyser = type("A", (), {"app": type("App", (), {"models": {}})(), "pack_dir": "/x/pack"})()
    with pytest.raises(MissingModelError, match="no 2d106det"):
        L.Insightface106Landmarker(analyser)


#: mediapipe's mesh against the authors' (px): 0.0 measured here. Its TFLite kernels ignore
#: ATEN_CPU_CAPABILITY, so no cross-CPU figure; 0.05 px keeps every rounded extent (the nearest
#: half-pixel boundary is 0.055 px away), so the masks below stay exact.
MESH_ATOL = 0.05


@pytest.mark.float_sensitive
def test_legacy_face_mesh_gives_the_shipped_mesh_and_golden_masks():
    mp = pytest.importorskip("mediapipe")
    if not hasattr(mp, "solutions"):
        pytest.skip(f"mediapipe {mp.__version__} has no legacy face mesh (needs <= 0.10.21)")
    import torch
    lmk = L.load_landmarker("mediapipe face mesh")
    found = lmk.detect(RGB)
    assert_close(found.points, MESH_PX, MESH_ATOL, what="mesh px")
    maps = M.mask_maps_from_extents(*found.extents(), 512, 512)
    golden = torch.load(FIXTURES / "cases" / "MASKS" / "golden" / "mask_pyramids.pt", weights_only=True)
    ours = M.mask_pyramids(maps, 512)
    assert all(torch.equal(g.flatten(), o) for k in golden for g, o in zip(golden[k], ours[k]))
    assert lmk.detect(np.full((256, 256, 3), 128, np.uint8)) is None


def test_tasks_face_landmarker_on_the_portrait():
    pytest.importorskip("mediapipe")
    task = os.environ.get("EMOCAST_FACE_LANDMARKER_TASK")
    if not task:
        pytest.skip("set EMOCAST_FACE_LANDMARKER_TASK to a face_landmarker.task file")
    found = L.load_landmarker("auto", task_file=task).detect(RGB)
    assert found.points.shape == (478, 2)
    assert np.abs(found.points - MESH_PX).max() < 3  # measured 1.74 px: another detector stage
    face, lip = boxes(found)
    mesh_face, mesh_lip = boxes(L.Landmarks(MESH_PX, L.MESH))
    assert iou(face, mesh_face) > 0.95 and iou(lip, mesh_lip) > 0.95
