"""Post-processing of decoded detections, as the official test code does it.

- ``flip_merge``: the flipped copy's rows get ``x1' = out_w - x2``, ``x2' = out_w - x1`` (``out_w``,
  not ``out_w - 1``), then both copies' rows are concatenated (no heat-map averaging).
- ``rescale_dets``: output-map units -> image pixels: ``/ ratio``, ``- border``, clip to
  ``[0, w'] x [0, h']`` (inclusive of the scaled size) when enabled, ``/ scale``; float32 as the
  official in-place numpy arithmetic.
- ``soft_nms`` / ``soft_nms_merge``: the official Cython ``core/external/nms.pyx``, reproduced
  with the arithmetic of the C that Cython generates for it (float, with the ``+ 1`` of the box
  sizes, the areas' products and the union in double) and the same row movements (see
  ``soft_nms``).
- ``per_class_nms`` + ``max_per_image``: the tail of ``cornernet_inference`` /
  ``cornernet_saccade_inference``.
"""
from __future__ import annotations

from array import array
from typing import List, Optional, Sequence

import numpy as np

from . import soft_nms_compiled
from .detections import Detections

__all__ = ["flip_merge", "rescale_dets", "soft_nms", "soft_nms_merge", "per_class_nms", "warm_up",
           "max_per_image", "detections_from_per_class", "postprocess"]


_F1 = np.float32(1)


def flip_merge(dets: np.ndarray, flipped: np.ndarray, out_w: int) -> np.ndarray:
    """``[n, 8]`` rows of the image and ``[m, 8]`` rows of its mirrored copy -> ``[n + m, 8]``."""
    flipped = np.array(flipped, dtype=np.float32, copy=True)
    x1 = flipped[:, 0].copy()
    flipped[:, 0] = np.float32(out_w) - flipped[:, 2]
    flipped[:, 2] = np.float32(out_w) - x1
    return np.concatenate([np.asarray(dets, dtype=np.float32), flipped], axis=0)


def rescale_dets(dets: np.ndarray, meta, clip: bool = True) -> np.ndarray:
    """Rows in output-map units -> original image pixels (returns a new float32 array).

    ``meta`` is a ``preprocess.ImageMeta``: x /= ratio_w, y /= ratio_h, x -= left, y -= top,
    clip x to [0, w'] and y to [0, h'] (``clip``), then divide by the scale actually used.
    """
    out = np.array(dets, dtype=np.float32, copy=True)
    xs, ys = out[:, 0:4:2], out[:, 1:4:2]
    xs /= np.float32(meta.ratios[1])
    ys /= np.float32(meta.ratios[0])
    xs -= np.float32(meta.borders[2])
    ys -= np.float32(meta.borders[0])
    if clip:
        np.clip(xs, np.float32(0), np.float32(meta.scaled_hw[1]), out=xs)
        np.clip(ys, np.float32(0), np.float32(meta.scaled_hw[0]), out=ys)
    out[:, 0:4] /= np.float32(meta.scale)
    return out


def _check_boxes(boxes: np.ndarray, min_cols: int) -> None:
    if not isinstance(boxes, np.ndarray) or boxes.dtype != np.float32 or boxes.ndim != 2 \
            or boxes.shape[1] < min_cols:
        raise TypeError(f"soft-NMS works in place on a float32 [n, >={min_cols}] array")


def _pair_weights(t, p, sigma, nt, method):
    """Soft-NMS weight of box ``p`` when box ``t`` is the max box, for boxes ``t``, ``p``
    [..., 4] float32 that broadcast against each other, in the arithmetic of the compiled
    Cython: ``(overlap mask, weight)``, weight float32 and exactly 1 where they do not overlap.

    The generated C reads ``x2 - x1 + 1`` as ``(double)(x2 - x1) + 1.0``: ``iw``/``ih`` are
    stored in floats, which equals a float32 ``+ 1``; the areas are double products, the row's
    stored as float, the max box's used as a double in ``ua``, and ``ua`` (double) is stored as a
    float; ``ov = iw*ih / ua`` and ``-(ov*ov)/sigma`` are float; ``np.exp`` takes a double.
    """
    f64 = np.float64
    iw = np.minimum(t[..., 2], p[..., 2])                # in place below: fewer temporaries
    iw -= np.maximum(t[..., 0], p[..., 0])
    iw += _F1
    ih = np.minimum(t[..., 3], p[..., 3])
    ih -= np.maximum(t[..., 1], p[..., 1])
    ih += _F1
    over = iw > 0
    over &= ih > 0
    t_area = ((t[..., 2] - t[..., 0]).astype(f64) + 1.0) * ((t[..., 3] - t[..., 1]).astype(f64) + 1.0)
    p_area = (((p[..., 2] - p[..., 0]).astype(f64) + 1.0)
              * ((p[..., 3] - p[..., 1]).astype(f64) + 1.0)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inter = np.multiply(iw, ih, out=iw)
        ua64 = t_area + p_area
        ua64 -= inter
        ov = ua64.astype(np.float32)
        np.divide(inter, ov, out=ov)
        if method == 1:
            weight = np.where(ov > np.float32(nt), _F1 - ov, _F1)
        elif method == 2:
            np.multiply(ov, ov, out=ov)
            np.negative(ov, out=ov)
            ov /= np.float32(sigma)
            np.exp(ov.astype(f64, copy=False), out=ua64)
            weight = ua64.astype(np.float32)
        else:
            weight = np.where(ov > np.float32(nt), np.float32(0), _F1)
    weight = weight.astype(np.float32, copy=False)
    weight[~over] = _F1
    return over, weight


def _decay(boxes, i, n, sigma, nt, method):
    """One max box (row ``i``) against rows ``i+1 .. n-1``: ``(overlap mask, new scores,
    weights)`` for those rows (nothing written)."""
    over, weight = _pair_weights(boxes[i:i + 1, 0:4], boxes[i + 1:n, 0:4], sigma, nt, method)
    return over, (weight * boxes[i + 1:n, 4]).astype(np.float32), weight


def _compact(boxes, i, n, over, new_s, threshold, events=None):
    """Apply one inner-loop pass of the Cython (rows ``i+1 .. n-1``) to ``boxes``; return new n.

    The Cython walks ``pos`` upwards; a row whose decayed score falls below ``threshold`` is
    overwritten (columns 0-4) by the current last row ``N-1``, which is then examined at ``pos``,
    and ``N`` shrinks. Each row's weight depends only on the max box, so the weights are computed
    for all rows at once (``_decay``) and only the row movements are replayed here, one step per
    removed row. Rows left beyond the new ``N`` keep what the Cython leaves there: the original
    (pre-pass) values of rows copied away, or the decayed value when the last move was a row
    onto itself. ``events`` (a list), when given, receives ``(slot, row)`` pairs of rows
    processed at a hole slot after the slot's own row (for ``soft_nms_merge``).
    """
    start = i + 1
    removed = over & (new_s < np.float32(threshold))
    holes = np.flatnonzero(removed) + start
    if holes.size == 0:
        boxes[start:n, 4] = new_s
        return n, None
    orig = boxes[start:n, 0:5].copy()
    nn = n
    self_slot = None
    for p in holes.tolist():
        if p >= nn:
            break
        boxes[p, 4] = new_s[p - start]           # the slot's own row, decayed (then replaced)
        while True:
            if p == nn - 1:                       # the last row copied onto itself
                nn -= 1
                self_slot = p
                break
            t = nn - 1
            boxes[p, 0:5] = orig[t - start]
            boxes[p, 4] = new_s[t - start]        # examined again at p
            nn -= 1
            if events is not None:
                events.append((p, t))
            if not removed[t - start]:
                break
        if self_slot is not None:
            break
    stay = ~removed[:nn - start]
    boxes[start:nn, 4][stay] = new_s[:nn - start][stay]
    return nn, self_slot


# Classes up to this size run the Cython's loop literally in Python (cheaper than numpy calls for
# a few rows); larger ones run each pass with numpy over the live rows.
_SCALAR_MAX_ROWS = 32


def _soft_nms_scalar(block, over, weight, threshold):
    """``soft_nms`` of one class ``block`` (float32 [g, >=5], in place) given the weight of each
    row pair (``weight[t][p]``: row ``p`` decayed by max row ``t``, original row numbering): the
    Cython's loops, statement for statement, on Python floats (exact float32 values; each product
    is rounded to float32 through an ``array('f')`` store). Returns the final ``N``."""
    g = block.shape[0]
    rid = list(range(g))                         # slot -> original row
    ss = block[:, 4].tolist()                    # slot -> score
    ol, wl = over.tolist(), weight.tolist()
    thr = float(np.float32(threshold))
    f32 = array("f", [0.0])
    n = g
    for i in range(g):
        if i + 1 >= n:
            break                                # nothing left to compare with, or i >= N
        seg = ss[i:n]
        m = i + seg.index(max(seg))              # first occurrence of the max
        if m != i:
            rid[i], rid[m] = rid[m], rid[i]
            ss[i], ss[m] = ss[m], ss[i]
        ot, wt = ol[rid[i]], wl[rid[i]]
        pos = i + 1
        while pos < n:
            r = rid[pos]
            if ot[r]:
                f32[0] = wt[r] * ss[pos]         # exact double product, rounded to float32
                ss[pos] = f32[0]
                if ss[pos] < thr:
                    rid[pos], ss[pos] = rid[n - 1], ss[n - 1]
                    n -= 1
                    continue
            pos += 1
    block[:, 0:4] = block[rid, 0:4]
    block[:, 4] = ss
    return n


def _soft_nms_vector(block, over, weight, threshold):
    """As ``_soft_nms_scalar``, each pass vectorised over the live rows: their scores times the
    max row's row of the pair weights (1 where no overlap); only the row movements of a pass with
    removals are replayed (``_compact``) on a ``[slot, (row, score)]`` array."""
    g = block.shape[0]
    rid = np.arange(g)                           # slot -> original row
    scores = block[:, 4].copy()                  # slot -> score
    thr = np.float32(threshold)
    state = np.zeros((g, 5), np.float32)
    n = g
    for i in range(g):
        if i + 1 >= n:
            break
        m = i + int(scores[i:n].argmax())        # first occurrence of the max
        if m != i:
            rid[i], rid[m] = rid[m], rid[i]
            scores[i], scores[m] = scores[m], scores[i]
        t = rid[i]
        rows = rid[i + 1:n]
        new_s = weight[t][rows] * scores[i + 1:n]
        if new_s.min() < thr:
            o = over[t][rows]
            if (o & (new_s < thr)).any():
                state[:n, 0] = rid[:n]           # row numbers are exact in float32 (g < 2^24)
                state[:n, 4] = scores[:n]
                n_new, _ = _compact(state, i, n, o, new_s, threshold)
                rid[i + 1:n] = state[i + 1:n, 0].astype(np.int64)
                scores[i + 1:n] = state[i + 1:n, 4]
                n = n_new
                continue
        scores[i + 1:n] = new_s
    block[:, 0:4] = block[rid, 0:4]
    block[:, 4] = scores
    return n


def _soft_nms_blocks(rows, bounds, sigma, nt, threshold, method):
    """``soft_nms`` on each ``rows[s:e]`` block (one class each, in place); returns each final N.

    With numba installed, every block runs the compiled loops (``soft_nms_compiled``: the same
    arithmetic, the same bits). Otherwise, small blocks: the pair weights of all of them in one
    vectorised pass, then the Cython's loop per block (``_soft_nms_scalar``); large blocks: their
    weights by broadcasting, then ``_soft_nms_vector``."""
    if soft_nms_compiled.available():
        return _soft_nms_blocks_compiled(rows, bounds, sigma, nt, threshold, method)
    counts = [e - s for s, e in bounds]
    small = [j for j, (s, e) in enumerate(bounds) if 2 <= e - s <= _SCALAR_MAX_ROWS]
    if small:
        t_idx = np.concatenate([np.repeat(np.arange(*bounds[j]), counts[j]) for j in small])
        p_idx = np.concatenate([np.tile(np.arange(*bounds[j]), counts[j]) for j in small])
        over_all, weight_all = _pair_weights(rows[t_idx, 0:4], rows[p_idx, 0:4], sigma, nt, method)
        off = 0
        for j in small:
            (s, e), g = bounds[j], counts[j]
            counts[j] = _soft_nms_scalar(rows[s:e], over_all[off:off + g * g].reshape(g, g),
                                         weight_all[off:off + g * g].reshape(g, g), threshold)
            off += g * g
    for j, (s, e) in enumerate(bounds):
        if e - s > _SCALAR_MAX_ROWS:
            box = rows[s:e, 0:4]
            over, weight = _pair_weights(box[:, None], box[None], sigma, nt, method)
            counts[j] = _soft_nms_vector(rows[s:e], over, weight, threshold)
    return counts


def _soft_nms_blocks_compiled(rows, bounds, sigma, nt, threshold, method):
    """``_soft_nms_blocks`` through the compiled loops; ``exp`` of the Gaussian weights is numpy's
    (see ``soft_nms_compiled``)."""
    sizes = np.array([e - s for s, e in bounds], dtype=np.int64)
    work = np.flatnonzero(sizes >= 2)
    counts = sizes.copy()
    if work.size:
        starts = np.array([bounds[j][0] for j in work], dtype=np.int64)
        g = sizes[work]
        offsets = np.concatenate([[0], np.cumsum(g * g)[:-1]]).astype(np.int64)
        total = int((g * g).sum())
        value = np.empty(total, dtype=np.float32)
        soft_nms_compiled.pair_terms(rows, starts, g, offsets, float(sigma), float(nt), int(method),
                                     value)
        if method == 2:                  # numpy's float64 exp, as the Cython's np.exp call
            wide = value.astype(np.float64)
            value[:] = np.exp(wide, out=wide)
        done = np.empty(work.size, dtype=np.int64)
        soft_nms_compiled.soft_nms_loops(rows, starts, g, offsets, value, float(threshold), done)
        counts[work] = done
    return counts.tolist()


def soft_nms(boxes: np.ndarray, sigma: float = 0.5, Nt: float = 0.3, threshold: float = 0.001,
             method: int = 0) -> np.ndarray:
    """The official ``soft_nms`` (Cython, from the Soft-NMS reference code), in place.

    ``boxes`` float32 ``[n, >=5]`` (x1, y1, x2, y2, score, ...); defaults are the Cython's
    (callers pass ``method=2``, Gaussian). For ``i = 0 .. N0-1`` (N0 = initial count, the bound is
    not updated): the first row with the maximum score among ``i .. N-1`` is swapped into row ``i``
    (columns 0-4 only); every later row ``pos < N`` overlapping it (IoU with the +1 pixel
    convention) gets ``score *= weight`` (Gaussian ``exp(-IoU^2/sigma)``, linear ``1 - IoU`` if
    ``IoU > Nt``, hard 0 if ``IoU > Nt``); a row falling below ``threshold`` is overwritten by
    row ``N-1`` and ``N`` shrinks. Returns ``keep = arange(N)``; rows ``N .. N0-1`` hold stale
    copies (see ``TestConfig.keep_stale_rows``). Arithmetic: that of the compiled Cython (see
    ``_pair_weights``); scores are bit-identical to it.
    """
    _check_boxes(boxes, 5)
    n, = _soft_nms_blocks(boxes, [(0, boxes.shape[0])], sigma, Nt, threshold, method)
    return np.arange(n)


def warm_up() -> bool:
    """Compile the soft-NMS loops now, or load them from numba's cache, and return whether they
    will be used (numba installed). Without this the first image pays it (seconds on an empty
    cache): a server calls this when it loads the model, not on its first request."""
    if not soft_nms_compiled.available():
        return False
    soft_nms(np.array([[0, 0, 9, 9, 0.9], [1, 1, 10, 10, 0.8]], np.float32), method=2)  # every call's types
    return True


def soft_nms_merge(boxes: np.ndarray, sigma: float = 0.5, Nt: float = 0.3,
                   threshold: float = 0.001, method: int = 0, weight_exp: float = 6) -> np.ndarray:
    """The official ``soft_nms_merge`` (multi-scale config), in place on float32 ``[n, 7]`` rows
    ``(x1, y1, x2, y2, score, tl_score, br_score)``.

    As ``soft_nms``, and each max box becomes the average of itself and every overlapping row
    examined in its pass, weighted by that row's slot's ``tl_score`` (for x1, y1) / ``br_score``
    (for x2, y2) times ``(1 - weight) ** weight_exp``. Quirks kept: columns 5-6 never move with
    the box (only columns 0-4 are swapped/copied), so a moved box is weighted with the scores of
    the slot it sits in; the sums are accumulated in float32 in the Cython's visiting order.
    """
    _check_boxes(boxes, 7)
    n = boxes.shape[0]
    n0 = n
    wexp = np.float32(weight_exp)
    for i in range(n0):
        if i >= n:
            # The remaining iterations find no other row, yet still write the "average" of
            # the row with itself back: (x * tl) / tl, which can move x by one float32 ulp.
            rest = boxes[i:n0]
            with np.errstate(divide="ignore", invalid="ignore"):
                for c, w in ((0, 5), (1, 5), (2, 6), (3, 6)):
                    rest[:, c] = (rest[:, c] * rest[:, w]) / rest[:, w]
            break
        m = i + int(np.argmax(boxes[i:n, 4]))
        if m != i:
            tmp = boxes[i, 0:5].copy()
            boxes[i, 0:5] = boxes[m, 0:5]
            boxes[m, 0:5] = tmp
        ts, bs = boxes[i, 5], boxes[i, 6]
        acc0 = [boxes[i, 0] * ts, boxes[i, 1] * ts, boxes[i, 2] * bs, boxes[i, 3] * bs, ts, bs]
        if i + 1 < n:
            start = i + 1
            over, new_s, weight = _decay(boxes, i, n, sigma, Nt, method)
            coords = boxes[start:n, 0:4].copy()
            slot_ts = boxes[start:n, 5].copy()
            slot_bs = boxes[start:n, 6].copy()
            events: list = []
            n_new, self_slot = _compact(boxes, i, n, over, new_s, threshold, events)
            end = n_new + (1 if self_slot is not None else 0)
            # visiting order: slots ascending; at a hole, its own row first, then the rows moved in
            slots = np.arange(start, end)
            rows = slots.copy()
            seq = np.zeros(slots.size, dtype=np.int64)
            if events:
                ev = np.asarray(events, dtype=np.int64)
                slots = np.concatenate([slots, ev[:, 0]])
                rows = np.concatenate([rows, ev[:, 1]])
                seq = np.concatenate([seq, np.arange(1, ev.shape[0] + 1)])
            order = np.lexsort((seq, slots))
            slots, rows = slots[order] - start, rows[order] - start
            use = over[rows]
            slots, rows = slots[use], rows[use]
            with np.errstate(invalid="ignore", over="ignore"):
                # C ``powf``: evaluated in double and rounded once (as the x87/SSE powf of
                # the official era's glibc did), so it does not depend on numpy's SIMD powf
                mw = np.power((_F1 - weight[rows]).astype(np.float64),
                              np.float64(wexp)).astype(np.float32)
                st, sb = slot_ts[slots], slot_bs[slots]
                terms = [coords[rows, 0] * st * mw, coords[rows, 1] * st * mw,
                         coords[rows, 2] * sb * mw, coords[rows, 3] * sb * mw, st * mw, sb * mw]
            acc = [np.add.accumulate(np.concatenate([[np.float32(a0)], t.astype(np.float32)])
                                     .astype(np.float32), dtype=np.float32)[-1]
                   for a0, t in zip(acc0, terms)]
            n = n_new
        else:
            acc = acc0
        mx1, my1, mx2, my2, mts, mbs = (np.float32(a) for a in acc)
        with np.errstate(divide="ignore", invalid="ignore"):
            boxes[i, 0] = mx1 / mts
            boxes[i, 1] = my1 / mts
            boxes[i, 2] = mx2 / mbs
            boxes[i, 3] = my2 / mbs
    return np.arange(n)


def per_class_nms(dets: np.ndarray, num_classes: int, test, merge: bool = False,
                  weight_exp: float = 10.0, nt: Optional[float] = None) -> List[np.ndarray]:
    """Image-coordinate rows ``[n, 8]`` -> per-class ``[n_c, 5]`` arrays after soft-NMS.

    Rows with score ``<= -1`` must already be dropped (``postprocess`` does). With
    ``test.keep_stale_rows`` (CornerNet, Squeeze) every row of the array is kept after soft-NMS,
    ignoring its keep list (official quirk: stale duplicates included); otherwise (Saccade) only
    the keep list.
    """
    if nt is None:
        nt = test.soft_nms_nt
    classes = dets[:, 7]
    if merge:
        out = []
        for j in range(num_classes):
            rows = np.ascontiguousarray(dets[classes == j][:, 0:7], dtype=np.float32)
            keep = soft_nms_merge(rows, sigma=test.soft_nms_sigma, Nt=nt,
                                  threshold=test.soft_nms_threshold, method=test.soft_nms_method,
                                  weight_exp=weight_exp)
            out.append(rows[:, 0:5] if test.keep_stale_rows else rows[keep, 0:5])
        return out
    # one stable sort groups the classes (each keeps its row order, as ``dets[classes == j]``)
    order = np.argsort(classes, kind="stable")
    rows = np.ascontiguousarray(dets[order][:, 0:5], dtype=np.float32)
    starts = np.searchsorted(classes[order], np.arange(num_classes + 1), side="left").tolist()
    bounds = list(zip(starts[:-1], starts[1:]))
    counts = _soft_nms_blocks(rows, bounds, test.soft_nms_sigma, nt, test.soft_nms_threshold,
                              test.soft_nms_method)
    if test.keep_stale_rows:
        return [rows[s:e] for s, e in bounds]
    return [rows[s:s + n] for (s, _), n in zip(bounds, counts)]


def max_per_image(per_class: Sequence[np.ndarray], limit: int) -> List[np.ndarray]:
    """Official limit: when more than ``limit`` rows, keep scores ``>=`` the ``limit``-th largest
    (``np.partition``); ties at the threshold can keep more than ``limit`` rows."""
    scores = np.concatenate([c[:, 4] for c in per_class]) if per_class else np.zeros(0, np.float32)
    if limit is None or limit <= 0 or scores.size <= limit:
        return list(per_class)
    kth = scores.size - limit
    thresh = np.partition(scores, kth)[kth]
    return [c[c[:, 4] >= thresh] if len(c) else c for c in per_class]


def detections_from_per_class(per_class: Sequence[np.ndarray], class_names: Sequence[str]
                              ) -> Detections:
    """Per-class ``[n_c, 5]`` arrays -> ``Detections`` sorted by score, descending (stable:
    equal scores stay in class order, then in soft-NMS row order)."""
    sizes = np.array([len(c) for c in per_class], dtype=np.int64)
    filled = [np.asarray(c, np.float32).reshape(-1, 5) for c in per_class if len(c)]
    rows = np.concatenate(filled) if filled else np.zeros((0, 5), np.float32)
    cls = np.repeat(np.arange(len(per_class), dtype=np.int64), sizes)
    order = np.argsort(-rows[:, 4].astype(np.float64), kind="stable")
    rows, cls = rows[order], cls[order]
    names = [class_names[c] for c in cls.tolist()]
    return Detections(boxes=rows[:, 0:4].copy(), scores=rows[:, 4].copy(), class_ids=cls,
                      class_names=names)


def postprocess(dets: np.ndarray, num_classes: int, test, class_names: Sequence[str],
                merge: bool = False, weight_exp: float = 10.0, nt: Optional[float] = None
                ) -> Detections:
    """Image-coordinate rows of all scales (and flips) ``[n, 8]`` -> final ``Detections``:
    drop score ``== -1`` rows (keeps ``score > -1``), per-class soft-NMS, ``max_per_image``."""
    dets = np.asarray(dets, dtype=np.float32).reshape(-1, 8)
    dets = dets[dets[:, 4] > -1]
    per_class = per_class_nms(dets, num_classes, test, merge=merge, weight_exp=weight_exp, nt=nt)
    per_class = max_per_image(per_class, test.max_per_image)
    return detections_from_per_class(per_class, class_names)
