"""From a user's photo to `FaceConditioning`: detect, pick, crop, embed, landmark, mask.

Detection and the identity embedding come from insightface's FaceAnalysis on a local pack folder
(antelopev2 is what the authors trained with: its glintr100 embedding feeds the image projection;
buffalo_l loads too but its w600k_r50 embedding lives in another space). Works with insightface
0.7.x and 2.x: both accept the pack folder's absolute path as `name`.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from ..conditioning import CropBox, FaceConditioning
from ..errors import InputError, MissingDependencyError, MissingModelError
from . import crop as cropping
from . import masks
from .landmarks import Landmarker

log = logging.getLogger("EmoCAST")

PACKS = ("antelopev2", "buffalo_l")
PACK_HINT = ("Download antelopev2 (1k3d68, 2d106det, genderage, glintr100, scrfd_10g_bnkps .onnx) from the "
             "insightface model zoo (github.com/deepinsight/insightface, python-package README) and unzip it "
             "to models/insightface/models/antelopev2/.")
NO_FACE_ERROR, NO_FACE_WHOLE_IMAGE = "error", "whole image"
MIN_FACE_PX = 64
CROP_MARGIN = 0.6   # crop side = 2.2 x the face box's longest side: head and shoulders
EMBEDDING_DIM = 512


@dataclass(frozen=True)
class DetectedFace:
    """One insightface detection, in pixels of the analysed image.

    bbox (x0, y0, x1, y1); kps [5, 2] or None; embedding [512] float32, not normalised (None if the
    pack has no recogniser); landmarks_106 [106, 2] or None.
    """

    bbox: tuple[float, float, float, float]
    score: float
    kps: Optional[np.ndarray] = None
    embedding: Optional[np.ndarray] = None
    landmarks_106: Optional[np.ndarray] = None

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]


def _has_onnx(d: Path) -> bool:
    return d.is_dir() and any(d.glob("*.onnx"))


def find_pack(path, pack: Optional[str] = None) -> Path:
    """The folder with a pack's .onnx files: `<path>[/models]/<pack>[/<pack>]`, else `path` itself.

    `path` may be the pack, `models/insightface/models` or `models/insightface` (ComfyUI layout);
    without `pack`, antelopev2 then buffalo_l are tried.
    """
    root = Path(path).expanduser()
    looked = [cand for name in ([pack] if pack else PACKS) for base in (root, root / "models")
              for cand in (base / name, base / name / name)]  # some zips nest the folder twice
    for cand in looked + ([root] if pack is None else []):
        if _has_onnx(cand):
            return cand
    others = [d for base in (root, root / "models") if base.is_dir() for d in sorted(base.iterdir()) if _has_onnx(d)]
    if pack is None and len(others) == 1:  # one pack under another name: use it
        return others[0]
    raise MissingModelError(f"no insightface pack ({pack or ' or '.join(PACKS)}) with .onnx files under {root}; "
                            f"looked in {', '.join(map(str, looked))}.", hint=PACK_HINT)


def onnx_providers(device=None) -> tuple[list, int]:
    """onnxruntime providers and insightface's ctx_id for a torch device.

    None / the CPU: the CPU provider. insightface runs once per image, so a GPU buys little, and a
    CUDA session keeps a memory pool of its own that ComfyUI can neither see nor free. A CUDA
    device: its CUDA provider with that device's index (cuda:1 runs on GPU 1), the CPU behind it;
    the CPU alone, with a warning, when this onnxruntime has no CUDA provider.
    """
    import onnxruntime

    device = None if device is None else torch.device(device)
    if device is None or device.type != "cuda":
        return ["CPUExecutionProvider"], -1
    index = device.index if device.index is not None else (torch.cuda.current_device()
                                                         if torch.cuda.is_available() else 0)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        log.warning("insightface on the CPU: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu "
                    "for %s).", device)
        return ["CPUExecutionProvider"], -1
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], index


class FaceAnalyser:
    """insightface FaceAnalysis over one local pack (detection, recognition, 2d106 landmarks).

    Runs on `device` (default: the CPU, see onnx_providers) unless `providers` are given.
    `release()` drops the onnxruntime sessions (a CUDA session's memory with them); the next use
    loads them again.
    """

    def __init__(self, path, pack: Optional[str] = None, providers=None, det_size: int = 640,
                 det_thresh: float = 0.5, device=None):
        try:
            import onnxruntime  # noqa: F401
            from insightface.app import FaceAnalysis  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(f"insightface is not installed ({e}); it finds the face and its identity.",
                                         hint="pip install insightface onnxruntime") from e
        self.pack_dir = find_pack(path, pack).resolve()
        if providers is None:
            providers, ctx_id = onnx_providers(device)
        else:
            ctx_id = (torch.device(device).index or 0) if device is not None else 0
        self.providers, self.ctx_id, self.det_size, self.det_thresh = list(providers), ctx_id, det_size, det_thresh
        self._app = self._load()
        if "recognition" not in self.app.models:
            raise MissingModelError(f"the insightface pack {self.pack_dir} has no recognition model.", hint=PACK_HINT)
        rec = Path(self.app.models["recognition"].model_file).name
        if rec == "w600k_r50.onnx":
            log.warning("insightface pack %s embeds faces with %s (buffalo_l); EmoCAST was trained on antelopev2's "
                        "glintr100 embeddings, so identity conditioning will be off. %s", self.pack_dir, rec, PACK_HINT)

    def _load(self):
        from insightface.app import FaceAnalysis

        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):  # 0.7.x prints every model it finds
                app = FaceAnalysis(name=str(self.pack_dir), root=str(self.pack_dir.parent.parent),
                                   allowed_modules=["detection", "recognition", "landmark_2d_106"],
                                   providers=self.providers)
                app.prepare(ctx_id=self.ctx_id, det_thresh=self.det_thresh, det_size=(self.det_size,) * 2)
        except AssertionError as e:  # insightface asserts that a detector was found
            raise MissingModelError(f"the insightface pack {self.pack_dir} has no face detector "
                                    f"(files: {sorted(p.name for p in self.pack_dir.glob('*.onnx'))}).",
                                    hint=PACK_HINT) from e
        log.debug("insightface: %s", out.getvalue().strip())
        return app

    @property
    def app(self):
        if self._app is None:
            self._app = self._load()
        return self._app

    def release(self) -> None:
        """Drop the onnxruntime sessions and their memory (loaded again when next needed)."""
        self._app = None

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """All faces in a [h, w, 3] uint8 RGB image, largest (box area) first."""
        found = self.app.get(np.ascontiguousarray(rgb[:, :, ::-1]))  # insightface takes BGR
        faces = [DetectedFace(tuple(float(v) for v in f.bbox[:4]), float(f.det_score), f.kps,
                              None if f.embedding is None else np.asarray(f.embedding, np.float32),
                              f.get("landmark_2d_106")) for f in found]
        return sorted(faces, key=lambda f: -f.width * f.height)


def choose_face(faces: list[DetectedFace], face_index: Optional[int] = None,
                min_face_px: int = MIN_FACE_PX) -> DetectedFace:
    """The largest face, or the `face_index`-th from the left; errors for none / out of range / tiny."""
    if face_index is None:
        face = faces[0]
        if len(faces) > 1:
            order = sorted(faces, key=lambda f: f.bbox[0]).index(face)
            log.warning("Found %d faces in the reference image; using the largest (face_index %d, counting "
                        "from the left from 0). Set face_index to choose another.", len(faces), order)
    else:
        if not 0 <= face_index < len(faces):
            raise InputError(f"face_index {face_index} is out of range: found {len(faces)} face(s).",
                             hint=f"Use 0 to {len(faces) - 1} (left to right), or leave it empty for the largest.")
        face = sorted(faces, key=lambda f: f.bbox[0])[face_index]
    if min(face.width, face.height) < min_face_px:
        raise InputError(f"the face is too small to animate: {face.width:.0f}x{face.height:.0f} px, "
                         f"needs at least {min_face_px} px on its shorter side.",
                         hint="Use a larger or closer photo of the face (it is upscaled to the model size).")
    return face


def _embedding(value) -> torch.Tensor:
    if value is None:
        return torch.zeros(EMBEDDING_DIM)
    return torch.as_tensor(np.asarray(value, np.float32).reshape(-1))


def _check_face_mask_fits(face_ext, size: int, face_expand_ratio: float, crop_margin: Optional[float]) -> None:
    """InputError when the expanded face rectangle is larger than the crop.

    The authors' mask drawing then slices from a negative start, which numpy reads from the far
    end: the face mask becomes a strip along the crop's edge instead of the face (masks.rectangle).
    """
    x0, x1, y0, y1 = masks.expand_region(face_ext, size, size, face_expand_ratio)
    if min(x0, y0) >= 0:
        return
    side = max(x1 - x0, y1 - y0)
    where = ("use a crop around the face (crop_margin 0.6) or" if crop_margin is None
             else f"raise crop_margin (now {crop_margin:g}) or")
    raise InputError(f"the face mask ({face_expand_ratio:g} x the face, {side} px) is larger than the {size} px crop, "
                     "so it cannot be drawn around the face.",
                     hint=f"The face fills the crop: {where} lower face_expand_ratio (1.2 is the authors').")


def prepare_face(image, analyser: FaceAnalyser, landmarker: Landmarker, size: int = 512,
                 face_expand_ratio: float = masks.FACE_EXPAND_RATIO, crop_margin: Optional[float] = CROP_MARGIN,
                 face_index: Optional[int] = None, no_face: str = NO_FACE_ERROR,
                 min_face_px: int = MIN_FACE_PX) -> FaceConditioning:
    """Everything the model takes from a portrait (PIL image, array or [1, h, w, 3] tensor, any mode).

    The face is detected in the full photo (identity embedding from there), a square is cropped
    around it (`crop_margin`; None: the whole image's centre square, the authors' framing for a
    square photo) and resized to `size`, then landmarks on the crop give the authors' masks.

    no_face="whole image" falls back like the authors: zero embedding and the centre square; its
    masks come from the landmarker when it still finds a face there, else the face rectangle is
    the whole crop and the lips a box in its lower middle (both logged).
    """
    if no_face not in (NO_FACE_ERROR, NO_FACE_WHOLE_IMAGE):
        raise InputError(f"no_face must be {NO_FACE_ERROR!r} or {NO_FACE_WHOLE_IMAGE!r}, got {no_face!r}.")
    cropping.check_model_size(size)
    source = cropping.to_rgb_float(image)
    h, w = source.shape[:2]
    faces = analyser.detect(cropping.to_uint8(source))
    centre = CropBox((w - min(w, h)) // 2, (h - min(w, h)) // 2, (w + min(w, h)) // 2, (h + min(w, h)) // 2, (w, h))
    if faces:
        face = choose_face(faces, face_index, min_face_px)
        box = centre if crop_margin is None else cropping.square_box(face.bbox, (w, h), crop_margin)
        embedding = _embedding(face.embedding)
    elif no_face == NO_FACE_WHOLE_IMAGE:
        log.warning("No face found in the %dx%d reference image; using its centre square and a zero identity "
                    "embedding (no_face='whole image').", w, h)
        box, embedding = centre, _embedding(None)
    else:
        raise InputError(f"no face found in the {w}x{h} reference image (insightface {analyser.pack_dir.name}).",
                         hint=f"Use a frontal, well-lit portrait, or set no_face={NO_FACE_WHOLE_IMAGE!r}.")
    crop_u8 = cropping.to_uint8(cropping.crop(source, box, size))
    found = landmarker.detect(crop_u8)
    if found is not None:
        face_ext, lip_ext = found.extents()
    elif faces:
        raise InputError(f"the landmarker ({landmarker.name}) found no face in the {size}x{size} crop "
                         f"around the detected face.", hint="Use a more frontal photo or another landmarker.")
    else:
        log.warning("No landmarks either; face mask = the whole crop, lip mask = its lower middle.")
        q = size / 2 / face_expand_ratio  # expands back to the whole crop
        face_ext, lip_ext = (size / 2 - q, size / 2 + q) * 2, (0.4 * size, 0.6 * size, 0.68 * size, 0.76 * size)
    _check_face_mask_fits(face_ext, size, face_expand_ratio, crop_margin)
    maps = masks.mask_maps_from_extents(face_ext, lip_ext, size, size, face_expand_ratio)
    return FaceConditioning(pixels=masks.pixel_values(Image.fromarray(crop_u8), size),
                            face_region=masks.face_region(maps.face_mask, size), embedding=embedding,
                            masks=masks.mask_pyramids(maps, size), crop=box, source=torch.from_numpy(source))
