"""The authors' face / lip masks and pixel transform, reproduced exactly (docs/authors_behaviours.md B26-B29).

The model was trained with these masks, so every rounding quirk is kept on purpose:
rectangles from half-to-even rounded landmark extents, expanded with floor divisions on floats,
drawn at the image resolution, shrunk to a 64x64 grid (cv2 bilinear), Gaussian-blurred and
min-max stretched to uint8; the background map truncates, the face map saturates; pyramids are
PIL bilinear resizes of the 64x64 maps. Only the landmark source is pluggable.

`img_size` follows the authors' config: an `(a, b)` pair that torchvision reads as (height, width)
(docs/authors_behaviours.md#b29), so outputs are `[3, a, b]` and pyramid level i is `(a // 8 // 2**i)` squared. An int n
means (n, n).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np
import torch
from PIL import Image

log = logging.getLogger("EmoCAST")

#: mediapipe face-mesh topology indices of the face silhouette (36 points, forehead to chin).
SILHOUETTE_IDS = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288,
                  397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
                  172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
#: mediapipe face-mesh topology indices of the outer lip contour (20 points).
LIP_IDS = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
           146, 91, 181, 84, 17, 314, 405, 321, 375)
FACE_EXPAND_RATIO = 1.2   # config face_expand_ratio
LIP_EXPAND_RATIO = 2.0    # get_lip_mask default
GRID = 64                 # every blurred map is 64x64, whatever the image size
FACE_BLUR = 51
LIP_BLUR = 31
LEVELS = 4                # pyramid levels: img/8, /16, /32, /64

Extent = tuple  # (min_x, max_x, min_y, max_y) floats, already rounded half-to-even
ImgSize = Union[int, tuple, list]


def hw(img_size: ImgSize) -> tuple[int, int]:
    """(height, width) of the model input as torchvision's Resize reads `img_size`."""
    if isinstance(img_size, (int, np.integer)):
        return int(img_size), int(img_size)
    return int(img_size[0]), int(img_size[1])


def extent(points: np.ndarray, ids=None) -> Extent:
    """Rounded (half to even) min/max of the chosen landmarks, as the authors take them."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    if ids is not None:
        pts = pts[list(ids)]
    lo, hi = np.round(pts.min(0)), np.round(pts.max(0))
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def expand_region(ext: Extent, width: int, height: int, ratio: float) -> tuple[int, int, int, int]:
    """Grow an extent about its centre by `ratio`, shift it back into the image; (x0, x1, y0, y1).

    Floor divisions on floats and a final half-to-even rounding, as the authors do. A box larger
    than the image ends with a negative start, which numpy slicing then reads from the end: kept.
    """
    def axis(lo, hi, size):
        mid, half = (hi + lo) // 2, ((hi - lo) * ratio) // 2
        lo, hi = mid - half, mid + half
        if lo < 0:
            hi, lo = hi - lo, 0
        if hi > size:
            lo, hi = lo - (hi - size), size
        return round(lo), round(hi)

    x0, x1 = axis(ext[0], ext[1], width)
    y0, y1 = axis(ext[2], ext[3], height)
    return x0, x1, y0, y1


def rectangle(box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """uint8 [height, width] map with 255 in [y0:y1, x0:x1] (numpy slice semantics)."""
    x0, x1, y0, y1 = box
    if x0 < 0 or y0 < 0:
        log.warning("Mask rectangle %s is larger than the %dx%d image; reproducing the authors' "
                    "slicing (a negative start counts from the end).", box, width, height)
    out = np.zeros((height, width), np.uint8)
    out[y0:y1, x0:x1] = 255
    return out


def blur(mask: np.ndarray, kernel: int) -> np.ndarray:
    """64x64 cv2 bilinear resize, Gaussian blur (sigma from the kernel), min-max to uint8."""
    small = cv2.resize(mask, (GRID, GRID))
    return cv2.normalize(cv2.GaussianBlur(small, (kernel, kernel), 0), None, 0, 255, cv2.NORM_MINMAX)


@dataclass(frozen=True)
class MaskMaps:
    """The authors' intermediate images (their cache PNGs), all uint8.

    face_box / lip_box: (x0, x1, y0, y1) rectangles, exclusive end.
    face_mask / lip_mask: [h, w] rectangles at the image resolution.
    face_blur, sep_lip, sep_background, sep_face: [64, 64] blurred maps.
    """

    face_box: tuple[int, int, int, int]
    lip_box: tuple[int, int, int, int]
    face_mask: np.ndarray
    lip_mask: np.ndarray
    face_blur: np.ndarray
    sep_lip: np.ndarray
    sep_background: np.ndarray
    sep_face: np.ndarray


def mask_maps_from_extents(face: Extent, lip: Extent, width: int, height: int,
                           face_expand_ratio: float = FACE_EXPAND_RATIO,
                           lip_expand_ratio: float = LIP_EXPAND_RATIO) -> MaskMaps:
    """Masks from face / lip extents in pixels of a `width` x `height` image."""
    face_box = expand_region(face, width, height, face_expand_ratio)
    lip_box = expand_region(lip, width, height, lip_expand_ratio)
    face_mask, lip_mask = rectangle(face_box, width, height), rectangle(lip_box, width, height)
    face_blur, sep_lip = blur(face_mask, FACE_BLUR), blur(lip_mask, LIP_BLUR)
    background = ((1.0 - face_blur / 255.0) * 255).astype(np.uint8)  # truncation, as theirs
    return MaskMaps(face_box, lip_box, face_mask, lip_mask, face_blur, sep_lip, background,
                    cv2.subtract(face_blur, sep_lip))


def mask_maps(landmarks: np.ndarray, width: int, height: int,
              face_expand_ratio: float = FACE_EXPAND_RATIO,
              lip_expand_ratio: float = LIP_EXPAND_RATIO) -> MaskMaps:
    """Masks from 478 mediapipe landmarks in pixels ([478, 2+], x*width, y*height as float64)."""
    return mask_maps_from_extents(extent(landmarks, SILHOUETTE_IDS), extent(landmarks, LIP_IDS),
                                  width, height, face_expand_ratio, lip_expand_ratio)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision ToTensor: uint8 HWC -> float32 CHW / 255."""
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float().div(255)


def _resize(img: Image.Image, img_size: ImgSize) -> Image.Image:
    h, w = hw(img_size)
    return img.resize((w, h), Image.BILINEAR)  # returns a copy when the size already matches


def pixel_values(image: Image.Image, img_size: ImgSize) -> torch.Tensor:
    """[3, H, W] float32 in [-1, 1]: PIL bilinear resize, /255, (x - 0.5) / 0.5 (docs/authors_behaviours.md#b29)."""
    return (_to_tensor(_resize(image.convert("RGB"), img_size)) - 0.5) / 0.5


def face_region(face_mask: np.ndarray, img_size: ImgSize) -> torch.Tensor:
    """The face rectangle as the FaceLocator input: RGB, resized to img_size, /255 -> [3, H, W]."""
    return _to_tensor(_resize(Image.fromarray(face_mask, "L").convert("RGB"), img_size))


def pyramid(grid_map: np.ndarray, img_size: ImgSize) -> list[torch.Tensor]:
    """A 64x64 map at the 4 attention resolutions: PIL bilinear squares, /255, flat [N] each."""
    side = hw(img_size)[0]
    img = Image.fromarray(grid_map, "L")
    return [_to_tensor(img.resize((n, n), Image.BILINEAR)).flatten()
            for n in (side // 8 // 2 ** i for i in range(LEVELS))]


def mask_pyramids(maps: MaskMaps, img_size: ImgSize) -> dict[str, list[torch.Tensor]]:
    """{"full": background, "face": face without lips, "lip": lips}, FaceConditioning's layout."""
    return {"full": pyramid(maps.sep_background, img_size), "face": pyramid(maps.sep_face, img_size),
            "lip": pyramid(maps.sep_lip, img_size)}
