"""EmoCAST: emotional talking portraits via emotive text description (arXiv 2508.20615).

The library half of the ComfyUI-EmoCAST pack: models, pipeline and preprocessing in plain PyTorch.
It never imports ComfyUI; `nodes/` adapts it to the host and `python -m emocast` runs it alone.
"""

__version__ = "0.1.0"
