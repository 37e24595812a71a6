"""Face landmarks for the masks: mediapipe's 478-point mesh (what the authors use) or a fallback.

Backends, best first:
* `MediapipeTasksLandmarker`: mediapipe's Tasks FaceLandmarker (mediapipe >= 0.10, incl. 1.x) from
  a local `.task` file; the authors' detector (docs/authors_behaviours.md#b26).
* `MediapipeLegacyLandmarker`: the legacy face mesh with iris refinement (478 points, models inside
  the wheel; only mediapipe <= 0.10.21 has it). 0.10.21 gives the authors' mesh on our test photo.
* `Insightface106Landmarker`: insightface's 2d106det from the same pack as the detector, when
  mediapipe is not installed. Its face rectangle differs from the authors' (see `FOREHEAD_RATIO`).
"""
from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from ..errors import InputError, MissingDependencyError, MissingModelError
from .masks import LIP_IDS, SILHOUETTE_IDS, extent

log = logging.getLogger("EmoCAST")

TASK_URL = ("https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/"
            "float16/1/face_landmarker.task")
TASK_FILES = ("face_landmarker.task", "face_landmarker_v2_with_blendshapes.task")
MESH, IF106 = "mediapipe_478", "insightface_106"

#: insightface 2d106 topology: face contour, both eyebrows, mouth (outer + inner lips).
CONTOUR_106 = tuple(range(0, 33))
BROWS_106 = tuple(range(43, 52)) + tuple(range(97, 106))
MOUTH_106 = tuple(range(52, 72))
#: 2d106 stops at the brows; mediapipe's silhouette reaches the upper forehead. The top is moved up
#: by this fraction of the brow-to-chin height (0.17 on the mediapipe mesh of our test portrait).
FOREHEAD_RATIO = 0.17


@dataclass(frozen=True)
class Landmarks:
    """Landmarks of one face in pixels of the image they were found in ([N, 2] float64)."""

    points: np.ndarray
    topology: str

    def extents(self):
        """(face, lip) extents `(min_x, max_x, min_y, max_y)`, rounded half to even like the authors."""
        if self.topology == MESH:
            return extent(self.points, SILHOUETTE_IDS), extent(self.points, LIP_IDS)
        face = self.points[list(CONTOUR_106 + BROWS_106)]
        brow_top, chin = self.points[list(BROWS_106), 1].min(), self.points[list(CONTOUR_106), 1].max()
        top = [[face[:, 0].mean(), brow_top - FOREHEAD_RATIO * (chin - brow_top)]]
        return extent(np.concatenate([face, top])), extent(self.points, MOUTH_106)


class Landmarker(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> Optional[Landmarks]:
        """Landmarks of the main face in a [h, w, 3] uint8 RGB image, or None if none is found."""


def _mediapipe():
    try:
        import mediapipe as mp
    except ImportError as e:
        raise MissingDependencyError(
            f"mediapipe is not installed ({e}); it finds the 478 face landmarks the masks are made from.",
            hint="pip install mediapipe  (then give the face_landmarker.task file), or pip install "
                 "mediapipe==0.10.21 on Python <= 3.12 for the built-in face mesh; or use the "
                 "insightface landmarker.") from e
    return mp


def _mesh(normalised, width: int, height: int) -> Landmarks:
    """mediapipe's normalised landmarks -> pixels, as the authors: float64(x) * w, float64(y) * h."""
    pts = np.array([[p.x, p.y] for p in normalised], dtype=np.float64)
    return Landmarks(pts * [width, height], MESH)


def find_task_file(path) -> Path:
    """A `.task` file, or the first known one inside a folder; MissingModelError names both."""
    p = Path(path).expanduser()
    looked = [p] if p.suffix == ".task" else [p / n for n in TASK_FILES]
    for cand in looked:
        if cand.is_file():
            return cand
    raise MissingModelError(f"mediapipe face landmarker model not found; looked for {', '.join(map(str, looked))}.",
                            hint=f"Download {TASK_URL} and put it there (ComfyUI: models/mediapipe/).")


class _Closing:
    """Closes its mediapipe graph with `close()`, `with`, or at exit (while modules still exist;
    mediapipe 1.x's own `__del__` fails at interpreter shutdown)."""

    def _own(self, model):
        self._model, self._finalizer = model, weakref.finalize(self, model.close)

    def close(self):
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class MediapipeTasksLandmarker(_Closing):
    """mediapipe Tasks FaceLandmarker (one face, image mode) from a local `.task` file."""

    name = "mediapipe tasks"

    def __init__(self, task_file):
        mp = _mediapipe()
        self.task_file = find_task_file(task_file)
        vision = mp.tasks.vision
        options = vision.FaceLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=str(self.task_file)),
            running_mode=vision.RunningMode.IMAGE, num_faces=1)
        self._mp = mp
        self._own(vision.FaceLandmarker.create_from_options(options))

    def detect(self, rgb: np.ndarray) -> Optional[Landmarks]:
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb, np.uint8))
        faces = self._model.detect(image).face_landmarks
        return _mesh(faces[0], rgb.shape[1], rgb.shape[0]) if faces else None


class MediapipeLegacyLandmarker(_Closing):
    """mediapipe's legacy face mesh with iris refinement (478 points; mediapipe <= 0.10.21)."""

    name = "mediapipe face mesh"

    def __init__(self, min_confidence: float = 0.5):
        mp = _mediapipe()
        if not hasattr(mp, "solutions"):
            raise MissingDependencyError(
                f"mediapipe {getattr(mp, '__version__', '?')} has no legacy face mesh (mediapipe.solutions).",
                hint=f"Give the face_landmarker.task file ({TASK_URL}) to use the Tasks landmarker, or "
                     "pip install mediapipe==0.10.21 (Python <= 3.12, numpy < 2).")
        self._own(mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=min_confidence))

    def detect(self, rgb: np.ndarray) -> Optional[Landmarks]:
        found = self._model.process(np.ascontiguousarray(rgb, np.uint8)).multi_face_landmarks
        return _mesh(found[0].landmark, rgb.shape[1], rgb.shape[0]) if found else None


class Insightface106Landmarker(_Closing):
    """insightface's 2d106det (from the analyser's pack) on the largest face found."""

    name = "insightface 2d106"

    def __init__(self, analyser):
        if "landmark_2d_106" not in analyser.app.models:
            raise MissingModelError(f"the insightface pack {analyser.pack_dir} has no 2d106det model.",
                                    hint="Use antelopev2 or buffalo_l (both include 2d106det.onnx), or mediapipe.")
        self.analyser = analyser
        self._finalizer = lambda: None  # the analyser belongs to the caller

    def detect(self, rgb: np.ndarray) -> Optional[Landmarks]:
        faces = [f for f in self.analyser.detect(rgb) if f.landmarks_106 is not None]
        return Landmarks(np.asarray(faces[0].landmarks_106, np.float64), IF106) if faces else None


def load_landmarker(backend: str = "auto", task_file=None, analyser=None) -> Landmarker:
    """A landmarker by name: "mediapipe tasks", "mediapipe face mesh", "insightface 2d106" or "auto".

    auto: the Tasks model when `task_file` is given and mediapipe is installed, else the legacy face
    mesh when this mediapipe has it, else insightface 2d106 (with a warning: its masks are not the
    authors').
    """
    if backend == MediapipeTasksLandmarker.name:
        if task_file is None:
            raise InputError("the mediapipe tasks landmarker needs its .task file; none given.",
                             hint=f"Download {TASK_URL}.")
        return MediapipeTasksLandmarker(task_file)
    if backend == "auto" and task_file is not None:
        try:
            return MediapipeTasksLandmarker(task_file)
        except MissingDependencyError:  # a .task file but no mediapipe: go on down the list (it warns)
            pass
    if backend == MediapipeLegacyLandmarker.name:
        return MediapipeLegacyLandmarker()
    if backend == Insightface106Landmarker.name:
        if analyser is None:
            raise InputError("the insightface 2d106 landmarker needs the face analyser; none given.")
        return Insightface106Landmarker(analyser)
    if backend != "auto":
        raise InputError(f"unknown landmark backend {backend!r}.",
                         hint='Use "auto", "mediapipe tasks", "mediapipe face mesh" or "insightface 2d106".')
    try:
        return MediapipeLegacyLandmarker()
    except MissingDependencyError as e:
        if analyser is None:
            raise
        log.warning("No mediapipe face mesh (%s); using insightface 2d106 landmarks, whose face mask "
                    "only approximates the authors'. %s", e.message, e.hint)
        return Insightface106Landmarker(analyser)
