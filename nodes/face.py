"""Face nodes: load the detector / landmarker, and turn the portrait into the model's face conditioning."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..emocast import model_files
from ..emocast.preprocess.face import CROP_MARGIN, NO_FACE_ERROR, NO_FACE_WHOLE_IMAGE
from ..emocast.preprocess.masks import FACE_EXPAND_RATIO
from . import host
from .types import CONDITIONING, FACE, FACE_ANALYSIS, IMAGE, LOADERS, LOGGER

log = logging.getLogger(LOGGER)

#: Preview tints (RGB) and their opacity: face mask blue, lip mask red.
FACE_TINT, LIP_TINT, TINT_ALPHA = (0.15, 0.45, 1.0), (1.0, 0.1, 0.1), 0.45


@dataclass(frozen=True)
class FaceAnalysis:
    """EMOCAST_FACE_ANALYSIS: insightface (detection + identity) and the landmarker for the masks."""

    analyser: object
    landmarker: object


class LoadFaceAnalysis:
    DESCRIPTION = ("Loads the face tools: an insightface pack (antelopev2, as the authors used: it finds the face "
                   "and embeds its identity) and a landmarker for the face and lip masks. mediapipe's 478-point "
                   "mesh is the authors' (a face_landmarker.task file in models/mediapipe, or mediapipe<=0.10.21's "
                   "built-in mesh); insightface 2d106 works without mediapipe but its masks only approximate theirs. "
                   "insightface runs on the CPU: it analyses one image per video, and a GPU session would keep "
                   "a memory pool of its own that ComfyUI cannot free.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (FACE_ANALYSIS,)
    RETURN_NAMES = ("face_analysis",)
    OUTPUT_TOOLTIPS = ("Face detector, identity embedder and landmarker for EmoCAST Encode Face.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "insightface": (host.insightface_packs(), {
                "tooltip": f"Pack folder in models/insightface/models. Source: {model_files.INSIGHTFACE.source}."}),
            "landmarker": (host.landmarker_choices(), {
                "default": host.LANDMARKER_AUTO,
                "tooltip": "auto: a .task file from models/mediapipe if there is one, else mediapipe's built-in face "
                           "mesh, else insightface 2d106 (with a warning). Or pick one; .task files are listed by "
                           f"name. Source of face_landmarker.task: {model_files.LANDMARKER.source}."}),
        }, "optional": host.download_input()}

    def load(self, insightface, landmarker, download_if_missing=False):
        from ..emocast.preprocess.face import FaceAnalyser
        from ..emocast.preprocess.landmarks import load_landmarker

        analyser = FaceAnalyser(host.resolve_pack(insightface, download_if_missing))
        if landmarker == host.LANDMARKER_AUTO:
            tasks = host.task_files()
            task = next((t for t in tasks if "face_landmarker" in t), tasks[0] if tasks else None)
            marker = load_landmarker("auto", task_file=host.resolve_task(task) if task else None, analyser=analyser)
        elif landmarker in (host.LANDMARKER_MESH, host.LANDMARKER_IF106):
            marker = load_landmarker(landmarker, analyser=analyser)
        else:
            marker = load_landmarker("mediapipe tasks", task_file=host.resolve_task(landmarker))
        log.info("EmoCAST face analysis: insightface %s, landmarks from %s.", insightface, marker.name)
        return (FaceAnalysis(analyser, marker),)


def mask_preview(face) -> torch.Tensor:
    """[1, S, S, 3] the model's crop with its face (blue) and lip (red) masks tinted, at mask resolution."""
    size = face.size
    image = (face.pixels.float() / 2 + 0.5).clamp(0, 1)
    for name, tint in (("face", FACE_TINT), ("lip", LIP_TINT)):
        level = face.masks[name][0]
        side = int(round(level.numel() ** 0.5))
        mask = torch.nn.functional.interpolate(level.float().reshape(1, 1, side, side), size=(size, size),
                                               mode="bilinear", align_corners=False)[0]
        image = image * (1 - TINT_ALPHA * mask) + TINT_ALPHA * mask * torch.tensor(tint).reshape(3, 1, 1)
    return image.permute(1, 2, 0)[None].contiguous()


class EncodeFace:
    DESCRIPTION = ("Finds the face in the portrait, crops a square around it at the model resolution, embeds the "
                   "identity and builds the face / lip masks. The crop is pasted back by EmoCAST Paste Back. "
                   "preview shows the crop with the masks tinted (face blue, lips red).")
    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = (FACE, IMAGE)
    RETURN_NAMES = ("face", "preview")
    OUTPUT_TOOLTIPS = ("Face conditioning for EmoCAST Sample and EmoCAST Paste Back.",
                       "The model's crop with the face (blue) and lip (red) masks tinted.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": (IMAGE, {"tooltip": "The portrait (any size; the first image of a batch is used)."}),
            "face_analysis": (FACE_ANALYSIS, {"tooltip": "From EmoCAST Load Face Analysis."}),
            "resolution": ("INT", {
                "default": 512, "min": 64, "max": 1024, "step": 64,
                "tooltip": "Side of the square the model generates, a multiple of 64. EmoCAST was trained at 512."}),
            "face_expand_ratio": ("FLOAT", {
                "default": FACE_EXPAND_RATIO, "min": 1.0, "max": 3.0, "step": 0.05,
                "tooltip": "How far the face mask extends beyond the landmarks (the authors use 1.2)."}),
            "crop_margin": ("FLOAT", {
                "default": CROP_MARGIN, "min": -1.0, "max": 3.0, "step": 0.05,
                "tooltip": "Space around the face in the crop, in face sizes on each side (0.6: head and "
                           "shoulders). -1: no face crop, the centre square of the whole image (the authors' "
                           "framing for square portraits)."}),
            "face_index": ("INT", {
                "default": -1, "min": -1, "max": 64,
                "tooltip": "Which face when there are several: -1 the largest, else 0, 1, ... counting from the left."}),
            "no_face": ([NO_FACE_ERROR, NO_FACE_WHOLE_IMAGE], {
                "default": NO_FACE_ERROR,
                "tooltip": "When no face is found: stop with an error, or use the centre square of the whole "
                           "image with no identity embedding (logged)."}),
        }}

    def encode(self, image, face_analysis, resolution, face_expand_ratio, crop_margin, face_index, no_face):
        from ..emocast.preprocess.face import prepare_face

        if image.shape[0] > 1:
            log.warning("EmoCAST Encode Face got %d images; using the first.", image.shape[0])
        face = prepare_face(image[:1], face_analysis.analyser, face_analysis.landmarker, size=resolution,
                            face_expand_ratio=face_expand_ratio, crop_margin=None if crop_margin < 0 else crop_margin,
                            face_index=None if face_index < 0 else face_index, no_face=no_face)
        return (face, mask_preview(face).to(host.intermediate_device()))


NODE_CLASS_MAPPINGS = {"EmoCAST_LoadFaceAnalysis": LoadFaceAnalysis, "EmoCAST_EncodeFace": EncodeFace}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_LoadFaceAnalysis": "EmoCAST Load Face Analysis",
                              "EmoCAST_EncodeFace": "EmoCAST Encode Face"}
