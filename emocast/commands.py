"""What each CLI subcommand does (argument parsing lives in cli.py)."""
from __future__ import annotations

from .errors import EmoCASTError


def _not_yet(stage: str):
    raise EmoCASTError(f"the {stage} stage is not implemented yet in this build.",
                       hint="Pull the latest version of the pack.")


def demo(args):
    _not_yet("demo pipeline")


def generate(args):
    _not_yet("generation")


def verify_checkpoint(args):
    """Exit 0 iff the file has the EmoCAST Net layout (header / memory map only: seconds on 5 GB)."""
    import math

    from .models.checkpoint import gb, verify_net
    from .models.config import UNetConfig

    info, layout = verify_net(args.path)
    params = sum(math.prod(s) for k, s in info.shapes.items() if k not in layout.buffers)
    widths, released = ("/".join(map(str, c.block_out_channels)) for c in (layout.config, UNetConfig.sd15()))
    print(f"OK {info.path}: EmoCAST Net layout, UNet widths {widths}"
          + ("" if widths == released else f" (not the released {released})"))
    print(f"  {len(info.shapes):,} entries, {params:,} parameters (+ {info.numel - params:,} buffer values), "
          f"{info.dtype_summary()}, {gb(info.size)}" + (f"; state dict {info.unwrapped}" if info.unwrapped else ""))
    return 0


def convert_checkpoint(args):
    """net.pth -> .safetensors in fp16 / bf16 / fp32, verified first, streamed one tensor at a time."""
    from pathlib import Path

    from .models.checkpoint import convert_checkpoint as convert, gb

    info = convert(args.path, args.out, args.dtype)
    print(f"wrote {info.path}: {len(info.shapes):,} entries, {info.dtype_summary()}, {gb(info.size)} "
          f"(from {Path(args.path).name})")
    return 0
