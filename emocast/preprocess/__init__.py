"""Preprocessing of the user's inputs, one module per concern (import them directly):

face.py       photo -> FaceConditioning (detect, pick, crop, identity embedding, landmarks, masks)
landmarks.py  478-point landmarks (mediapipe Tasks / legacy face mesh) or insightface 2d106
masks.py      the authors' lip / face / background masks and their pyramids
crop.py       any image mode -> RGB, square face crop, feathered paste-back
audio.py      speech from a file or ComfyUI AUDIO: decode, mono, 16 kHz, checks, fit to frames, neighbours

The networks that turn these into features (wav2vec2, CLIP text) live in emocast/models/.

Nothing heavy is imported here, so a missing optional package only affects the module needing it.
"""
