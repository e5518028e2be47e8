"""Training losses of CornerNet, CornerNet-Squeeze and CornerNet-Saccade.

The official definitions (``core/models/py_utils/losses.py`` of princeton-vl/CornerNet-Lite,
restated in docs OFFICIAL_SPEC section 5), on the model's train-mode output (a list with one dict
per stack, see docs/CONTRACTS.md) and a batch of targets from :mod:`cornernet_deploy.train.targets`
stacked into tensors (:func:`collate_targets`).

Differences from the official code, none of which changes a value:
- tags are gathered as ``[B, M]`` without ``squeeze()``, so a batch of one image works;
- sigmoid is not applied in place on the model output.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HEAT_CLAMP = 1e-4
EPS = 1e-4  # the official denominators' epsilon


def clamped_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """``clamp(sigmoid(x), 1e-4, 1 - 1e-4)`` (no gradient where the clamp is active, as official)."""
    return torch.clamp(torch.sigmoid(logits), min=HEAT_CLAMP, max=1 - HEAT_CLAMP)


def focal_loss(preds: Sequence[torch.Tensor], gt: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Variant focal loss (alpha = 2, beta = 4), summed over ``preds`` (one probability map per stack).

    Positives are ``gt == 1``, negatives ``gt < 1`` weighted by ``(1 - gt)^4``. Per prediction:
    ``-(sum_pos log(p)(1-p)^2 + sum_neg log(1-p) p^2 (1-gt)^4) / num_pos`` with ``num_pos`` counted
    over the whole batch, or ``-sum_neg`` alone when there is no positive. ``mask`` (Saccade's
    ``*_valid``) multiplies both sums element-wise; ``num_pos`` still counts every positive.
    """
    pos = gt.eq(1)
    neg = gt.lt(1)
    neg_weights = torch.pow(1 - gt[neg], 4)
    if mask is not None:
        pos_mask, neg_mask = mask[pos], mask[neg]
    num_pos = pos.float().sum()
    loss = gt.new_zeros(())
    for pred in preds:
        pos_pred = pred[pos]
        neg_pred = pred[neg]
        pos_loss = torch.log(pos_pred) * torch.pow(1 - pos_pred, 2)
        neg_loss = torch.log(1 - neg_pred) * torch.pow(neg_pred, 2) * neg_weights
        if mask is not None:
            pos_loss = pos_loss * pos_mask
            neg_loss = neg_loss * neg_mask
        if pos_pred.numel() == 0:
            loss = loss - neg_loss.sum()
        else:
            loss = loss - (pos_loss.sum() + neg_loss.sum()) / num_pos
    return loss


def gather_feat(feat: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """``feat`` [B, C, H, W], ``ind`` [B, M] flat ``y * W + x`` -> [B, M, C]."""
    b, c = feat.shape[:2]
    flat = feat.reshape(b, c, -1).permute(0, 2, 1)
    return flat.gather(1, ind.long().unsqueeze(2).expand(b, ind.shape[1], c))


def ae_loss(tl_tag: torch.Tensor, br_tag: torch.Tensor, mask: torch.Tensor):
    """Associative-embedding (pull, push) losses; tags [B, M] gathered at the GT corners.

    Per image with N valid objects, ``m_k`` the mean of the k-th pair:
    pull = sum_k [(tl_k - m_k)^2 + (br_k - m_k)^2] / (N + 1e-4);
    push = sum over all valid (j, k), j = k included, of
    [relu(1 - |m_j - m_k|) - 1 / (N + 1e-4)] / (N (N - 1) + 1e-4).
    Both are summed (not averaged) over the batch. N = 1 gives push = (1 - 1/(1+1e-4)) / 1e-4
    (~0.9999, no gradient); N = 0 gives 0.
    """
    mask = mask.bool()
    num = mask.sum(dim=1, keepdim=True).float()           # [B, 1]
    tag_mean = (tl_tag + br_tag) / 2
    pull_tl = torch.pow(tl_tag - tag_mean, 2) / (num + EPS)
    pull_br = torch.pow(br_tag - tag_mean, 2) / (num + EPS)
    pull = pull_tl[mask].sum() + pull_br[mask].sum()

    pair_mask = mask.unsqueeze(1) & mask.unsqueeze(2)     # [B, M, M]
    num = num.unsqueeze(2)                                # [B, 1, 1]
    num2 = (num - 1) * num
    dist = tag_mean.unsqueeze(1) - tag_mean.unsqueeze(2)
    dist = F.relu(1 - torch.abs(dist))
    dist = dist - 1 / (num + EPS)
    dist = dist / (num2 + EPS)
    push = dist[pair_mask].sum()
    return pull, push


def off_loss(off: torch.Tensor, gt_off: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1, summed over x and y) at the valid slots / (number of objects + 1e-4).

    ``off``, ``gt_off`` [B, M, 2]; the object count is over the whole batch.
    """
    mask = mask.bool()
    num = mask.float().sum()
    loss = F.smooth_l1_loss(off[mask], gt_off[mask], reduction="sum")
    return loss / (num + EPS)


TARGET_KEYS = ("tl_heat", "br_heat", "mask", "tl_off", "br_off", "tl_ind", "br_ind")
SACCADE_TARGET_KEYS = TARGET_KEYS + ("tl_valid", "br_valid", "atts")


def collate_targets(items: Sequence[Mapping], device=None) -> dict:
    """Stack per-image target dicts (numpy, from :mod:`.targets`) into batch tensors."""
    out = {}
    for key in items[0]:
        if key == "atts":
            out[key] = [torch.from_numpy(np.stack([it[key][i] for it in items]))
                        for i in range(len(items[0][key]))]
        else:
            out[key] = torch.from_numpy(np.stack([it[key] for it in items]))
    if device is not None:
        out = targets_to(out, device)
    return out


def targets_to(targets: Mapping, device) -> dict:
    return {k: ([t.to(device) for t in v] if isinstance(v, (list, tuple)) else v.to(device))
            for k, v in targets.items()}


class CornerNetLoss(nn.Module):
    """The official CornerNet / CornerNet-Saccade loss with intermediate supervision.

    ``forward(outputs, targets)`` takes the train-mode list of per-stack dicts (``tl_heat``,
    ``br_heat`` logits, ``tl_tag``, ``br_tag``, ``tl_off``, ``br_off`` and, for Saccade, ``atts``:
    list of attention logits, innermost first) and a target batch (:func:`collate_targets`).
    Returns ``(total, terms)``: ``total = (focal + att + pull_w * pull + push_w * push +
    off_w * off) / stacks`` with every term summed over stacks; ``terms`` holds each weighted
    term already divided by the number of stacks (so they add up to ``total``), detached.

    Saccade (``attention=True``): the heat focal loss is masked by ``tl_valid``/``br_valid`` and
    the attention focal loss (unmasked, 0/1 targets) of each scale is summed over stacks and
    divided by the number of stacks before the final division.
    """

    def __init__(self, pull_weight: float = 0.1, push_weight: float = 0.1, off_weight: float = 1.0,
                 attention: bool = False):
        super().__init__()
        self.pull_weight = pull_weight
        self.push_weight = push_weight
        self.off_weight = off_weight
        self.attention = attention

    def forward(self, outputs: Sequence[Mapping[str, torch.Tensor]], targets: Mapping):
        if isinstance(outputs, Mapping):
            outputs = [outputs]
        stacks = max(len(outputs), 1)
        tl_valid = targets.get("tl_valid") if self.attention else None
        br_valid = targets.get("br_valid") if self.attention else None

        tl_heats = [clamped_sigmoid(o["tl_heat"]) for o in outputs]
        br_heats = [clamped_sigmoid(o["br_heat"]) for o in outputs]
        focal = (focal_loss(tl_heats, targets["tl_heat"], tl_valid)
                 + focal_loss(br_heats, targets["br_heat"], br_valid))

        att = focal.new_zeros(())
        if self.attention:
            gt_atts = targets["atts"]
            for i, gt_att in enumerate(gt_atts):
                preds = [clamped_sigmoid(o["atts"][i]) for o in outputs]
                att = att + focal_loss(preds, gt_att) / max(len(preds), 1)

        mask = targets["mask"]
        pull = focal.new_zeros(())
        push = focal.new_zeros(())
        off = focal.new_zeros(())
        for o in outputs:
            tl_tag = gather_feat(o["tl_tag"], targets["tl_ind"])[..., 0]
            br_tag = gather_feat(o["br_tag"], targets["br_ind"])[..., 0]
            p, q = ae_loss(tl_tag, br_tag, mask)
            pull = pull + p
            push = push + q
            off = off + off_loss(gather_feat(o["tl_off"], targets["tl_ind"]), targets["tl_off"], mask)
            off = off + off_loss(gather_feat(o["br_off"], targets["br_ind"]), targets["br_off"], mask)

        terms = {"focal": focal, "pull": self.pull_weight * pull, "push": self.push_weight * push,
                 "off": self.off_weight * off}
        if self.attention:
            terms["att"] = att
        total = (focal + att + terms["pull"] + terms["push"] + terms["off"]) / stacks
        return total, {k: (v / stacks).detach() for k, v in terms.items()}
