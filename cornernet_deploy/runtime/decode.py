"""Vectorised numpy decode of the corner heads, equal in result to the official ``_decode``.

``core/models/py_utils/utils.py::_decode`` (per batch element):
sigmoid -> 3x3 peak suppression (keep a value where it equals the max-pool of its window, pad
with -inf, plateaus keep all members) -> top-K over the flattened ``C*H*W`` map (class =
``idx // (H*W)``, ``y, x`` from ``idx % (H*W)``) -> gather tags and offsets (channel 0 = x,
1 = y) -> all K x K TL/BR pairs scored ``(tl + br) / 2``, set to -1 for a class mismatch,
``|tl_tag - br_tag| > ae_threshold``, ``br_x < tl_x`` or ``br_y < tl_y`` (after offsets) and, with
``no_border``, corners on the map border (integer positions) -> top ``num_dets`` pairs (-1 rows
included). Rows: ``[x1, y1, x2, y2, score, tl_score, br_score, class]`` float32, in output-map
units, class 0-based.

Deliberate, documented deviations (none changes a result except in exact ties):
- Tie order of both top-k steps: ``torch.topk`` leaves ties (e.g. the zeros left by peak
  suppression, or -1 pair scores) in an unspecified order; here ties are broken by the **lower
  flat index first** (the ONNX ``TopK`` rule), so the output is deterministic.
- The sigmoid is evaluated in float64 and rounded to float32 (the correctly rounded value); torch's
  float32 sigmoid may differ in the last bit.
- ``K`` is capped at ``C*H*W`` and ``num_dets`` at ``K*K`` (torch would raise instead).
- ``ae_threshold`` is compared in float32, as torch compares a float32 tensor with a Python float.

The decode is split so that the ONNX in-graph decode outputs (``tl_scores``, ``tl_inds``
(flat int64), ``tl_tags``, ``tl_offs`` [N, K, 2], same for ``br_``) feed ``pair_corners`` directly.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Corners", "sigmoid", "max_pool", "peak_suppress", "topk_desc", "topk_corners",
           "pair_corners", "decode", "decode_outputs", "RAW_OUTPUTS", "GRAPH_OUTPUTS"]

RAW_OUTPUTS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")
GRAPH_OUTPUTS = ("tl_scores", "tl_inds", "tl_tags", "tl_offs",
                 "br_scores", "br_inds", "br_tags", "br_offs")


class Corners(NamedTuple):
    """Top-K corners of one heat map for a batch: the ONNX in-graph decode output layout."""

    scores: np.ndarray  # [N, K] float32, sigmoid after peak suppression
    inds: np.ndarray    # [N, K] int64, flat index c*H*W + y*W + x
    tags: np.ndarray    # [N, K] float32
    offs: np.ndarray    # [N, K, 2] float32 (x, y)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Float32 sigmoid, computed in float64 and rounded once."""
    x64 = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x64))).astype(np.float32)


def max_pool(x: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Max over a ``kernel x kernel`` window, stride 1, padding ``(kernel-1)//2`` filled with
    -inf: ``torch.nn.functional.max_pool2d`` semantics (NaN propagates) on the last two axes."""
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"peak-suppression kernel must be odd and >= 1, got {kernel}")
    if kernel == 1:
        return x.copy()
    pad = (kernel - 1) // 2
    h, w = x.shape[-2:]
    lead = [(0, 0)] * (x.ndim - 2)
    p = np.pad(x, lead + [(pad, pad), (0, 0)], constant_values=-np.inf)
    rows = p[..., 0:h, :].copy()
    for d in range(1, kernel):
        np.maximum(rows, p[..., d:d + h, :], out=rows)
    p = np.pad(rows, lead + [(0, 0), (pad, pad)], constant_values=-np.inf)
    out = p[..., :, 0:w].copy()
    for d in range(1, kernel):
        np.maximum(out, p[..., :, d:d + w], out=out)
    return out


def peak_suppress(heat: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Keep values equal to their window maximum, zero the rest (official ``_nms``)."""
    return np.where(max_pool(heat, kernel) == heat, heat, np.zeros((), heat.dtype))


def topk_desc(values: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of every row of ``values`` [N, M]: ``(vals [N, k], inds [N, k] int64)``.

    Order: higher value first, ties by lower index first. Selection is ``argpartition`` plus an
    exact treatment of the values equal to the k-th largest (the lowest indices among them win),
    so no full sort of M elements is needed.
    """
    values = np.asarray(values)
    n, m = values.shape
    k = min(int(k), m)
    out_i = np.empty((n, k), dtype=np.int64)
    if k == 0:
        return np.empty((n, 0), values.dtype), out_i
    for b in range(n):
        v = values[b]
        if k < m:
            # Peak-suppressed heat maps are mostly 0 and pair scores mostly -1: partition only
            # the entries above the minimum when there are enough of them.
            above = np.flatnonzero(v > v.min())
            if above.size >= k:
                va = v[above]
                kth = va[np.argpartition(va, above.size - k)[above.size - k]]   # k-th largest
                greater = above[va > kth]
                equal = above[va == kth][:k - greater.size]
            else:
                kth = v.min()
                greater = above
                equal = np.flatnonzero(v == kth)[:k - greater.size]
            cand = np.concatenate([greater, equal])
        else:
            cand = np.arange(m)
        order = np.lexsort((cand, -v[cand].astype(np.float64)))
        out_i[b] = cand[order]
    return np.take_along_axis(values, out_i, axis=1), out_i


def _spatial(inds: np.ndarray, width: int, hw: int):
    cls = inds // hw
    sp = inds % hw
    return cls, sp // width, sp % width, sp


def topk_corners(heat: np.ndarray, tag: np.ndarray, off: np.ndarray, k: int,
                 kernel: int = 3) -> Corners:
    """Raw heads of one corner type -> its top-K corners.

    ``heat`` [N, C, H, W] logits (pre-sigmoid), ``tag`` [N, 1, H, W], ``off`` [N, 2, H, W].
    """
    heat = np.asarray(heat, dtype=np.float32)
    n, c, h, w = heat.shape
    tag = np.asarray(tag, dtype=np.float32)
    off = np.asarray(off, dtype=np.float32)
    if tag.shape != (n, 1, h, w) or off.shape != (n, 2, h, w):
        raise ValueError(f"head shapes disagree: heat {heat.shape}, tag {tag.shape}, off {off.shape}")
    scores = peak_suppress(sigmoid(heat), kernel).reshape(n, c * h * w)
    vals, inds = topk_desc(scores, k)
    sp = inds % (h * w)
    tags = np.take_along_axis(tag.reshape(n, h * w), sp, axis=1)
    offs = np.take_along_axis(off.reshape(n, 2, h * w), sp[:, None, :], axis=2).transpose(0, 2, 1)
    return Corners(vals.astype(np.float32), inds, tags, np.ascontiguousarray(offs))


def pair_corners(tl: Corners, br: Corners, out_hw: Sequence[int], ae_threshold: float,
                 num_dets: int, no_border: bool = False) -> np.ndarray:
    """All K x K TL/BR pairs -> the top ``num_dets`` as [N, num_dets, 8] float32 rows
    ``[x1, y1, x2, y2, score, tl_score, br_score, class]`` (output-map units).

    ``out_hw`` = (H, W) of the heat map the flat indices refer to. ``tl``/``br`` can be
    ``Corners`` or any 4-tuple ``(scores, inds, tags, offs)``.
    """
    tl_s, tl_i, tl_t, tl_o = (np.asarray(a) for a in tl)
    br_s, br_i, br_t, br_o = (np.asarray(a) for a in br)
    height, width = int(out_hw[0]), int(out_hw[1])
    hw = height * width
    n, k = tl_s.shape
    if br_s.shape != (n, k) or tl_o.shape != (n, k, 2) or br_o.shape != (n, k, 2):
        raise ValueError("TL and BR corners need equal [N, K] shapes and offsets [N, K, 2]")
    f32 = np.float32
    tl_c, tl_yi, tl_xi, _ = _spatial(tl_i.astype(np.int64), width, hw)
    br_c, br_yi, br_xi, _ = _spatial(br_i.astype(np.int64), width, hw)
    tl_x = (tl_xi.astype(f32) + tl_o[..., 0].astype(f32))[:, :, None]
    tl_y = (tl_yi.astype(f32) + tl_o[..., 1].astype(f32))[:, :, None]
    br_x = (br_xi.astype(f32) + br_o[..., 0].astype(f32))[:, None, :]
    br_y = (br_yi.astype(f32) + br_o[..., 1].astype(f32))[:, None, :]
    tl_sc = tl_s.astype(f32)[:, :, None]
    br_sc = br_s.astype(f32)[:, None, :]

    scores = (tl_sc + br_sc) / f32(2)
    reject = tl_c[:, :, None] != br_c[:, None, :]
    reject |= np.abs(tl_t.astype(f32)[:, :, None] - br_t.astype(f32)[:, None, :]) > f32(ae_threshold)
    reject |= br_x < tl_x
    reject |= br_y < tl_y
    if no_border:
        reject |= ((tl_yi == 0) | (tl_xi == 0))[:, :, None]
        reject |= ((br_yi == height - 1) | (br_xi == width - 1))[:, None, :]
    scores = np.where(reject, f32(-1), scores).reshape(n, k * k)

    top_s, top_i = topk_desc(scores, min(int(num_dets), k * k))
    ti, bi = top_i // k, top_i % k
    take = np.take_along_axis
    dets = np.stack([
        take(tl_x[:, :, 0], ti, 1), take(tl_y[:, :, 0], ti, 1),
        take(br_x[:, 0, :], bi, 1), take(br_y[:, 0, :], bi, 1),
        top_s, take(tl_sc[:, :, 0], ti, 1), take(br_sc[:, 0, :], bi, 1),
        take(tl_c, ti, 1).astype(f32),
    ], axis=2)
    return dets.astype(f32)


def decode(tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off, *, k: int, ae_threshold: float,
           num_dets: int, kernel: int = 3, no_border: bool = False) -> np.ndarray:
    """Raw heads [N, ...] -> detections [N, num_dets, 8] in output-map units (official ``_decode``)."""
    tl = topk_corners(tl_heat, tl_tag, tl_off, k, kernel)
    br = topk_corners(br_heat, br_tag, br_off, k, kernel)
    return pair_corners(tl, br, np.shape(tl_heat)[2:], ae_threshold, num_dets, no_border)


def decode_outputs(outputs: Mapping[str, np.ndarray], test, out_hw: Optional[Sequence[int]] = None,
                   ) -> np.ndarray:
    """Backend outputs (raw heads or in-graph decode, detected from the keys) -> [N, num_dets, 8].

    ``test`` is a ``TestConfig``; ``out_hw`` (output map size) is required for in-graph decode
    outputs, whose flat indices refer to it, and checked against the heads otherwise.
    """
    if all(name in outputs for name in GRAPH_OUTPUTS):
        if out_hw is None:
            raise ValueError("in-graph decode outputs need the output map size (out_hw)")
        tl = Corners(*(np.asarray(outputs["tl_" + s]) for s in ("scores", "inds", "tags", "offs")))
        br = Corners(*(np.asarray(outputs["br_" + s]) for s in ("scores", "inds", "tags", "offs")))
        return pair_corners(tl, br, out_hw, test.ae_threshold, test.num_dets, test.no_border)
    if all(name in outputs for name in RAW_OUTPUTS):
        heat = np.asarray(outputs["tl_heat"])
        if out_hw is not None and tuple(heat.shape[2:]) != tuple(int(s) for s in out_hw):
            raise ValueError(f"heat maps are {heat.shape[2]}x{heat.shape[3]}, expected "
                             f"{out_hw[0]}x{out_hw[1]} for this input size")
        return decode(*(outputs[name] for name in RAW_OUTPUTS), k=test.top_k,
                      ae_threshold=test.ae_threshold, num_dets=test.num_dets,
                      kernel=test.nms_kernel, no_border=test.no_border)
    missing = [n for n in RAW_OUTPUTS if n not in outputs]
    raise ValueError(f"backend outputs {sorted(outputs)} are neither raw heads (missing {missing}) "
                     f"nor in-graph decode outputs ({', '.join(GRAPH_OUTPUTS)})")
