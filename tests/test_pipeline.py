"""The sampler around the networks: determinism, progress, cancel, clip loop, batched decode, dtypes."""
import math
from dataclasses import replace

import pytest
import torch

from emocast.conditioning import AudioFeatures, SamplingSettings
from emocast.errors import Cancelled, ConfigError, InputError
from emocast.pipeline.clips import generate_clips
from floats import assert_close


@pytest.mark.slow
@pytest.mark.float_sensitive
def test_public_case_is_reproduced_and_deterministic(tiny_case):
    from conformance_pipeline import VIDEO_MAX, VIDEO_MEAN

    first = tiny_case.generate()
    assert_close(first, tiny_case.golden, VIDEO_MAX, VIDEO_MEAN, what="PUBLIC video")
    assert torch.equal(first, tiny_case.generate())  # the same process: the same kernels, the same bits


@pytest.mark.slow  # several full sampler runs
def test_progress_ticks_every_step_of_every_clip_and_cancel_leaves_nothing_behind(tiny_case):
    audio = AudioFeatures(torch.cat([tiny_case.audio.features] * 2), num_frames=9)  # 2 clips of 6
    ticks = []
    tiny_case.generate(audio=audio, steps=2, progress=ticks.append)
    assert [(t.step, t.total, t.clip, t.clips) for t in ticks] == [(1, 4, 0, 2), (2, 4, 0, 2), (3, 4, 1, 2), (4, 4, 1, 2)]

    calls = []

    def cancel_at_third_step():
        calls.append(1)
        return len(calls) == 3
    with pytest.raises(Cancelled, match="step 3 of 4"):
        tiny_case.generate(audio=audio, steps=2, should_cancel=cancel_at_third_step)
    again = tiny_case.generate(audio=audio, steps=2)
    assert torch.equal(again, tiny_case.generate(audio=audio, steps=2))


@pytest.mark.slow
def test_clip_loop_feeds_motion_frames_and_trims_to_the_audio(tiny_case, monkeypatch):
    import emocast.pipeline.clips as clips_module

    f = tiny_case.settings.clip_length
    audio = AudioFeatures(torch.cat([tiny_case.audio.features] * 3), num_frames=2 * f + 1)
    references, sample = [], clips_module.sample_clip
    monkeypatch.setattr(clips_module, "sample_clip", lambda net, vae, clip, *a, **k: (
        references.append(clip.reference.clone()), sample(net, vae, clip, *a, **k))[1])
    clips = list(generate_clips(tiny_case.net, tiny_case.vae, tiny_case.face, audio, tiny_case.emotion,
                                replace(tiny_case.settings, steps=1)))
    assert [c.shape[0] for c in clips] == [f, f, 1]
    assert all(c.min() >= 0 and c.max() <= 1 and c.dtype == torch.float32 for c in clips)
    source = tiny_case.face.pixels
    assert all(torch.equal(r[0], source) for r in references)  # the source image leads every clip
    assert torch.equal(references[0][1], source) and torch.equal(references[0][2], source)  # clip 0: itself
    assert torch.equal(references[1][1:], clips[0][-2:] * 2 - 1)  # clip k: clip k-1's last two frames
    assert torch.equal(references[2][1:], clips[1][-2:] * 2 - 1)


def test_one_frame_clips_take_their_motion_frames_across_clips(tiny_case, monkeypatch):
    """frames_per_clip 1 (the node's minimum): each clip sees the last two frames generated so far."""
    import emocast.pipeline.clips as clips_module

    audio = AudioFeatures(tiny_case.audio.features[:3], num_frames=3)
    references, sample = [], clips_module.sample_clip
    monkeypatch.setattr(clips_module, "sample_clip", lambda net, vae, clip, *a, **k: (
        references.append(clip.reference.clone()), sample(net, vae, clip, *a, **k))[1])
    clips = list(generate_clips(tiny_case.net, tiny_case.vae, tiny_case.face, audio, tiny_case.emotion,
                                replace(tiny_case.settings, steps=1, clip_length=1)))
    assert [c.shape[0] for c in clips] == [1, 1, 1] and all(r.shape[0] == 3 for r in references)
    source = tiny_case.face.pixels
    assert torch.equal(references[1][1], source) and torch.equal(references[1][2], clips[0][0] * 2 - 1)
    assert torch.equal(references[2][1:], torch.cat(clips[:2]) * 2 - 1)


def test_features_padded_for_another_clip_length_are_refused(tiny_case):
    with pytest.raises(InputError, match="padded for another clip length"):
        tiny_case.generate(clip_length=4)  # the case's features hold 6 frames, 2 clips of 4 need 8


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="32 positions"):
        SamplingSettings(clip_length=31)
    with pytest.raises(ConfigError, match="steps"):
        SamplingSettings(steps=0)


def test_batched_vae_decode_equals_frame_by_frame(tiny_case):
    latents = torch.randn(6, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    one = tiny_case.vae.decode(latents, batch=1)
    for batch in (2, 4, 6):
        assert (tiny_case.vae.decode(latents, batch=batch) - one).abs().max() < 1e-5


@pytest.mark.slow  # several full sampler runs
def test_without_guidance_the_conditional_half_alone_runs(tiny_case):
    """Guidance <= 1 is the conditional half alone (no guidance to scale): 0.5 and 1 give the same
    frames, the case's guidance (3.5) others (measured mean difference 0.17)."""
    video = tiny_case.generate(cfg_scale=1.0, steps=1)
    assert video.shape == tiny_case.golden.shape
    assert torch.equal(tiny_case.generate(cfg_scale=0.5, steps=1), video)
    assert (tiny_case.generate(steps=1) - video).abs().mean() > 0.02


#: Mean difference of half-precision frames from fp32's (2 steps), measured on AVX512: fp16 1.3e-3,
#: bf16 1.0e-2 (max 0.012 / 0.086); the bounds leave 4x. Both sides run on the same CPU.
HALF_MEAN = {torch.float16: 5e-3, torch.bfloat16: 0.04}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_on_cpu(tiny_case, dtype):
    """The fp16 / bf16 paths (as on a user's GPU) run end to end; their frames stay near fp32's."""
    from emocast.demo.tiny import tiny_net

    video = tiny_case.generate(net=tiny_net(dtype=dtype), steps=2)
    ref = tiny_case.generate(steps=2)
    assert video.dtype == torch.float32 and torch.isfinite(video).all()
    assert 0 < (video - ref).abs().mean() < HALF_MEAN[dtype]  # > 0: the net really ran in half precision


def test_a_one_keyframe_schedule_is_the_single_prompt_exactly(tiny_case):
    from emocast.emotion.schedule import parse_schedule

    prompt = tiny_case.params["prompt_emo"]
    scheduled = tiny_case.text.encode(parse_schedule(f"0.0: {prompt}"))
    assert torch.equal(tiny_case.generate(emotion=scheduled, steps=1), tiny_case.generate(steps=1))


@pytest.mark.slow
def test_each_frame_gets_its_own_emotion_across_clips(tiny_case, monkeypatch):
    import emocast.pipeline.clips as clips_module
    from emocast.emotion.schedule import parse_schedule

    emotion = tiny_case.text.encode(parse_schedule("0.0: A person is talking calmly.\n"
                                                   "0.3 @1.5: The person becomes furious.", transition_s=0.2))
    audio = AudioFeatures(torch.cat([tiny_case.audio.features] * 2), num_frames=12)  # frames 0-5, 6-11
    seen, sample = [], clips_module.sample_clip
    monkeypatch.setattr(clips_module, "sample_clip", lambda net, vae, clip, *a, **k: (
        seen.append(clip.text.clone()), sample(net, vae, clip, *a, **k))[1])
    tiny_case.generate(audio=audio, emotion=emotion, steps=1)
    expected = emotion.per_frame(12, 25)
    assert torch.equal(torch.cat(seen), expected)
    assert not torch.equal(expected[0], expected[11])  # the transition (frames 3-7) crosses the clip boundary
