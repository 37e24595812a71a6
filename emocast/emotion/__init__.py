"""Emotion prompts: CLIP text encoding, presets and emotion-over-time schedules."""
