"""The authors' sampler: DDIM, linear betas rescaled to zero terminal SNR, trailing timesteps,
v-prediction, eta 0 (docs/authors_behaviours.md#b7). Stateless: every step is a pure function of (t, steps).

Note the betas are *linear* (0.00085 .. 0.012): the authors' script asks for "scaled_linear" only
after building the scheduler, so their sampler never uses it.
"""
from __future__ import annotations

import numpy as np
import torch

TRAIN_STEPS = 1000


def zero_snr_alphas_cumprod(beta_start: float = 0.00085, beta_end: float = 0.012,
                            train_steps: int = TRAIN_STEPS) -> torch.Tensor:
    """Cumulative alphas of linear betas rescaled so the last one is exactly 0 (float32)."""
    betas = torch.linspace(beta_start, beta_end, train_steps, dtype=torch.float32)
    abar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt -= last
    abar_sqrt *= first / (first - last)
    abar = abar_sqrt**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return torch.cumprod(alphas, dim=0)  # re-derived from the rescaled betas, as diffusers does


class DDIMZeroSNR:
    """DDIM for v-prediction models trained with zero-terminal-SNR betas."""

    def __init__(self):
        self.alphas_cumprod = zero_snr_alphas_cumprod()

    @staticmethod
    def timesteps(steps: int) -> list[int]:
        """Trailing spacing: 4 steps -> [999, 749, 499, 249]."""
        return (np.round(np.arange(TRAIN_STEPS, 0, -TRAIN_STEPS / steps)).astype(np.int64) - 1).tolist()

    def step(self, v: torch.Tensor, t: int, sample: torch.Tensor, steps: int) -> torch.Tensor:
        """x_t -> x_{t - 1000 // steps} from the model's v-prediction (the last step lands on alpha 1)."""
        prev = t - TRAIN_STEPS // steps
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
        b_t = 1 - a_t
        x0 = a_t**0.5 * sample - b_t**0.5 * v
        eps = a_t**0.5 * v + b_t**0.5 * sample
        return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
