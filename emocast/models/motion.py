"""Motion module placeholder (filled in with the networks)."""
import math

import torch


def sinusoid_table(max_len: int, dim: int) -> torch.Tensor:
    """[1, max_len, dim] AnimateDiff positional table: sin on even, cos on odd channels (float32)."""
    pos = torch.arange(max_len).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(pos * freq)
    pe[0, :, 1::2] = torch.cos(pos * freq)
    return pe
