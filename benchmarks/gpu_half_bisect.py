"""Which part makes half precision on CUDA diverge on the PUBLIC case (a script for one short GPU call).

On an H200 (2026-12-04) fp16 and bf16 landed at mean 0.23 from the fp32 golden, against 1.5e-3 for the same
fp16 run on the CPU (README: GPU). This runs the case with one suspect changed at a time (network vs VAE
precision, SDPA kernels, cuDNN, reduced-precision GEMM reductions) and prints the distance of each:

    python benchmarks/gpu_half_bisect.py        # needs CUDA; about a minute
"""
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
if not torch.cuda.is_available():
    sys.exit("gpu_half_bisect: no CUDA device; nothing to bisect on the CPU (fp16 there is within 1.5e-3).")
import conformance_pipeline as cp
from emocast.demo.tiny import tiny_net, tiny_vae, write_tiny_text_encoder
from emocast.models.clip_text import load_text_encoder
from emocast.pipeline.clips import generate
from torch.nn.attention import SDPBackend, sdpa_kernel
CASE = ROOT / "tests/fixtures/cases/PUBLIC"
params = json.loads((CASE / "case.json").read_text())["params"]
face, audio = cp.case_inputs(CASE, params)
with tempfile.TemporaryDirectory() as tmp:
    emotion = load_text_encoder(write_tiny_text_encoder(Path(tmp) / "te")).encode(params["prompt_emo"])
golden = cp.load(CASE / "golden" / "video.pt")
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
def run(tag, net_dt, vae_dt, ctx=contextlib.nullcontext, setup=lambda: None, undo=lambda: None):
    setup()
    try:
        with ctx():
            net, vae = tiny_net(net_dt, dev), tiny_vae(vae_dt, dev)
            v = generate(net, vae, face, audio, emotion, cp.case_settings(params), device=dev).permute(1, 0, 2, 3)
        d = (v - golden).abs(); print(f"{tag:40s} max {float(d.max()):.3g} mean {float(d.mean()):.3g}", flush=True)
    except Exception as e:
        print(tag, "ERROR", type(e).__name__, str(e)[:300], flush=True)
    undo()
h, f = torch.float16, torch.float32
run("fp32", f, f)
run("fp16 default", h, h)
run("fp16 net, fp32 vae", h, f)
run("fp32 net, fp16 vae", f, h)
run("fp16 sdpa math", h, h, lambda: sdpa_kernel([SDPBackend.MATH]))
run("fp16 sdpa efficient", h, h, lambda: sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]))
def s1(): torch.backends.cudnn.enabled = False
def u1(): torch.backends.cudnn.enabled = True
run("fp16 cudnn off", h, h, setup=s1, undo=u1)
def s2(): torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
def u2(): torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True
run("fp16 no reduced-precision reduction", h, h, setup=s2, undo=u2)
run("bf16 default", torch.bfloat16, torch.bfloat16)
run("bf16 sdpa math", torch.bfloat16, torch.bfloat16, lambda: sdpa_kernel([SDPBackend.MATH]))
