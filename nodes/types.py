"""Socket type names and categories of the EmoCAST nodes (one place, no bare strings in nodes)."""

# Our own socket types: frozen once released (saved workflows store them on every link).
MODEL = "EMOCAST_MODEL"
TEXT_ENCODER = "EMOCAST_TEXT_ENCODER"
EMOTION = "EMOCAST_EMOTION"
FACE_ANALYSIS = "EMOCAST_FACE_ANALYSIS"
FACE = "EMOCAST_FACE"
AUDIO_ENCODER = "EMOCAST_AUDIO_ENCODER"
AUDIO_FEATURES = "EMOCAST_AUDIO"
#: EmoCAST Load VAE's output: the library's VAE, for EmoCAST Sample only.
LIB_VAE = "EMOCAST_VAE"

# ComfyUI core types.
IMAGE = "IMAGE"
MASK = "MASK"
AUDIO = "AUDIO"
VIDEO = "VIDEO"
VAE = "VAE"
#: What EmoCAST Sample accepts as its vae: core Load VAE's or EmoCAST Load VAE's (a union type).
ANY_VAE = "VAE,EMOCAST_VAE"
INT = "INT"
FLOAT = "FLOAT"

ROOT = "EmoCAST"
LOADERS = f"{ROOT}/loaders"
CONDITIONING = f"{ROOT}/conditioning"
SAMPLING = f"{ROOT}/sampling"
POSTPROCESS = f"{ROOT}/postprocess"

LOGGER = "EmoCAST"
