"""Emotion over time: the keyframe text format, holds and transitions, intensity."""
import logging
import re

import pytest
import torch

from emocast.conditioning import EmotionConditioning, EmotionKeyframe
from emocast.emotion.schedule import FORMAT, frame_embeddings, parse_schedule
from emocast.errors import InputError

FPS = 25


def embeddings(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(77, 768, generator=g) for _ in range(n)]


def emotion(times, intensities=None, transition_s=0.5, neutral=True, seed=0):
    embs = embeddings(len(times) + 2, seed)
    intensities = intensities or [1.0] * len(times)
    kfs = tuple(EmotionKeyframe(t, e, s, f"p{i}") for i, (t, e, s) in enumerate(zip(times, embs, intensities)))
    return EmotionConditioning(kfs, uncond=embs[-2], neutral=embs[-1] if neutral else None, transition_s=transition_s)


def test_parse_full_syntax():
    text = ("0: A person is talking calmly.\n# a comment\n\n  2.5 @1.3 : The person becomes furious.\n"
            "f100 @0: back to neutral\n5s: note: a colon # and a hash\n")
    s = parse_schedule(text, transition_s=0.25)
    assert [k.time_s for k in s.keyframes] == [0.0, 2.5, 4.0, 5.0]
    assert [k.intensity for k in s.keyframes] == [1.0, 1.3, 0.0, 1.0]
    assert [k.line for k in s.keyframes] == [1, 4, 5, 6]
    assert s.keyframes[1].prompt == "The person becomes furious."
    assert s.keyframes[3].prompt == "note: a colon # and a hash"
    assert s.transition_s == 0.25


def test_frame_times_use_the_parse_fps():
    assert parse_schedule("f60: a", fps=30).keyframes[0].time_s == 2.0
    assert parse_schedule("F60: a").keyframes[0].time_s == 60 / 25


@pytest.mark.parametrize("text,fragments", [
    ("0: a\nhello there", ["line 2", "no ':'"]),
    ("0: a\nabc: b", ["line 2", "time 'abc' is not a number"]),
    ("nan: a", ["line 1", "time 'nan'"]),
    ("0: a\n1 @x: b", ["line 2", "intensity 'x' is not a number"]),
    ("0: a\n1 @2.5: b", ["line 2", "intensity 2.5 is outside 0.0..2.0"]),
    ("0 @-0.1: a", ["line 1", "intensity -0.1 is outside"]),
    ("2: a\n\n1: b", ["line 3", "time 1 s is not after the previous keyframe (2 s)"]),
    ("1: a\n1.0s: b", ["line 2", "not after"]),
    ("0: a\n3:   ", ["line 2", "no prompt after ':'"]),
    ("fx: a", ["line 1", "frame 'fx'"]),
    ("f1.5: a", ["line 1", "frame 'f1.5'"]),
    ("-1: a", ["line 1", "time -1.0 s must be a number >= 0"]),
    ("# only a comment\n\n", ["no keyframe"]),
])
def test_parse_errors_name_the_line(text, fragments):
    with pytest.raises(InputError, match=re.escape(fragments[-1])) as e:
        parse_schedule(text)
    assert all(f in str(e.value) for f in fragments), str(e.value)
    assert isinstance(e.value, ValueError)


def test_syntax_errors_show_the_expected_format():
    with pytest.raises(InputError, match="no ':' between the time and the prompt") as e:
        parse_schedule("happy")
    assert FORMAT in e.value.hint and "2.5 @1.3: The person becomes furious." in e.value.hint


def test_negative_transition_is_refused():
    with pytest.raises(InputError, match="transition_s"):
        parse_schedule("0: a", transition_s=-0.1)


def test_values_at_keyframes_and_holds_are_exact():
    em = emotion([0.0, 1.0, 60 / FPS])  # frames 0, 25, 60
    out = frame_embeddings(em, 100, FPS)
    a, b, c = (k.embedding for k in em.keyframes)
    assert out.shape == (100, 77, 768)
    for frames, e in ((range(0, 13), a), (range(25, 48), b), (range(60, 100), c)):
        assert all(torch.equal(out[i], e) for i in frames)


def test_transition_is_monotone_and_ends_at_the_keyframe():
    em = emotion([0.0, 2.0], transition_s=0.4)  # moves over frames 40..50
    out = frame_embeddings(em, 60, FPS)
    a, b = (k.embedding for k in em.keyframes)
    assert torch.equal(out[40], a) and torch.equal(out[50], b)
    dist = [float((out[i] - b).norm()) for i in range(40, 51)]
    assert all(d0 > d1 for d0, d1 in zip(dist, dist[1:]))
    steps = (out[41:51] - out[40:50]) * (b - a).sign()  # every value moves toward b, never back
    assert float(steps.min()) >= 0
    w = [float(((out[i] - a) * (b - a)).sum() / ((b - a) ** 2).sum()) for i in range(40, 51)]
    assert w[5] == pytest.approx(0.5, abs=1e-5)  # smoothstep midpoint
    assert w[1] == pytest.approx(0.028, abs=1e-4)  # eases in: 3u^2 - 2u^3 at u = 0.1


def test_close_keyframes_shorten_the_transition():
    em = emotion([0.0, 0.2], transition_s=1.0)  # 5 frames apart
    out = frame_embeddings(em, 8, FPS)
    a, b = (k.embedding for k in em.keyframes)
    assert torch.equal(out[0], a) and torch.equal(out[5], b)
    assert not any(torch.equal(out[i], a) or torch.equal(out[i], b) for i in range(1, 5))


def test_zero_transition_is_a_cut_and_frames_before_the_first_keyframe_hold_it():
    em = emotion([1.0, 2.0], transition_s=0.0)
    out = frame_embeddings(em, 60, FPS)
    a, b = (k.embedding for k in em.keyframes)
    assert all(torch.equal(out[i], a) for i in range(50))
    assert all(torch.equal(out[i], b) for i in range(50, 60))


def test_transition_across_a_clip_boundary_is_smooth():
    em = emotion([0.0, 0.88], transition_s=0.48)  # frames 10..22, clip boundary between 15 and 16
    out = frame_embeddings(em, 32, FPS)
    step = [float((out[i + 1] - out[i]).abs().max()) for i in range(10, 22)]
    boundary = step[15 - 10]
    assert boundary > 0 and boundary <= max(step)
    assert 0.7 < step[4] / boundary < 1.3 and 0.7 < step[6] / boundary < 1.3


def test_one_keyframe_at_intensity_one_is_the_prompt_exactly():
    em = emotion([0.0], neutral=False)
    out = frame_embeddings(em, 16, FPS)
    assert out.data_ptr() == em.keyframes[0].embedding.data_ptr()  # the very tensor, no arithmetic
    assert all(torch.equal(f, em.keyframes[0].embedding) for f in out)


@pytest.mark.parametrize("times", [[0.0], [0.0, 1.0]])
def test_intensity_zero_is_neutral_exactly(times):
    em = emotion(times, [0.0] * len(times))
    out = frame_embeddings(em, 40, FPS)
    assert all(torch.equal(f, em.neutral) for f in out)


def test_intensity_scales_from_neutral():
    em = emotion([0.0, 1.0], [1.0, 2.0], transition_s=0.0)
    out = frame_embeddings(em, 30, FPS)
    p, n = em.keyframes[1].embedding, em.neutral
    assert torch.equal(out[0], em.keyframes[0].embedding)
    assert torch.allclose(out[25], 2 * p - n, atol=1e-5)
    e = emotion([0.0], [0.5])
    assert torch.allclose(frame_embeddings(e, 1, FPS)[0], (e.neutral + e.keyframes[0].embedding) / 2, atol=1e-6)


@pytest.mark.parametrize("intensity", [-0.5, 2.01, float("nan")])
def test_intensity_bounds(intensity):
    with pytest.raises(InputError, match="intensity"):
        frame_embeddings(emotion([0.0], [intensity]), 4, FPS)


def test_intensity_needs_the_neutral_embedding():
    with pytest.raises(InputError, match="neutral"):
        frame_embeddings(emotion([0.0], [0.5], neutral=False), 4, FPS)


def test_unsorted_keyframes_are_refused():
    with pytest.raises(InputError, match="keyframe 2: time 1 s is not after"):
        frame_embeddings(emotion([2.0, 1.0]), 4, FPS)


def test_keyframes_after_the_end_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="EmoCAST"):
        out = frame_embeddings(emotion([0.0, 5.0]), 50, FPS)
    assert "keyframe(s) at 5 s are never reached: the last frame is at 1.96 s" in caplog.text
    assert out.shape[0] == 50


def test_per_frame_goes_through_the_schedule():
    em = emotion([0.0, 1.0])
    assert torch.equal(em.per_frame(40), frame_embeddings(em, 40, FPS))
