"""Emotion over time: keyframed prompts with intensity, turned into per-frame text conditioning.

Text format, one keyframe per line (blank lines and lines starting with `#` are ignored):

    0: A person is talking calmly.
    2.5 @1.3: The person becomes furious.        # seconds (an "s" suffix is allowed), intensity 1.3
    f150: A person is talking with sad emotion.  # frame 150 (converted to seconds at the parse fps)

Everything after the first `:` is the prompt, so prompts may contain `:` and `#`.

Timing: each keyframe holds until the next one; the move into the next keyframe takes the last
`transition_s` seconds before it (shortened when keyframes are closer), so every keyframe's own
time shows exactly its embedding. Frames before the first keyframe hold the first one.

Interpolation is linear in the 77 x 768 token embeddings, paced by smoothstep in time. Linear
because the model only consumes these tokens through linear projections (keys, values, queries),
so a linear blend of embeddings is a linear blend of what the attentions see; every value then
moves monotonically from one keyframe to the next, which per-token slerp does not guarantee.
Smoothstep (3u^2 - 2u^3) starts and ends each transition with zero speed, so the face eases in
and out instead of changing pace abruptly. The whole video is interpolated at once, so clip
boundaries are invisible to it.

Intensity scales away from a neutral prompt: e = neutral + intensity * (prompt - neutral), with
intensity in [0, 2]; 0 is exactly the neutral embedding, 1 exactly the prompt's.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..constants import FPS
from ..errors import InputError

log = logging.getLogger("EmoCAST")

#: Allowed intensity range (inclusive); above 1 exaggerates, below 1 tones down toward neutral.
INTENSITY_RANGE = (0.0, 2.0)
#: Default length of a transition, in seconds.
TRANSITION_S = 0.5
FORMAT = "'<seconds> [@<intensity>]: <prompt>' or 'f<frame> [@<intensity>]: <prompt>'"
EXAMPLE = "0: A person is talking calmly.\n2.5 @1.3: The person becomes furious."


@dataclass(frozen=True)
class KeyframeSpec:
    """One parsed keyframe: `prompt` reached at `time_s` seconds with `intensity`; `line` is its source line."""

    time_s: float
    prompt: str
    intensity: float = 1.0
    line: int = 0


@dataclass(frozen=True)
class EmotionSchedule:
    """Keyframes in strictly increasing time, and the transition length into each, in seconds."""

    keyframes: tuple[KeyframeSpec, ...]
    transition_s: float = TRANSITION_S

    def __post_init__(self):
        check_keyframes(self.keyframes, self.transition_s)


def _where(k, i: int) -> str:
    return f"line {k.line}" if getattr(k, "line", 0) else f"keyframe {i + 1}"


def check_keyframes(keyframes, transition_s: float) -> None:
    """Raise InputError unless times increase, intensities are in range and transition_s >= 0."""
    if not keyframes:
        raise InputError("the emotion schedule has no keyframe.", hint=f"Write one per line, e.g.\n{EXAMPLE}")
    if not (math.isfinite(transition_s) and transition_s >= 0):
        raise InputError(f"transition_s must be a number of seconds >= 0, got {transition_s}.")
    lo, hi = INTENSITY_RANGE
    for i, k in enumerate(keyframes):
        # a prompt still to encode must say something; an encoded keyframe's prompt is only its label
        if getattr(k, "embedding", None) is None and isinstance(getattr(k, "prompt", None), str) and not k.prompt.strip():
            raise InputError(f"the emotion prompt is empty ({_where(k, i)}).",
                             hint='Describe the emotion, e.g. "A person is talking with happy emotion."')
        if not (lo <= k.intensity <= hi):
            raise InputError(f"emotion schedule {_where(k, i)}: intensity {k.intensity} is outside {lo}..{hi}.",
                             hint="0 is neutral, 1 the prompt as written, 2 twice as strong.")
        if not (math.isfinite(k.time_s) and k.time_s >= 0):
            raise InputError(f"emotion schedule {_where(k, i)}: time {k.time_s} s must be a number >= 0.")
        if i and k.time_s <= keyframes[i - 1].time_s:
            raise InputError(f"emotion schedule {_where(k, i)}: time {k.time_s:g} s is not after the previous "
                             f"keyframe ({keyframes[i - 1].time_s:g} s).", hint="List keyframes in increasing time.")


def _number(text: str, what: str, n: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"emotion schedule line {n}: {what} {text!r} is not a number.", hint=f"Expected {FORMAT}.")
    return value


def parse_schedule(text: str, transition_s: float = TRANSITION_S, fps: float = FPS) -> EmotionSchedule:
    """Parse the keyframe text format (see the module docstring); `fps` converts `f<frame>` times."""
    keyframes = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, sep, prompt = line.partition(":")
        if not sep:
            raise InputError(f"emotion schedule line {n}: no ':' between the time and the prompt in {line!r}.",
                             hint=f"Expected {FORMAT}, e.g.\n{EXAMPLE}")
        at, _, intensity = (s.strip() for s in head.partition("@"))
        if at[:1] in ("f", "F"):
            if not at[1:].isdigit():
                raise InputError(f"emotion schedule line {n}: frame {at!r} is not 'f' and a whole number.",
                                 hint=f"Expected {FORMAT}, e.g. 'f60: ...'.")
            time_s = int(at[1:]) / fps
        else:
            time_s = _number(at[:-1] if at.endswith("s") else at, "time", n)
        if not prompt.strip():
            raise InputError(f"emotion schedule line {n}: no prompt after ':'.", hint=f"Expected {FORMAT}.")
        level = _number(intensity, "intensity", n) if intensity else 1.0
        keyframes.append(KeyframeSpec(time_s, prompt.strip(), level, n))
    return EmotionSchedule(tuple(keyframes), transition_s)


def _frame_weights(times: list[float], num_frames: int, fps: float, transition_s: float):
    """Per frame: index of the keyframe in effect and the smoothstep weight toward the next one."""
    t = torch.arange(num_frames, dtype=torch.float64) / fps
    times_t = torch.tensor(times, dtype=torch.float64)
    idx = (torch.searchsorted(times_t, t, right=True) - 1).clamp(min=0)
    nxt = (idx + 1).clamp(max=len(times) - 1)
    start = torch.maximum(times_t[idx], times_t[nxt] - transition_s)
    span = times_t[nxt] - start  # 0 after the last keyframe and for hard cuts
    u = torch.where(span > 0, (t - start) / span, 0.0).clamp(0, 1)
    return idx, (u * u * (3 - 2 * u)).float()


def frame_embeddings(emotion, num_frames: int, fps: float) -> torch.Tensor:
    """[num_frames, 77, 768] embedding of every frame (one intensity-1 keyframe: exactly its embedding)."""
    kfs = emotion.keyframes
    check_keyframes(kfs, emotion.transition_s)
    if len(kfs) == 1 and kfs[0].intensity == 1.0:
        return kfs[0].embedding.unsqueeze(0).expand(num_frames, -1, -1)
    if emotion.neutral is None and any(k.intensity != 1.0 for k in kfs):
        raise InputError("an emotion intensity other than 1 needs the neutral prompt's embedding.",
                         hint="Encode the schedule with the text encoder, which adds it.")
    late = [k for k in kfs if k.time_s > (num_frames - 1) / fps]
    if late:
        log.warning("emotion keyframe(s) at %s s are never reached: the last frame is at %.2f s.",
                    ", ".join(f"{k.time_s:g}" for k in late), (num_frames - 1) / fps)
    emb = torch.stack([k.embedding if k.intensity == 1.0 else torch.lerp(emotion.neutral, k.embedding, k.intensity)
                       for k in kfs])
    idx, w = _frame_weights([k.time_s for k in kfs], num_frames, fps, emotion.transition_s)
    out = emb[idx]
    moving = w > 0
    if moving.any():
        out[moving] = torch.lerp(out[moving], emb[idx[moving] + 1], w[moving, None, None].to(emb.dtype))
    return out
