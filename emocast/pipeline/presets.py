"""Speed presets: named sets of the sampling speed knobs (SamplingSettings.sampler / steps /
cfg_window / reuse), chosen by measurement (README "Speed presets"; `python -m emocast compare-samplers`).

- exact:    the authors' sampling: DDIM, 40 steps, CFG at every step, no reuse (their frames).
- balanced: DPM-Solver++ 2M, fewer steps, CFG on the noisier part of the steps only.
- fast:     fewer steps again, and the UNet's deep features reused on every other step.
None needs new weights; the quality each costs on the real weights is what compare-samplers shows.
"""
from __future__ import annotations

from dataclasses import replace

from ..conditioning import SamplingSettings
from ..errors import ConfigError

SPEED_PRESETS: dict[str, dict] = {
    "exact": dict(sampler="ddim", steps=40, cfg_window=(0.0, 1.0), reuse=1),
    "balanced": dict(sampler="dpm++2m", steps=14, cfg_window=(0.0, 0.6), reuse=1),
    "fast": dict(sampler="dpm++2m", steps=6, cfg_window=(0.0, 0.5), reuse=2),
}
PRESET_NAMES = tuple(SPEED_PRESETS)


def apply_preset(settings: SamplingSettings, name: str, **overrides) -> SamplingSettings:
    """`settings` with the preset's knobs, then `overrides` (an individual knob wins over the preset)."""
    if name not in SPEED_PRESETS:
        raise ConfigError(f"unknown speed preset {name!r}.", hint=f"Use one of {', '.join(PRESET_NAMES)}.")
    return replace(settings, **{**SPEED_PRESETS[name], **overrides})


def parse_window(text: str | None) -> tuple[float, float] | None:
    """"START,END" (fractions of the steps) -> (start, end); None stays None."""
    if text is None:
        return None
    try:
        start, end = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"cfg window must be START,END (two fractions), got {text!r}.", hint="e.g. 0,0.5") from None
    return start, end
