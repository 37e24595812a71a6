"""Numbers fixed by the trained model, shared by the data bundles and the transforms that make them.

A leaf module (it imports nothing from the package), so any module may import it without a circle.
"""

#: Video frame rate the model was trained at (wav2vec2 features are resampled to it).
FPS = 25
#: Mask pyramid names, in the order of the audio module's branches (pose / face / lip weights).
MASK_NAMES = ("full", "face", "lip")
