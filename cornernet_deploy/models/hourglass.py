"""The recursive hourglass module and the stacked hourglass backbone (official ``hg``/``saccade``)."""
from __future__ import annotations

import torch.nn as nn

from .blocks import BLOCKS, ConvBnRelu, Residual, Upsample, make_layer, make_layer_reverse, merge_module


class HourglassModule(nn.Module):
    """One hourglass level: ``up1`` keeps the resolution, ``low1`` halves it (its first block has
    stride 2; there is no max-pool), ``low2`` recurses, ``low3`` returns to ``dims[0]`` channels,
    ``up2`` doubles the resolution, and the two branches are added.

    Returns ``(merged, level_outputs)``; ``level_outputs`` lists every level's merge output,
    innermost first (CornerNet-Saccade's attention maps use them).
    """

    def __init__(self, levels: int, dims, modules, block: str, upsample: str):
        super().__init__()
        blk = BLOCKS[block]
        cur, nxt = dims[0], dims[1]
        self.levels = levels
        self.up1 = make_layer(blk, cur, cur, modules[0])
        self.low1 = make_layer(blk, cur, nxt, modules[0], stride=2)
        if levels > 1:
            self.low2 = HourglassModule(levels - 1, dims[1:], modules[1:], block, upsample)
        else:
            self.low2 = make_layer(blk, nxt, nxt, modules[1])
        self.low3 = make_layer_reverse(blk, nxt, cur, modules[0])
        if upsample == "deconv":  # CornerNet-Squeeze: 4x4 stride-2 transposed conv with bias
            self.up2 = nn.ConvTranspose2d(cur, cur, 4, stride=2, padding=1)
        else:
            self.up2 = Upsample()

    def forward(self, x):
        up1 = self.up1(x)
        low1 = self.low1(x)
        if self.levels > 1:
            low2, level_outputs = self.low2(low1)
        else:
            low2, level_outputs = self.low2(low1), []
        merged = up1 + self.up2(self.low3(low2))
        return merged, level_outputs + [merged]


class StackedHourglass(nn.Module):
    """Stem (``pre``) then ``stacks`` hourglasses; between stacks the official residual merge:
    inter = inters[i](ReLU(inters_[i](inter) + cnvs_[i](cnv_i)))."""

    def __init__(self, spec):
        super().__init__()
        d = spec.cnv_dim
        pre = [ConvBnRelu(7, 3, spec.stem_dim, stride=2), Residual(spec.stem_dim, d, stride=2)]
        pre += [Residual(d, d, stride=2) for _ in range(spec.pre_stride2_residuals - 1)]
        self.pre = nn.Sequential(*pre)
        self.hgs = nn.ModuleList([
            HourglassModule(spec.levels, spec.dims, spec.modules, spec.block, spec.upsample)
            for _ in range(spec.stacks)])
        self.cnvs = nn.ModuleList([ConvBnRelu(3, d, d) for _ in range(spec.stacks)])
        self.inters = nn.ModuleList([Residual(d, d) for _ in range(spec.stacks - 1)])
        self.inters_ = nn.ModuleList([merge_module(d) for _ in range(spec.stacks - 1)])
        self.cnvs_ = nn.ModuleList([merge_module(d) for _ in range(spec.stacks - 1)])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        """Features of each stack (``cnv_i``) and each stack's level outputs (innermost first)."""
        inter = self.pre(x)
        cnvs, levels = [], []
        n = len(self.hgs)
        for i in range(n):
            merged, level_outputs = self.hgs[i](inter)
            cnv = self.cnvs[i](merged)
            cnvs.append(cnv)
            levels.append(level_outputs)
            if i < n - 1:
                inter = self.inters[i](self.relu(self.inters_[i](inter) + self.cnvs_[i](cnv)))
        return cnvs, levels
