"""Tiny self-made insightface models: the real FaceAnalysis code runs them, no download needed.

insightface sorts ONNX files by their signature (>= 5 outputs: detector; 192x192 input: 2d106
landmarks; square input >= 112: recognition), so three small graphs with those signatures make a
working "pack" for tests and the demo. They are hand-built, not trained:

* detector (SCRFD layout: scores / boxes / 5 keypoints at strides 8, 16, 32, 2 anchors): a skin-
  colour map (YCrCb box test) pooled to each stride, a centre-minus-surround filter per anchor size
  that peaks on a face-sized skin blob, kept only at local maxima. Boxes are 4 x 5 cells (anchor 1:
  8 x 10) around the anchor, so the scale that fires sets the face size (64 to 256 px at the
  detector's input). It finds the face in ordinary portraits, nothing in a flat or colourless
  image, and one face per separated skin blob.
* landmarks (2d106 layout, 212 outputs): a fixed mean-face template in the crop, laid out in the
  2d106 topology (contour 0-32, eyes 33-42 / 87-96, brows 43-51 / 97-105, mouth 52-71, nose 72-86).
* recognition (112x112 -> 512): 4x4 average colour of the aligned face times a fixed seeded
  matrix, so the embedding depends on the pixels (~20 in norm, like the real un-normalised one).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingDependencyError

DEFAULT_NAME = "emocast_tiny"
_OPSET, _IR = 13, 8          # loadable by onnxruntime >= 1.10 (what ComfyUI users have)
STRIDES = (8, 16, 32)
MIN_STRIDE = 16                    # anchors finer than 64 px never fire: small skin blobs are not faces
BOX_CELLS = (2.0, 2.0, 2.0, 3.0)   # anchor 0, in cells: left, top, right, bottom (hair is "skin", so
                                   # the box sits low); anchor 1 is twice as large
CONTRAST = (0.52, 25.0)            # score = sigmoid(25 * (centre - surround - 0.52)) at peaks


def template_106() -> np.ndarray:
    """[106, 2] mean face in detection-box units ([-1, 1] spans the box), 2d106 topology."""
    def arc(cx, cy, rx, ry, a0, a1, n):
        t = np.linspace(a0, a1, n)
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)

    brow = arc(-0.42, -0.45, 0.28, 0.1, np.pi, 2 * np.pi, 9)
    eye = arc(-0.4, -0.22, 0.17, 0.07, 0, 2 * np.pi, 11)[:10]
    mouth = np.concatenate([arc(0, 0.5, 0.36, 0.15, 0, 2 * np.pi, 13)[:12],
                            arc(0, 0.5, 0.24, 0.05, 0, 2 * np.pi, 9)[:8]])
    bridge = np.stack([np.zeros(6), np.linspace(-0.25, 0.1, 6)], 1)
    nose = np.concatenate([bridge, arc(0, 0.12, 0.18, 0.08, 0, np.pi, 9)])
    mirror = np.array([-1.0, 1.0])
    pts = np.concatenate([arc(0, -0.25, 0.92, 1.2, np.pi, 0, 33),  # contour: temple, chin, temple
                          eye, brow, mouth, nose, eye * mirror, brow * mirror])
    return pts.astype(np.float32)


def _helpers():
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise MissingDependencyError(f"the onnx package is needed to write the tiny face models ({e}).",
                                     hint="pip install onnx") from e

    def const(name, arr):
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    def save(nodes, inputs, outputs, inits, path, name):
        graph = helper.make_graph(nodes, name, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                                  producer_name="emocast-tiny")
        model.ir_version = _IR
        onnx.checker.check_model(model)
        onnx.save(model, str(path))

    return helper, TensorProto, const, save


def _detector(path: Path):
    helper, T, const, save = _helpers()
    n = helper.make_node
    # blob = (pixel - 127.5) / 128, RGB. Rows: Y, Cr, Cb on the 0..255 scale.
    ycc = np.array([[0.299, 0.587, 0.114], [0.5, -0.4187, -0.0813], [-0.1687, -0.3313, 0.5]])
    lo, hi = np.array([70.0, 138.0, 85.0]), np.array([250.0, 172.0, 128.0])
    w = np.concatenate([ycc, -ycc]) * 128 / 4            # 6 soft half-tests, 4 levels wide
    b = np.concatenate([np.array([127.5, 128, 128]) - lo, hi - np.array([127.5, 128, 128])]) / 4
    # Two anchors = two face sizes per stride: centre 4x4 (8x8) cells minus the ring of an 8x8
    # (16x16) window. Output cell j reads cells j-8..j+7, so the anchor corner sits at index 8.
    k = np.zeros((2, 1, 16, 16))
    k[0, 0, 4:12, 4:12], k[0, 0, 6:10, 6:10] = -1 / 48, 1 / 16
    k[1, 0], k[1, 0, 4:12, 4:12] = -1 / 192, 1 / 64
    l, t, r, bo = BOX_CELLS
    kps = np.array([[-0.4, -0.22], [0.4, -0.22], [0, 0.1], [-0.3, 0.5], [0.3, 0.5]])  # box units
    kps = np.array([(r - l) / 2, (bo - t) / 2]) + kps * [(l + r) / 2, (t + bo) / 2]     # cells from anchor
    inits = [const("ycc_w", w.reshape(6, 3, 1, 1)), const("ycc_b", b), const("zero", 0.0), const("one", 1.0),
             const("gain", CONTRAST[1]), const("peak_gain", 200.0), const("cs_w", k),
             const("bbox_rows", np.stack([BOX_CELLS, np.multiply(BOX_CELLS, 2)])[None]),
             const("kps_rows", np.stack([kps.ravel(), 2 * kps.ravel()])[None])]
    inits += [helper.make_tensor(f"shape_{name}", T.INT64, [len(v)], v)
              for name, v in (("n1", [-1, 1]), ("n21", [-1, 2, 1]), ("n4", [-1, 4]), ("n10", [-1, 10]))]
    nodes = [n("Conv", ["input.1", "ycc_w", "ycc_b"], ["tests"]),
             n("Clip", ["tests", "zero", "one"], ["soft"]),
             n("ReduceProd", ["soft"], ["skin"], axes=[1], keepdims=1),
             n("AveragePool", ["skin"], ["pool8"], kernel_shape=[8, 8], strides=[8, 8]),
             n("AveragePool", ["pool8"], ["pool16"], kernel_shape=[2, 2], strides=[2, 2]),
             n("AveragePool", ["pool16"], ["pool32"], kernel_shape=[2, 2], strides=[2, 2])]
    outs = {"score": [], "bbox": [], "kps": []}
    for s in STRIDES:
        p = f"s{s}_"
        offset = [-CONTRAST[0] * CONTRAST[1] if s * (1 + a) >= MIN_STRIDE else -1e4 for a in (0, 1)]
        inits.append(const(p + "offset", np.reshape(offset, (1, 2, 1, 1))))
        nodes += [n("Conv", [f"pool{s}", "cs_w"], [p + "cs"], pads=[8, 8, 7, 7]),
                  n("MaxPool", [p + "cs"], [p + "max"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  n("Sub", [p + "cs", p + "max"], [p + "peak"]),                 # 0 at local maxima
                  n("Mul", [p + "cs", "gain"], [p + "g"]),
                  n("Add", [p + "g", p + "offset"], [p + "g2"]),
                  n("Mul", [p + "peak", "peak_gain"], [p + "pk"]),
                  n("Add", [p + "g2", p + "pk"], [p + "logit"]),
                  n("Sigmoid", [p + "logit"], [p + "prob"]),
                  n("Transpose", [p + "prob"], [p + "hwa"], perm=[0, 2, 3, 1]),   # location-major, anchor-minor
                  n("Reshape", [p + "hwa", "shape_n1"], [f"score_{s}"]),
                  n("Mul", [f"score_{s}", "zero"], [p + "z"]),
                  n("Reshape", [p + "z", "shape_n21"], [p + "z3"]),
                  n("Add", [p + "z3", "bbox_rows"], [p + "b3"]),
                  n("Reshape", [p + "b3", "shape_n4"], [f"bbox_{s}"]),
                  n("Add", [p + "z3", "kps_rows"], [p + "k3"]),
                  n("Reshape", [p + "k3", "shape_n10"], [f"kps_{s}"])]
        for key, width in (("score", 1), ("bbox", 4), ("kps", 10)):
            outs[key].append(helper.make_tensor_value_info(f"{key}_{s}", T.FLOAT, [f"n{s}", width]))
    inp = helper.make_tensor_value_info("input.1", T.FLOAT, [1, 3, "height", "width"])
    save(nodes, [inp], outs["score"] + outs["bbox"] + outs["kps"], inits, path, "tiny_scrfd")


def _landmark_106(path: Path):
    helper, T, const, save = _helpers()
    n = helper.make_node
    # crop = bbox centre +- 0.75 * box side (insightface scales the box side to 192 / 1.5)
    pred = (template_106() / 1.5).reshape(1, 212)
    nodes = [n("ReduceMean", ["data"], ["avg"], axes=[1, 2, 3], keepdims=1),
             n("Flatten", ["avg"], ["flat"], axis=1),
             n("Mul", ["flat", "zero"], ["z"]),
             n("Add", ["z", "template"], ["fc1"])]
    inp = helper.make_tensor_value_info("data", T.FLOAT, [1, 3, 192, 192])
    out = helper.make_tensor_value_info("fc1", T.FLOAT, [1, 212])
    save(nodes, [inp], [out], [const("zero", 0.0), const("template", pred)], path, "tiny_2d106")


def _recognition(path: Path, seed: int = 20250828):
    helper, T, const, save = _helpers()
    n = helper.make_node
    proj = np.random.default_rng(seed).standard_normal((48, 512)) * 0.35
    nodes = [n("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
             n("Flatten", ["pooled"], ["flat"], axis=1),
             n("MatMul", ["flat", "proj"], ["683"])]
    inp = helper.make_tensor_value_info("input.1", T.FLOAT, [1, 3, 112, 112])
    out = helper.make_tensor_value_info("683", T.FLOAT, [1, 512])
    save(nodes, [inp], [out], [const("proj", proj)], path, "tiny_arcface")


def write_tiny_insightface(folder, name: str = DEFAULT_NAME) -> Path:
    """Write the three tiny models into `folder/<name>/` (insightface's pack layout); returns it.

    `folder` plays the role of ComfyUI's `models/insightface/models`. Needs the `onnx` package.
    """
    pack = Path(folder) / name
    pack.mkdir(parents=True, exist_ok=True)
    _detector(pack / "det_tiny.onnx")
    _landmark_106(pack / "2d106_tiny.onnx")
    _recognition(pack / "rec_tiny.onnx")
    (pack / "README.txt").write_text("Tiny hand-built stand-ins for an insightface pack (EmoCAST tests and "
                                     "demo). Not real face models: use antelopev2 for real runs.\n")
    return pack
