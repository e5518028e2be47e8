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

The sigmoid is torch's float32 CPU sigmoid bit for bit (``sigmoid`` below), but it is evaluated
only where it can matter: peak suppression and the top-K cut run on the logits (the float32
sigmoid is monotone non-decreasing, so ``maxpool(sigmoid(x)) == sigmoid(maxpool(x))``), and the
exact sigmoid decides the result on the few candidates near the cut, so that logits which round
to the same sigmoid value (ties, saturated maps) come out exactly as in sigmoid space.

Deliberate, documented deviations (none changes a result except in exact ties):
- Tie order of both top-k steps: ``torch.topk`` leaves ties (e.g. the zeros left by peak
  suppression, or -1 pair scores) in an unspecified order; here ties are broken by the **lower
  flat index first** (the ONNX ``TopK`` rule), so the output is deterministic.
- A NaN logit gives 0 after peak suppression (the official ``heat * keep`` keeps NaN).
- ``K`` is capped at ``C*H*W`` and ``num_dets`` at ``K*K`` (torch would raise instead).
- ``ae_threshold`` is compared in float32, as torch compares a float32 tensor with a Python float.

The decode is split so that the ONNX in-graph decode outputs (``tl_scores``, ``tl_inds``
(flat int64), ``tl_tags``, ``tl_offs`` [N, K, 2], same for ``br_``) feed ``pair_corners`` directly.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..contract.metadata import GRAPH_OUTPUTS, RAW_OUTPUTS

__all__ = ["Corners", "sigmoid", "max_pool", "peak_suppress", "topk_desc", "topk_corners",
           "pair_corners", "decode", "decode_outputs", "RAW_OUTPUTS", "GRAPH_OUTPUTS"]


_F32 = np.float32


class Corners(NamedTuple):
    """Top-K corners of one heat map for a batch: the ONNX in-graph decode output layout."""

    scores: np.ndarray  # [N, K] float32, sigmoid after peak suppression
    inds: np.ndarray    # [N, K] int64, flat index c*H*W + y*W + x
    tags: np.ndarray    # [N, K] float32
    offs: np.ndarray    # [N, K, 2] float32 (x, y)


# --- torch's float32 sigmoid ------------------------------------------------------------------
# torch (x86 AVX2/AVX-512 and aarch64 NEON CPU kernels) computes sigmoid(x) in float32 as
# 1 / (1 + exp(0 - x)) with exp = SLEEF's expf_u10 (the FMA variant). Below is that algorithm
# step by step: each fused multiply-add a*b+c of float32 values is evaluated in float64 and
# rounded once. Checked against torch.sigmoid on all 2^32 float32 inputs (0 mismatches; see
# benchmarks/RESULTS.md); torch without SIMD kernels (ATEN_CPU_CAPABILITY=default) and the last
# (n mod 2*vector-width) elements of a torch call use libm's expf instead and differ in ~5%.
_R_LN2F = _F32(1.442695040888963407359924681001892137426645954152985934135449406931)
_L2UF = _F32(0.693145751953125)
_L2LF = _F32(1.428606765330187045e-06)
_EXPF_POLY = tuple(_F32(c) for c in (0.000198527617612853646278381, 0.00139304355252534151077271,
                                     0.00833336077630519866943359, 0.0416664853692054748535156,
                                     0.166666671633720397949219, 0.5))
SIGMOID_ONE_FROM = _F32(16.635532)      # smallest float32 x with sigmoid(x) == 1
SIGMOID_ZERO_UP_TO = _F32(-88.72284)    # largest float32 x with sigmoid(x) == 0


def _fma(a, b, c):
    return (a.astype(np.float64) * b + c).astype(_F32)


def _sleef_expf(d: np.ndarray) -> np.ndarray:
    """SLEEF ``xexpf`` (u10) for float32 ``d`` in [-104, 100] (callers clip; no NaN)."""
    q = np.rint(d * _R_LN2F).astype(np.int32)
    qf = q.astype(_F32)
    s = _fma(qf, -_L2UF, d)
    s = _fma(qf, -_L2LF, s)
    u = np.full(d.shape, _EXPF_POLY[0], _F32)
    for c in _EXPF_POLY[1:]:
        u = _fma(u, s, c)
    u = _F32(1) + _fma(s * s, u, s)
    half = q >> 1                                           # ldexp in two steps, as SLEEF
    with np.errstate(over="ignore"):
        u = (u * ((half + 127) << 23).view(_F32)) * ((q - half + 127) << 23).view(_F32)
    return u


def sigmoid(x: np.ndarray) -> np.ndarray:
    """torch's float32 CPU ``sigmoid``, bit for bit (see above); any shape, returns float32."""
    x = np.asarray(x, dtype=_F32)
    out = np.where(x >= SIGMOID_ONE_FROM, _F32(1), _F32(0)).astype(_F32)
    mid = (x > SIGMOID_ZERO_UP_TO) & (x < SIGMOID_ONE_FROM)
    out[np.isnan(x)] = np.nan
    xm = x[mid]
    if xm.size:
        e = _sleef_expf(_F32(0) - xm)                       # |x| < 89 here: no clipping needed
        out[mid] = _F32(1) / (e + _F32(1))
    return out


# --- peak suppression and top-K ---------------------------------------------------------------

def max_pool(x: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Max over a ``kernel x kernel`` window, stride 1, padding ``(kernel-1)//2`` filled with
    -inf: ``torch.nn.functional.max_pool2d`` semantics (NaN propagates) on the last two axes."""
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"peak-suppression kernel must be odd and >= 1, got {kernel}")
    rows = np.array(x, copy=True)
    for d in range(1, (kernel - 1) // 2 + 1):   # out-of-map neighbours are -inf: just skip them
        np.maximum(rows[..., d:, :], x[..., :-d, :], out=rows[..., d:, :])
        np.maximum(rows[..., :-d, :], x[..., d:, :], out=rows[..., :-d, :])
    out = rows.copy()
    for d in range(1, (kernel - 1) // 2 + 1):
        np.maximum(out[..., d:], rows[..., :-d], out=out[..., d:])
        np.maximum(out[..., :-d], rows[..., d:], out=out[..., :-d])
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


def _window_max(flat: np.ndarray, idx: np.ndarray, shape, kernel: int) -> np.ndarray:
    """``max_pool`` of the [C, H, W] map ``flat`` (flattened) at the flat positions ``idx`` only."""
    _, h, w = shape
    sp = idx % (h * w)
    ys, xs = sp // w, sp % w
    out = np.full(idx.shape, -np.inf, _F32)
    r = (kernel - 1) // 2
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = flat[np.where(inside, idx + dy * w + dx, idx)]
            np.maximum(out, np.where(inside, vals, -np.inf), out=out)   # NaN propagates
    return out


def _below_sigmoid(x_est: np.float32, v_est: np.float32) -> np.float32:
    """A float32 logit whose sigmoid is < ``v_est`` (> 0), close below ``x_est``: every logit
    with ``sigmoid(x) >= v_est`` is greater than it (the sigmoid is monotone)."""
    if v_est == 1:
        return np.nextafter(SIGMOID_ONE_FROM, _F32(-np.inf))
    v = float(v_est)
    delta = 4 * float(np.spacing(v_est)) / (v * (1 - v))      # ~4 output ulps of input
    while True:
        x_lo = min(_F32(float(x_est) - delta), np.nextafter(x_est, _F32(-np.inf)))
        if sigmoid(x_lo) < v_est:
            return x_lo
        delta *= 4


def _first_cut(sample: np.ndarray, n: int, target: int) -> np.float32:
    """A logit that about ``target`` of the ``n`` map values reach (from a strided sample)."""
    if n <= 4 * target or not sample.size:
        return _F32(-np.inf)
    j = sample.size - min(sample.size, -(-target * sample.size // n))
    return np.partition(sample, j)[j] if j > 0 else _F32(-np.inf)


def _topk_sigmoid_peaks(flat: np.ndarray, shape, k: int, kernel: int):
    """Top ``k`` of ``peak_suppress(sigmoid(heat))`` for one [C, H, W] logit map (flattened):
    ``(vals float32 [k], flat inds int64 [k])``, ties by lower index.

    Only logits above a cut get their window maximum and, near the K-th peak, their exact sigmoid.
    A pixel is kept when ``sigmoid(x) == sigmoid(window max of x)`` (monotone sigmoid), which also
    keeps a neighbour whose smaller logit rounds to the same sigmoid value as the peak.
    Falls back to the whole map in sigmoid space when fewer than ``k`` peaks have a non-zero
    sigmoid (then zeros, in index order, complete the top-K).
    """
    n = flat.size
    sample = flat[::max(1, n // 8192)]
    sample = sample[~np.isnan(sample)]
    target = max(32 * k, 1024)                     # pixels above the first cut
    cut = _first_cut(sample, n, target)
    while True:
        cand = np.flatnonzero(flat >= cut)         # NaN never a candidate (kept as 0 anyway)
        xc = flat[cand]
        mc = _window_max(flat, cand, shape, kernel)
        peak_logits = xc[xc == mc]
        if peak_logits.size >= k:
            x_est = np.partition(peak_logits, peak_logits.size - k)[peak_logits.size - k]
            v_est = sigmoid(x_est)
            if v_est == 0:
                break                              # zeros reach the top-K: whole map
            x_lo = _below_sigmoid(x_est, v_est)
            if x_lo >= cut:                        # every pixel that can reach the top-K is here
                near = xc > x_lo
                rel, s, sm = cand[near], sigmoid(xc[near]), sigmoid(mc[near])
                vals = np.where(s == sm, s, _F32(0))
                order = np.lexsort((rel, -vals.astype(np.float64)))[:k]
                return vals[order], rel[order]
            cut = x_lo
        elif cut == -np.inf:
            break                                  # fewer than k peaks in the whole map
        else:
            target *= 16
            cut = _first_cut(sample, n, target)
    scores = peak_suppress(sigmoid(flat.reshape(shape)), kernel).reshape(1, n)
    vals, inds = topk_desc(scores, k)
    return vals[0], inds[0]


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
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"peak-suppression kernel must be odd and >= 1, got {kernel}")
    k = min(int(k), c * h * w)
    vals = np.empty((n, k), np.float32)
    inds = np.empty((n, k), np.int64)
    for b in range(n):
        if k:
            vals[b], inds[b] = _topk_sigmoid_peaks(heat[b].reshape(-1), (c, h, w), k, kernel)
    sp = inds % (h * w)
    tags = np.take_along_axis(tag.reshape(n, h * w), sp, axis=1)
    offs = np.take_along_axis(off.reshape(n, 2, h * w), sp[:, None, :], axis=2).transpose(0, 2, 1)
    return Corners(vals, inds, tags, np.ascontiguousarray(offs))


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
