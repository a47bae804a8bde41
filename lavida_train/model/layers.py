"""Building blocks shared by the backbone and the generation branch: RMSNorm, rotary, SwiGLU.

All three follow LLaDA (see ``/work/shared/reference/lavida-o-model.md``):

* :class:`RMSNorm` normalises in fp32 (autocast off), casts back to the input dtype, then scales
  by its weight; no bias. :class:`ChannelRMSNorm` is the same norm over dim 1 of an
  ``[N, C, H, W]`` map (the generation branch's conv stages).
* :class:`RotaryEmbedding` gives fp32 ``cos`` / ``sin`` tables for absolute positions;
  :func:`apply_rotary` rotates NeoX-style halves (``x[..., :d/2]`` pairs with ``x[..., d/2:]``).
* :func:`swiglu` is ``ff_out(silu(ff_proj(x)) * up_proj(x))``; :class:`SwiGLU` holds the three
  bias-free linears under the reference names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dim: ``weight * x / sqrt(mean(x^2) + eps)``.

    The statistics and the normalisation run in fp32 with autocast disabled (so fp16 / bf16 inputs
    neither overflow nor lose precision); the result is cast back to the input dtype before the
    (bias-free) weight is applied, as in LLaDA's ``RMSLayerNorm``.
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.float()
            xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(dtype) * self.weight.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class ChannelRMSNorm(RMSNorm):
    """:class:`RMSNorm` over the channels (dim 1) of an ``[N, C, H, W]`` map; same ``weight`` [C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class RotaryEmbedding(nn.Module):
    """Rotary tables for absolute positions: ``inv_freq = theta ** (-arange(0, d, 2) / d)``.

    ``forward(positions)`` -> ``(cos, sin)``, fp32, shape ``positions.shape + (head_dim,)``, the
    frequencies repeated over both halves (NeoX layout). Nothing is cached: the tables are cheap
    next to attention and this keeps the module free of device / dtype state.
    """

    def __init__(self, head_dim: int, theta: float = 500000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary needs an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.theta = float(theta)

    def inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        exps = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim
        return 1.0 / (self.theta ** exps)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=positions.device.type, enabled=False):
            freqs = positions.float()[..., None] * self.inv_freq(positions.device)
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[..., L, H, D]`` (or any shape broadcasting with ``cos`` ``[..., L, 1, D]``)
    in fp32 and return it in ``x``'s dtype."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = x.float()
        return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def swiglu(x: torch.Tensor, ff_proj: nn.Module, up_proj: nn.Module, ff_out: nn.Module) -> torch.Tensor:
    """LLaDA's MLP: ``ff_out(silu(ff_proj(x)) * up_proj(x))``."""
    return ff_out(F.silu(ff_proj(x)) * up_proj(x))


class SwiGLU(nn.Module):
    """A stand-alone SwiGLU MLP (``ff_proj`` gate, ``up_proj``, ``ff_out`` down; no biases).

    The transformer blocks hold these linears directly (the reference names sit on the block,
    e.g. ``blocks.0.ff_proj``) and call :func:`swiglu`; this module is the same computation.
    """

    def __init__(self, dim: int, hidden: int, out_dim: int | None = None):
        super().__init__()
        self.ff_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.ff_out = nn.Linear(hidden, out_dim or dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.ff_proj, self.up_proj, self.ff_out)
