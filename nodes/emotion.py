"""Emotion nodes: the CLIP text encoder, one emotion prompt, and emotion over time (a schedule)."""
from __future__ import annotations

from ..emocast import model_files
from ..emocast.emotion.presets import DEFAULT_PRESET, NEUTRAL_PROMPT, PRESETS
from ..emocast.emotion.schedule import EXAMPLE, FORMAT, INTENSITY_RANGE, TRANSITION_S
from ..emocast.errors import InputError
from . import host
from .types import CONDITIONING, EMOTION, LOADERS, TEXT_ENCODER

#: The preset combo's first entry: the prompt widget is used as written.
CUSTOM = "custom"
SCHEDULE_DEFAULT = "# <seconds> [@<intensity 0-2>]: <emotion prompt>   (or f<frame>: ...)\n" + EXAMPLE + "\n"


class LoadTextEncoder:
    DESCRIPTION = ("Loads the CLIP ViT-L/14 text encoder that turns emotion prompts into conditioning, from "
                   "models/text_encoders (ComfyUI's clip_l.safetensors works). It runs on the CPU in fp32 with "
                   "the padding attention mask, exactly as the authors encode prompts.")
    CATEGORY = LOADERS
    FUNCTION = "load"
    RETURN_TYPES = (TEXT_ENCODER,)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The CLIP text encoder for the EmoCAST emotion nodes.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_name": host.weights_combo(model_files.CLIP),
        }, "optional": host.download_input()}

    def load(self, clip_name, download_if_missing=False):
        from ..emocast.models.clip_text import load_text_encoder

        return (load_text_encoder(host.resolve_file(model_files.CLIP, clip_name, download_if_missing)),)


class _EmotionNode:
    """What both emotion nodes give: the emotion conditioning."""

    CATEGORY = CONDITIONING
    FUNCTION = "encode"
    RETURN_TYPES = (EMOTION,)
    RETURN_NAMES = ("emotion",)
    OUTPUT_TOOLTIPS = ("Emotion conditioning for EmoCAST Sample (CLIP last_hidden_state of each prompt and of "
                       "\"\").",)


class EncodeEmotion(_EmotionNode):
    DESCRIPTION = ("One emotion for the whole video, as free text (\"A person is talking with happy emotion.\") "
                   "or a preset. Presets are the authors' prompt template for the eight basic emotions plus two "
                   "of the paper's scene prompts.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": (TEXT_ENCODER, {"tooltip": "From EmoCAST Load Text Encoder."}),
            "preset": ([CUSTOM] + list(PRESETS), {
                "default": DEFAULT_PRESET,
                "tooltip": "A ready-made prompt, or 'custom' to use the prompt below as written."}),
            "prompt": ("STRING", {
                "multiline": True, "default": PRESETS[DEFAULT_PRESET],
                "tooltip": "The emotion in words (used when preset is 'custom'). CLIP reads the first 75 tokens."}),
        }}

    def encode(self, text_encoder, preset, prompt):
        if preset != CUSTOM:
            if preset not in PRESETS:
                raise InputError(f"unknown emotion preset {preset!r}.", hint=f"Use one of: {', '.join(PRESETS)}.")
            prompt = PRESETS[preset]
        if not prompt.strip():
            raise InputError("the emotion prompt is empty.",
                             hint=f"Describe the emotion, e.g. {PRESETS[DEFAULT_PRESET]!r}, or choose a preset.")
        return (text_encoder.encode(prompt.strip()),)


class EmotionSchedule(_EmotionNode):
    DESCRIPTION = ("Emotion over time: keyframed prompts, one per line, with optional intensity (0 = the neutral "
                   "prompt, 1 = as written, 2 = exaggerated). Each keyframe holds until the next; the change "
                   "eases in over transition_s seconds before it.")

    @classmethod
    def INPUT_TYPES(cls):
        lo, hi = INTENSITY_RANGE
        return {"required": {
            "text_encoder": (TEXT_ENCODER, {"tooltip": "From EmoCAST Load Text Encoder."}),
            "schedule": ("STRING", {
                "multiline": True, "default": SCHEDULE_DEFAULT,
                "tooltip": f"One keyframe per line: {FORMAT}; intensity {lo:g} to {hi:g}. Lines starting with # "
                           "are comments. Times are seconds of the audio (f<frame>: frames at 25 fps)."}),
            "transition_s": ("FLOAT", {
                "default": TRANSITION_S, "min": 0.0, "max": 10.0, "step": 0.05,
                "tooltip": "Seconds each change of emotion takes, ending at its keyframe (0: hard cut)."}),
            "neutral_prompt": ("STRING", {
                "multiline": False, "default": NEUTRAL_PROMPT,
                "tooltip": "What intensity scales from: intensity 0 gives exactly this prompt."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, schedule=None):
        """Report a schedule error (with its line number) when the prompt is queued, before anything runs."""
        if not isinstance(schedule, str):  # linked from another node: checked when it runs
            return True
        from ..emocast.emotion.schedule import parse_schedule

        try:
            parse_schedule(schedule)
        except InputError as e:
            return str(e)
        return True

    def encode(self, text_encoder, schedule, transition_s, neutral_prompt):
        from ..emocast.emotion.schedule import parse_schedule

        if not neutral_prompt.strip():
            raise InputError("neutral_prompt is empty.", hint=f"Use e.g. {NEUTRAL_PROMPT!r}.")
        return (text_encoder.encode(parse_schedule(schedule, transition_s), neutral_prompt.strip()),)


NODE_CLASS_MAPPINGS = {
    "EmoCAST_LoadTextEncoder": LoadTextEncoder,
    "EmoCAST_EncodeEmotion": EncodeEmotion,
    "EmoCAST_EmotionSchedule": EmotionSchedule,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EmoCAST_LoadTextEncoder": "EmoCAST Load Text Encoder",
    "EmoCAST_EncodeEmotion": "EmoCAST Encode Emotion",
    "EmoCAST_EmotionSchedule": "EmoCAST Emotion Schedule",
}
