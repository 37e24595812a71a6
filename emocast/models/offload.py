"""Block swap: run a network whose weights do not fit the compute device within a VRAM budget.

The weights stay on the offload device (CPU RAM, pinned when the compute device is CUDA). The
network is cut into blocks (every resnet, spatial transformer, audio and motion module, resampler,
stem and projection: the units a forward pass calls one after the other); a forward pre-hook brings
a block's weights to the compute device just before it runs and a forward hook drops them after.
Blocks that fit in the budget are made resident once and never move. On CUDA the block that ran
after the current one last time is copied ahead on a side stream while the current one computes.

The arithmetic is unchanged (the same weights, the same kernels): output with offload equals output
without, bit for bit on the CPU. A `Meter` adds up the bytes of blocks marked resident on the compute
device (also on the CPU, where moving is a no-op), so tests can check the peak against the budget:
peak <= budget + one block (<= budget when the budget holds two of the largest swapped blocks).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
from torch import nn

log = logging.getLogger("EmoCAST")

#: Attribute set on a network (and every block) whose weights block swap manages.
MARK = "_emocast_offload"


def is_managed(module: nn.Module) -> bool:
    """True when block swap places this module's weights (so they may sit on the offload device)."""
    return getattr(module, MARK, None) is not None


def manager(module: nn.Module) -> Optional["BlockSwap"]:
    return getattr(module, MARK, None)


def nbytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


@dataclass
class Meter:
    """Bytes of weights on the compute device now, and the most there ever were."""

    resident: int = 0
    peak: int = 0
    loads: int = 0  # block copies to the compute device (resident blocks count once)

    def add(self, n: int) -> None:
        self.resident += n
        self.peak = max(self.peak, self.resident)
        self.loads += 1

    def remove(self, n: int) -> None:
        self.resident -= n


@dataclass(eq=False)
class _Block:
    module: nn.Module
    name: str
    tensors: list  # (owner module, attribute name, is parameter, offload copy)
    size: int
    resident: bool = False  # always on the compute device
    loaded: bool = False
    event: Optional[object] = None  # CUDA event of a prefetch copy
    next: Optional["_Block"] = field(default=None, repr=False)  # the block that ran after this one last time


def split_blocks(module: nn.Module, containers: tuple[type, ...], prefix: str = "") -> Iterable[tuple[str, nn.Module]]:
    """Units of a network: children of `containers` and ModuleLists, recursively; anything else is one block."""
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, (nn.ModuleList, nn.ModuleDict) + containers):
            yield from split_blocks(child, containers, path + ".")
        elif nbytes(child):
            yield path, child


def default_containers() -> tuple[type, ...]:
    from .net import EmoCASTNet
    from .unet import MidLevel, UNetLevel, _UNet

    return EmoCASTNet, _UNet, UNetLevel, MidLevel


class BlockSwap:
    """Places `net`'s weights on `device` within `budget` bytes; `detach()` puts everything back.

    budget: bytes of weights allowed on the compute device (None: everything resident, i.e. full load).
    """

    def __init__(self, net: nn.Module, device: torch.device | str, budget: Optional[int],
                 containers: Optional[tuple[type, ...]] = None, meter: Optional[Meter] = None):
        if is_managed(net):
            raise ValueError("this network is already managed by block swap; detach() it first.")
        self.net, self.device = net, torch.device(device)
        self.meter = meter or Meter()
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.blocks: list[_Block] = []
        covered = set()
        for name, module in split_blocks(net, containers or default_containers()):
            self.blocks.append(self._block(name, module))
            covered |= {id(t) for t in (*module.parameters(), *module.buffers())}
        # anything outside the blocks (none in EmoCAST's Net) is a resident block of its own
        stray = [m for m in net.modules() if any(id(t) not in covered for t in
                                                 (*m.parameters(recurse=False), *m.buffers(recurse=False)))]
        for m in stray:
            self.blocks.append(self._block(f"<{type(m).__name__}>", m, recurse=False))
        self.largest = max((b.size for b in self.blocks), default=0)
        self.total = sum(b.size for b in self.blocks)
        self.budget = self.total if budget is None else int(budget)
        self.prefetch = self.cuda
        self._choose_resident(stray_blocks=len(stray))
        self._handles = []
        self._last: Optional[_Block] = None
        self._ahead: Optional[_Block] = None
        for b in self.blocks:
            setattr(b.module, MARK, self)
            if b.resident:
                self._load(b, sync=True)
            else:
                self._handles.append(b.module.register_forward_pre_hook(self._pre_hook(b)))
                self._handles.append(b.module.register_forward_hook(self._post_hook(b)))
        setattr(net, MARK, self)
        swapped = [b for b in self.blocks if not b.resident]
        log.info("Block swap: %d of %d blocks resident (%.2f of %.2f GiB), %d swap (largest %.0f MiB)%s.",
                 len(self.blocks) - len(swapped), len(self.blocks), self.resident_bytes / 2**30, self.total / 2**30,
                 len(swapped), max((b.size for b in swapped), default=0) / 2**20,
                 ", prefetched on a side stream" if self.prefetch and swapped else "")

    # ------------------------------------------------------------------ setup
    def _block(self, name: str, module: nn.Module, recurse: bool = True) -> _Block:
        tensors = []
        owners = module.modules() if recurse else [module]
        for owner in owners:
            for attr, t in [*((k, p) for k, p in owner._parameters.items()), *owner._buffers.items()]:
                if t is None:
                    continue
                host = t.data.to("cpu") if t.device.type != "cpu" else t.data
                if self.cuda:
                    host = host.pin_memory()
                tensors.append((owner, attr, attr in owner._parameters, host))
                if owner._parameters.get(attr) is not None:
                    owner._parameters[attr].data = host
                else:
                    owner._buffers[attr] = host
        return _Block(module, name, tensors, sum(h.numel() * h.element_size() for *_, h in tensors))

    def _choose_resident(self, stray_blocks: int) -> None:
        """Strays always; then the denoiser's blocks (run at every step) before the rest, while they fit
        beside the room swapping needs (two of the largest swapped blocks with prefetch, else one)."""
        order = sorted(range(len(self.blocks)), key=lambda i: (i < len(self.blocks) - stray_blocks,
                                                                 "denoising_unet" not in self.blocks[i].name, i))
        room = self.budget - (2 if self.prefetch else 1) * self.largest
        if room < 0 and self.prefetch:  # too small to prefetch: load synchronously, one block at a time
            self.prefetch = False
            room = self.budget - self.largest
        used = 0
        for i in order:
            b = self.blocks[i]
            if self.budget >= self.total or i >= len(self.blocks) - stray_blocks or used + b.size <= room:
                b.resident, used = True, used + b.size

    @property
    def resident_bytes(self) -> int:
        return sum(b.size for b in self.blocks if b.resident)

    # ------------------------------------------------------------------ moving
    def _load(self, b: _Block, sync: bool) -> None:
        if b.loaded:
            return
        if self.cuda and not sync:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self._assign(b, [h.to(self.device, non_blocking=True) for *_, h in b.tensors])
                b.event = torch.cuda.Event()
                b.event.record(self.stream)
        else:
            self._assign(b, [h.to(self.device, non_blocking=self.cuda) for *_, h in b.tensors])
        b.loaded = True
        self.meter.add(b.size)

    def _evict(self, b: _Block) -> None:
        if not b.loaded or b.resident:
            return
        if self.cuda:
            stream = torch.cuda.current_stream(self.device)
            for owner, attr, is_param, _ in b.tensors:  # freed memory waits for the kernels that read it
                (owner._parameters if is_param else owner._buffers)[attr].data.record_stream(stream)
        self._assign(b, [h for *_, h in b.tensors])
        b.loaded, b.event = False, None
        self.meter.remove(b.size)

    @staticmethod
    def _assign(b: _Block, values: list) -> None:
        for (owner, attr, is_param, _), v in zip(b.tensors, values):
            if is_param:
                owner._parameters[attr].data = v
            else:
                owner._buffers[attr] = v

    def _pre_hook(self, b: _Block):
        def hook(module, args):
            if self._ahead is not None and self._ahead is not b:  # a prefetch that guessed wrong
                self._evict(self._ahead)
            self._ahead = None
            if self._last is not None and self._last is not b:
                self._last.next = b  # learn the order of the blocks as the forward passes run them
            self._last = b
            self._load(b, sync=True)
            if b.event is not None:
                torch.cuda.current_stream(self.device).wait_event(b.event)
                b.event = None
            nxt = b.next
            if self.prefetch and nxt is not None and not nxt.resident and nxt is not b:
                self._load(nxt, sync=False)
                self._ahead = nxt
        return hook

    def _post_hook(self, b: _Block):
        def hook(module, args, output):
            self._evict(b)
        return hook

    # ------------------------------------------------------------------ teardown
    def detach(self) -> None:
        """Remove the hooks and put every weight back on the offload device (the network as before)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        for b in self.blocks:
            b.resident = False
            self._evict(b)
            if hasattr(b.module, MARK):
                delattr(b.module, MARK)
        if hasattr(self.net, MARK):
            delattr(self.net, MARK)


def attach(net: nn.Module, device: torch.device | str, budget_bytes: Optional[int], meter: Optional[Meter] = None
           ) -> BlockSwap:
    """Block swap for `net` on `device` within `budget_bytes`; call `.detach()` when done."""
    return BlockSwap(net, device, budget_bytes, meter=meter)


def smallest_budget(net: nn.Module) -> int:
    """The least budget block swap can run in: the largest block (one block at a time)."""
    return max((nbytes(m) for _, m in split_blocks(net, default_containers())), default=0)
