"""`python -m emocast doctor` and the EmoCAST Doctor node: one screen on what a run needs and what is missing.

Packages (torch and its device, onnxruntime and its providers, insightface, mediapipe and the landmarker
"auto" would pick, PyAV with FFmpeg's h264 / AAC encoders) and every model file: where it was found, its
size, its layout (the Net's against EmoCAST's key table; the others' headers), or, when missing, the fix:
URL, folder and the download command. Nothing is loaded onto a device and nothing is downloaded.
"""
from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import model_files as mf
from .errors import EmoCASTError

OK, WARN, MISSING, BAD = "ok", "warn", "MISSING", "BAD"
#: Key fragments one of which a file of each kind holds (catches e.g. a VAE picked as the text encoder).
KEY_HINTS = {mf.VAE: ("decoder.", "first_stage_model."), mf.CLIP: ("encoder.layers.", "token_embedding"),
             mf.WAV2VEC2: ("feature_extractor.", "feature_projection.")}
ANTELOPEV2 = {r.name for r in mf.REMOTES if r.part == "insightface"}


@dataclass(frozen=True)
class Check:
    status: str               # OK / WARN (works, not as well) / MISSING / BAD (a needed part)
    what: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status in (MISSING, BAD)


def _version(name: str) -> Optional[str]:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


# ---------------------------------------------------------------------------------------------- packages

def check_torch() -> Check:
    try:
        import torch
    except ImportError as e:
        return Check(MISSING, "torch", str(e), "Install PyTorch first (ComfyUI's own).")
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(i)
        return Check(OK, "torch", f"{torch.__version__}, CUDA {torch.version.cuda}: {torch.cuda.get_device_name(i)}, "
                                  f"{_gib(free)} free of {_gib(total)}")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return Check(OK, "torch", f"{torch.__version__}, Apple MPS")
    return Check(WARN, "torch", f"{torch.__version__}, CPU only: a real run takes hours",
                 "Install a CUDA build of PyTorch for an NVIDIA GPU.")


def check_onnxruntime() -> Check:
    builds = {n: v for n in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                             "onnxruntime-rocm", "onnxruntime-silicon") if (v := _version(n))}
    try:
        import onnxruntime
    except ImportError as e:
        return Check(MISSING, "onnxruntime", str(e), "Run the pack's install.py (python install.py).")
    providers = onnxruntime.get_available_providers()
    shown = ", ".join(f"{n} {v}" for n, v in builds.items()) or onnxruntime.__version__
    detail = f"{shown}; providers {', '.join(p.removesuffix('ExecutionProvider') for p in providers)}"
    if len(builds) > 1:
        return Check(WARN, "onnxruntime", detail + ": several builds installed over each other",
                     "pip uninstall them all, then install only the one you want (e.g. onnxruntime-gpu).")
    return Check(OK, "onnxruntime", detail)


def check_insightface() -> Check:
    v = _version("insightface")
    if v is None:
        return Check(MISSING, "insightface", "not installed (finds the face and its identity)",
                     "Run the pack's install.py (python install.py).")
    return Check(OK, "insightface", v)


def check_landmarker(task_files: Sequence[Path], models_arg: str = "") -> Check:
    """What load_landmarker("auto") picks, without building it."""
    try:
        import mediapipe as mp
    except ImportError:
        mp = None
    if mp is not None and task_files:
        return Check(OK, "landmarks", f"mediapipe {mp.__version__} tasks with {task_files[0]} (the authors' 478 points)")
    if mp is not None and hasattr(mp, "solutions"):
        return Check(OK, "landmarks", f"mediapipe {mp.__version__} built-in face mesh (the authors' 478 points)")
    why = "mediapipe not installed" if mp is None else f"mediapipe {mp.__version__} without face_landmarker.task"
    return Check(WARN, "landmarks", f"{why}: insightface 2d106, masks only approximate the authors'",
                 f'pip install "mediapipe>=0.10.30" and python -m emocast download-models{models_arg} --only landmarker')


def check_video() -> Check:
    try:
        import av
    except ImportError as e:
        return Check(MISSING, "PyAV", str(e), "pip install av")
    missing = []
    for names in (("libx264", "h264", "libopenh264"), ("aac",)):
        for name in names:
            try:
                av.codec.Codec(name, "w")
                break
            except Exception:
                continue
        else:
            missing.append(names[0])
    ffmpeg = av.library_versions.get("libavcodec", ("?",))
    detail = f"{av.__version__}, libavcodec {'.'.join(map(str, ffmpeg))}"
    if missing:
        return Check(BAD, "PyAV", f"{detail}: no {' / '.join(missing)} encoder", "pip install --force-reinstall av")
    return Check(OK, "PyAV", detail + ", h264 + AAC encoders")


# ---------------------------------------------------------------------------------------------- models

def _fix(kind: mf.ModelKind, folder: Path, models_arg: str) -> str:
    parts = {r.part for r in mf.REMOTES if r.kind is kind}
    urls = sorted({r.source_url() for r in mf.REMOTES if r.kind is kind})
    url = urls[0] if len(urls) == 1 else f"{urls[0].rsplit('/', 1)[0]}/ ({len(urls)} files)"
    return (f"python -m emocast download-models{models_arg} --only {','.join(sorted(parts))}, or get {url} into "
            f"{folder}")


def _size(path: Path) -> str:
    n = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n:,} bytes"


def _weights(kind: mf.ModelKind, path: Path) -> Check:
    from .models.checkpoint import verify_net
    from .weights import Download, inspect_checkpoint

    label = kind.key
    try:
        if kind is mf.EMOCAST:
            info, layout = verify_net(path)
            widths = "/".join(map(str, layout.config.block_out_channels))
            return Check(OK, label, f"{path} ({_size(path)}): EmoCAST Net layout, UNet widths {widths}, "
                                    f"{info.dtype_summary()}")
        if path.is_dir():
            found = [p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin")]
            status = OK if (path / "config.json").is_file() and found else BAD
            return Check(status, label, f"{path} (folder, {_size(path)}): {', '.join(found) or 'no weights'}")
        info = inspect_checkpoint(path, Download(path.name, kind.source))
        if not any(h in k for k in info.shapes for h in KEY_HINTS.get(kind, ("",))):
            return Check(BAD, label, f"{path}: {len(info.shapes)} tensors, none looks like a {kind.what}",
                         f"Get it from {kind.source}.")
        return Check(OK, label, f"{path} ({_size(path)}): {len(info.shapes)} tensors, {info.dtype_summary()}")
    except EmoCASTError as e:
        return Check(BAD, label, f"{path}: {e.message}", e.hint or "")


def _pick(kind: mf.ModelKind, found: list[Path]) -> Path:
    for fragment in kind.prefer:
        for p in found:
            if fragment in p.name.lower():
                return p
    return found[0]


def check_models(folders: Callable[[mf.ModelKind], list[Path]], models_arg: str = "") -> list[Check]:
    """One check per model kind; `folders(kind)` lists where that kind is searched, first = where it goes."""
    from .preprocess.face import find_pack

    checks = []
    for kind in mf.KINDS:
        roots = [Path(f) for f in folders(kind)]
        target = roots[0] if roots else Path("models") / kind.key
        if kind is mf.INSIGHTFACE:
            pack = None
            for root in roots:
                try:
                    pack = find_pack(root)
                    break
                except EmoCASTError:
                    continue
            if pack is None:
                checks.append(Check(MISSING, kind.key, f"no antelopev2 folder under {', '.join(map(str, roots))}",
                                    _fix(kind, target / "models" / "antelopev2", models_arg)))
            else:
                onnx = sorted(p.name for p in pack.glob("*.onnx"))
                lacking = sorted(ANTELOPEV2 - set(onnx)) if pack.name == "antelopev2" else []
                checks.append(Check(BAD if lacking else OK, kind.key,
                                    f"{pack} ({_size(pack)}): {', '.join(onnx)}"
                                    + (f"; lacks {', '.join(lacking)}" if lacking else ""),
                                    _fix(kind, pack, models_arg) if lacking else ""))
            continue
        found = list(dict.fromkeys(p for root in roots for p in mf.candidates_in(root, kind)))
        if kind is mf.LANDMARKER:
            if found:
                checks.append(Check(OK, kind.key, f"{found[0]} ({_size(found[0])})"))
            else:
                checks.append(Check(WARN, kind.key, "no face_landmarker.task (optional, with mediapipe >= 0.10.30)",
                                    _fix(kind, target, models_arg)))
            continue
        if not found:
            checks.append(Check(MISSING, kind.key, f"no {kind.what} in {', '.join(map(str, roots)) or target}",
                                _fix(kind, target, models_arg)))
            continue
        checks.append(_weights(kind, _pick(kind, found)))
    return checks


def run_checks(folders: Callable[[mf.ModelKind], list[Path]], models_arg: str = "") -> list[Check]:
    model_checks = check_models(folders, models_arg)
    tasks = [Path(c.detail.split(" (")[0]) for c in model_checks if c.what == mf.LANDMARKER.key and c.status == OK]
    return [check_torch(), check_onnxruntime(), check_insightface(), check_landmarker(tasks, models_arg), check_video(),
            *model_checks]


def report(checks: Sequence[Check], where: str = "") -> str:
    lines = [f"EmoCAST doctor{f' ({where})' if where else ''}"]
    for c in checks:
        lines.append(f"  {c.status:8s}{c.what:16s}{c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"  {'':8s}{'':16s}fix: {c.fix}")
    failed = [c.what for c in checks if c.failed]
    lines.append(f"  => missing or broken: {', '.join(failed)}" if failed else "  => everything a run needs is there")
    return "\n".join(lines)


def folder_lookup(models_dir: Path) -> Callable[[mf.ModelKind], list[Path]]:
    return lambda kind: [Path(models_dir) / kind.key]


def cli(models: Optional[str]) -> int:
    from .errors import InputError

    models_dir = Path(models) if models else mf.comfyui_models_dir()
    if models_dir is None or not models_dir.is_dir():
        raise InputError(f"models folder not found: {models or '(none given, no ComfyUI models folder found)'}.",
                         hint="Pass --models DIR (e.g. ComfyUI/models) or set COMFYUI_MODELS.")
    checks = run_checks(folder_lookup(models_dir), f" --models {models_dir}")
    print(report(checks, str(models_dir)))
    return 1 if any(c.failed for c in checks) else 0
