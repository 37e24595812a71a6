"""The networks (the EmoCAST Net and its parts, the VAE, CLIP text, wav2vec2), their loaders (one strict
state-dict matcher: loading.py), and the base of the loaded-model wrappers."""
from __future__ import annotations

import torch


class ModelWrapper:
    """Base of the library's wrappers of a loaded torch module `self.model` (VAE, CLIP text, wav2vec2)."""

    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype
