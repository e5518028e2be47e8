"""When two models agree: tolerance profiles, raw-head difference statistics and detection matching.

Shared by ``compare`` (any two backends), the exporter's own verification, ``quantize`` and the
benchmark: one definition of agreement, judged the same way everywhere. numpy only.

**Raw heads.** Per head, over all images: ``max_abs``/``mean_abs`` of ``|b - a|``;
``max_rel``/``mean_rel`` of ``|b - a| / max(|a|, |b|, 1e-6)`` (symmetric, at most 2); and
``tolerance_used`` = the largest ``|b - a| / (atol + rtol * |a|)``: the head is within tolerance
when it is <= 1 (the ``numpy.allclose`` rule with A as reference). NaN in the same place in both
counts as equal.

**Detections.** Matching is greedy within class: A's detections in descending score order each
take the still unmatched B detection of the same class with the highest IoU, if that IoU >= 0.5
(continuous IoU, ``(x2 - x1) * (y2 - y1)`` areas). Only detections scoring >= ``min_score`` are
counted as missed (in A, unmatched) or extra (in B, unmatched); an A detection may match a B
detection below ``min_score`` (and vice versa), so a score straddling the threshold is not a
disagreement. ``agreement = 1 - (missed + extra) / (n_A + n_B)`` over detections >= ``min_score``
(1 when both have none). Score deltas are over matched pairs where either score is >= ``min_score``.
The near-tie rules (swaps, tie flips) are described in ``profiling/compare.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from .precision import PRECISIONS

__all__ = ["Tolerance", "TOLERANCES", "choose_tolerance", "HeadStats", "allowance_used", "Match",
           "box_iou_matrix", "match_detections", "DetectionStats", "detection_agreement",
           "REL_EPS", "IOU_THRESHOLD"]

REL_EPS = 1e-6
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Tolerance:
    """Pass/fail limits of one precision profile."""

    name: str
    head_atol: float          # per element: |b - a| <= head_atol + head_rtol * |a|
    head_rtol: float
    score_atol: float         # max |score_b - score_a| over matched detections
    min_agreement: float      # detection agreement (see module docstring)
    min_score: float = 0.1    # detections counted as missed/extra from this score up


TOLERANCES: Dict[str, Tolerance] = {
    # FP32 vs FP32 (PyTorch, ONNX Runtime, TensorRT FP32): summation order only
    "fp32": Tolerance("fp32", head_atol=1e-4, head_rtol=1e-4, score_atol=1e-3, min_agreement=1.0),
    # a BF16 run (OpenVINO's bf16 hint, torch's CPU autocast) vs FP32, measured on the demo model's 200
    # held-out scenes (benchmarks/RESULTS.md, "BF16 agreement"): heads at most 0.57x this allowance
    # (random-weight CornerNet, -Squeeze, -Saccade at full size: far less); mean score delta 0.003,
    # but a near-tied corner pairing moved one detection's score by 0.43; worst 4-image agreement 0.94
    "bf16": Tolerance("bf16", head_atol=5e-2, head_rtol=5e-2, score_atol=0.5, min_agreement=0.9),
    # anything involving an FP16 network: ~3 decimal digits per op through ~100 layers
    "fp16": Tolerance("fp16", head_atol=5e-2, head_rtol=5e-2, score_atol=5e-2, min_agreement=0.95),
    # an INT8 (Q/DQ) model vs float, measured on the demo model (benchmarks/RESULTS.md, INT8): heads
    # at most 0.5x this allowance; near-tied corner pairings can move one detection's score by ~0.5
    "int8": Tolerance("int8", head_atol=1.0, head_rtol=0.25, score_atol=0.6, min_agreement=0.85),
}


def choose_tolerance(profile: Optional[str], precisions: Sequence[str]) -> Tolerance:
    """``profile`` (a name of ``TOLERANCES``, or None/"auto": the profile of the least precise of
    ``precisions`` that has one; fp32 when none does)."""
    if profile in (None, "auto"):
        ranked = sorted((p for p in precisions if p in TOLERANCES), key=PRECISIONS.index)
        profile = ranked[-1] if ranked else "fp32"
    try:
        return TOLERANCES[profile]
    except KeyError:
        raise UserError(f"unknown tolerance profile '{profile}' (choose auto, "
                        f"{', '.join(TOLERANCES)})") from None


# ----------------------------------------------------------------------------------------------
# raw heads
# ----------------------------------------------------------------------------------------------

def _abs_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``|b - a|`` in float64; NaN in the same place is 0, NaN on one side only is infinite."""
    same_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        diff = np.abs(b - a)
    diff = np.where(same_nan, 0.0, diff)
    return np.where(np.isnan(diff), np.inf, diff)


def _allowance_share(diff: np.ndarray, a: np.ndarray, tol: Tolerance) -> np.ndarray:
    return diff / (tol.head_atol + tol.head_rtol * np.nan_to_num(np.abs(a), posinf=0.0))


def allowance_used(a, b, tol: Tolerance) -> float:
    """The largest share of ``tol``'s head allowance that an element of ``b`` against ``a`` uses."""
    a = np.asarray(a, dtype=np.float64)
    used = _allowance_share(_abs_difference(a, np.asarray(b, dtype=np.float64)), a, tol)
    return float(used.max(initial=0.0))


class HeadStats:
    """Running difference statistics of one head over several batches."""

    def __init__(self, name: str, tol: Tolerance):
        self.name, self.tol = name, tol
        self.count = 0
        self.sum_abs = 0.0
        self.sum_rel = 0.0
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.tolerance_used = 0.0
        self.shape: Optional[Tuple[int, ...]] = None
        self.worst: Optional[dict] = None

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise UserError(f"head {self.name}: shapes differ ({a.shape} vs {b.shape}); the models "
                            "do not compute the same thing")
        self.shape = tuple(a.shape)
        diff = _abs_difference(a, b)
        denom = np.maximum(np.maximum(np.abs(a), np.abs(b)), REL_EPS)
        rel = np.where(np.isfinite(diff), diff / np.where(np.isfinite(denom), denom, 1.0), np.inf)
        used = _allowance_share(diff, a, self.tol)
        self.count += diff.size
        self.sum_abs += float(np.sum(diff))
        self.sum_rel += float(np.sum(rel))
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.max_rel = max(self.max_rel, float(rel.max(initial=0.0)))
        if used.size and float(used.max()) > self.tolerance_used:
            k = int(np.argmax(used))
            idx = np.unravel_index(k, used.shape)
            self.tolerance_used = float(used.max())
            self.worst = {"index": [int(i) for i in idx], "a": float(a[idx]), "b": float(b[idx])}

    def summary(self) -> dict:
        n = max(self.count, 1)
        return {"shape": list(self.shape) if self.shape else None, "elements": self.count,
                "max_abs": self.max_abs, "mean_abs": self.sum_abs / n,
                "max_rel": self.max_rel, "mean_rel": self.sum_rel / n,
                "tolerance_used": self.tolerance_used, "worst": self.worst,
                "within_tolerance": self.tolerance_used <= 1.0}


# ----------------------------------------------------------------------------------------------
# detections
# ----------------------------------------------------------------------------------------------

def box_iou_matrix(a, b) -> np.ndarray:
    """IoU of every box in ``a`` [n, 4] with every box in ``b`` [m, 4] (xyxy, continuous areas)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


class Match(NamedTuple):
    pairs: List[Tuple[int, int, float]]   # (index in A, index in B, IoU)
    unmatched_a: List[int]
    unmatched_b: List[int]


def match_detections(a, b, iou_threshold: float = IOU_THRESHOLD) -> Match:
    """Greedy one-to-one matching within class (see the module docstring). ``a``/``b``:
    ``Detections`` (or anything with ``boxes``, ``scores``, ``class_ids``)."""
    iou = box_iou_matrix(a.boxes, b.boxes)
    ca = np.asarray(a.class_ids).reshape(-1)
    cb = np.asarray(b.class_ids).reshape(-1)
    if iou.size:
        iou = np.where(ca[:, None] == cb[None, :], iou, -1.0)
    order = np.argsort(-np.asarray(a.scores, dtype=np.float64), kind="stable")
    taken = np.zeros(len(cb), dtype=bool)
    pairs = []
    matched_a = np.zeros(len(ca), dtype=bool)
    for i in order.tolist():
        if not len(cb):
            break
        row = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(row))                 # first (lowest index) among equal IoUs
        if row[j] >= iou_threshold:
            taken[j] = True
            matched_a[i] = True
            pairs.append((i, j, float(row[j])))
    return Match(pairs, np.flatnonzero(~matched_a).tolist(), np.flatnonzero(~taken).tolist())


class DetectionStats:
    """Agreement of two models' detections accumulated over images (see the module docstring
    for the swap and tie-flip rules; ``swap_atol`` is the profile's score tolerance)."""

    def __init__(self, min_score: float, swap_atol: float = 0.0):
        self.min_score = float(min_score)
        self.swap_atol = float(swap_atol)
        self.images = 0
        self.n_a = self.n_b = self.matched = self.missed = self.extra = self.swaps = 0
        self.tie_flip_images = self.tie_flips = 0
        self.score_deltas: List[float] = []
        self.ious: List[float] = []
        self.box_max_abs = 0.0

    def _swaps(self, a, b, missed: List[int], extra: List[int]) -> int:
        """Pair unmatched A and B detections of one class whose scores are within ``swap_atol``
        (closest scores first); removes them from ``missed``/``extra``; returns how many pairs."""
        sa, sb = np.asarray(a.scores, np.float64), np.asarray(b.scores, np.float64)
        ca, cb = np.asarray(a.class_ids).reshape(-1), np.asarray(b.class_ids).reshape(-1)
        candidates = sorted((abs(sa[i] - sb[j]), i, j) for i in missed for j in extra
                            if ca[i] == cb[j] and abs(sa[i] - sb[j]) <= self.swap_atol)
        used_a, used_b = set(), set()
        for _, i, j in candidates:
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
        missed[:] = [i for i in missed if i not in used_a]
        extra[:] = [j for j in extra if j not in used_b]
        return len(used_a)

    def add(self, a, b, heads_agree: bool = False) -> Match:
        """One image; ``heads_agree``: its raw heads agree within the FP32 allowance, so remaining
        differences are tie flips (counted apart, not judged)."""
        m = match_detections(a, b)
        t = self.min_score
        sa, sb = np.asarray(a.scores), np.asarray(b.scores)
        self.images += 1
        self.n_a += int(np.sum(sa >= t))
        self.n_b += int(np.sum(sb >= t))
        missed = [i for i in m.unmatched_a if sa[i] >= t]
        extra = [j for j in m.unmatched_b if sb[j] >= t]
        self.swaps += self._swaps(a, b, missed, extra)
        pairs = [(i, j, iou) for i, j, iou in m.pairs if max(sa[i], sb[j]) >= t]
        flips = len(missed) + len(extra) + sum(
            1 for i, j, _ in pairs if abs(float(sb[j]) - float(sa[i])) > self.swap_atol)
        if heads_agree and flips:
            self.tie_flip_images += 1
            self.tie_flips += flips
            judged = [(i, j, iou) for i, j, iou in pairs if abs(float(sb[j]) - float(sa[i])) <= self.swap_atol]
            self.n_a -= len(missed)      # the flipped detections are not judged either way
            self.n_b -= len(extra)
        else:
            self.missed += len(missed)
            self.extra += len(extra)
            judged = pairs
        for i, j, iou in judged:
            self.matched += 1
            self.score_deltas.append(abs(float(sb[j]) - float(sa[i])))
            self.ious.append(iou)
            self.box_max_abs = max(self.box_max_abs,
                                   float(np.max(np.abs(b.boxes[j].astype(np.float64) - a.boxes[i]))))
        return m

    def summary(self) -> dict:
        considered = self.n_a + self.n_b
        agreement = 1.0 - (self.missed + self.extra) / considered if considered else 1.0
        deltas = self.score_deltas
        return {"images": self.images, "min_score": self.min_score,
                "count_a": self.n_a, "count_b": self.n_b, "matched": self.matched,
                "missed": self.missed, "extra": self.extra, "agreement": agreement,
                "swaps": self.swaps, "tie_flips": self.tie_flips,
                "tie_flip_images": self.tie_flip_images,
                "max_score_delta": max(deltas) if deltas else 0.0,
                "mean_score_delta": (math.fsum(deltas) / len(deltas)) if deltas else 0.0,
                "min_iou": min(self.ious) if self.ious else None,
                "max_box_delta_px": self.box_max_abs}


def detection_agreement(dets_a: Sequence, dets_b: Sequence, min_score: float = 0.1,
                        swap_atol: float = 0.0) -> dict:
    """Summary of matching ``dets_a[k]`` with ``dets_b[k]`` for every image ``k``."""
    stats = DetectionStats(min_score, swap_atol)
    for a, b in zip(dets_a, dets_b):
        stats.add(a, b)
    return stats.summary()
