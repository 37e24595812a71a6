"""Architecture of the EmoCAST networks: a Stable Diffusion 1.5 UNet config plus EmoCAST's fixed parts.

The ReferenceNet is the SD1.5 UNet; the denoiser inflates it to video and adds motion and
emotive-audio modules. So the whole Net is determined by the SD1.5 `config.json` (diffusers
format); the tiny test configs differ only in widths. `UNetConfig.from_shapes` recovers the widths
from a checkpoint, so a released `net.pth` needs no config file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from .. import bundled_config
from ..errors import ConfigError

SD15_DOWN = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
SD15_UP = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3


@dataclass(frozen=True)
class UNetConfig:
    """The SD1.5 UNet settings EmoCAST's networks depend on (defaults: SD1.5 itself).

    heads: attention heads per spatial transformer (SD1.5 calls it `attention_head_dim`).
    face_locator_channels: width of the face-locator stages (fixed by the released Net).
    """

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    heads: int = 8
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    in_channels: int = 4
    out_channels: int = 4
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    motion_heads: int = 8
    face_locator_channels: tuple[int, ...] = (16, 32, 64, 128)

    def __post_init__(self):
        if len(self.block_out_channels) != 4:
            raise ConfigError(f"EmoCAST needs the SD1.5 layout of 4 UNet levels, got {len(self.block_out_channels)} "
                              f"(block_out_channels={list(self.block_out_channels)}).")
        for c in self.block_out_channels:
            if c % self.norm_num_groups or c % self.heads:
                raise ConfigError(f"block width {c} is not divisible by norm_num_groups={self.norm_num_groups} "
                                  f"and heads={self.heads}.")

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @classmethod
    def from_diffusers(cls, config: dict) -> "UNetConfig":
        """From an SD1.5-style diffusers `UNet2DConditionModel` config.json dict."""
        down = tuple(config.get("down_block_types", SD15_DOWN))
        up = tuple(config.get("up_block_types", SD15_UP))
        if down != SD15_DOWN or up != SD15_UP:
            raise ConfigError(f"UNet config has block types {list(down)} / {list(up)}; EmoCAST is built on the "
                              "Stable Diffusion 1.5 UNet layout.",
                              hint="Use the SD1.5 unet/config.json (stable-diffusion-v1-5/unet).")
        heads = config.get("attention_head_dim", 8)
        if isinstance(heads, (list, tuple)):
            if len(set(heads)) != 1:
                raise ConfigError(f"per-level attention_head_dim {heads} is not supported (SD1.5 uses 8 everywhere).")
            heads = heads[0]
        if config.get("use_linear_projection"):
            raise ConfigError("use_linear_projection=true (an SD2-style UNet) is not the SD1.5 layout EmoCAST uses.")
        return cls(
            block_out_channels=tuple(config["block_out_channels"]),
            layers_per_block=int(config.get("layers_per_block", 2)),
            heads=int(heads),
            cross_attention_dim=int(config.get("cross_attention_dim", 768)),
            norm_num_groups=int(config.get("norm_num_groups", 32)),
            norm_eps=float(config.get("norm_eps", 1e-5)),
            in_channels=int(config.get("in_channels", 4)),
            out_channels=int(config.get("out_channels", 4)),
            flip_sin_to_cos=bool(config.get("flip_sin_to_cos", True)),
            freq_shift=float(config.get("freq_shift", 0)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "UNetConfig":
        return cls.from_diffusers(json.loads(Path(path).read_text()))

    @classmethod
    def sd15(cls) -> "UNetConfig":
        """The bundled SD1.5 UNet config (no download needed)."""
        return cls.from_diffusers(bundled_config("sd15_unet_config.json"))

    @classmethod
    def from_shapes(cls, shapes: dict[str, tuple[int, ...]], prefix: str = "denoising_unet.") -> "UNetConfig":
        """Recover the widths of a Net checkpoint from its tensor shapes (heads / groups: SD1.5's)."""
        try:
            widths = tuple(shapes[f"{prefix}down_blocks.{i}.resnets.0.conv1.weight"][0] for i in range(4))
            layers = len({k[len(prefix):].split(".")[3] for k in shapes if k.startswith(f"{prefix}down_blocks.0.resnets.")})
            cross = shapes[f"{prefix}down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"][1]
            c_in = shapes[f"{prefix}conv_in.weight"][1]
            c_out = shapes[f"{prefix}conv_out.weight"][0]
            locator = tuple([shapes["face_locator.conv_in.weight"][0]]
                            + [shapes[f"face_locator.blocks.{i}.weight"][0] for i in range(1, 99, 2)
                               if f"face_locator.blocks.{i}.weight" in shapes])
        except KeyError as e:
            raise ConfigError(f"cannot infer the UNet widths: the checkpoint has no {e.args[0]!r}.") from None
        return cls(block_out_channels=widths, layers_per_block=layers, cross_attention_dim=cross,
                   in_channels=c_in, out_channels=c_out, face_locator_channels=locator)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
