"""The soft-NMS loops of ``postprocess`` compiled with numba, when numba is installed.

Optional (``pip install 'cornernet-deploy[fast]'``): without numba, or with
``CORNERNET_DEPLOY_NUMBA=0``, ``postprocess`` runs its numpy path. Both give the same bits: this
module computes exactly what ``postprocess._pair_weights`` and ``postprocess._soft_nms_scalar``
compute (the arithmetic of the official compiled Cython, float32 where it is float, double where
it is double), only without Python's per-row cost:

* ``pair_terms``: for every pair of rows of a class block, whether they overlap and the float32
  value the weight is made of (Gaussian: the exponent ``-(ov*ov)/sigma``, 0 where the boxes do
  not overlap; linear / hard: the weight itself, 1 where they do not overlap). ``exp`` is NOT taken here: ``postprocess`` takes it with numpy, the same
  ``np.exp`` (numpy's float64 loop) that the Cython calls, so the weights are numpy's bits on
  every CPU, not those of whichever libm numba links;
* ``soft_nms_loops``: the Cython's loops (max search, decay, replacing a dropped row by the last
  one), statement for statement, on every class block in place.

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

    @numba.njit(cache=True, nogil=True)
    def pair_terms(rows, starts, sizes, offsets, sigma, nt, method, over, value):
        one = f32(1.0)
        sig = f32(sigma)
        thr = f32(nt)
        for b in range(starts.shape[0]):
            s, g, off = starts[b], sizes[b], offsets[b]
            # a box's area: a double product as the max box, stored as a float as the other one
            area = np.empty(g, dtype=np.float64)
            for q in range(g):
                area[q] = (f64(rows[s + q, 2] - rows[s + q, 0]) + 1.0) * (f64(rows[s + q, 3] - rows[s + q, 1]) + 1.0)
            for ti in range(g):
                t = s + ti
                tx1, ty1, tx2, ty2 = rows[t, 0], rows[t, 1], rows[t, 2], rows[t, 3]
                for pi in range(ti, g):            # the overlap is symmetric, the union is not
                    p = s + pi
                    px1, py1, px2, py2 = rows[p, 0], rows[p, 1], rows[p, 2], rows[p, 3]
                    k, kt = off + ti * g + pi, off + pi * g + ti
                    iw = (px2 if px2 < tx2 else tx2) - (px1 if px1 > tx1 else tx1) + one
                    ih = (py2 if py2 < ty2 else ty2) - (py1 if py1 > ty1 else ty1) + one
                    if not (iw > 0 and ih > 0):
                        over[k] = over[kt] = False
                        value[k] = value[kt] = f32(0.0) if method == 2 else one  # exp(0) = 1
                        continue
                    over[k] = over[kt] = True
                    inter = f32(iw * ih)
                    for a, c, kk in ((ti, pi, k), (pi, ti, kt)):   # a: the max box, c: the other
                        ua = f32((area[a] + f64(f32(area[c]))) - f64(inter))
                        ov = f32(inter / ua)
                        if method == 2:
                            value[kk] = f32(-f32(ov * ov) / sig)
                        elif method == 1:
                            value[kk] = f32(one - ov) if ov > thr else one
                        else:
                            value[kk] = f32(0.0) if ov > thr else one

    @numba.njit(cache=True, nogil=True)
    def soft_nms_loops(rows, starts, sizes, offsets, over, weight, threshold, counts):
        thr = f32(threshold)
        for b in range(starts.shape[0]):
            s, g, off = starts[b], sizes[b], offsets[b]
            rid = np.arange(g)
            ss = rows[s:s + g, 4].copy()
            n = g
            for i in range(g):
                if i + 1 >= n:
                    break
                m = i
                for j in range(i + 1, n):          # the first occurrence of the max
                    if ss[j] > ss[m]:
                        m = j
                if m != i:
                    rid[i], rid[m] = rid[m], rid[i]
                    ss[i], ss[m] = ss[m], ss[i]
                base = off + rid[i] * g
                pos = i + 1
                while pos < n:
                    r = rid[pos]
                    if over[base + r]:
                        ss[pos] = f32(weight[base + r] * ss[pos])
                        if ss[pos] < thr:
                            rid[pos], ss[pos] = rid[n - 1], ss[n - 1]
                            n -= 1
                            continue
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


def pair_terms(*args):
    return _compiled[0](*args)


def soft_nms_loops(*args):
    return _compiled[1](*args)
