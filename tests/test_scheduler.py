"""Our DDIM zero-SNR sampler against diffusers' DDIMScheduler configured as the authors did."""
import pytest
import torch

from emocast.pipeline.scheduler import DDIMZeroSNR


def authors_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False,
                         steps_offset=1, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                         timestep_spacing="trailing")


@pytest.mark.float_sensitive
def test_alphas_match_documented_values():
    a = DDIMZeroSNR().alphas_cumprod
    assert a[999] == 0.0
    assert torch.allclose(a[[0, 249, 499, 749]], torch.tensor([0.999150, 0.555703, 0.142529, 0.013368]), atol=1e-6)
    assert abs(float(a[998]) - 6.28e-8) < 1e-9


@pytest.mark.parametrize("steps,expected", [(4, [999, 749, 499, 249]), (5, [999, 799, 599, 399, 199])])
def test_trailing_timesteps(steps, expected):
    assert DDIMZeroSNR.timesteps(steps) == expected


@pytest.mark.parametrize("steps", [1, 3, 4, 7, 25, 40, 50])
def test_full_loop_equals_diffusers(steps):
    ref = authors_scheduler()
    ref.set_timesteps(steps)
    ours = DDIMZeroSNR()
    assert ours.timesteps(steps) == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x_ref = x_ours = torch.randn(1, 4, 3, 8, 8, generator=g)
    for t in ref.timesteps:
        v = torch.randn(x_ref.shape, generator=g)
        x_ref = ref.step(v, t, x_ref).prev_sample
        x_ours = ours.step(v, int(t), x_ours, steps)
        assert torch.equal(x_ref, x_ours)
    assert torch.isfinite(x_ours).all()
