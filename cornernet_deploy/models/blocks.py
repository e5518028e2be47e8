"""Building blocks of the hourglass corner detectors, with the official parameter names.

Attribute names matter: they are the official state-dict keys (``conv``/``bn``, ``conv1``/``bn1``/
``conv2``/``bn2``/``skip``, ``conv_1x1``/``conv_3x3``, ``p1_conv1`` ...), so official checkpoints
load without any renaming.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .corner_pool import CornerPool


class ConvBnRelu(nn.Module):
    """The official ``convolution``: k x k conv (bias only without BN), BN or nothing, ReLU."""

    def __init__(self, k: int, in_dim: int, out_dim: int, stride: int = 1, with_bn: bool = True):
        super().__init__()
        pad = (k - 1) // 2
        self.conv = nn.Conv2d(in_dim, out_dim, k, stride=stride, padding=pad, bias=not with_bn)
        self.bn = nn.BatchNorm2d(out_dim) if with_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a 1x1-conv+BN shortcut when the shape changes; ReLU(sum)."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        if stride != 1 or in_dim != out_dim:
            self.skip = nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(out_dim))
        else:
            self.skip = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu(y + self.skip(x))


class Fire(nn.Module):
    """CornerNet-Squeeze's fire module.

    1x1 squeeze to out/2 + BN with **no ReLU** (as the official code), then a 1x1 and a depthwise
    3x3 expand (both with the block's stride) concatenated in that order, BN, and ReLU(bn + x) when
    the shape is unchanged, else ReLU(bn) (there is no projection shortcut).
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1):
        super().__init__()
        half = out_dim // 2
        self.conv1 = nn.Conv2d(in_dim, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv_1x1 = nn.Conv2d(half, half, 1, stride=stride, bias=False)
        self.conv_3x3 = nn.Conv2d(half, half, 3, stride=stride, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.skip = stride == 1 and in_dim == out_dim
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        s = self.bn1(self.conv1(x))
        y = self.bn2(torch.cat((self.conv_1x1(s), self.conv_3x3(s)), 1))
        return self.relu(y + x) if self.skip else self.relu(y)


BLOCKS = {"residual": Residual, "fire": Fire}


def make_layer(block, in_dim: int, out_dim: int, count: int, stride: int = 1) -> nn.Sequential:
    """``count`` blocks; the first changes in_dim -> out_dim (with ``stride``)."""
    layers = [block(in_dim, out_dim, stride=stride)]
    layers += [block(out_dim, out_dim) for _ in range(count - 1)]
    return nn.Sequential(*layers)


def make_layer_reverse(block, in_dim: int, out_dim: int, count: int) -> nn.Sequential:
    """``count`` blocks; the last changes in_dim -> out_dim."""
    layers = [block(in_dim, in_dim) for _ in range(count - 1)]
    layers += [block(in_dim, out_dim)]
    return nn.Sequential(*layers)


class Upsample(nn.Module):
    """Nearest-neighbour x2 (the official ``upsample``; no parameters)."""

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2)


def merge_module(dim: int) -> nn.Sequential:
    """The official ``_merge_mod``: 1x1 conv (no bias) + BN, used between stacks."""
    return nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))


def prediction_head(k: int, in_dim: int, hidden: int, out_dim: int, bias_init: float | None = None):
    """The official ``_pred_mod``: k x k conv with bias + ReLU, then a 1x1 conv to ``out_dim``."""
    head = nn.Sequential(ConvBnRelu(k, in_dim, hidden, with_bn=False), nn.Conv2d(hidden, out_dim, 1))
    if bias_init is not None:
        nn.init.constant_(head[-1].bias, bias_init)
    return head


class CornerPoolModule(nn.Module):
    """The official ``corner_pool`` module.

    Two 3x3 conv branches (``p1_conv1``, ``p2_conv1``) feed the fused pool (TL: Top on branch 1,
    Left on branch 2; BR: Bottom, Right); the pooled sum goes through a 3x3 conv + BN and is added
    to a 1x1 conv + BN projection of the input, ReLU, then a final 3x3 conv-BN-ReLU.
    """

    def __init__(self, dim: int, pool_dim: int, mode: str):
        super().__init__()
        self.p1_conv1 = ConvBnRelu(3, dim, pool_dim)
        self.p2_conv1 = ConvBnRelu(3, dim, pool_dim)
        self.pool = CornerPool(mode)
        self.p_conv1 = nn.Conv2d(pool_dim, dim, 3, padding=1, bias=False)
        self.p_bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = ConvBnRelu(3, dim, dim)

    def forward(self, x):
        pooled = self.pool(self.p1_conv1(x), self.p2_conv1(x))
        p = self.p_bn1(self.p_conv1(pooled))
        return self.conv2(self.relu1(p + self.bn1(self.conv1(x))))
