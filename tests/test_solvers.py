"""Multistep solvers on the authors' zero-SNR schedule, the guidance window and deep-feature reuse."""
from dataclasses import replace

import pytest
import torch

from emocast.conditioning import SamplingSettings
from emocast.errors import ConfigError
from emocast.pipeline.scheduler import DDIMZeroSNR
from emocast.pipeline.solvers import make_solver

MU, STD = 0.3, 0.5


def gaussian_v(x: torch.Tensor, t: int) -> torch.Tensor:
    """The exact v-prediction for data ~ N(MU, STD^2) per value (float64 inside)."""
    abar = DDIMZeroSNR().alphas_cumprod.double()[t]
    a, b = abar.sqrt(), (1 - abar).sqrt()
    x = x.double()
    x0 = MU + STD**2 * a / (a * a * STD**2 + b * b) * (x - a * MU)
    return ((a * x - x0) / b).float()


def solve(name: str, steps: int, x: torch.Tensor, v=gaussian_v) -> torch.Tensor:
    solver = make_solver(name, steps)
    for t in solver.timesteps:
        x = solver.step(v(x, t), t, x)
        assert torch.isfinite(x).all(), f"{name}: not finite after t={t}"
    return x


@pytest.mark.parametrize("name", ["dpm++2m", "unipc"])
def test_solver_converges_on_gaussian_data_and_beats_ddim_at_equal_steps(name):
    """For Gaussian data the probability-flow ODE is known: x0 = MU + STD * noise (zero-SNR start)."""
    noise = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    exact = MU + STD * noise
    err = {n: (solve(name, n, noise) - exact).abs().max().item() for n in (5, 10, 20, 40)}
    assert err[5] > err[10] > err[20] > err[40]
    ddim10 = (solve("ddim", 10, noise) - exact).abs().max().item()
    assert err[10] < 0.9 * ddim10, (err, ddim10)  # measured 0.47 vs 0.56 (DPM++), 0.45 (UniPC)
    assert (solve("ddim", 200, noise) - exact).abs().max() < err[40]  # the reference the tiny-net test uses


def test_fresh_solver_state_per_clip():
    """The multistep history must not leak between clips: the same clip twice gives the same latents."""
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(solve("dpm++2m", 6, noise), solve("dpm++2m", 6, noise))


def test_unknown_knobs_are_config_errors():
    with pytest.raises(ConfigError, match="unknown sampler"):
        SamplingSettings(sampler="euler")
    with pytest.raises(ConfigError, match="cfg_window"):
        SamplingSettings(cfg_window=(0.6, 0.2))
    with pytest.raises(ConfigError, match="reuse"):
        SamplingSettings(reuse=0)


def generate_with_stats(tc, stats, **overrides):
    from emocast.pipeline.clips import generate

    return generate(tc.net, tc.vae, tc.face, tc.audio, tc.emotion, replace(tc.settings, **overrides), stats=stats)


@pytest.fixture(scope="module")
def clip_parts(tiny_case):
    """One clip's inputs, captured from the clip loop, and its reference bank."""
    import emocast.pipeline.clips as clips_module
    from emocast.pipeline.sampler import prepare_clip

    seen = {}

    def capture(net, vae, clip, noise, **kw):
        seen.update(clip=clip, noise=noise)
        return noise

    real, clips_module.sample_clip = clips_module.sample_clip, capture
    try:
        tiny_case.generate(steps=1)
    finally:
        clips_module.sample_clip = real
    ctx_c, ctx_u, bank = prepare_clip(tiny_case.net, tiny_case.vae, seen["clip"], cfg=True)
    return seen["clip"], seen["noise"], ctx_c, ctx_u, bank


def test_conditional_only_step_equals_the_conditional_half_of_the_cfg_batch(tiny_case, clip_parts):
    from emocast.models.transformer import ReferenceBank
    from emocast.pipeline.sampler import denoise_inputs, prepare_clip

    clip, noise, ctx_c, ctx_u, bank = clip_parts
    unet, w, f = tiny_case.net.denoising_unet, tiny_case.settings.motion_scale, clip.frames
    t = torch.tensor(749)
    with torch.no_grad():
        both = unet(noise.repeat(2, 1, 1, 1), t, denoise_inputs(clip, ctx_c, ctx_u, w, bank, True, False))
        cond = unet(noise, t, denoise_inputs(clip, ctx_c, ctx_u, w, bank, False, False))
        # what a naive batch of one would read instead: a bank written with the conditional context only
        _, _, solo = prepare_clip(tiny_case.net, tiny_case.vae, clip, cfg=False)
        naive = unet(noise, t, denoise_inputs(clip, ctx_c, ctx_u, w, solo, False, False))
    scale = both[f:].abs().max()
    assert (cond - both[f:]).abs().max() < 1e-5 * scale
    assert (naive - both[f:]).abs().max() > 1e-3 * scale
    assert isinstance(bank.conditional(), ReferenceBank) and bank.conditional().motion(next(iter(bank.tokens))).shape[0] == 1


def test_shallow_call_on_its_own_deep_features_equals_the_full_call(tiny_case, clip_parts):
    """Feature reuse wiring: the outer levels on deep features stored at the same input give the same v."""
    from emocast.pipeline.sampler import denoise_inputs

    clip, noise, ctx_c, ctx_u, bank = clip_parts
    unet, w = tiny_case.net.denoising_unet, tiny_case.settings.motion_scale
    inputs = denoise_inputs(clip, ctx_c, ctx_u, w, bank, True, reuse=True)
    x, t = noise.repeat(2, 1, 1, 1), torch.tensor(499)
    with torch.no_grad():
        full = unet(x, t, inputs)
        assert inputs.reuse.deep is not None
        inputs.reuse.shallow = True
        shallow = unet(x, t, inputs)
        other = unet(x * 0.5, t, inputs)  # the outer levels do see new latents
    assert (shallow - full).abs().max() < 1e-5 * full.abs().max()
    assert (other - full).abs().max() > 1e-3 * full.abs().max()


@pytest.mark.slow
def test_default_settings_are_the_authors_ddim_loop(tiny_case):
    """sampler / window / reuse at their defaults change nothing (conformance runs the same path)."""
    from emocast.pipeline.sampler import SampleStats

    stats = SampleStats()
    out = generate_with_stats(tiny_case, stats)
    assert (out - tiny_case.golden).abs().max() < 5e-3
    assert stats.passes == 2 * tiny_case.settings.steps and stats.shallow_passes == 0 and stats.denoise_s > 0


@pytest.mark.slow
def test_window_and_reuse_count_passes(tiny_case):
    from emocast.pipeline.sampler import SampleStats, guided_steps

    assert guided_steps(8, (0.0, 0.5)) == [True] * 4 + [False] * 4
    assert guided_steps(4, (0.0, 1.0)) == [True] * 4
    stats = SampleStats()
    out = generate_with_stats(tiny_case, stats, sampler="dpm++2m", steps=8, cfg_window=(0.0, 0.5), reuse=2)
    # guided full, guided shallow, ... then the switch to conditional-only forces a full call
    assert stats.passes == 4 * 2 + 4 and stats.shallow_passes == 2 * 2 + 2
    assert torch.isfinite(out).all() and out.shape == tiny_case.golden.shape


@pytest.mark.slow
def test_tiny_net_solver_is_closer_to_a_200_step_reference_than_ddim(tiny_case, clip_parts):
    """The real tiny network at 128 px (2 frames): DPM++ error to DDIM-200 shrinks with steps and beats DDIM-10."""
    from emocast.pipeline.sampler import sample_clip

    clip, noise = clip_parts[:2]
    f = 2  # two frames keep 200 steps affordable
    clip = replace(clip, text=clip.text[:f], face_features=clip.face_features[:f], audio=clip.audio[:f])
    noise = noise[:f]
    kw = dict(cfg_scale=tiny_case.settings.cfg_scale, weights=tiny_case.settings.motion_scale)
    run = lambda name, n: sample_clip(tiny_case.net, tiny_case.vae, clip, noise, steps=n, sampler=name, **kw)  # noqa: E731
    ref = run("ddim", 200)
    err = {n: (run("dpm++2m", n) - ref).abs().mean().item() for n in (5, 10, 20)}
    ddim10 = (run("ddim", 10) - ref).abs().mean().item()
    assert err[5] > err[10] > err[20]
    assert err[10] < ddim10, (err, ddim10)


def test_settings_replace_keeps_the_knobs():
    s = replace(SamplingSettings(), sampler="unipc", cfg_window=(0.1, 0.6), reuse=3)
    assert (s.sampler, s.cfg_window, s.reuse) == ("unipc", (0.1, 0.6), 3)


def test_presets_expand_and_the_cli_knobs_override_them():
    from emocast.cli import build_parser
    from emocast.run import sampling_settings as _settings
    from emocast.pipeline.presets import SPEED_PRESETS, apply_preset

    assert apply_preset(SamplingSettings(), "exact") == SamplingSettings()  # exact is the authors' default
    fast = apply_preset(SamplingSettings(seed=7), "fast")
    assert (fast.sampler, fast.steps, fast.reuse, fast.seed) == ("dpm++2m", SPEED_PRESETS["fast"]["steps"], 2, 7)
    with pytest.raises(ConfigError, match="unknown speed preset"):
        apply_preset(SamplingSettings(), "turbo")
    base = ["generate", "--image", "i", "--audio", "a", "--prompt", "p", "--out", "o.mp4"]
    args = build_parser().parse_args(base + ["--preset", "balanced", "--steps", "12", "--cfg-window", "0.1,0.7"])
    s = _settings(args)
    assert (s.sampler, s.steps, s.cfg_window, s.reuse) == ("dpm++2m", 12, (0.1, 0.7), 1)
    assert _settings(build_parser().parse_args(base)) == SamplingSettings()
    with pytest.raises(ConfigError, match="START,END"):
        _settings(build_parser().parse_args(base + ["--cfg-window", "half"]))


def test_ssim_and_psnr_on_known_frames():
    from emocast.compare import psnr, ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) == float("inf")
    b = (a + 0.1).clamp(0, 1)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-6)  # mse 0.01
    assert 0.5 < ssim(a, b) < 1.0 and ssim(a, torch.rand(2, 3, 32, 32, generator=g)) < 0.2


@pytest.mark.slow
def test_compare_samplers_on_the_exported_tiny_models(tmp_path):
    import json

    from conftest import ROOT, run_cli
    from emocast.demo.models import export_models

    export_models(tmp_path / "models")
    out = run_cli("compare-samplers", "--image", ROOT / "emocast/demo/assets/portrait_astronaut_512.png",
                  "--audio", ROOT / "emocast/demo/assets/speech_en_16k.wav", "--prompt", "A person is talking.",
                  "--models", tmp_path / "models", "--size", "64", "--seconds", "0.08", "--clip-length", "2",
                  "--json", tmp_path / "c.json")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "c.json").read_text())["presets"]
    assert list(rows) == ["exact", "balanced", "fast"]
    for r in rows.values():
        assert {"denoise_s", "total_s", "denoiser_passes", "psnr_vs_exact", "max_abs_vs_exact"} <= set(r)
        assert r["total_s"] >= r["denoise_s"] > 0
    assert rows["exact"]["denoiser_passes"] == 80 and rows["exact"]["max_abs_vs_exact"] == 0
    assert rows["fast"]["denoiser_passes"] < rows["balanced"]["denoiser_passes"] < 80
    assert 5 < rows["fast"]["psnr_vs_exact"] < 100 and rows["fast"]["denoise_s"] < rows["exact"]["denoise_s"]
    assert "PSNR" in out.stdout and "fast" in out.stdout
