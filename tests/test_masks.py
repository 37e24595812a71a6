"""The authors' masks (docs/authors_behaviours.md B26-B29): rounding quirks, sizes, pyramids, pixel transform."""
import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FIXTURES
from conformance_masks import run_case
from emocast.preprocess import masks

MESH = FIXTURES / "cases" / "MASKS" / "inputs" / "landmarks_px_float64.npy"


@pytest.mark.float_sensitive
def test_shipped_masks_case_is_exact():
    m = run_case(FIXTURES / "cases" / "MASKS")
    assert m["face_box"] == (170, 280, 61, 187) and m["lip_box"] == (180, 266, 131, 163)
    assert all(v is True for k, v in m.items() if k.endswith("bytes_equal"))
    assert max(v for k, v in m.items() if k.endswith("max_abs")) == 0


def test_landmark_ids_are_the_mediapipe_silhouette_and_outer_lips():
    assert len(masks.SILHOUETTE_IDS) == len(set(masks.SILHOUETTE_IDS)) == 36
    assert len(masks.LIP_IDS) == len(set(masks.LIP_IDS)) == 20
    assert masks.SILHOUETTE_IDS[0] == 10 and 152 in masks.SILHOUETTE_IDS  # forehead top, chin
    assert {61, 291, 0, 17} <= set(masks.LIP_IDS)                          # mouth corners, lip middles


def test_extent_rounds_half_to_even():
    pts = np.array([[2.5, 3.5], [10.5, 7.5]])
    assert masks.extent(pts) == (2.0, 10.0, 4.0, 8.0)


@pytest.mark.parametrize("ext, ratio, size, expected", [
    ((10.0, 21.0, 10.0, 21.0), 1.0, 100, (10, 20, 10, 20)),    # mid 15 (floor), half 11 // 2 = 5
    ((10.0, 21.0, 10.0, 21.0), 2.0, 100, (4, 26, 4, 26)),      # half 22 // 2 = 11
    ((0.0, 20.0, 90.0, 99.0), 2.0, 100, (0, 40, 82, 100)),     # shifted back inside on both axes
    ((10.0, 13.0, 10.0, 13.0), 1.5, 100, (9, 13, 9, 13)),      # mid 23 // 2 = 11, half 4.5 // 2 = 2
])
def test_expand_region_floor_divisions_and_shift(ext, ratio, size, expected):
    assert masks.expand_region(ext, size, size, ratio) == expected


def test_rectangle_larger_than_image_keeps_the_authors_slicing(caplog):
    box = masks.expand_region((0.0, 90.0, 0.0, 90.0), 100, 100, 1.2)
    assert box == (-8, 100, -8, 100)
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        rect = masks.rectangle(box, 100, 100)
    assert "larger than the 100x100 image" in caplog.text
    assert rect.sum() == 8 * 8 * 255  # numpy reads [-8:100] as the last 8 rows / columns


def test_separate_maps_truncate_and_saturate():
    mesh = np.load(MESH)
    m = masks.mask_maps(mesh, 512, 512)
    assert all(a.dtype == np.uint8 and a.shape == (64, 64) for a in (m.face_blur, m.sep_lip, m.sep_background, m.sep_face))
    assert m.face_blur.min() == m.sep_lip.min() == 0 and m.face_blur.max() == m.sep_lip.max() == 255
    assert np.array_equal(m.sep_face, np.clip(m.face_blur.astype(int) - m.sep_lip, 0, 255))
    assert (m.face_blur.astype(int) < m.sep_lip).any()  # saturation actually happens here
    # truncation: (1 - 43/255) * 255 = 211.999..., stored as 211, not 255 - 43 = 212
    differs = m.sep_background.astype(int) != 255 - m.face_blur.astype(int)
    assert differs.sum() == 186 and (m.sep_background[differs] == 254 - m.face_blur[differs]).all()


@pytest.mark.parametrize("img_size, sides", [(512, (64, 32, 16, 8)), ((256, 256), (32, 16, 8, 4)),
                                             ([768, 768], (96, 48, 24, 12))])
def test_pyramid_sizes_follow_img_size(img_size, sides):
    m = masks.mask_maps(np.load(MESH), 512, 512, 1.3)
    pyr = masks.mask_pyramids(m, img_size)
    assert list(pyr) == ["full", "face", "lip"]
    for levels in pyr.values():
        assert [lv.shape for lv in levels] == [torch.Size([s * s]) for s in sides]
        assert all(lv.dtype == torch.float32 and 0 <= lv.min() and lv.max() <= 1 for lv in levels)
    # level 0 is the PIL bilinear resize of the 64x64 map, row-major
    ref = np.asarray(Image.fromarray(m.sep_face).resize((sides[0], sides[0]), Image.BILINEAR), np.float32) / 255
    assert torch.equal(pyr["face"][0], torch.from_numpy(ref).flatten())


def test_expand_ratio_and_image_size_are_parameters():
    mesh = np.load(MESH)
    small = masks.mask_maps(mesh, 512, 512, 1.0).face_box
    big = masks.mask_maps(mesh, 512, 512, 1.5).face_box
    assert big[1] - big[0] > small[1] - small[0]
    # the same face in a 640 x 480 image: rectangles at that size, blur maps still 64 x 64
    m = masks.mask_maps(mesh * [1.25, 0.9375], 640, 480)
    assert m.face_mask.shape == (480, 640) and m.sep_face.shape == (64, 64)
    region = masks.face_region(m.face_mask, 512)  # resized like the authors: bilinear, not binary
    assert region.shape == (3, 512, 512) and 0 < ((region > 0) & (region < 1)).float().mean() < 0.01


def test_face_region_is_binary_rgb_at_the_same_size():
    m = masks.mask_maps(np.load(MESH), 512, 512)
    region = masks.face_region(m.face_mask, (512, 512))
    assert region.shape == (3, 512, 512) and set(region.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(region[0], torch.from_numpy(m.face_mask == 255).float())


def test_pixel_values_exact_formula_and_torchvision_size_order():
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[0, 0], arr[0, 1], arr[0, 2] = 255, 128, 1
    px = masks.pixel_values(Image.fromarray(arr), (4, 6))  # (a, b) -> [3, a, b]
    assert px.shape == (3, 4, 6) and px.dtype == torch.float32
    assert px[0, 0, 0] == 1 and px[0, 1, 1] == -1
    assert px[0, 0, 1] == (torch.tensor(128, dtype=torch.float32) / 255 - 0.5) / 0.5
    tall = masks.pixel_values(Image.fromarray(arr), (8, 4))
    assert tall.shape == (3, 8, 4)
    ref = np.asarray(Image.fromarray(arr).resize((4, 8), Image.BILINEAR), np.float32) / 255
    assert torch.equal(tall, (torch.from_numpy(ref).permute(2, 0, 1) - 0.5) / 0.5)


def test_blur_is_the_cv2_chain():
    rng = np.random.default_rng(0)
    rect = np.zeros((300, 200), np.uint8)
    x0, y0 = rng.integers(0, 100, 2)
    rect[y0:y0 + 90, x0:x0 + 60] = 255
    ours = masks.blur(rect, 31)
    ref = cv2.normalize(cv2.GaussianBlur(cv2.resize(rect, (64, 64)), (31, 31), 0), None, 0, 255, cv2.NORM_MINMAX)
    assert np.array_equal(ours, ref)
