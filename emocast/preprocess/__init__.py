"""Preprocessing of the inputs. Face half: the reference photo -> FaceConditioning (crop, identity,
landmarks, masks).

Import the submodules directly (`emocast.preprocess.face`, `.masks`, `.crop`, `.landmarks`); the
names below are the usual entry points. insightface / mediapipe are imported only when used.
"""
from .crop import paste_back, square_box, to_rgb_float
from .face import FaceAnalyser, choose_face, find_pack, prepare_face
from .landmarks import Landmarks, load_landmarker
from .masks import mask_maps, mask_pyramids, pixel_values

__all__ = ["FaceAnalyser", "Landmarks", "choose_face", "find_pack", "load_landmarker", "mask_maps",
           "mask_pyramids", "paste_back", "pixel_values", "prepare_face", "square_box", "to_rgb_float"]

# Speech -> wav2vec2 features (librosa / PyAV / transformers are imported only when used).
from .audio import Speech, as_comfy_audio, fit_audio, load_speech  # noqa: E402
from .wav2vec2 import Windowing, extract_features, load_wav2vec2, stack_neighbours  # noqa: E402

__all__ += ["Speech", "Windowing", "as_comfy_audio", "extract_features", "fit_audio", "load_speech",
            "load_wav2vec2", "stack_neighbours"]
