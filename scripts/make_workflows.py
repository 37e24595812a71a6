"""Write example_workflows/*.json (UI format, ComfyUI's template browser) and their API twins (api/) from one spec.

    .venv/bin/python scripts/make_workflows.py [--check]

Widget order comes from the nodes' own INPUT_TYPES (the pack is loaded against the tests' stand-in
host), core nodes' widgets from CORE below (checked against a real server's /object_info by
scripts/comfyui_smoke.py). Positions come from columns (place()) that leave room for what the frontend draws
beyond a node's size; scripts/frontend_check.mjs checks no node overlaps another there. --check exits 1 when the
committed files differ from what would be written.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
API = OUT / "api"

#: The example inputs: shipped in emocast/demo/assets, copied into ComfyUI's input folder when the pack loads.
EXAMPLE_INPUTS = {"image": "emocast_example_portrait.png", "audio": "emocast_example_speech.wav"}
#: Core nodes used by the examples: (socket inputs [(name, type, optional)], widgets [(name, value)], outputs).
CORE = {
    "LoadImage": ([], [("image", EXAMPLE_INPUTS["image"]), ("upload", "image")], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadAudio": ([], [("audio", EXAMPLE_INPUTS["audio"]), ("audioUI", None), ("upload", None)], [("AUDIO", "AUDIO")]),
    "VAELoader": ([], [("vae_name", "vae-ft-mse-840000-ema-pruned.safetensors")], [("VAE", "VAE")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", True)], [("fps", 25.0)], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False)], [("filename_prefix", "video/EmoCAST"), ("format", "auto"),
                                                 ("codec", "auto")], []),
    "PreviewImage": ([("images", "IMAGE", False)], [], []),
    "MarkdownNote": ([], [("text", "")], []),
}
#: Widgets the frontend shows but never sends to the server (upload buttons, audio player).
UI_ONLY = {"upload", "audioUI"}
#: Default model file names: what users download (see emocast/model_files.py and the README).
MODELS = {"ckpt_name": "net.pth", "clip_name": "clip_l.safetensors", "wav2vec2": "wav2vec2-base-960h.safetensors",
          "insightface": "antelopev2", "vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}

MODELS_NOTE = """## EmoCAST models
Upload your portrait and speech in the two load nodes (an example of each is preselected). Put each model file in
ComfyUI's `models/` folder (or a path from extra_model_paths.yaml), then press R; or turn on download_if_missing
on the loaders, or run `python -m emocast download-models --models ComfyUI/models`.

| file | folder | source |
|---|---|---|
| net.pth (or emocast_fp16.safetensors) | models/emocast | huggingface.co/Jmaomao/EmoCAST |
| vae-ft-mse-840000-ema-pruned.safetensors | models/vae | stabilityai/sd-vae-ft-mse-original |
| clip_l.safetensors | models/text_encoders | ComfyUI's usual CLIP-L |
| wav2vec2-base-960h.safetensors | models/audio_encoders | facebook/wav2vec2-base-960h model.safetensors, renamed |
| antelopev2/*.onnx | models/insightface/models | insightface model zoo (mirror: DIAMONIK7777/antelopev2) |
| face_landmarker.task (optional) | models/mediapipe | mediapipe face landmarker |

Frames come out at 25 fps; EmoCAST Encode Audio gives the matching fps, frame count and trimmed audio."""

LONG_NOTE = """## Long audio
Generation streams clip by clip, so length costs time, not GPU memory: each 16-frame clip continues from the
last two frames of the one before. What grows with length is CPU RAM for the frames (512 px: 3 MB per frame,
75 MB per second) and for Paste Back at the photo's size. For minutes of speech skip Paste
Back (this graph saves the 512 px crop) and expect about steps x clips denoising steps (the progress bar)."""

SCHEDULE_NOTE = """## Emotion schedule
One keyframe per line: `<seconds> [@<intensity>]: <prompt>` (or `f<frame>: ...` at 25 fps). Each emotion holds
until the next keyframe and eases into it over transition_s seconds. Intensity 0 is the neutral prompt, 1 the
prompt as written, up to 2 exaggerated. A mistake is reported with its line number when you queue the prompt."""


def model_links(pack, values) -> list[dict]:
    """properties.models of a loader (the frontend's missing-models dialog): every published file behind the
    model names among its widget values, with its URL and the folder key + name under it ComfyUI checks."""
    import importlib

    mf = importlib.import_module(f"{pack.__name__}.emocast.model_files")
    return [{"name": r.dest.split("/", 1)[1], "url": r.source_url(), "directory": r.kind.key}
            for v in values if isinstance(v, str) for r in mf.REMOTES if r.choice == v]


def load_pack():
    """The node pack loaded as ComfyUI does, against the tests' stand-in host."""
    import importlib.util

    sys.path.insert(0, str(ROOT / "tests"))
    from comfy_host import StubHost

    tmp = Path(tempfile.mkdtemp(prefix="emocast_wf_"))
    StubHost().install(tmp / "models", tmp / "output")
    spec = importlib.util.spec_from_file_location("emocast_pack", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["emocast_pack"] = module
    spec.loader.exec_module(module)
    return module


WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def node_spec(pack, class_type):
    """(socket inputs, widgets [(name, default, control)], outputs) of a node class."""
    if class_type in CORE:
        sockets, widgets, outputs = CORE[class_type]
        return sockets, [(n, v, False) for n, v in widgets], outputs
    cls = pack.NODE_CLASS_MAPPINGS[class_type]
    sockets, widgets = [], []
    for group in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(group, {}).items():
            kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(kind, list):
                widgets.append((name, opts.get("default", kind[0] if kind else ""), False))
            elif kind in WIDGET_TYPES:
                widgets.append((name, opts.get("default"), bool(opts.get("control_after_generate"))))
            else:
                sockets.append((name, kind, group == "optional"))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return sockets, widgets, list(zip(names, cls.RETURN_TYPES))


def build(pack, spec, title):
    """spec: [(id, class_type, pos, size, {input: value or (node_id, slot)}, extra)] -> (ui, api)."""
    info = {nid: node_spec(pack, ct) for nid, ct, *_ in spec}
    links, ui_nodes, api = [], [], {}
    out_links: dict[tuple[int, int], list[int]] = {}
    for nid, ct, pos, size, values, extra in spec:
        sockets, widgets, outputs = info[nid]
        inputs, wvals, api_inputs = [], [], {}
        linked_widgets = []
        for name, typ, optional in sockets:
            src = values.get(name)
            entry = {"name": name, "type": typ, "link": None}
            if optional:
                entry["shape"] = 7
            if src is not None:
                links.append([len(links) + 1, src[0], src[1], nid, len(inputs), info[src[0]][2][src[1]][1]])
                entry["link"] = len(links)
                out_links.setdefault(tuple(src), []).append(len(links))
                api_inputs[name] = [str(src[0]), src[1]]
            inputs.append(entry)
        for name, default, control in widgets:
            value = values.get(name, default)
            if isinstance(value, tuple):  # a widget fed by a link
                wtype = "FLOAT" if isinstance(default, float) else "INT" if isinstance(default, int) else "STRING"
                linked_widgets.append((name, wtype, value))
                api_inputs[name] = [str(value[0]), value[1]]
                wvals.append(default)
            else:
                wvals.append(value)
                if name not in UI_ONLY and ct not in ("MarkdownNote",):
                    api_inputs[name] = value
            if control:
                wvals.append("fixed")
        for name, wtype, src in linked_widgets:
            links.append([len(links) + 1, src[0], src[1], nid, len(inputs), wtype])
            out_links.setdefault(tuple(src), []).append(len(links))
            inputs.append({"name": name, "type": wtype, "widget": {"name": name}, "link": len(links)})
        node = {"id": nid, "type": ct, "pos": list(pos), "size": list(size), "flags": {}, "order": 0, "mode": 0,
                "inputs": inputs, "outputs": [{"name": n, "type": t, "links": [], "slot_index": i}
                                              for i, (n, t) in enumerate(outputs)],
                "properties": {"Node name for S&R": ct}, "widgets_values": wvals}
        node.update(extra)
        models = model_links(pack, wvals)
        if models:
            node["properties"]["models"] = models
        ui_nodes.append(node)
        if ct != "MarkdownNote":
            shown = extra.get("title") or pack.NODE_DISPLAY_NAME_MAPPINGS.get(ct, ct)
            api[str(nid)] = {"class_type": ct, "inputs": api_inputs, "_meta": {"title": shown}}
    for node in ui_nodes:
        for slot, out in enumerate(node["outputs"]):
            out["links"] = out_links.get((node["id"], slot), [])
    order = {nid: i for i, nid in enumerate(_topological(spec))}
    for node in ui_nodes:
        node["order"] = order[node["id"]]
    ui = {"last_node_id": max(n["id"] for n in ui_nodes), "last_link_id": len(links), "nodes": ui_nodes,
          "links": links, "groups": [], "config": {},
          "extra": {"ds": view(spec), "emocast_title": title}, "version": 0.4}
    return ui, api


def _topological(spec):
    deps = {nid: {v[0] for v in values.values() if isinstance(v, tuple)} for nid, _, _, _, values, _ in spec}
    done: list[int] = []
    while len(done) < len(deps):
        for nid in sorted(deps):
            if nid not in done and deps[nid] <= set(done):
                done.append(nid)
    return done


# ----------------------------------------------------------------------------------------------------- layout
# The frontend draws more than a node's stored size: its title bar above pos, and above that, for this pack's nodes,
# the node source badge ("EmoCAST", 20 px tall, 2 px over the title bar). A node also grows once it shows a preview
# image after a run. The columns below keep those boxes GAP apart; scripts/frontend_check.mjs checks the result in
# the real frontend (every pair of nodes, at the larger of the stored size and node.computeSize()).
TITLE_H = 30  # LiteGraph.NODE_TITLE_HEIGHT
BADGE_H = 22  # the source badge of custom nodes and its 2 px gap
GAP = 24  # between two nodes of a column, box to box
COL_GAP = 50  # between two columns
PREVIEW_H = 250  # what a node grows by when it shows an image (frontend 1.27.10: 248, a 220 px image + margins)
NOTE_W = 520  # the models table needs about 440 px at its narrowest
VIEW = (0.65, 30, 40)  # the view a workflow opens at: scale, left and top margin on screen (px)


@dataclass
class N:
    """A node to place: id, class, size, {input: value or (node id, slot)}, extra UI fields; y: the least pos[1]
    (a node goes lower when the one above it needs the room), beside: line up with this (placed) node instead,
    grows: height kept free below it for what the frontend adds after a run."""
    id: int
    cls: str
    size: tuple[int, int]
    values: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    y: int = 0
    beside: int | None = None
    grows: int = 0


def head(cls: str) -> int:
    """What the frontend draws above a node's pos: the title bar, and the source badge of this pack's nodes."""
    return TITLE_H + (BADGE_H if cls.startswith("EmoCAST_") else 0)


def place(columns: list[list[N]]) -> list:
    """Spec rows from columns of nodes, left to right (COL_GAP right of the widest node of the column before), each
    node at its y (or beside's) or GAP under the box of the node above it, whichever is lower."""
    spec, placed, x = [], {}, 0
    for column in columns:
        bottom = None
        for n in column:
            y = placed[n.beside] if n.beside is not None else n.y
            if bottom is not None:
                y = max(y, bottom + GAP + head(n.cls))
            spec.append((n.id, n.cls, (x, y), n.size, n.values, n.extra))
            placed[n.id] = y
            bottom = y + n.size[1] + n.grows
        x += max(n.size[0] for n in column) + COL_GAP
    return sorted(spec, key=lambda row: row[0])


def view(spec) -> dict:
    """extra.ds: the whole graph from its top left corner (badges included) at VIEW's scale."""
    scale, left, top = VIEW
    x0 = min(pos[0] for _, _, pos, *_ in spec)
    y0 = min(pos[1] - head(cls) for _, cls, pos, *_ in spec)
    return {"scale": scale, "offset": [round(left / scale - x0), round(top / scale - y0)]}


def note(nid, text, height):
    return N(nid, "MarkdownNote", (NOTE_W, height), {"text": text},
             {"color": "#432", "bgcolor": "#653", "title": "Read me"})


def graph(notes: list[N], emotion: N, paste: bool, prefix: str) -> list:
    """The graph all examples share: notes | loaders and inputs | conditioning | sample | paste back | video."""
    sample = {"model": (3, 0), "vae": (4, 0), "face": (8, 0), "audio_features": (10, 0), "emotion": (6, 0)}
    columns = [
        notes,
        [N(3, "EmoCAST_LoadModel", (320, 130), {"ckpt_name": MODELS["ckpt_name"]}),  # 4 widgets
         N(4, "VAELoader", (320, 58), {"vae_name": MODELS["vae_name"]}),
         N(5, "EmoCAST_LoadTextEncoder", (320, 82), {"clip_name": MODELS["clip_name"]}),
         N(7, "EmoCAST_LoadFaceAnalysis", (320, 106), {"insightface": MODELS["insightface"]}),
         N(1, "LoadImage", (320, 330), {}, {"title": "Portrait"}),  # room for the portrait's preview
         N(2, "LoadAudio", (320, 140), {}, {"title": "Speech"}),
         N(9, "EmoCAST_LoadAudioEncoder", (320, 82), {"wav2vec2": MODELS["wav2vec2"]})],
        [emotion,
         N(8, "EmoCAST_EncodeFace", (320, 180), {"image": (1, 0), "face_analysis": (7, 0)}, beside=7),
         N(10, "EmoCAST_EncodeAudio", (320, 130), {"audio": (2, 0), "audio_encoder": (9, 0)}, beside=2)],
        [N(11, "EmoCAST_Sample", (320, 330), sample, grows=PREVIEW_H),  # its progress preview shows under it
         N(15, "PreviewImage", (260, 280), {"images": (8, 1)}, {"title": "Face crop and masks"})],
    ]
    if paste:
        columns.append([N(12, "EmoCAST_PasteBack", (280, 60), {"frames": (11, 0), "face": (8, 0)})])
    columns.append([
        N(13, "CreateVideo", (270, 80), {"images": (12 if paste else 11, 0), "fps": (10, 3), "audio": (10, 1)}),
        N(14, "SaveVideo", (420, 460), {"video": (13, 0), "filename_prefix": prefix}),  # grows with the video
    ])
    return place(columns)


def workflows(pack):
    # beside its text encoder: the links from the model and VAE loaders pass above it to the sampler
    emotion = N(6, "EmoCAST_EncodeEmotion", (320, 170), {"text_encoder": (5, 0)}, beside=5)
    schedule = N(6, "EmoCAST_EmotionSchedule", (360, 240), {
        "text_encoder": (5, 0),
        "schedule": "# <seconds> [@<intensity 0-2>]: <emotion prompt>\n"
                    "0: A person is talking with neutral emotion.\n"
                    "1.5: A person is talking with happy emotion.\n"
                    "3 @1.4: A person is talking with surprised emotion.\n"}, beside=5)
    return {
        "emocast_basic": graph([note(16, MODELS_NOTE, 340)], emotion, True, "video/EmoCAST"),
        "emocast_long_audio": graph([note(16, LONG_NOTE, 140), note(17, MODELS_NOTE, 340)], emotion, False,
                                    "video/EmoCAST_long"),
        "emocast_emotion_schedule": graph([note(16, SCHEDULE_NOTE, 130), note(17, MODELS_NOTE, 340)], schedule, True,
                                          "video/EmoCAST_schedule"),
    }


def dump(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    a = ap.parse_args()
    pack = load_pack()
    stale = []
    for name, spec in workflows(pack).items():
        ui, api = build(pack, spec, name)
        for path, obj in ((OUT / f"{name}.json", ui), (API / f"{name}_api.json", api)):
            text = dump(obj)
            if a.check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    stale.append(path)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    if stale:
        print("stale (run scripts/make_workflows.py):", *map(str, stale), sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
