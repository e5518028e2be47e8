"""CornerNet-Saccade's attention/zoom test pipeline (``core/test/cornernet_saccade.py``), numpy only.

1. Image -> float64 in [0, 1]; crops are cut from it and resized bilinearly (float64,
   ``align_corners=False``) into a zero canvas of the model's input size (255x255 for the official
   model; any square ``k*32-1`` the official config's ``input_size`` could name), stored as float32,
   then normalised ((x - mean) / std in float32, so the padding becomes -mean/std).
2. First pass: two down-sized views of the whole image, location ``(H//2, W//2, size/max(H, W))``
   for each of ``init_sizes`` (a float32 location array). Decode (``no_border``); the attention
   maps get 3x3 peak suppression (``att_nms``).
3. Zoom locations from the attention maps (``decode_atts``) and from the confident first-pass
   detections (``ref_locations``), merged by ``location_nms``; the first ``att_max_crops`` are
   cropped, decoded and mapped back (``image = out / (64/255) / scale + offset``).
4. All detections -> per-class Gaussian soft-NMS (sigma from the ``TestConfig``, keep list used)
   -> ``max_per_image``. Boxes are never clipped.

Precision is that of the official numpy 1.x arithmetic: crop sizes ``int(255 / scale)`` in
float64 (``255 / float32(0.425)`` = 599.99998 -> 599), first-pass scales and offsets float32,
zoom-pass scales float64 (their map-back division is done in float64, then stored as float32).

Deviations (documented, only in cases where the official code raises): a crop whose window or
canvas target is empty is left as padding instead of raising; a zoom location with a non-finite
or huge scale (crop size 0) is skipped. ``location_nms`` sorts with a port of numpy 1.x's
introsort (``numpy_argsort``) so that equal scores come out in the official order even where
the installed numpy dispatches ``argsort`` to a SIMD sort with another tie order.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .decode import peak_suppress
from .detections import Detections
from .postprocess import postprocess
from .preprocess import check_image, normalize_float

__all__ = ["bilinear_resize", "crop_into_canvas", "prepare_crops", "att_nms", "decode_atts",
           "ref_locations", "location_nms", "numpy_argsort", "to_canvas_pixels", "remap_dets",
           "first_pass_locations", "saccade_detect"]

# get_ref_locs: the zoom that brings a detection of longest side m to the training size range
_REF_LARGE, _REF_MEDIUM = 96, 32
_REF_ZOOM = (192, 64, 24)
# decode_atts: a view is not zoomed further beyond these scales
_MAX_VIEW_SCALE, _MAX_NEXT_SCALE = 2, 4


# --------------------------------------------------------------------------------------------
# crops
# --------------------------------------------------------------------------------------------

def _bilinear_axis(in_size: int, out_size: int):
    # PyTorch 1.0 upsample_bilinear2d, align_corners=False: scale = in/out (0 when out == 1),
    # src = scale*(dst+0.5)-0.5 clamped at 0, neighbour index clamped to the last element.
    scale = in_size / out_size if out_size > 1 else 0.0
    src = scale * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5
    src = np.where(src < 0, 0.0, src)
    i0 = src.astype(np.int64)
    i1 = i0 + (i0 < in_size - 1)
    lam1 = src - i0
    return i0, i1, 1.0 - lam1, lam1


def bilinear_resize(image: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Bilinear resize of an HxWxC float64 array, ``F.interpolate(mode='bilinear',
    align_corners=False)`` of PyTorch 1.0 (same source positions, weights and summation order)."""
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    h0, h1, hl0, hl1 = _bilinear_axis(image.shape[0], out_h)
    w0, w1, wl0, wl1 = _bilinear_axis(image.shape[1], out_w)
    a, b = image[h0], image[h1]
    wl0, wl1 = wl0[None, :, None], wl1[None, :, None]
    top = wl0 * a[:, w0] + wl1 * a[:, w1]
    bot = wl0 * b[:, w0] + wl1 * b[:, w1]
    return hl0[:, None, None] * top + hl1[:, None, None] * bot


def crop_into_canvas(image64: np.ndarray, center: Sequence[int], crop: int, canvas: np.ndarray
                     ) -> Tuple[int, int]:
    """The official ``crop_image_gpu`` for a square ``crop``: resize the part of the window of
    ``image64`` (HxWx3 float64) around ``center`` into ``canvas`` (HxWx3, modified); return the
    offset ``(cy - crop//2, cx - crop//2)``."""
    cty, ctx = int(center[0]), int(center[1])
    o_h, o_w = canvas.shape[:2]
    im_h, im_w = image64.shape[:2]
    half = crop // 2
    offset = (cty - half, ctx - half)
    if crop < 1:
        return offset
    f = o_h / crop
    x0, x1 = max(0, ctx - half), min(ctx + half, im_w)
    y0, y1 = max(0, cty - half), min(cty + half, im_h)
    left, right = ctx - x0, x1 - ctx
    top, bottom = cty - y0, y1 - cty
    oy0, oy1 = o_h // 2 - int(top * f), o_h // 2 + int(bottom * f)
    ox0, ox1 = o_w // 2 - int(left * f), o_w // 2 + int(right * f)
    if oy1 <= oy0 or ox1 <= ox0 or y1 <= y0 or x1 <= x0:
        return offset                      # the official interpolate would raise here
    canvas[oy0:oy1, ox0:ox1] = bilinear_resize(image64[y0:y1, x0:x1], (oy1 - oy0, ox1 - ox0))
    return offset


def prepare_crops(image64: np.ndarray, locations: np.ndarray, input_hw: Sequence[int],
                  mean, std) -> Tuple[np.ndarray, np.ndarray]:
    """Official ``prepare_images``: locations ``[n, >=3]`` (y, x, scale) -> normalised crops
    ``[n, 3, H, W]`` float32 and offsets ``[n, 2]`` float32. Crop size ``int(H / scale)`` in
    float64 whatever the dtype of ``locations``."""
    n = locations.shape[0]
    in_h, in_w = int(input_hw[0]), int(input_hw[1])
    tensors = np.empty((n, 3, in_h, in_w), dtype=np.float32)
    offsets = np.zeros((n, 2), dtype=np.float32)
    for k in range(n):
        y, x, scale = (float(v) for v in locations[k, :3])
        canvas = np.zeros((in_h, in_w, 3), dtype=np.float32)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            crop_f = in_h / scale if scale != 0 else math.inf
        if not math.isfinite(crop_f) or not math.isfinite(y) or not math.isfinite(x):
            offsets[k] = (0, 0)
        else:
            crop = int(crop_f)
            offsets[k] = crop_into_canvas(image64, (int(y), int(x)), crop, canvas)
        tensors[k] = normalize_float(canvas.transpose(2, 0, 1), mean, std)
    return tensors, offsets


def first_pass_locations(image_hw: Sequence[int], init_sizes: Sequence[int]) -> np.ndarray:
    """``[(H//2, W//2, size / max(H, W)) for size in init_sizes]`` as float32 (official)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    return np.array([[h // 2, w // 2, size / max(h, w)] for size in init_sizes], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# attention and locations
# --------------------------------------------------------------------------------------------

def att_nms(atts: Sequence[np.ndarray], kernels: Sequence[int]) -> List[np.ndarray]:
    """Peak suppression of the (already sigmoid-ed) attention maps, one kernel per map."""
    return [peak_suppress(np.asarray(a, dtype=np.float32), k) for a, k in zip(atts, kernels)]


def att_ratio(input_hw: Sequence[int], att_map: np.ndarray) -> int:
    """Input pixels per attention cell: 16, 8, 4 for the 16, 32, 64 maps of a 255 input."""
    return (int(input_hw[1]) + 1) // int(att_map.shape[-1])


def decode_atts(atts: Sequence[np.ndarray], att_scales: Sequence[float], scales: np.ndarray,
                offsets: np.ndarray, image_hw: Sequence[int], thresh: float, input_hw,
                ignore_same: bool = False) -> np.ndarray:
    """Official ``decode_atts``: attention peaks above ``thresh`` -> zoom locations
    ``[n, 4]`` float64 (y, x, scale, score), per view then per map (innermost first), cells in
    row-major order; locations outside the image dropped; a map is skipped when the view's scale
    is above 2 or the new scale above 4 (or, with ``ignore_same``, when its zoom is <= 1)."""
    height, width = int(image_hw[0]), int(image_hw[1])
    out = []
    t32 = np.float32(thresh)
    for v in range(atts[0].shape[0]):
        s_v = scales[v]
        for att, zoom in zip(atts, att_scales):
            ratio = att_ratio(input_hw, att)
            ys, xs = np.nonzero(att[v, 0] > t32)
            sc = att[v, 0, ys, xs].astype(np.float64)
            ys = (ys * ratio) / np.float64(s_v) + np.float64(offsets[v, 0])
            xs = (xs * ratio) / np.float64(s_v) + np.float64(offsets[v, 1])
            keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            next_scale = float(zoom) * float(s_v)
            if (ignore_same and zoom <= 1) or s_v > _MAX_VIEW_SCALE or next_scale > _MAX_NEXT_SCALE:
                continue
            out.append(np.stack([ys[keep], xs[keep], np.full(int(keep.sum()), next_scale),
                                 sc[keep]], axis=1))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 4), np.float64)


def ref_locations(dets: np.ndarray, score: float = 0.5) -> np.ndarray:
    """Official ``get_ref_locs``: detections with score > ``score`` -> zoom locations (box
    centre, zoom 192/m, 64/m or 24/m for longest side m > 96, > 32, <= 32; score 1), float32."""
    dets = dets[dets[:, 4] > np.float32(score)]
    xs = (dets[:, 0] + dets[:, 2]) / np.float32(2)
    ys = (dets[:, 1] + dets[:, 3]) / np.float32(2)
    m = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
    zoom = np.zeros_like(m)
    large = m > _REF_LARGE
    medium = (m > _REF_MEDIUM) & (m <= _REF_LARGE)
    small = m <= _REF_MEDIUM
    with np.errstate(divide="ignore"):
        zoom[large] = np.float32(_REF_ZOOM[0]) / m[large]
        zoom[medium] = np.float32(_REF_ZOOM[1]) / m[medium]
        zoom[small] = np.float32(_REF_ZOOM[2]) / m[small]
    locs = np.stack([ys, xs, zoom, dets[:, 4]], axis=1).astype(np.float32)
    locs[:, 3] = 1
    return locs


def _lt(a: float, b: float) -> bool:
    # numpy's FLOAT_LT: NaN sorts last
    return a < b or (b != b and a == a)


def _aheapsort(v, a: list, lo: int, n: int) -> None:
    # numpy aheapsort_ on a[lo:lo+n] (1-based heap indexing)
    def get(i):
        return a[lo + i - 1]

    def put(i, x):
        a[lo + i - 1] = x

    def sift_down(i: int, tmp, size: int) -> None:
        j = i << 1
        while j <= size:
            if j < size and _lt(v[get(j)], v[get(j + 1)]):
                j += 1
            if _lt(v[tmp], v[get(j)]):
                put(i, get(j))
                i, j = j, j + j
            else:
                break
        put(i, tmp)

    for l in range(n >> 1, 0, -1):
        sift_down(l, get(l), n)
    while n > 1:
        tmp = get(n)
        put(n, get(1))
        n -= 1
        sift_down(1, tmp, n)


def numpy_argsort(values) -> np.ndarray:
    """``np.argsort(values)`` (default kind) exactly as numpy 1.x computes it, ties included:
    the generic introsort (median-of-3 quicksort down to 16 elements, insertion sort, heapsort
    when the depth budget ``2*floor(log2 n)`` is spent). Pure Python; meant for the few hundred
    locations of ``location_nms``."""
    v = [float(x) for x in np.asarray(values, dtype=np.float64).ravel()]
    num = len(v)
    a = list(range(num))
    if num < 2:
        return np.array(a, dtype=np.int64)
    lt = _lt
    pl, pr = 0, num - 1
    stack: list = []
    cdepth = (num.bit_length() - 1) * 2
    while True:
        if cdepth < 0:
            _aheapsort(v, a, pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                if lt(v[a[pm]], v[a[pl]]):
                    a[pm], a[pl] = a[pl], a[pm]
                if lt(v[a[pr]], v[a[pm]]):
                    a[pr], a[pm] = a[pm], a[pr]
                if lt(v[a[pm]], v[a[pl]]):
                    a[pm], a[pl] = a[pl], a[pm]
                vp = v[a[pm]]
                pi, pj = pl, pr - 1
                a[pm], a[pj] = a[pj], a[pm]
                while True:
                    pi += 1
                    while lt(v[a[pi]], vp):
                        pi += 1
                    pj -= 1
                    while lt(vp, v[a[pj]]):
                        pj -= 1
                    if pi >= pj:
                        break
                    a[pi], a[pj] = a[pj], a[pi]
                pk = pr - 1
                a[pi], a[pk] = a[pk], a[pi]
                cdepth -= 1
                if pi - pl < pr - pi:
                    stack.append((pi + 1, pr, cdepth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, cdepth))
                    pl = pi + 1
            for pi in range(pl + 1, pr + 1):
                vi = a[pi]
                vp = v[vi]
                pj = pi
                while pj > pl and lt(vp, v[a[pj - 1]]):
                    a[pj] = a[pj - 1]
                    pj -= 1
                a[pj] = vi
        if not stack:
            break
        pl, pr, cdepth = stack.pop()
    return np.array(a, dtype=np.int64)


def location_nms(locations: np.ndarray, thresh: float = 16) -> np.ndarray:
    """Official ``location_nms``: sort by score (``argsort(...)[::-1]``), then repeatedly take the
    first location and drop every one (itself included) with ``min(|dy|, |dx|) <= thresh/scale``
    and scale ratio (taken / other) within [0.8, 1.2]."""
    if locations.shape[0] == 0:
        return np.zeros((0, 4))
    locations = locations[numpy_argsort(locations[:, -1])[::-1]]
    ys, xs, scales = locations[:, 0], locations[:, 1], locations[:, 2]
    dists = np.minimum(np.abs(ys[:, None] - ys[None, :]), np.abs(xs[:, None] - xs[None, :]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = scales[:, None] / scales[None, :]
    alive = np.arange(locations.shape[0])
    picked = []
    while alive.size:
        first = alive[0]
        picked.append(first)
        with np.errstate(divide="ignore", invalid="ignore"):
            keep = ((dists[first, alive] > thresh / scales[first]) | (ratios[first, alive] > 1.2)
                    | (ratios[first, alive] < 0.8))
        alive = alive[keep]
    return locations[picked]


def to_canvas_pixels(dets: np.ndarray, input_hw: Sequence[int], output_hw: Sequence[int]) -> None:
    """In place: output-map units -> canvas pixels, ``/ float32(out/in)`` per axis."""
    dets[..., 0:4:2] /= np.float32(output_hw[1] / input_hw[1])
    dets[..., 1:4:2] /= np.float32(output_hw[0] / input_hw[0])


def remap_dets(dets: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> None:
    """In place: canvas pixels -> image pixels, ``/ scale + offset``; the division is done in
    the dtype of ``scales`` (float32 first pass, float64 zoom pass) and stored as float32."""
    s = np.asarray(scales).reshape(-1, 1, 1)
    if s.dtype == np.float32:
        dets[..., 0:4:2] /= s
        dets[..., 1:4:2] /= s
    else:
        dets[..., 0:4:2] = (dets[..., 0:4:2].astype(np.float64) / s).astype(np.float32)
        dets[..., 1:4:2] = (dets[..., 1:4:2].astype(np.float64) / s).astype(np.float32)
    dets[..., 0:4:2] += offsets[:, 1][:, None, None]
    dets[..., 1:4:2] += offsets[:, 0][:, None, None]


# --------------------------------------------------------------------------------------------
# the whole pipeline
# --------------------------------------------------------------------------------------------

Infer = Callable[[np.ndarray, bool], Tuple[np.ndarray, Optional[List[np.ndarray]]]]


def saccade_detect(images: Sequence[np.ndarray], infer: Infer, spec, test, cfg, mean, std,
                   class_names: Sequence[str], input_hw: Optional[Sequence[int]] = None,
                   clock=None) -> List[Detections]:
    """The official ``cornernet_saccade_inference`` for several images, batched across images.

    ``infer(tensors [M, 3, H, W] float32, need_atts) -> (dets [M, num_dets, 8] in output-map
    units, [att0, ...] one [M, 1, h, w] per attention map (sigmoid-ed, before peak suppression)
    or None)``. ``input_hw``: the square crop size (the official config's ``input_size``;
    default the architecture's); ``cfg.att_scales``/``att_nms_kernels`` need one entry per map.
    ``clock`` (``pipeline.StageClock``): the crops are timed as its ``preprocess`` stage.
    """
    preprocess_stage = (lambda: clock.stage("preprocess")) if clock is not None else contextlib.nullcontext
    input_hw = tuple(int(s) for s in (input_hw or spec.input_size))
    output_hw = spec.output_size(input_hw)
    images = [check_image(im, f"image {i}") for i, im in enumerate(images)]
    if not images:
        return []
    with preprocess_stage():
        img64 = [im / 255.0 for im in images]                 # HxWx3 float64, BGR
    thresholds = tuple(cfg.att_thresholds)
    num_iter = len(thresholds)
    scales_cfg = cfg.att_scales
    nested = len(scales_cfg) > 0 and isinstance(scales_cfg[0], (tuple, list))

    def scales_for(it):
        return tuple(scales_cfg[it]) if nested else tuple(scales_cfg)

    # first pass, all images at once
    first_locs = [first_pass_locations(im.shape[:2], cfg.init_sizes) for im in images]
    with preprocess_stage():
        crops = [prepare_crops(img64[i], first_locs[i], input_hw, mean, std) for i in range(len(images))]
        tensors = np.concatenate([c[0] for c in crops]) if crops else np.zeros((0, 3) + input_hw, np.float32)
    dets_all, atts_all = infer(tensors, True)
    atts_all = att_nms(atts_all, cfg.att_nms_kernels)

    detections: List[List[np.ndarray]] = []
    locations: List[np.ndarray] = []
    per = len(cfg.init_sizes)
    for i, im in enumerate(images):
        sl = slice(i * per, (i + 1) * per)
        dets, atts = dets_all[sl].copy(), [a[sl] for a in atts_all]
        offsets = crops[i][1]
        scales = first_locs[i][:, 2]
        nxt = decode_atts(atts, scales_for(0), scales, offsets, im.shape[:2], thresholds[0],
                          input_hw)
        to_canvas_pixels(dets, input_hw, output_hw)
        remap_dets(dets, scales, offsets)
        dets = dets.reshape(-1, 8)
        dets = dets[dets[:, 4] > np.float32(cfg.first_pass_score)]
        if cfg.ref_dets:
            nxt = np.concatenate([nxt, ref_locations(dets, cfg.ref_det_score)], axis=0)
            nxt = location_nms(nxt, thresh=cfg.location_nms_threshold)
        detections.append([dets])
        locations.append(nxt)

    num_crops = [0] * len(images)
    active = [True] * len(images)
    for it in range(1, num_iter + 1):
        todo = []
        for i in range(len(images)):
            if not active[i] or locations[i].shape[0] == 0:
                active[i] = False
                continue
            locs = locations[i]
            if num_crops[i] + locs.shape[0] > cfg.att_max_crops:
                locs = locs[:min(cfg.att_max_crops - num_crops[i], locs.shape[0])]
            num_crops[i] += locs.shape[0]
            with preprocess_stage():
                todo.append((i, locs, prepare_crops(img64[i], locs, input_hw, mean, std)))
        if not todo:
            break
        need_atts = it < num_iter
        with preprocess_stage():
            tensors = np.concatenate([t[2][0] for t in todo])
        dets_all, atts_all = infer(tensors, need_atts)
        if need_atts:
            atts_all = att_nms(atts_all, cfg.att_nms_kernels)
        start = 0
        for i, locs, (_, offsets) in todo:
            n = locs.shape[0]
            dets = dets_all[start:start + n].copy()
            to_canvas_pixels(dets, input_hw, output_hw)
            remap_dets(dets, locs[:, 2], offsets)
            dets = dets.reshape(-1, 8)
            dets = dets[dets[:, 4] > -1]
            detections[i].append(dets)
            if num_crops[i] == cfg.att_max_crops:
                active[i] = False
            elif need_atts:
                atts = [a[start:start + n] for a in atts_all]
                nxt = decode_atts(atts, scales_for(it), locs[:, 2], offsets, images[i].shape[:2],
                                  thresholds[it], input_hw, ignore_same=True)
                if cfg.ref_dets:
                    nxt = np.concatenate([nxt, ref_locations(dets, cfg.ref_det_score)], axis=0)
                    nxt = location_nms(nxt, thresh=cfg.location_nms_threshold)
                locations[i] = nxt
            start += n

    return [postprocess(np.concatenate(d, axis=0), len(class_names), test, class_names)
            for d in detections]
