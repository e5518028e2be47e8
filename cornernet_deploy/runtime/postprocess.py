"""Post-processing of decoded detections, as the official test code does it.

- ``flip_merge``: the flipped copy's rows get ``x1' = out_w - x2``, ``x2' = out_w - x1`` (``out_w``,
  not ``out_w - 1``), then both copies' rows are concatenated (no heat-map averaging).
- ``rescale_dets``: output-map units -> image pixels: ``/ ratio``, ``- border``, clip to
  ``[0, w'] x [0, h']`` (inclusive of the scaled size) when enabled, ``/ scale``; float32 as the
  official in-place numpy arithmetic.
- ``soft_nms`` / ``soft_nms_merge``: the official Cython ``core/external/nms.pyx``, reproduced
  with the same float32 scalar arithmetic and the same row movements (see ``soft_nms``).
- ``per_class_nms`` + ``max_per_image``: the tail of ``cornernet_inference`` /
  ``cornernet_saccade_inference``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .detections import Detections

__all__ = ["flip_merge", "rescale_dets", "soft_nms", "soft_nms_merge", "per_class_nms",
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


def _decay(boxes, i, n, sigma, nt, method):
    """One max box (row ``i``) against rows ``i+1 .. n-1``, in the Cython's float32 arithmetic.

    Returns ``(overlap mask, new scores, weights)`` for those rows (nothing written)."""
    tx1, ty1, tx2, ty2 = (boxes[i, c] for c in range(4))
    rows = boxes[i + 1:n]
    x1, y1, x2, y2, s = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    area = (x2 - x1 + _F1) * (y2 - y1 + _F1)
    iw = np.minimum(tx2, x2) - np.maximum(tx1, x1) + _F1
    ih = np.minimum(ty2, y2) - np.maximum(ty1, y1) + _F1
    over = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inter = iw * ih
        ua = (tx2 - tx1 + _F1) * (ty2 - ty1 + _F1) + area - inter
        ov = inter / ua
        if method == 1:
            weight = np.where(ov > np.float32(nt), _F1 - ov, _F1).astype(np.float32)
        elif method == 2:
            arg = -(ov * ov) / np.float32(sigma)                  # float32, as in C
            weight = np.exp(arg.astype(np.float64)).astype(np.float32)  # np.exp on a double
        else:
            weight = np.where(ov > np.float32(nt), np.float32(0), _F1).astype(np.float32)
        new_s = np.where(over, weight * s, s).astype(np.float32)
    return over, new_s, weight


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
    copies (see ``TestConfig.keep_stale_rows``). Arithmetic is float32 like the C code; the
    Gaussian's ``exp`` is taken in float64 as the Cython's ``np.exp`` call does.
    """
    _check_boxes(boxes, 5)
    n = boxes.shape[0]
    n0 = n
    for i in range(n0):
        if i >= n:
            break                                  # the Cython's remaining iterations are no-ops
        m = i + int(np.argmax(boxes[i:n, 4]))      # first occurrence of the max
        if m != i:
            tmp = boxes[i, 0:5].copy()
            boxes[i, 0:5] = boxes[m, 0:5]
            boxes[m, 0:5] = tmp
        if i + 1 >= n:
            continue
        over, new_s, _ = _decay(boxes, i, n, sigma, Nt, method)
        n, _ = _compact(boxes, i, n, over, new_s, threshold)
    return np.arange(n)


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
    out = []
    for j in range(num_classes):
        rows = np.ascontiguousarray(dets[classes == j][:, 0:7], dtype=np.float32)
        if merge:
            keep = soft_nms_merge(rows, sigma=test.soft_nms_sigma, Nt=nt,
                                  threshold=test.soft_nms_threshold, method=test.soft_nms_method,
                                  weight_exp=weight_exp)
        else:
            keep = soft_nms(rows, sigma=test.soft_nms_sigma, Nt=nt,
                            threshold=test.soft_nms_threshold, method=test.soft_nms_method)
        out.append(rows[:, 0:5] if test.keep_stale_rows else rows[keep, 0:5])
    return out


def max_per_image(per_class: Sequence[np.ndarray], limit: int) -> List[np.ndarray]:
    """Official limit: when more than ``limit`` rows, keep scores ``>=`` the ``limit``-th largest
    (``np.partition``); ties at the threshold can keep more than ``limit`` rows."""
    scores = np.concatenate([c[:, 4] for c in per_class]) if per_class else np.zeros(0, np.float32)
    if limit is None or limit <= 0 or scores.size <= limit:
        return list(per_class)
    kth = scores.size - limit
    thresh = np.partition(scores, kth)[kth]
    return [c[c[:, 4] >= thresh] for c in per_class]


def detections_from_per_class(per_class: Sequence[np.ndarray], class_names: Sequence[str]
                              ) -> Detections:
    """Per-class ``[n_c, 5]`` arrays -> ``Detections`` sorted by score, descending (stable:
    equal scores stay in class order, then in soft-NMS row order)."""
    if per_class:
        rows = np.concatenate([np.asarray(c, np.float32).reshape(-1, 5) for c in per_class])
        cls = np.concatenate([np.full(len(c), j, dtype=np.int64) for j, c in enumerate(per_class)])
    else:
        rows, cls = np.zeros((0, 5), np.float32), np.zeros(0, np.int64)
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
