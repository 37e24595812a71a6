"""EmoCAST Paste Back: the generated square crop back into the user's full image."""
from __future__ import annotations

from ..emocast.errors import InputError
from . import host
from .types import FACE, IMAGE, MASK, POSTPROCESS


class PasteBack:
    DESCRIPTION = ("Puts the generated frames back where the face crop came from in the original portrait, "
                   "blended over a feathered edge, so the video keeps the photo's full size and framing. mask "
                   "shows where (1 = generated) for your own compositing.")
    CATEGORY = POSTPROCESS
    FUNCTION = "paste"
    RETURN_TYPES = (IMAGE, MASK)
    RETURN_NAMES = ("frames", "mask")
    OUTPUT_TOOLTIPS = ("The video at the portrait's full resolution.",
                       "Where the generated crop was blended in (1 inside, feathered to 0 at its edges).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": (IMAGE, {"tooltip": "Frames from EmoCAST Sample (square, at the face resolution)."}),
            "face": (FACE, {"tooltip": "The same EmoCAST Encode Face output the frames were generated from."}),
        }}

    def paste(self, frames, face):
        from ..emocast.preprocess.crop import paste_back

        if face.crop is None or face.source is None:
            raise InputError("this face conditioning has no crop box or source image to paste back into.",
                             hint="Connect the face output of EmoCAST Encode Face.")
        full, mask = paste_back(frames, face.crop, face.source)
        device = host.intermediate_device()
        return (full.to(device), mask[None].to(device))


NODE_CLASS_MAPPINGS = {"EmoCAST_PasteBack": PasteBack}
NODE_DISPLAY_NAME_MAPPINGS = {"EmoCAST_PasteBack": "EmoCAST Paste Back"}
