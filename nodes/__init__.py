"""EmoCAST nodes for ComfyUI: one module per node family, assembled here.

A family whose module cannot be imported (a missing dependency) is skipped with one warning that
says what to install; the other families still register. Heavy and optional packages (diffusers,
transformers, insightface, onnxruntime, librosa, PyAV, mediapipe) are imported inside the node
functions, so they only matter when a node runs, and its error then names the pip package.
"""
import importlib
import logging

from . import host
from .types import LOGGER

log = logging.getLogger(LOGGER)

#: Family module -> what it provides, for the warning when it cannot load.
FAMILIES = {
    "loaders": "model / VAE loaders",
    "emotion": "emotion (text encoder, prompt, schedule)",
    "face": "face (face analysis, encode face)",
    "audio": "audio (wav2vec2, encode audio)",
    "sampling": "sampler",
    "postprocess": "paste-back",
    "doctor": "doctor",
}
#: Import name -> pip package, for the install hint.
PIP_NAMES = {"cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image"}

#: The node IDs this pack has released: saved workflows refer to them, so they never change.
NODE_IDS = (
    "EmoCAST_LoadModel", "EmoCAST_LoadVAE", "EmoCAST_LoadTextEncoder", "EmoCAST_EncodeEmotion",
    "EmoCAST_EmotionSchedule", "EmoCAST_LoadFaceAnalysis", "EmoCAST_EncodeFace", "EmoCAST_LoadAudioEncoder",
    "EmoCAST_EncodeAudio", "EmoCAST_Sample", "EmoCAST_SampleAdvanced", "EmoCAST_SampleToVideo", "EmoCAST_PasteBack",
    "EmoCAST_Doctor",
)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

host.register_model_folders()
host.copy_example_inputs()

for _family, _what in FAMILIES.items():
    try:
        _module = importlib.import_module(f".{_family}", __name__)
    except ImportError as _e:
        _name = (getattr(_e, "name", None) or "").split(".")[0]
        _pip = PIP_NAMES.get(_name, _name) or "the package named above"
        log.warning("EmoCAST: the %s nodes are not loaded: %s. Install it into ComfyUI's Python "
                    "(pip install %s); the other EmoCAST nodes work without it.", _what, _e, _pip)
        continue
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
