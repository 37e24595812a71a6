"""Ready-made emotion prompts, worded the way the authors prompt the model.

The eight basic emotions use the authors' template ("A person is talking with happy emotion.");
the scene prompts are the paper's examples of free-text emotion. Nodes offer `PRESETS` as a combo
and the web UI reads the same table from `web/js/emocast_presets.json`, which
`python -m emocast.emotion.presets` rewrites (a test checks the two agree).
"""
from __future__ import annotations

import json
from pathlib import Path

#: The eight basic emotions (MEAD's labels), in a fixed display order.
EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised", "contempt")


def emotion_prompt(emotion: str) -> str:
    """The authors' prompt template for one emotion word."""
    return f"A person is talking with {emotion} emotion."


#: Scene prompts from the authors' examples (free text works beyond the basic emotions).
SCENES = {
    "chronic illness or pain": "The portrait is experiencing chronic illness or pain.",
    "horror movie": "The portrait is watching a horror movie with jump scares.",
}
#: Preset name -> prompt: the basic emotions, then the scenes.
PRESETS = {**{e: emotion_prompt(e) for e in EMOTIONS}, **SCENES}
#: What intensity scales from (intensity 0 gives exactly this prompt's embedding).
NEUTRAL_PROMPT = PRESETS["neutral"]
DEFAULT_PRESET = "happy"

WEB_JSON = Path(__file__).resolve().parents[2] / "web" / "js" / "emocast_presets.json"


def presets_json() -> str:
    """The table the web UI fetches, as JSON text."""
    table = {"presets": PRESETS, "emotions": list(EMOTIONS), "scenes": list(SCENES),
             "neutral": NEUTRAL_PROMPT, "default": DEFAULT_PRESET}
    return json.dumps(table, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    WEB_JSON.write_text(presets_json(), encoding="utf-8")
