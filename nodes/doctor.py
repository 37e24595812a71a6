"""EmoCAST Doctor: `python -m emocast doctor` as a node, over ComfyUI's own model folders."""
from __future__ import annotations

import logging

from . import host
from .types import LOADERS, LOGGER

log = logging.getLogger(LOGGER)


class Doctor:
    DESCRIPTION = ("Checks what an EmoCAST run needs, without loading or downloading anything: torch and the GPU "
                   "memory, onnxruntime and its providers, insightface, mediapipe and the landmarker auto would use, "
                   "PyAV's h264 / AAC encoders, and every model file in ComfyUI's folders (where, size, layout), "
                   "with the fix for each missing one. Connect the report to a text display node, or read the "
                   "console.")
    CATEGORY = LOADERS
    FUNCTION = "check"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("One line per check (ok / warn / MISSING / BAD), each problem followed by its fix.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls):
        return float("nan")  # files may have appeared since the last run: check every time

    def check(self):
        text = host.doctor_report()
        log.info("%s", text)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"EmoCAST_Doctor": Doctor}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_Doctor": "EmoCAST Doctor"}
