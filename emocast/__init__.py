"""EmoCAST: emotional talking portraits via emotive text description (arXiv 2508.20615).

The library half of the ComfyUI-EmoCAST pack: models, pipeline and preprocessing in plain PyTorch.
It never imports ComfyUI; `nodes/` adapts it to the host and `python -m emocast` runs it alone.
"""

__version__ = "0.1.0"

import json as _json
from pathlib import Path as _Path

#: Folder of the configs the package ships (SD1.5 UNet, sd-vae-ft-mse, CLIP ViT-L/14 text, wav2vec2-base-960h).
CONFIGS = _Path(__file__).resolve().parent / "configs"


def bundled_config(name: str) -> dict:
    """A config shipped with the package, e.g. bundled_config("sd15_unet_config.json")."""
    return _json.loads((CONFIGS / name).read_text())
