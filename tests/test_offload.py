"""Block swap (emocast.models.offload): same frames as a full load, weights on the device within the budget."""
import pytest
import torch

from emocast.models import offload


def _two_clips(tiny_case):
    from emocast.conditioning import AudioFeatures

    return AudioFeatures(torch.cat([tiny_case.audio.features] * 2), num_frames=9)  # 2 clips: motion frames carried


def test_blocks_cover_every_weight_once(tiny_case):
    blocks = list(offload.split_blocks(tiny_case.net, offload.default_containers()))
    names = [n for n, _ in blocks]
    assert "denoising_unet.down_blocks.0.resnets.0" in names and "reference_unet.mid_block.attentions.0" in names
    assert "imageproj" in names and "denoising_unet.conv_out" in names
    assert sum(offload.nbytes(m) for _, m in blocks) == offload.nbytes(tiny_case.net)


@pytest.mark.slow
@pytest.mark.parametrize("fraction", [0.0, 0.3])
def test_offload_gives_the_full_load_frames_within_the_budget(tiny_case, fraction):
    audio = _two_clips(tiny_case)
    full = tiny_case.generate(audio=audio, steps=1)
    net = tiny_case.net
    total, largest = offload.nbytes(net), offload.smallest_budget(net)
    budget = int(fraction * total)
    meter = offload.Meter()
    swap = offload.attach(net, "cpu", budget, meter=meter)
    try:
        assert offload.is_managed(net) and offload.is_managed(net.denoising_unet.conv_in)
        swapped = tiny_case.generate(audio=audio, steps=1)
    finally:
        swap.detach()
    assert torch.equal(swapped, full)  # the same arithmetic: bit-identical on the CPU
    assert meter.peak <= budget + largest
    assert meter.peak < total and meter.loads > len(swap.blocks)  # blocks really swapped (again each clip)
    assert meter.resident == 0 and not offload.is_managed(net)  # detach puts everything back
    assert not net.denoising_unet.conv_in._forward_pre_hooks


def test_resident_blocks_fill_the_budget_denoiser_first(tiny_case):
    net = tiny_case.net
    budget = offload.nbytes(net.denoising_unet) // 2 + offload.smallest_budget(net)
    swap = offload.attach(net, "cpu", budget)
    try:
        room = budget - offload.smallest_budget(net)  # CPU: no prefetch, one swapped block at a time
        denoiser = sum(b.size for b in swap.blocks if b.resident and b.name.startswith("denoising_unet"))
        assert room - offload.smallest_budget(net) <= denoiser <= swap.resident_bytes <= room
        with pytest.raises(ValueError, match="already managed"):
            offload.attach(net, "cpu", budget)
    finally:
        swap.detach()


def test_a_budget_holding_everything_is_a_full_load(tiny_case):
    meter = offload.Meter()
    swap = offload.attach(tiny_case.net, "cpu", None, meter=meter)
    try:
        assert all(b.resident for b in swap.blocks) and meter.peak == offload.nbytes(tiny_case.net)
        assert not tiny_case.net.denoising_unet.conv_in._forward_pre_hooks  # nothing swaps: no hooks
    finally:
        swap.detach()
