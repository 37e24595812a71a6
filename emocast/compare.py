"""compare-samplers: the same clip(s) rendered with each speed preset, timed and scored against `exact`.

The inputs are prepared once (face, audio features, emotion); each preset then runs the clip loop
(ReferenceNet, denoiser, VAE decode) on them. Figures per preset:
- denoise_s: seconds in the denoising step loops; total_s: the whole clip loop (preprocessing is
  shared, so not counted);
- denoiser_passes: CFG halves through the denoising UNet (a guided step = 2, a conditional-only
  step = 1); shallow_passes: those run on reused deep features (the outer levels only);
- vs exact, frames in [0, 1]: PSNR (dB), SSIM (gaussian window 11, sigma 1.5, per RGB channel,
  averaged), max abs; LPIPS (AlexNet) only when the `lpips` package and its weights load.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .conditioning import SamplingSettings
from .pipeline.clips import generate_clips
from .pipeline.presets import apply_preset
from .pipeline.sampler import SampleStats

log = logging.getLogger("EmoCAST")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of frames in [0, 1] (inf when identical)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) of [N, C, H, W] frames in [0, 1], gaussian window, per channel."""
    a, b = a.double(), b.double()
    x = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    c = a.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window)
    blur = lambda t: F.conv2d(t, kernel, groups=c)  # noqa: E731  ("valid": no padding, as the reference)
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


def lpips_metric():
    """An LPIPS(AlexNet) function of two [N, 3, H, W] batches in [0, 1], or None when unavailable."""
    try:
        import lpips  # noqa: F401

        model = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as e:  # not installed, or its weights are not on this machine
        log.info("LPIPS skipped (%s)", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None

    def score(a, b):
        with torch.no_grad():
            return float(model(a * 2 - 1, b * 2 - 1).mean())
    return score


@dataclass
class PresetResult:
    name: str
    settings: SamplingSettings
    frames: torch.Tensor
    stats: SampleStats
    total_s: float

    def row(self, exact: "PresetResult", lpips_fn=None) -> dict:
        a, b = self.frames, exact.frames
        out = {"preset": self.name, "sampler": self.settings.sampler, "steps": self.settings.steps,
               "cfg_window": list(self.settings.cfg_window), "reuse": self.settings.reuse,
               "denoise_s": self.stats.denoise_s, "total_s": self.total_s, "denoiser_passes": self.stats.passes,
               "shallow_passes": self.stats.shallow_passes,
               "speedup_vs_exact": exact.stats.denoise_s / max(self.stats.denoise_s, 1e-9),
               "psnr_vs_exact": psnr(a, b), "ssim_vs_exact": ssim(a, b),
               "max_abs_vs_exact": float((a - b).abs().max())}
        if lpips_fn is not None:
            out["lpips_vs_exact"] = lpips_fn(a, b)
        return out


def run_presets(net, vae, face, features, emotion, base: SamplingSettings, presets: list[str], *,
                overrides: Optional[dict] = None) -> list[PresetResult]:
    """Render with each preset (the `exact` reference first, added when not asked for)."""
    names = ["exact"] + [p for p in presets if p != "exact"]
    results = []
    for name in names:
        settings = apply_preset(base, name, **(overrides or {}))
        stats, t0 = SampleStats(), time.perf_counter()
        frames = torch.cat(list(generate_clips(net, vae, face, features, emotion, settings, stats=stats)))
        results.append(PresetResult(name, settings, frames, stats, time.perf_counter() - t0))
        log.info("%s: %.1f s denoising, %.1f s in all", name, stats.denoise_s, results[-1].total_s)
    return results


def compare_rows(results: list[PresetResult], presets: list[str]) -> list[dict]:
    exact = results[0]
    lpips_fn = lpips_metric()
    return [r.row(exact, lpips_fn) for r in results if r.name in presets]


def write_json(path, data: dict) -> None:
    """Write `data` as JSON to a temporary name, then rename (no half-written file on failure); inf -> null."""
    import json
    import os
    from pathlib import Path

    def clean(x):  # inf (identical frames) / nan are not JSON: null
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return None if isinstance(x, float) and not math.isfinite(x) else x

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def format_table(rows: list[dict]) -> str:
    head = ["preset", "sampler", "steps", "denoise s", "total s", "passes", "speed-up", "PSNR dB", "SSIM", "max abs"]
    has_lpips = any("lpips_vs_exact" in r for r in rows)
    head += ["LPIPS"] if has_lpips else []
    lines = [head]
    for r in rows:
        p = "inf" if math.isinf(r["psnr_vs_exact"]) else f"{r['psnr_vs_exact']:.1f}"
        cells = [r["preset"], r["sampler"], str(r["steps"]), f"{r['denoise_s']:.2f}", f"{r['total_s']:.2f}",
                 f"{r['denoiser_passes']}" + (f" ({r['shallow_passes']} shallow)" if r["shallow_passes"] else ""),
                 f"{r['speedup_vs_exact']:.2f}x", p, f"{r['ssim_vs_exact']:.4f}", f"{r['max_abs_vs_exact']:.4f}"]
        cells += [f"{r['lpips_vs_exact']:.4f}" if "lpips_vs_exact" in r else "-"] if has_lpips else []
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines)
