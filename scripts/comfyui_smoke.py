"""The node pack in a real ComfyUI server, end to end on the tiny models (a check to run by hand, not in CI).

    python3 scripts/comfyui_smoke.py --comfyui /tmp/comfyui [--torchvision-shim .../install.sh]
                                     [--port 8199] [--skip-install] [--keep-running] [--preview-method latent2rgb]

Given a ComfyUI source folder (e.g. `git archive` of Comfy-Org/ComfyUI), outside this repository:
1. sets up <comfyui>/.venv if missing: torch==2.13.0 (CPU), torchvision==0.28.0 and torchaudio with torch
   pinned, ComfyUI's requirements, this pack's requirements, and --torchvision-shim (an install.sh that makes
   the registry's CUDA torchvision / torchaudio wheels importable next to the CPU torch) when given;
2. copies (never links) the pack to custom_nodes/ComfyUI-EmoCAST; writes the tiny demo models into models/
   (emocast_tiny_*), plus a real-size sd-vae-ft-mse with random weights in the released LDM naming for core
   Load VAE (which only reads the SD VAE shapes), and the demo portrait / speech into input/;
3. starts `main.py --cpu --listen 127.0.0.1 --preview-method latent2rgb` (ComfyUI's step previews, which
   EmoCAST Sample sends as it samples; `--preview-method none` leaves only its one preview per clip), checks
   the log has no IMPORT FAILED and no EmoCAST warning, every EmoCAST node is in /object_info, and the
   shipped UI workflows' widget values fit the server's node definitions;
4. queues the shipped API workflows (basic and emotion schedule; tiny model names, 128 px, 1 step, 4 frames
   per clip) through POST /prompt, waits on /history, checks each saved MP4 with PyAV (frames = ceil(audio x
   25), H.264 + AAC, audio as long as the video); then queues a longer run and cancels it with POST /interrupt.
Prints a JSON report; exit status 0 when every check passed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_DIR = "ComfyUI-EmoCAST"
PACK_PARTS = ("__init__.py", "nodes", "emocast", "web", "example_workflows", "pyproject.toml", "requirements.txt",
              "install.py", "LICENSE", "README.md")
NODE_IDS = ("EmoCAST_LoadModel", "EmoCAST_LoadVAE", "EmoCAST_LoadTextEncoder", "EmoCAST_EncodeEmotion",
            "EmoCAST_EmotionSchedule", "EmoCAST_LoadFaceAnalysis", "EmoCAST_EncodeFace", "EmoCAST_LoadAudioEncoder",
            "EmoCAST_EncodeAudio", "EmoCAST_Sample", "EmoCAST_SampleAdvanced", "EmoCAST_PasteBack", "EmoCAST_Doctor")
SMOKE_VAE = "emocast_smoke_sd_vae_random.safetensors"
TINY = {"ckpt_name": "emocast_tiny.safetensors", "clip_name": "emocast_tiny_clip.safetensors",
        "wav2vec2": "emocast_tiny_wav2vec2.safetensors", "insightface": "emocast_tiny", "vae_name": SMOKE_VAE,
        "resolution": 128, "steps": 1, "frames_per_clip": 4, "image": "emocast_demo_portrait.png",
        "audio": "emocast_demo_speech_1s.wav"}
AUDIO_SECONDS = 1.0  # the first second of the demo speech

MODELS_SCRIPT = r"""
import sys, torch
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from emocast.demo.models import export_models
from emocast.demo.tiny import rule_value, DEMO_IMAGE, DEMO_AUDIO
models, inputs = Path(sys.argv[2]), Path(sys.argv[3])
export_models(models)
# core Load VAE reads only the SD VAE shapes: a real-size sd-vae-ft-mse with rule weights, LDM names
import comfy.diffusers_convert
from diffusers import AutoencoderKL
from emocast.models.vae import default_config
from safetensors.torch import save_file
cfg = {k: v for k, v in default_config().items() if not k.startswith("_")}
with torch.device("meta"):
    shapes = {k: v.shape for k, v in AutoencoderKL(**cfg).state_dict().items()}
ldm = comfy.diffusers_convert.convert_vae_state_dict({k: rule_value(k, s) for k, s in shapes.items()})
save_file({k: v.half().contiguous() for k, v in ldm.items()}, str(models / "vae" / sys.argv[4]))
inputs.mkdir(parents=True, exist_ok=True)
(inputs / "emocast_demo_portrait.png").write_bytes(DEMO_IMAGE.read_bytes())
import soundfile as sf
wave, sr = sf.read(str(DEMO_AUDIO), dtype="float32")
sf.write(str(inputs / "emocast_demo_speech_1s.wav"), wave[:sr], sr)  # 1 s of the demo speech: 25 frames
"""

PROBE_SCRIPT = r"""
import json, sys, av
with av.open(sys.argv[1]) as c:
    v = c.streams.video[0]
    info = {"codec": v.codec_context.name, "fps": float(v.average_rate), "size": [v.width, v.height],
            "frames": sum(1 for _ in c.decode(video=0))}
with av.open(sys.argv[1]) as c:
    a = c.streams.audio[0] if c.streams.audio else None
    info["audio_codec"] = a.codec_context.name if a else None
    info["audio_seconds"] = sum(f.samples for f in c.decode(audio=0)) / a.codec_context.sample_rate if a else 0
print(json.dumps(info))
"""


def sh(cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def setup_venv(comfy: Path, shim) -> Path:
    py = comfy / ".venv" / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(comfy / ".venv")])
    pip = [str(py), "-m", "pip", "install", "-q"]
    if subprocess.run([str(py), "-c", "import torch, torchvision, torchaudio"], capture_output=True).returncode:
        sh(pip + ["torch==2.13.0"])
        pin = comfy / ".venv" / "torch-pin.txt"
        pin.write_text("torch==2.13.0\n")
        sh(pip + ["-c", str(pin), "torchvision==0.28.0", "torchaudio", "-r", str(comfy / "requirements.txt")])
        if shim:
            sh(["bash", str(shim)], env={**os.environ, "PYTHON": str(py)})
        elif subprocess.run([str(py), "-c", "import torchvision, torchaudio"], capture_output=True).returncode:
            sys.exit("torchvision / torchaudio do not import next to the CPU torch: pass --torchvision-shim")
    pin = comfy / ".venv" / "torch-pin.txt"
    pin.write_text("torch==2.13.0\n")
    sh(pip + ["-c", str(pin), "-r", str(ROOT / "requirements.txt")])
    sh([str(py), str(ROOT / "install.py")])  # onnxruntime + insightface, as ComfyUI-Manager runs it
    return py


def install_pack(comfy: Path, py: Path) -> None:
    dst = comfy / "custom_nodes" / PACK_DIR
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for part in PACK_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file():
            shutil.copy2(src, dst / part)
    sh([str(py), "-c", MODELS_SCRIPT, str(dst), str(comfy / "models"), str(comfy / "input"), SMOKE_VAE],
       cwd=comfy, env={**os.environ, "PYTHONPATH": str(comfy)})


def http(port: int, path: str, data=None, timeout=30):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if data is not None else "GET",
                                 data=None if data is None else json.dumps(data).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else None


def start_server(comfy: Path, py: Path, port: int, log_path: Path, preview: str = "latent2rgb") -> subprocess.Popen:
    log = open(log_path, "w")
    proc = subprocess.Popen([str(py), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--preview-method", preview],
                            cwd=comfy, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}; see {log_path}")
        try:
            http(port, "/system_stats", timeout=5)
            return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise RuntimeError(f"ComfyUI did not answer on port {port} within 240 s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def widget_count(spec: dict) -> int:
    """Widget values the frontend stores for a node definition of /object_info."""
    n = 0
    for group in ("required", "optional"):
        for name, entry in spec["input"].get(group, {}).items():
            kind, opts = entry[0], (entry[1] if len(entry) > 1 else {})
            if isinstance(kind, list) or kind == "COMBO" or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                n += 1 + bool(opts.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")))
            if opts.get("image_upload") or opts.get("audio_upload"):
                n += 1 + (1 if opts.get("audio_upload") else 0)  # upload button (+ the audio player)
    return n


def check_ui_workflows(info: dict) -> list[str]:
    problems = []
    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
            if node["type"] in ("MarkdownNote", "Note"):
                continue
            if node["type"] not in info:
                problems.append(f"{path.name}: node type {node['type']} unknown to the server")
            elif len(node["widgets_values"]) != widget_count(info[node["type"]]):
                problems.append(f"{path.name}: {node['type']} has {len(node['widgets_values'])} widget values, "
                                f"the server's definition {widget_count(info[node['type']])}")
    return problems


def tiny(graph: dict, **extra) -> dict:
    graph = json.loads(json.dumps(graph))
    for node in graph.values():
        for key, value in {**TINY, **extra}.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    return graph


def run_prompt(port: int, graph: dict, timeout: float) -> dict:
    client = uuid.uuid4().hex
    prompt_id = http(port, "/prompt", {"prompt": graph, "client_id": client})["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = http(port, f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            if history[prompt_id]["status"].get("status_str") in ("success", "error"):
                return history[prompt_id]
        time.sleep(1)
    raise RuntimeError(f"prompt {prompt_id} did not finish within {timeout} s")


def probe(py: Path, path: Path) -> dict:
    out = subprocess.run([str(py), "-c", PROBE_SCRIPT, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", required=True, type=Path, help="ComfyUI source folder (outside this repository)")
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--skip-install", action="store_true", help="reuse <comfyui>/.venv as it is")
    ap.add_argument("--torchvision-shim", type=Path, default=os.environ.get("EMOCAST_TORCHVISION_SHIM"),
                    help="install.sh of the CPU torchvision shim (env EMOCAST_TORCHVISION_SHIM)")
    ap.add_argument("--keep-running", action="store_true", help="leave the server running at the end")
    ap.add_argument("--preview-method", default="latent2rgb", choices=("none", "auto", "latent2rgb", "taesd"),
                    help="ComfyUI's --preview-method for the server (default latent2rgb: the sampler's step previews)")
    a = ap.parse_args()
    comfy = a.comfyui.resolve()
    if ROOT in comfy.parents or comfy == ROOT:
        sys.exit("--comfyui must be outside this repository")
    py = comfy / ".venv" / "bin" / "python" if a.skip_install else setup_venv(comfy, a.torchvision_shim)
    install_pack(comfy, py)
    log_path = comfy / "emocast_smoke.log"
    report: dict = {"comfyui": str(comfy), "checks": {}}
    t0 = time.time()
    proc = start_server(comfy, py, a.port, log_path, a.preview_method)
    report["startup_s"] = round(time.time() - t0, 1)
    try:
        log = log_path.read_text(errors="replace")
        report["checks"]["no IMPORT FAILED"] = "IMPORT FAILED" not in log
        report["checks"]["no EmoCAST warning at import"] = "EmoCAST:" not in log
        info = http(a.port, "/object_info")
        report["checks"]["all nodes in /object_info"] = all(n in info for n in NODE_IDS)
        report["missing_nodes"] = [n for n in NODE_IDS if n not in info]
        report["ui_workflow_problems"] = check_ui_workflows(info)
        report["checks"]["UI workflows fit the server's node definitions"] = not report["ui_workflow_problems"]
        scripts = [e for e in http(a.port, "/extensions") if f"/{PACK_DIR}/" in e]
        report["web"] = scripts
        presets = http(a.port, f"/extensions/{PACK_DIR}/emocast_presets.json")
        report["checks"]["web extension served"] = any(e.endswith("/emocast.js") for e in scripts) and \
            "happy" in presets.get("presets", {})
        templates = http(a.port, "/workflow_templates")
        report["templates"] = templates.get(PACK_DIR)
        report["checks"]["workflows listed as templates"] = sorted(templates.get(PACK_DIR, [])) == sorted(
            p.stem for p in (ROOT / "example_workflows").glob("*.json"))
        frames = math.ceil(AUDIO_SECONDS * 25)
        for name in ("emocast_basic", "emocast_emotion_schedule"):
            graph = json.loads((ROOT / "example_workflows" / "api" / f"{name}_api.json").read_text(encoding="utf-8"))
            prefix = f"emocast_smoke/{name}_{uuid.uuid4().hex[:6]}"
            graph = tiny(graph, filename_prefix=prefix)
            t0 = time.time()
            result = run_prompt(a.port, graph, timeout=1800)
            entry = {"status": result["status"]["status_str"], "seconds": round(time.time() - t0, 1)}
            if entry["status"] != "success":
                entry["messages"] = result["status"].get("messages")
            videos = [Path(comfy / "output" / v.get("subfolder", "") / v["filename"])
                      for out in result.get("outputs", {}).values() for key in ("images", "videos", "animated")
                      for v in out.get(key, []) if isinstance(v, dict) and str(v.get("filename", "")).endswith(".mp4")]
            entry["videos"] = [str(v) for v in videos]
            entry["ui"] = {k: v for out in result.get("outputs", {}).values() for k, v in out.items()
                           if k == "emocast_audio"}
            if videos:
                entry["probe"] = probe(py, videos[0])
            ok = entry["status"] == "success" and videos and entry["probe"]["frames"] == frames \
                and entry["probe"]["codec"] == "h264" and entry["probe"]["audio_codec"] == "aac" \
                and abs(entry["probe"]["audio_seconds"] - frames / 25) < 0.05
            report[name] = entry
            report["checks"][f"{name} -> MP4 with {frames} frames and the speech"] = bool(ok)
        # Cancel: a longer run, interrupted while it samples
        graph = tiny(json.loads((ROOT / "example_workflows" / "api" / "emocast_basic_api.json").read_text()),
                     steps=3, seed=7, filename_prefix="emocast_smoke/cancelled")
        client = uuid.uuid4().hex
        prompt_id = http(a.port, "/prompt", {"prompt": graph, "client_id": client})["prompt_id"]
        time.sleep(8)
        http(a.port, "/interrupt", {})
        deadline, status = time.time() + 600, None
        while time.time() < deadline:
            hist = http(a.port, f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                status = hist[prompt_id]["status"]
                break
            time.sleep(1)
        events = [m[0] for m in (status or {}).get("messages", [])]
        report["cancel"] = {"status": status and status.get("status_str"), "events": events}
        report["checks"]["Cancel -> execution_interrupted"] = "execution_interrupted" in events
        log = log_path.read_text(errors="replace")
        report["checks"]["no traceback in the log"] = "Traceback" not in log
    finally:
        if not a.keep_running:
            stop_server(proc)
    report["ok"] = all(report["checks"].values())
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
