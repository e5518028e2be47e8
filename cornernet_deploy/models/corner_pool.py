"""Corner pooling: the four directional cumulative maxima and the fused top-left / bottom-right op.

Contract (shared with the ONNX custom op and the TensorRT plugin, see docs/CONTRACTS.md), for a map
x[N, C, H, W]:

- ``top_pool``:    out[.., y, x] = max(x[.., y:, x])      (each row looks *down*)
- ``bottom_pool``: out[.., y, x] = max(x[.., :y+1, x])    (looks up)
- ``left_pool``:   out[.., y, x] = max(x[.., y, x:])      (looks right)
- ``right_pool``:  out[.., y, x] = max(x[.., y, :x+1])    (looks left)
- fused ``top_left(a, b) = top_pool(a) + left_pool(b)``,
  ``bottom_right(a, b) = bottom_pool(a) + right_pool(b)``.

Values are exact (a max never rounds): identical to the official C++ extension's log-step doubling.
Ties need no rule for the forward. ``-inf`` behaves as an ordinary smallest value. NaN propagates:
every output whose window contains a NaN is NaN (as ``torch.cummax`` and the official forward).

Gradients (training): ``torch.cummax`` routes each output's gradient to the *nearest* maximal
element of its window; the official CUDA-only backward picks the *farthest* one. The two differ only
at exact ties, which do not occur with real-valued activations in practice.

The implementation is plain PyTorch (flip + cummax), differentiable, and needs no compiled extension.
During ONNX export the exporter switches ``CornerPool.export_mode`` to emit either one custom
``cornernet_deploy::CornerPool`` node (TensorRT plugin) or standard ops only (log-step doubling).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..contract.op import BOTTOM_RIGHT, CORNER_POOL, TOP_LEFT

MODES = CORNER_POOL.modes


def _reverse_cummax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.flip(torch.cummax(torch.flip(x, (dim,)), dim)[0], (dim,))


def top_pool(x: torch.Tensor) -> torch.Tensor:
    return _reverse_cummax(x, 2)


def bottom_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.cummax(x, 2)[0]


def left_pool(x: torch.Tensor) -> torch.Tensor:
    return _reverse_cummax(x, 3)


def right_pool(x: torch.Tensor) -> torch.Tensor:
    return torch.cummax(x, 3)[0]


def corner_pool(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """The fused op: ``top_left`` = top_pool(a) + left_pool(b); ``bottom_right`` = bottom + right."""
    if not torch.jit.is_tracing() and a.shape != b.shape:
        raise ValueError(f"corner_pool inputs must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() != 4:
        raise ValueError(f"corner_pool expects NCHW tensors, got {a.dim()} dimensions")
    if mode == TOP_LEFT:
        return top_pool(a) + left_pool(b)
    if mode == BOTTOM_RIGHT:
        return bottom_pool(a) + right_pool(b)
    raise ValueError(f"corner_pool mode must be one of {MODES}, got {mode!r}")


# ---------------------------------------------------------------------------------------------
# Export forms


def doubling_steps(max_side: int) -> int:
    """Steps of log-step doubling that cover a window of ``max_side`` elements."""
    return max(0, math.ceil(math.log2(max(1, int(max_side)))))


def _shifted_max(x: torch.Tensor, dim: int, reverse: bool, steps: int) -> torch.Tensor:
    """Cumulative max by doubling with standard ops (Slice, Concat, Max): exportable to any ONNX
    runtime and exact; correct for any size up to 2**steps along ``dim`` (dynamic sizes too)."""
    def take(t, sl):
        return t[(slice(None),) * dim + (sl,)]

    cur = x
    for i in range(steps):
        s = 1 << i
        if reverse:  # window towards higher indices: out[y] = max(out[y], out[y + s])
            shifted = torch.cat([take(cur, slice(s, None)),
                                 torch.full_like(take(cur, slice(0, s)), float("-inf"))], dim)
        else:
            # out[y] = max(out[y], out[y - s]); the size works for any length, even < s
            shifted = torch.cat([torch.full_like(take(cur, slice(0, s)), float("-inf")),
                                 take(cur, slice(0, -s))], dim)
        cur = torch.maximum(cur, shifted)
    return cur


def corner_pool_standard_ops(a: torch.Tensor, b: torch.Tensor, mode: str, steps: int) -> torch.Tensor:
    reverse = mode == TOP_LEFT
    return _shifted_max(a, 2, reverse, steps) + _shifted_max(b, 3, reverse, steps)


class _CornerPoolCustomOp(torch.autograd.Function):
    """Forward = the reference; during TorchScript-based ONNX export, one custom node."""

    @staticmethod
    def forward(ctx, a, b, mode: str):  # noqa: D401 - autograd signature
        return corner_pool(a, b, mode)

    @staticmethod
    def symbolic(g, a, b, mode: str):
        out = g.op(f"{CORNER_POOL.domain}::{CORNER_POOL.op_type}", a, b, mode_s=mode,
                   plugin_namespace_s=CORNER_POOL.plugin_namespace,
                   plugin_version_s=CORNER_POOL.plugin_version)
        out.setType(a.type())
        return out


class CornerPool(nn.Module):
    """Fused corner pooling of two equal-shape maps ``a`` (vertical pool) and ``b`` (horizontal)."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"CornerPool mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        # None: eager reference; "plugin": one custom ONNX node; "onnx": standard ops only.
        self.export_mode: str | None = None
        self.export_steps = 10

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.export_mode == "plugin":
            return _CornerPoolCustomOp.apply(a, b, self.mode)
        if self.export_mode == "onnx":
            return corner_pool_standard_ops(a, b, self.mode, self.export_steps)
        return corner_pool(a, b, self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
