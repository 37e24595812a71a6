"""Step solvers for the authors' schedule (linear betas rescaled to zero terminal SNR, v-prediction,
trailing timesteps): their DDIM, and the multistep DPM-Solver++ (2M) / UniPC (2nd order) from diffusers.

A multistep solver keeps the model outputs of its previous steps, so every clip gets a fresh one
(`make_solver` per clip). At zero terminal SNR the first step starts at alpha_bar = 0 (sigma infinite):
diffusers clamps that alpha_bar to 2**-24 for these solvers, and the last step is first order to a
zero sigma (`final_sigmas_type="zero"`; high orders are unstable at the end of a short schedule).
DDIM stays the authors' exact update (scheduler.DDIMZeroSNR).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..errors import ConfigError
from .scheduler import TRAIN_STEPS, DDIMZeroSNR

#: Sampler names accepted by SamplingSettings / the CLI / the node.
SAMPLERS = ("ddim", "dpm++2m", "unipc")

_SCHEDULE = dict(num_train_timesteps=TRAIN_STEPS, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                 prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                 solver_order=2, lower_order_final=True, final_sigmas_type="zero")


class DDIMSolver:
    """The authors' DDIM: stateless, bit-identical to their scheduler."""

    def __init__(self, steps: int, scheduler: Optional[DDIMZeroSNR] = None):
        self.steps = steps
        self.scheduler = scheduler or DDIMZeroSNR()
        self.timesteps = self.scheduler.timesteps(steps)

    def step(self, v: torch.Tensor, t: int, latents: torch.Tensor) -> torch.Tensor:
        return self.scheduler.step(v, t, latents, self.steps)


class DiffusersSolver:
    """A diffusers multistep scheduler configured for the authors' schedule; one instance per clip."""

    def __init__(self, name: str, steps: int):
        import diffusers

        if name == "dpm++2m":
            self.scheduler = diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", **_SCHEDULE)
        else:
            self.scheduler = diffusers.UniPCMultistepScheduler(**_SCHEDULE)
        self.scheduler.set_timesteps(steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]

    def step(self, v: torch.Tensor, t: int, latents: torch.Tensor) -> torch.Tensor:
        return self.scheduler.step(v, t, latents).prev_sample


def make_solver(name: str, steps: int, ddim: Optional[DDIMZeroSNR] = None):
    """A fresh solver for one clip: `.timesteps` (list of int) and `.step(v, t, latents)`."""
    if name == "ddim":
        return DDIMSolver(steps, ddim)
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}.", hint=f"Use one of {', '.join(SAMPLERS)}.")
    return DiffusersSolver(name, steps)
