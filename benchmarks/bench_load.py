"""Peak memory and time of loading a real-size (2.5 B parameter, ~5 GB fp16) EmoCAST Net checkpoint.

    python benchmarks/bench_load.py [--dir DIR] [--values zeros|rule] [--model dummy|emocast]
                                    [--cold] [--repeat N] [--keep]

Writes net_fp16.safetensors and net_fp16.pth (same tensors) into a temporary folder, then measures
each case in a fresh subprocess (clean baseline): peak RSS (the kernel's high-water mark) and wall
time of

* ours:  the module built on the meta device, `checkpoint.load_into` (memory-mapped file, one tensor
  copied and its file pages released at a time);
* naive: the module allocated on the CPU, `torch.load` without mmap (or safetensors `load_file`),
  `load_state_dict` (what most loaders do: model + state dict = 2x).

Pass criterion: ours peaks within 1.2x the file size. The module is a stand-in built from the Net's
key -> shape layout (the loader must not care) unless --model emocast. Before each case the file is
read through once (warm page cache), or evicted from it with --cold (posix_fadvise). Files already
in --dir are reused.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emocast import weights  # noqa: E402
from emocast.models import checkpoint as ck  # noqa: E402


def layout() -> tuple[dict[str, tuple[int, ...]], frozenset[str]]:
    net = ck.net_layout()
    return net.shapes, net.buffers


def stand_in(shapes, buffers, device="meta", dtype=torch.float16) -> nn.Module:
    """A module with exactly the given state-dict keys and shapes (uninitialised storage)."""
    root = nn.Module()
    with torch.device(device):
        for key, shape in shapes.items():
            *path, name = key.split(".")
            mod = root
            for p in path:
                if p not in mod._modules:
                    mod.add_module(p, nn.Module())
                mod = mod._modules[p]
            t = torch.empty(shape, dtype=dtype)
            if key in buffers:
                mod.register_buffer(name, t)
            else:
                mod.register_parameter(name, nn.Parameter(t, requires_grad=False))
    return root


def write_files(folder: Path, values: str) -> tuple[Path, Path]:
    """net_fp16.safetensors streamed one tensor at a time, then net_fp16.pth from its memory map."""
    from safetensors import safe_open

    from emocast.demo.tiny import is_rule_key, rule_value
    from emocast.models.motion import sinusoid_table

    shapes, _ = layout()
    st, pth = folder / "net_fp16.safetensors", folder / "net_fp16.pth"
    if st.exists() and pth.exists():
        return st, pth
    header, off = {}, 0
    for k, s in shapes.items():
        header[k] = {"dtype": "F16", "shape": list(s), "data_offsets": [off, off + 2 * math.prod(s)]}
        off += 2 * math.prod(s)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(st, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for k, s in shapes.items():
            t = (torch.zeros(s) if values == "zeros" else rule_value(k, s) if is_rule_key(k)
                 else sinusoid_table(s[1], s[2])).half()
            f.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    with safe_open(str(st), "pt") as f:
        torch.save({k: f.get_tensor(k) for k in f.keys()}, pth)
    return st, pth


def measure(case: str, path: str, dtype: str, model: str) -> dict:
    """One case, in this (fresh) process: peak RSS above and including the baseline, wall time."""
    shapes, buffers = layout()
    target = weights.DTYPES[dtype]
    if model == "emocast" and case == "ours":
        from emocast.models.net import EmoCASTNet

        net = EmoCASTNet.build()
    else:
        net = stand_in(shapes, buffers, "meta" if case == "ours" else "cpu", target)
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if case == "ours":
        ck.load_into(net, path, target)
    else:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(sd, strict=True)
        del sd
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if {t.dtype for t in net.state_dict().values()} != {target}:
        raise RuntimeError(f"{case}: loaded dtypes are not {dtype}")
    return {"peak": peak, "base": base, "wall": wall, "final": psutil.Process().memory_info().rss}


def set_cache(path: Path, cold: bool) -> None:
    """Evict the file from the page cache (cold) or read it through once (warm), so cases compare fairly."""
    if cold:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return
    with open(path, "rb") as f:
        while f.read(1 << 26):
            pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=None, help="folder for the two ~5 GB files (default: a temp folder)")
    p.add_argument("--values", choices=("zeros", "rule"), default="zeros", help="tensor values written")
    p.add_argument("--model", choices=("dummy", "emocast"), default="dummy", help="module the 'ours' cases load into")
    p.add_argument("--cold", action="store_true",
                   help="evict the file from the page cache before each case (default: warm it)")
    p.add_argument("--repeat", type=int, default=1, help="runs per case: median wall time, highest peak")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--measure", nargs=4, metavar=("CASE", "PATH", "DTYPE", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0

    shapes, _ = layout()
    nbytes = 2 * sum(math.prod(s) for s in shapes.values())
    folder = Path(args.dir or tempfile.mkdtemp(prefix="emocast_bench_"))
    folder.mkdir(parents=True, exist_ok=True)
    free, ram = shutil.disk_usage(folder).free, psutil.virtual_memory().available
    if free < 2.1 * nbytes:
        print(f"need {2.1 * nbytes / 1e9:.1f} GB free in {folder}, have {free / 1e9:.1f} GB", file=sys.stderr)
        return 2
    if ram < 2.3 * nbytes:
        print(f"the naive baseline needs ~{2.3 * nbytes / 1e9:.1f} GB of RAM, {ram / 1e9:.1f} GB available",
              file=sys.stderr)
        return 2
    try:
        t0 = time.perf_counter()
        st, pth = write_files(folder, args.values)
        print(f"wrote {st.name} ({st.stat().st_size / 1e9:.2f} GB) and {pth.name} ({pth.stat().st_size / 1e9:.2f} GB), "
              f"{args.values}, in {time.perf_counter() - t0:.0f} s; {len(shapes)} tensors; "
              f"{'cold' if args.cold else 'warm'} page cache; module: {args.model}; {args.repeat} run(s) per case")
        cases = [("ours", st, "fp16"), ("ours", pth, "fp16"), ("ours", pth, "bf16"), ("ours", st, "fp32"),
                 ("naive", st, "fp16"), ("naive", pth, "fp16")]
        worst = 0.0
        print(f"{'case':34} {'wall s':>7} {'peak GB':>8} {'base GB':>8} {'peak/file':>10} {'(peak-base)/model':>18}")
        for case, path, dtype in cases:
            runs = []
            for _ in range(args.repeat):
                set_cache(path, args.cold)
                out = subprocess.run([sys.executable, __file__, "--measure", case, str(path), dtype, args.model],
                                     capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = {"wall": statistics.median(x["wall"] for x in runs), "peak": max(x["peak"] for x in runs),
                 "base": min(x["base"] for x in runs)}
            model_bytes = nbytes * weights.DTYPES[dtype].itemsize / 2
            if case == "ours" and dtype != "fp32":
                worst = max(worst, r["peak"] / path.stat().st_size)
            print(f"{case + ' ' + path.suffix + ' -> ' + dtype:34} {r['wall']:7.1f} {r['peak'] / 1e9:8.2f} "
                  f"{r['base'] / 1e9:8.2f} {r['peak'] / path.stat().st_size:10.2f} "
                  f"{(r['peak'] - r['base']) / model_bytes:18.2f}")
        for path in (st, pth):
            t0 = time.perf_counter()
            weights.inspect_checkpoint(path, ck.NET_FILE)
            print(f"inspect {path.name}: {time.perf_counter() - t0:.2f} s (header / memory map only)")
        print(f"{'PASS' if worst <= 1.2 else 'FAIL'}: ours peaks at {worst:.2f}x the file size (limit 1.2x, "
              "interpreter and torch included)")
        return 0 if worst <= 1.2 else 1
    finally:
        if not args.keep:
            for f in ("net_fp16.safetensors", "net_fp16.pth"):
                (folder / f).unlink(missing_ok=True)
            if not args.dir:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
