"""In-the-wild photos: any mode -> RGB float, a square crop around the face, and paste-back.

The model sees a square portrait at its own resolution; users bring any size, aspect ratio and
framing. We crop a square around the face (shifted to stay inside the photo when it fits, padded
by edge replication only where it cannot), remember where it came from (`CropBox`), and paste the
generated frames back with a feathered mask so the output keeps the user's framing.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from ..conditioning import CropBox
from ..errors import InputError

#: Background that transparent pixels are composited over (RGBA, LA, palette with transparency).
ALPHA_BACKGROUND = (1.0, 1.0, 1.0)
_MAX_SIDE = 16384


def _image_error(found: str) -> InputError:
    return InputError(f"the reference image cannot be read as a picture: {found}.",
                      hint="Give an RGB / RGBA / greyscale image (PIL, [h, w, c] array or "
                           "ComfyUI IMAGE tensor) at least 16 px on each side.")


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise _image_error(f"array of shape {tuple(arr.shape)}, expected [h, w], [h, w, 1-4] or [1, h, w, c]")
    if arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255
    elif arr.dtype in (np.uint16, np.int32, np.uint32):  # 16-bit PNG / TIFF (PIL "I;16", "I")
        x = np.clip(arr.astype(np.float32) / 65535, 0, 1)
    elif arr.dtype == np.bool_:
        x = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise _image_error("float pixels with NaN or infinity")
        x = np.clip(arr.astype(np.float32), 0, 1)
    else:
        raise _image_error(f"pixel type {arr.dtype}")
    rgb = np.repeat(x[:, :, :1], 3, axis=2) if x.shape[2] < 3 else x[:, :, :3]
    if x.shape[2] in (2, 4):  # alpha: composite over the documented background (opaque: unchanged)
        a = x[:, :, -1:]
        rgb = rgb * a + np.asarray(ALPHA_BACKGROUND, np.float32) * (1 - a)
    return np.ascontiguousarray(rgb, np.float32)


def open_image(path) -> Image.Image:
    """A picture file, decoded now, so a damaged or non-image file fails here with its name, not later."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}", hint="Check the path.")
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as e:
        raise InputError(f"the image {path.name} is too large to open safely ({e}).",
                         hint="Downscale it (a few megapixels is plenty: the face is cropped to 512 px).") from None
    except (OSError, ValueError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        raise InputError(f"the image {path.name} cannot be read as a picture ({str(e).split(chr(10))[0][:120]}).",
                         hint="Give a PNG, JPEG or WebP photo (re-save it from an image editor if it is damaged).") \
            from None
    w, h = image.size
    if min(w, h) < 16 or max(w, h) > _MAX_SIDE:
        raise _image_error(f"{path.name} is {w}x{h} px, expected 16 to {_MAX_SIDE} px per side")
    return image


def check_model_size(size: int) -> None:
    """The model resolution: a multiple of 64 (the UNet halves the 1/8 latent three times)."""
    if size < 64 or size % 64:
        raise InputError(f"model size must be a multiple of 64, got {size}.", hint="EmoCAST was trained at 512.")


def to_rgb_float(image) -> np.ndarray:
    """[h, w, 3] float32 in [0, 1] from a PIL image (any mode), a numpy array or a tensor.

    8-bit values are /255, 16-bit /65535, float arrays are taken as 0..1 (ComfyUI IMAGE) and
    clipped; alpha is composited over `ALPHA_BACKGROUND` (an opaque image is unchanged).
    """
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in image.info:
            image = image.convert("RGBA")
        elif mode.startswith("I"):  # 16-bit greyscale ("I;16*", or "I" from older Pillow)
            return to_rgb_float(np.clip(np.asarray(image), 0, 65535).astype(np.uint16))
        elif mode == "F":  # 32-bit float greyscale, taken as 0..255
            return to_rgb_float(np.asarray(image, np.float32) / 255)
        elif mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGB")
        out = _from_array(np.asarray(image))
    elif isinstance(image, torch.Tensor):
        out = _from_array(image.detach().cpu().float().numpy())
    elif isinstance(image, np.ndarray):
        out = _from_array(image)
    else:
        raise _image_error(f"object of type {type(image).__name__}")
    h, w = out.shape[:2]
    if min(h, w) < 16 or max(h, w) > _MAX_SIDE:
        raise _image_error(f"{w}x{h} px, expected 16 to {_MAX_SIDE} px per side")
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float 0..1 -> uint8, rounded (exact inverse of /255 for 8-bit sources)."""
    return np.clip(np.rint(np.asarray(image, np.float32) * 255), 0, 255).astype(np.uint8)


def square_box(face_box, image_size: tuple[int, int], margin: float = 0.75,
               keep_inside: bool = True) -> CropBox:
    """Square around a face box `(x0, y0, x1, y1)`: side = longest face side * (1 + 2 * margin).

    Centred on the face; with `keep_inside` shifted to lie inside the image when it fits (no
    padding), else it reaches past the edges and `crop` pads.
    """
    if margin < 0:
        raise InputError(f"crop margin must be >= 0, got {margin}.", hint="0.75 keeps head and shoulders.")
    w, h = image_size
    fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
    side = max(1, int(round(max(fx1 - fx0, fy1 - fy0) * (1 + 2 * margin))))
    x0 = int(round((fx0 + fx1) / 2 - side / 2))
    y0 = int(round((fy0 + fy1) / 2 - side / 2))
    if keep_inside:
        x0 = min(max(x0, 0), w - side) if side <= w else x0
        y0 = min(max(y0, 0), h - side) if side <= h else y0
    return CropBox(x0, y0, x0 + side, y0 + side, (w, h))


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return np.clip(cv2.resize(img, (size, size), interpolation=interp), 0, 1)


def crop(image: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """The box's pixels ([h, w, 3] float image) as [size, size, 3]; outside the image: edge pixels."""
    h, w = image.shape[:2]
    pad = (max(0, -box.y0), max(0, box.y1 - h), max(0, -box.x0), max(0, box.x1 - w))
    region = image[max(box.y0, 0):min(box.y1, h), max(box.x0, 0):min(box.x1, w)]
    if any(pad):
        region = cv2.copyMakeBorder(region, *pad, cv2.BORDER_REPLICATE)
    return _resize(np.ascontiguousarray(region, np.float32), size)


def feather_mask(box: CropBox, feather: float = 0.06) -> np.ndarray:
    """[h, w] float32: 1 inside the box, ramping to 0 over `feather * side` px at its inner edges.

    Edges that lie on or past the image border need no blending and stay hard.
    """
    w, h = box.image_size
    ramp = max(1.0, feather * box.side)
    ys, xs = np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5

    def profile(coord, lo, hi, size):
        up = np.ones_like(coord) if lo <= 0 else np.clip((coord - lo) / ramp, 0, 1)
        down = np.ones_like(coord) if hi >= size else np.clip((hi - coord) / ramp, 0, 1)
        return up * down

    return np.outer(profile(ys, box.y0, box.y1, h), profile(xs, box.x0, box.x1, w)).astype(np.float32)


def paste_back(frames, box: CropBox, original, feather: float = 0.06) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames [F, S, S, 3] (0..1) back into the original [h, w, 3]: (frames [F, h, w, 3], mask [h, w]).

    Each frame is resized to the box, the part inside the image is blended over the original with
    `feather_mask`; the mask is returned too (ComfyUI MASK) for the user's own compositing.
    """
    frames = frames.detach().cpu().float().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames, np.float32)
    orig = original.detach().cpu().float().numpy() if isinstance(original, torch.Tensor) else np.asarray(original, np.float32)
    w, h = box.image_size
    if orig.shape[:2] != (h, w) or frames.ndim != 4 or frames.shape[1] != frames.shape[2]:
        raise InputError(f"paste-back got frames {tuple(frames.shape)} and image {tuple(orig.shape)} for a crop "
                         f"of a {w}x{h} image, expected [F, S, S, 3] and [{h}, {w}, 3].",
                         hint="Pass the original image the crop was made from.")
    mask = feather_mask(box, feather)
    ys, xs = slice(max(box.y0, 0), min(box.y1, h)), slice(max(box.x0, 0), min(box.x1, w))
    inner = (slice(ys.start - box.y0, ys.stop - box.y0), slice(xs.start - box.x0, xs.stop - box.x0))
    m = mask[ys, xs, None]
    out = np.repeat(orig[None], len(frames), axis=0)
    for i, frame in enumerate(frames):
        big = _resize(np.ascontiguousarray(frame), box.side)[inner]
        out[i, ys, xs] = orig[ys, xs] * (1 - m) + big * m
    return torch.from_numpy(out), torch.from_numpy(mask)
