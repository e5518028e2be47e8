"""CornerNet, CornerNet-Squeeze and CornerNet-Saccade as one readable module.

The three official models (princeton-vl/CornerNet-Lite ``core/models/*.py``) differ only in
hyper-parameters held by :class:`cornernet_deploy.contract.arch.ArchSpec`: block type, depth, widths, stem
stride, up-sampling, head kernel and Saccade's attention heads. Parameter names are the official
ones, so the official checkpoints load with strict checking (after removing ``module.``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..contract.arch import ArchSpec
from ..contract.op import BOTTOM_RIGHT, TOP_LEFT
from .blocks import CornerPoolModule, prediction_head
from .hourglass import StackedHourglass

HEAT_BIAS_INIT = -2.19  # official init of every heat-map (and attention) head's last bias

HEAD_NAMES = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")


class CornerNet(nn.Module):
    """Stacked-hourglass corner detector.

    - ``eval()`` mode: ``forward(x)`` returns a dict of the **last stack's** raw heads
      (``tl_heat``/``br_heat`` pre-sigmoid, ``tl_tag``/``br_tag``, ``tl_off``/``br_off`` with
      channel 0 = x, 1 = y), and for Saccade ``att0..att{L-1}``: attention maps after sigmoid,
      innermost first. This is what the official ``_test`` feeds its decode.
    - ``train()`` mode: a list with one dict per stack (intermediate supervision), all raw, Saccade's
      attention logits under ``atts``.
    """

    def __init__(self, spec: ArchSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        d, s = spec.cnv_dim, spec.stacks
        self.hg = StackedHourglass(spec)
        self.tl_modules = nn.ModuleList([CornerPoolModule(d, spec.pool_dim, TOP_LEFT) for _ in range(s)])
        self.br_modules = nn.ModuleList([CornerPoolModule(d, spec.pool_dim, BOTTOM_RIGHT) for _ in range(s)])

        def heads(out_dim, bias=None):
            return nn.ModuleList([prediction_head(spec.head_kernel, d, spec.head_dim, out_dim, bias)
                                  for _ in range(s)])

        self.tl_heats = heads(spec.num_classes, HEAT_BIAS_INIT)
        self.br_heats = heads(spec.num_classes, HEAT_BIAS_INIT)
        self.tl_tags = heads(1)
        self.br_tags = heads(1)
        self.tl_offs = heads(2)
        self.br_offs = heads(2)
        if spec.attention:
            # one attention head per hourglass level, innermost first (official att_modules);
            # level i (innermost = 0) has dims[levels - 1 - i] channels
            self.att_modules = nn.ModuleList([
                nn.ModuleList([prediction_head(3, spec.dims[spec.levels - 1 - i], spec.head_dim, 1,
                                               HEAT_BIAS_INIT) for i in range(spec.levels)])
                for _ in range(s)])

    def _stack_heads(self, i: int, cnv: torch.Tensor) -> dict:
        tl, br = self.tl_modules[i](cnv), self.br_modules[i](cnv)
        return {"tl_heat": self.tl_heats[i](tl), "br_heat": self.br_heats[i](br),
                "tl_tag": self.tl_tags[i](tl), "br_tag": self.br_tags[i](br),
                "tl_off": self.tl_offs[i](tl), "br_off": self.br_offs[i](br)}

    def forward(self, x: torch.Tensor):
        cnvs, levels = self.hg(x)
        if self.training:
            outputs = []
            for i, cnv in enumerate(cnvs):
                heads = self._stack_heads(i, cnv)
                if self.spec.attention:
                    heads["atts"] = [att(f) for att, f in zip(self.att_modules[i], levels[i])]
                outputs.append(heads)
            return outputs
        last = len(cnvs) - 1
        heads = self._stack_heads(last, cnvs[last])
        if self.spec.attention:
            for j, (att, f) in enumerate(zip(self.att_modules[last], levels[last])):
                heads[f"att{j}"] = torch.sigmoid(att(f))
        return heads

    def corner_pools(self):
        """Every fused corner-pool op of the network (the exporter switches their export form)."""
        return [m.pool for m in list(self.tl_modules) + list(self.br_modules)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_test_parameters(model: CornerNet) -> int:
    """Parameters used at test time: backbone plus the last stack's corner modules and heads."""
    used = {id(p) for p in model.hg.parameters()}
    last = model.spec.stacks - 1
    for name in ("tl_modules", "br_modules", "tl_heats", "br_heats", "tl_tags", "br_tags", "tl_offs", "br_offs"):
        used |= {id(p) for p in getattr(model, name)[last].parameters()}
    if model.spec.attention:
        used |= {id(p) for p in model.att_modules[last].parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) in used)
