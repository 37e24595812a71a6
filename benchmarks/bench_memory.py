"""Peak RAM of long videos: 40 s vs 2 s of speech on the tiny models, CLI and node path (stand-in host).

    python benchmarks/bench_memory.py [--long 40] [--short 2] [--paths cli node]

Each run is a fresh Python process (peak RSS = its ru_maxrss): `python -m emocast generate` on
`demo --export-models` models (--size 128 --steps 1), and EmoCAST Sample to Video through the
stand-in ComfyUI host of the tests. Speech: the demo clip tiled to the length. Prints the peaks
and the long / short ratio (the issue asks <= 1.3: memory holds a clip, not the video).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiled_speech(seconds: float, out: Path) -> Path:
    import numpy as np
    import soundfile as sf

    from emocast.demo.tiny import DEMO_AUDIO

    wave, sr = sf.read(str(DEMO_AUDIO), dtype="float32")
    n = int(seconds * sr)
    sf.write(str(out), np.resize(wave, (n,) + wave.shape[1:]), sr)
    return out


def child_cli(seconds: float, work: Path) -> None:
    from emocast.cli import main
    from emocast.demo.tiny import DEMO_IMAGE

    speech = tiled_speech(seconds, work / f"speech_{seconds:g}.wav")
    rc = main(["generate", "--image", str(DEMO_IMAGE), "--audio", str(speech), "--prompt", "happy",
               "--models", str(work / "models"), "--out", str(work / f"cli_{seconds:g}.mp4"),
               "--size", "128", "--steps", "1"])
    assert rc == 0


def child_node(seconds: float, work: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_host import StubHost

    StubHost().install(work / "models", work / "output")
    from pack_fixtures import core_nodes, load_pack, read_api, run_graph, tiny

    pack = load_pack()
    audio_mod = __import__(pack.__name__ + ".emocast.preprocess.audio", fromlist=["x"])
    graph = tiny(read_api("emocast_basic"), frames_per_clip=16)
    for nid in ("12", "13", "14"):
        del graph[nid]
    graph["11"]["class_type"] = "EmoCAST_SampleToVideo"
    graph["11"]["inputs"].update(audio=["10", 1], paste_back=True)
    core = core_nodes(pack, work / "models", work / "output")
    speech = tiled_speech(seconds, work / f"node_speech_{seconds:g}.wav")
    core["LoadAudio"] = lambda audio: (audio_mod.as_comfy_audio(str(speech)),)
    outputs, _ = run_graph(pack, graph, core)
    outputs["11"][0].save_to(str(work / f"node_{seconds:g}.mp4"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", type=float, default=40.0)
    ap.add_argument("--short", type=float, default=2.0)
    ap.add_argument("--paths", nargs="+", default=["cli", "node"])
    ap.add_argument("--child", nargs=3, metavar=("PATH", "SECONDS", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        path, seconds, work = args.child
        {"cli": child_cli, "node": child_node}[path](float(seconds), Path(work))
        print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    with tempfile.TemporaryDirectory() as work:
        from emocast.demo.models import export_models

        export_models(Path(work) / "models")
        for path in args.paths:
            peaks = {}
            for seconds in (args.short, args.long):
                run = subprocess.run([sys.executable, __file__, "--child", path, str(seconds), work], cwd=ROOT,
                                     capture_output=True, text=True)
                if run.returncode:
                    sys.exit(f"{path} {seconds} s failed:\n{run.stderr[-3000:]}")
                peaks[seconds] = json.loads(run.stdout.strip().splitlines()[-1])["maxrss_mb"]
            ratio = peaks[args.long] / peaks[args.short]
            print(f"{path}: peak RSS {args.short:g} s {peaks[args.short]:.0f} MB, {args.long:g} s "
                  f"{peaks[args.long]:.0f} MB, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
