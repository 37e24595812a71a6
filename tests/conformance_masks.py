"""MASKS-kind conformance: our masks against the authors' cache PNGs and goldens.

Every parameter comes from the case folder (`case.json` inputs.img_size / face_expand_ratio, the
image and landmark files it names), so withheld cases run unchanged. The bar is exact: decoded
PNG pixels equal (their cv2 PNG encoding is byte-equal too with opencv 5.0.0 here, recorded as a
metric), tensors `torch.equal`. The bar holds across CPU kernels (measured: still exact under
ATEN_CPU_CAPABILITY=default with cv2.setUseOptimized(False)). EMOCAST_MASKS_TOLERANCE=build relaxes
everything to 1/255 for another OpenCV / Pillow build, as the package README allows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from emocast.preprocess import masks
from floats import assert_close

#: intermediate PNG suffix -> MaskMaps field
PNGS = {"lip_mask": "lip_mask", "face_mask": "face_mask", "face_mask_blur": "face_blur",
        "sep_lip": "sep_lip", "sep_background": "sep_background", "sep_face": "sep_face"}


def _named_path(case_dir: Path, text: str) -> Path:
    """case.json names files as 'inputs/x.npy: description' or 'inputs/x.png (description)'."""
    return case_dir / text.split(":")[0].split(" (")[0].strip()


def run_case(case_dir: Path) -> dict:
    case_dir = Path(case_dir)
    case = json.loads((case_dir / "case.json").read_text())
    if case.get("kind") != "masks":
        raise ValueError(f"{case_dir} is a {case.get('kind')!r} case, not 'masks'")
    inp = case["inputs"]
    img_size, ratio = inp["img_size"], float(inp["face_expand_ratio"])
    image_path = _named_path(case_dir, inp["source_image"])
    image = Image.open(image_path)
    width, height = image.size
    landmarks = np.load(_named_path(case_dir, inp["landmarks_px"]))
    if "landmarks" in inp:  # landmarks_px is what get_landmark returns: float64(x) * w, float64(y) * h
        normalised = np.load(_named_path(case_dir, inp["landmarks"]))
        assert np.array_equal(landmarks, normalised[:, :2].astype(np.float64) * [width, height])

    tol = 1 if os.environ.get("EMOCAST_MASKS_TOLERANCE") == "build" else 0
    maps = masks.mask_maps(landmarks, width, height, ratio)
    metrics = {"face_box": maps.face_box, "lip_box": maps.lip_box}
    stem = image_path.name.split(".")[0]
    for suffix, field in PNGS.items():
        ref_file = case_dir / "intermediate" / f"{stem}_{suffix}.png"
        ref, ours = cv2.imread(str(ref_file), cv2.IMREAD_UNCHANGED), getattr(maps, field)
        assert ref.shape == ours.shape, (suffix, ref.shape, ours.shape)
        diff = int(np.abs(ref.astype(int) - ours).max())
        metrics[f"{suffix}.png max_abs"] = diff
        metrics[f"{suffix}.png bytes_equal"] = cv2.imencode(".png", ours)[1].tobytes() == ref_file.read_bytes()
        assert diff <= tol, (suffix, diff)

    rect = case.get("rectangles_xyxy", {})
    if "face_mask" in rect:  # x0, y0, x1, y1 in the case; ours are (x0, x1, y0, y1)
        assert [maps.face_box[i] for i in (0, 2, 1, 3)] == rect["face_mask"]
        assert [maps.lip_box[i] for i in (0, 2, 1, 3)] == rect["lip_mask"]

    def compare(name, ref, ours):
        ref, ours = ref.reshape(ours.shape), ours
        diff = float((ref - ours).abs().max())
        metrics[f"{name} max_abs"] = diff
        assert ref.dtype == ours.dtype == torch.float32, name
        assert_close(ours, ref, tol / 255 + 1e-7 if tol else 0.0, what=name)

    golden = case_dir / "golden"
    load = lambda name: torch.load(golden / name, map_location="cpu", weights_only=True)  # noqa: E731
    compare("face_region", load("face_region.pt"), masks.face_region(maps.face_mask, img_size))
    compare("source_image_pixels", load("source_image_pixels.pt"), masks.pixel_values(image, img_size))
    ref_pyr, ours_pyr = load("mask_pyramids.pt"), masks.mask_pyramids(maps, img_size)
    assert set(ref_pyr) == set(ours_pyr)
    for name, levels in ref_pyr.items():
        assert len(levels) == len(ours_pyr[name])
        for i, (ref, ours) in enumerate(zip(levels, ours_pyr[name])):
            assert tuple(ref.shape) == (1, ours.numel()), (name, i, ref.shape)
            compare(f"pyramid.{name}[{i}]", ref, ours)
    return metrics
