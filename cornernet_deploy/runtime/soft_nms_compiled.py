"""The soft-NMS loops of ``postprocess`` compiled with numba, when numba is installed.

Optional (``pip install 'cornernet-deploy[fast]'``): without numba, or with
``CORNERNET_DEPLOY_NUMBA=0``, ``postprocess`` runs its numpy path. Both give the same bits: this
module computes exactly what ``postprocess._pair_weights`` and ``postprocess._soft_nms_scalar``
compute (the arithmetic of the official compiled Cython, float32 where it is float, double where
it is double), only without Python's per-row cost:

* ``pair_terms``: for every pair of rows of a class block, the float32 value the weight is made of (Gaussian: the exponent ``-(ov*ov)/sigma``, 0 where the boxes do
  not overlap; linear / hard: the weight itself, 1 where they do not overlap). ``exp`` is NOT taken here: ``postprocess`` takes it with numpy, the same
  ``np.exp`` (numpy's float64 loop) that the Cython calls, so the weights are numpy's bits on
  every CPU, not those of whichever libm numba links;
* ``soft_nms_loops``: the Cython's loops (max search, decay, replacing a dropped row by the last
  one) on every class block in place; the next pass's max (its first occurrence) is found while a
  pass settles each slot, in slot order, which is where the Cython's search would find it.

The functions are compiled on first use and cached on disk (numba's ``cache=True``).
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["available", "pair_terms", "soft_nms_loops"]

_compiled = None


def _build():
    import numba

    f32, f64 = np.float32, np.float64

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def pair_terms(rows, starts, sizes, offsets, sigma, by_inverse, nt, method, value):
        # Each row of a block's matrix in one branch-free pass over the other boxes (so that it
        # compiles to SIMD code); a pair that does not overlap gets the weight 1 (Gaussian: the
        # exponent 0, exp(0) = 1 exactly). Error model "numpy": the quotients of non-overlapping
        # pairs (which may divide by 0) are computed and thrown away, as in the numpy path.
        one = f32(1.0)
        zero = f32(0.0)
        sig = f32(sigma)
        # by_inverse (sigma a power of two, as the official 0.5): x / sigma is x * (1 / sigma) bit
        # for bit, a multiplication instead of a division
        inv = f32(1.0 / sig)
        thr = f32(nt)
        for b in range(starts.shape[0]):
            s, g, off = starts[b], sizes[b], offsets[b]
            x1 = rows[s:s + g, 0].copy()
            y1 = rows[s:s + g, 1].copy()
            x2 = rows[s:s + g, 2].copy()
            y2 = rows[s:s + g, 3].copy()
            # a box's area: a double product as the max box, stored as a float as the other one
            area = (((x2 - x1).astype(np.float64) + 1.0) * ((y2 - y1).astype(np.float64) + 1.0))
            area32 = area.astype(np.float32).astype(np.float64)
            for ti in range(g):
                tx1, ty1, tx2, ty2, ta = x1[ti], y1[ti], x2[ti], y2[ti], area[ti]
                k0 = off + ti * g
                for pi in range(g):
                    iw = (x2[pi] if x2[pi] < tx2 else tx2) - (x1[pi] if x1[pi] > tx1 else tx1) + one
                    ih = (y2[pi] if y2[pi] < ty2 else ty2) - (y1[pi] if y1[pi] > ty1 else ty1) + one
                    o = (iw > zero) & (ih > zero)
                    inter = f32(iw * ih)
                    ua = f32((ta + area32[pi]) - f64(inter))
                    ov = f32(inter / ua)
                    if method == 2:
                        sq = -f32(ov * ov)
                        v = f32(sq * inv) if by_inverse else f32(sq / sig)
                        value[k0 + pi] = v if o else zero
                    elif method == 1:
                        value[k0 + pi] = f32(one - ov) if (o and ov > thr) else one
                    else:
                        value[k0 + pi] = zero if (o and ov > thr) else one

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def soft_nms_loops(rows, starts, sizes, offsets, weight, threshold, counts):
        thr = f32(threshold)
        for b in range(starts.shape[0]):
            s, g, off = starts[b], sizes[b], offsets[b]
            rid = np.arange(g)
            ss = rows[s:s + g, 4].copy()
            n = g
            m = 0
            for j in range(1, n):                  # the first occurrence of the max
                if ss[j] > ss[m]:
                    m = j
            for i in range(g):
                if i + 1 >= n:
                    break
                if m != i:
                    rid[i], rid[m] = rid[m], rid[i]
                    ss[i], ss[m] = ss[m], ss[i]
                t = rid[i]
                base = off + t * g
                pos = i + 1
                m = -1              # the next max, found as the pass settles each slot in order
                while pos < n:
                    r = rid[pos]
                    # the weight of a pair that does not overlap is exactly 1, so the Cython's
                    # "if overlapping: decay" is a plain product here (x * 1 == x), without a
                    # hard-to-predict branch; only a drop needs the overlap (the Cython drops a
                    # row only in that branch), and drops are rare: it is tested then
                    ss[pos] = f32(weight[base + r] * ss[pos])
                    if ss[pos] < thr:
                        # the Cython's iw > 0 and ih > 0 (float32, +1 pixel), written out here: a
                        # jitted helper would be a closure variable, and numba keys a closure's
                        # cache on its variables' pickles, which a dispatcher's change every
                        # process, so the loops were recompiled (~3 s) at every start
                        a, c = s + t, s + r
                        iw = (rows[c, 2] if rows[c, 2] < rows[a, 2] else rows[a, 2]) - \
                             (rows[c, 0] if rows[c, 0] > rows[a, 0] else rows[a, 0]) + f32(1.0)
                        ih = (rows[c, 3] if rows[c, 3] < rows[a, 3] else rows[a, 3]) - \
                             (rows[c, 1] if rows[c, 1] > rows[a, 1] else rows[a, 1]) + f32(1.0)
                        if iw > f32(0.0) and ih > f32(0.0):
                            rid[pos], ss[pos] = rid[n - 1], ss[n - 1]
                            n -= 1
                            continue
                    if m < 0 or ss[pos] > ss[m]:
                        m = pos
                    pos += 1
            boxes = rows[s:s + g, 0:4].copy()
            for q in range(g):
                rows[s + q, 0:4] = boxes[rid[q]]
                rows[s + q, 4] = ss[q]
            counts[b] = n

    return pair_terms, soft_nms_loops


def available() -> bool:
    """True when the compiled loops can be used (numba importable, not switched off)."""
    global _compiled
    if os.environ.get("CORNERNET_DEPLOY_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _compiled is None:
        try:
            _compiled = _build()
        except ImportError:
            _compiled = False
    return bool(_compiled)


def pair_terms(rows, starts, sizes, offsets, sigma, nt, method, value):
    """Fill ``value`` with the weight terms of every pair of each block."""
    import math
    by_inverse = math.frexp(float(np.float32(sigma)))[0] == 0.5      # a power of two
    return _compiled[0](rows, starts, sizes, offsets, float(sigma), by_inverse, float(nt), int(method),
                        value)


def soft_nms_loops(*args):
    return _compiled[1](*args)
