"""Where each model lives in a ComfyUI-style models folder, and where users get it.

One table for the nodes (which resolve through ComfyUI's `folder_paths`) and the CLI (which
searches a models folder itself), so both use the same sub-folders and names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import MissingModelError
from .weights import SUFFIXES


@dataclass(frozen=True)
class ModelKind:
    key: str                 # folder_paths key == sub-folder of models/
    what: str                # for messages
    prefer: tuple[str, ...]  # name fragments tried in order when several files are present
    source: str              # where to get it
    folders: bool = False    # Hugging Face folders are accepted too


EMOCAST = ModelKind("emocast", "EmoCAST checkpoint (net.pth)", ("emocast", "net"),
                    "https://huggingface.co/Jmaomao/EmoCAST (net.pth; `python -m emocast convert-checkpoint` "
                    "makes an fp16 .safetensors)")
VAE = ModelKind("vae", "SD VAE (sd-vae-ft-mse)", ("ft-mse", "ft_mse", "emocast"),
                "https://huggingface.co/stabilityai/sd-vae-ft-mse (diffusion_pytorch_model.safetensors) or "
                "vae-ft-mse-840000-ema-pruned.safetensors", folders=True)
CLIP = ModelKind("text_encoders", "CLIP ViT-L/14 text encoder", ("clip_l", "clip-vit-large", "emocast"),
                 "ComfyUI's clip_l.safetensors or https://huggingface.co/openai/clip-vit-large-patch14",
                 folders=True)
WAV2VEC2 = ModelKind("audio_encoders", "wav2vec2-base-960h", ("wav2vec2-base-960h", "wav2vec2_base", "wav2vec2",
                                                               "emocast"),
                     "https://huggingface.co/facebook/wav2vec2-base-960h (model.safetensors)", folders=True)
INSIGHTFACE = ModelKind("insightface", "insightface pack (antelopev2)", ("antelopev2", "buffalo_l"),
                        "the insightface model zoo (antelopev2), unzipped to models/insightface/models/antelopev2/",
                        folders=True)
LANDMARKER = ModelKind("mediapipe", "mediapipe face_landmarker.task", ("face_landmarker",),
                       "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
                       "face_landmarker.task")
KINDS = (EMOCAST, VAE, CLIP, WAV2VEC2, INSIGHTFACE, LANDMARKER)

HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Remote:
    """One published file and where it goes: `dest` under a models folder (the README's model table).

    `repo` set: a Hugging Face file (`{endpoint}/{repo}/resolve/{revision}/{file}`, sha256 and size from the
    hub); else `url` is a plain download (size checked only)."""
    part: str                # download-models --only name
    kind: ModelKind
    dest: str                # path under the models folder
    file: str = ""           # name in the repo
    repo: str = ""
    revision: str = "main"
    url: str = ""            # non-hub URL
    note: str = ""

    def source_url(self, endpoint: str = HUB) -> str:
        if not self.repo:
            return self.url
        return f"{endpoint.rstrip('/')}/{self.repo}/resolve/{self.revision}/{self.file}"

    @property
    def name(self) -> str:
        return Path(self.dest).name

    @property
    def choice(self) -> str:
        """What a loader's list shows for it: the file name, or the pack folder for insightface."""
        return Path(self.dest).parent.name if self.kind is INSIGHTFACE else self.name


_ANTELOPE = ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx")
#: What `python -m emocast download-models` fetches; part names are its --only choices.
REMOTES = (
    Remote("net", EMOCAST, "emocast/net.pth", "net.pth", "Jmaomao/EmoCAST", note="the authors' release"),
    Remote("vae", VAE, "vae/vae-ft-mse-840000-ema-pruned.safetensors", "vae-ft-mse-840000-ema-pruned.safetensors",
           "stabilityai/sd-vae-ft-mse-original"),
    Remote("clip", CLIP, "text_encoders/clip_l.safetensors", "clip_l.safetensors", "comfyanonymous/flux_text_encoders",
           note="ComfyUI's CLIP-L: openai/clip-vit-large-patch14's text model, fp16"),
    Remote("wav2vec2", WAV2VEC2, "audio_encoders/wav2vec2-base-960h.safetensors", "model.safetensors",
           "facebook/wav2vec2-base-960h", note="its model.safetensors, renamed"),
    *(Remote("insightface", INSIGHTFACE, f"insightface/models/antelopev2/{f}", f, "DIAMONIK7777/antelopev2",
             note="a community mirror of insightface's antelopev2 zip") for f in _ANTELOPE),
    Remote("landmarker", LANDMARKER, "mediapipe/face_landmarker.task",
           url="https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/"
               "face_landmarker.task", note="optional: with mediapipe >= 0.10.30"),
)
PARTS = tuple(dict.fromkeys(r.part for r in REMOTES))
#: Parts a run cannot do without (the landmarker falls back to insightface's 106 points or mediapipe's mesh).
REQUIRED_PARTS = ("net", "vae", "clip", "wav2vec2", "insightface")


def choices(kind: ModelKind) -> list[str]:
    """The names download_if_missing can fetch for a loader of `kind`."""
    return list(dict.fromkeys(r.choice for r in REMOTES if r.kind is kind))


def remotes(parts=None) -> list[Remote]:
    """The remotes of the given parts (all when None)."""
    return [r for r in REMOTES if parts is None or r.part in parts]


def comfyui_models_dir() -> Optional[Path]:
    """ComfyUI's models folder: $COMFYUI_MODELS, or the one above this pack in custom_nodes/."""
    env = os.environ.get("COMFYUI_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if parent.name == "custom_nodes" and (parent.parent / "models").is_dir():
            return parent.parent / "models"
    return None


def candidates(models_dir: Path, kind: ModelKind) -> list[Path]:
    return candidates_in(Path(models_dir) / kind.key, kind)


def candidates_in(folder: Path, kind: ModelKind) -> list[Path]:
    """The files (or folders) of `kind` in one folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if kind is LANDMARKER:
        return sorted(folder.rglob("*.task"))
    found = [p for p in sorted(folder.iterdir())
             if (p.is_file() and p.suffix in SUFFIXES) or (kind.folders and p.is_dir())]
    return found


def find_model(models_dir: Path, kind: ModelKind, name: Optional[str] = None) -> Path:
    """The file (or folder) of `kind` under models_dir: `name` if given, else the preferred candidate."""
    folder = Path(models_dir) / kind.key
    if name:
        p = Path(name)
        path = p if p.is_absolute() or p.exists() else folder / name
        if path.exists():
            return path
        raise MissingModelError(f"{kind.what} {name!r} not found (looked in {folder}).", hint=f"Get it from {kind.source}.")
    found = candidates(models_dir, kind)
    if not found:
        raise MissingModelError(f"no {kind.what} found: looked in {folder}.", hint=f"Get it from {kind.source}.")
    for fragment in kind.prefer:
        for p in found:
            if fragment in p.name.lower():
                return p
    return found[0]
