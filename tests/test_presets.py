"""Emotion presets: the authors' wording, and the web UI's JSON copy agrees with the library."""
import json

from emocast.emotion.presets import EMOTIONS, NEUTRAL_PROMPT, PRESETS, SCENES, WEB_JSON, presets_json


def test_web_json_agrees_with_the_library():
    # Regenerate with: python -m emocast.emotion.presets
    assert WEB_JSON.read_text(encoding="utf-8") == presets_json()
    table = json.loads(WEB_JSON.read_text(encoding="utf-8"))
    assert table["presets"] == PRESETS and table["neutral"] == NEUTRAL_PROMPT and table["default"] in PRESETS


def test_presets_in_the_authors_wording():
    assert len(EMOTIONS) == 8 and list(PRESETS)[:8] == list(EMOTIONS)
    assert PRESETS["happy"] == "A person is talking with happy emotion."  # the authors' example prompt
    assert NEUTRAL_PROMPT == "A person is talking with neutral emotion."
    assert set(SCENES.values()) == {"The portrait is experiencing chronic illness or pain.",
                                    "The portrait is watching a horror movie with jump scares."}
