"""Test oracle: a plain, loop-based re-statement of the official CornerNet-Lite test code.

Written from docs/OFFICIAL_SPEC sections 3-4 and the official semantics (``_decode``,
``soft_nms``/``soft_nms_merge`` of ``nms.pyx``, ``cornernet_inference``,
``cornernet_saccade_inference``), deliberately *not* vectorised and independent of
``cornernet_deploy.runtime``: per-element Python loops, torch for the tensor ops the official
code does in torch (sigmoid, max-pool, bilinear interpolation, normalisation), and numpy float32
scalars for the Cython's C floats.

One documented choice shared with the runtime (a deviation from "unspecified", not from a defined
official result): top-k ties are broken by lower flat index (stable sort).

Arithmetic follows what the official code computes: torch's float32 ``sigmoid`` (see
``torch_sigmoid``), and in the Cython soft-NMS the C that Cython generates for ``nms.pyx``: the
literal ``+ 1`` becomes the double ``1.0``, so ``x2 - x1 + 1`` is a float difference widened to
double, the areas' products and the union are double, and each is rounded to float when it is
stored into a ``cdef float`` (Python floats below are those C doubles).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

F32 = np.float32


# ------------------------------------------------------------------------------------------
# decode
# ------------------------------------------------------------------------------------------

def torch_sigmoid(h):
    """``torch.sigmoid`` of a float32 tensor, as the official ``_decode`` calls it, with every
    element on torch's SIMD path: torch computes the last ``n mod (2 x vector width)`` elements of
    each thread's chunk with a scalar libm ``expf`` that differs in ~5% of values. The official
    maps (80 x 128 x 128, 80 x 64 x 64) are multiples of 64, so there no element takes it; here
    the flattened map is padded to a multiple of 64 and computed on one thread."""
    flat = h.reshape(-1)
    pad = (-flat.numel()) % 64
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = torch.sigmoid(torch.cat([flat, flat.new_zeros(pad)]))[:flat.numel()]
    finally:
        torch.set_num_threads(threads)
    return out.reshape(h.shape)


def ref_decode(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K=100, kernel=3,
               ae_threshold=0.5, num_dets=1000, no_border=False):
    """Official ``_decode`` on numpy inputs [N, ...]; returns [N, num_dets, 8] float32."""
    tl_heat, br_heat = torch.from_numpy(np.asarray(tl_heat)), torch.from_numpy(np.asarray(br_heat))
    batch, cat, height, width = tl_heat.shape
    pad = (kernel - 1) // 2

    def heat_nms(h):
        h = torch_sigmoid(h)
        hmax = F.max_pool2d(h, (kernel, kernel), stride=1, padding=pad)
        return h * (hmax == h).float()

    tl_h, br_h = heat_nms(tl_heat), heat_nms(br_heat)
    out = np.zeros((batch, num_dets, 8), dtype=F32)
    for b in range(batch):
        corners = []
        for heat, tag, regr in ((tl_h, tl_tag, tl_regr), (br_h, br_tag, br_regr)):
            flat = heat[b].reshape(-1)
            vals, inds = torch.sort(flat, descending=True, stable=True)
            vals, inds = vals[:K].numpy(), inds[:K].numpy()
            items = []
            for v, ind in zip(vals, inds):
                ind = int(ind)
                cls = ind // (height * width)
                sp = ind % (height * width)
                y, x = sp // width, sp % width
                items.append(dict(score=F32(v), cls=cls, y=y, x=x,
                                  fx=F32(F32(x) + F32(regr[b, 0, y, x])),
                                  fy=F32(F32(y) + F32(regr[b, 1, y, x])),
                                  tag=F32(tag[b, 0, y, x])))
            corners.append(items)
        tls, brs = corners
        pairs = []          # (score, flat pair index, row)
        for i, tl in enumerate(tls):
            for j, br in enumerate(brs):
                score = F32((tl["score"] + br["score"]) / F32(2))
                bad = (tl["cls"] != br["cls"]
                       or abs(F32(tl["tag"] - br["tag"])) > F32(ae_threshold)
                       or br["fx"] < tl["fx"] or br["fy"] < tl["fy"])
                if no_border and (tl["y"] == 0 or tl["x"] == 0 or br["y"] == height - 1
                                  or br["x"] == width - 1):
                    bad = True
                if bad:
                    score = F32(-1)
                pairs.append((score, i * len(brs) + j,
                              [tl["fx"], tl["fy"], br["fx"], br["fy"], score, tl["score"],
                               br["score"], F32(tl["cls"])]))
        pairs.sort(key=lambda p: (-float(p[0]), p[1]))
        for r, p in enumerate(pairs[:num_dets]):
            out[b, r] = p[2]
    return out


# ------------------------------------------------------------------------------------------
# soft-NMS: the Cython, line by line (C float = numpy float32, C double = Python float)
# ------------------------------------------------------------------------------------------

def ref_soft_nms(boxes, sigma=0.5, Nt=0.3, threshold=0.001, method=0, merge=False, weight_exp=6):
    """In place on a float32 [n, 5+] array (merge: [n, 7]); returns keep = list(range(N))."""
    sigma, Nt, threshold, weight_exp = F32(sigma), F32(Nt), F32(threshold), F32(weight_exp)
    N = boxes.shape[0]
    for i in range(N):                      # range() evaluated once: the N0 bound
        maxscore = boxes[i, 4]
        maxpos = i
        tx1, ty1, tx2, ty2, ts = (boxes[i, c] for c in range(5))
        pos = i + 1
        while pos < N:
            if maxscore < boxes[pos, 4]:
                maxscore = boxes[pos, 4]
                maxpos = pos
            pos = pos + 1
        for c in range(5):
            boxes[i, c] = boxes[maxpos, c]
        if merge:
            mx1 = F32(boxes[i, 0] * boxes[i, 5])
            my1 = F32(boxes[i, 1] * boxes[i, 5])
            mx2 = F32(boxes[i, 2] * boxes[i, 6])
            my2 = F32(boxes[i, 3] * boxes[i, 6])
            mts = boxes[i, 5]
            mbs = boxes[i, 6]
        boxes[maxpos, 0], boxes[maxpos, 1], boxes[maxpos, 2], boxes[maxpos, 3], boxes[maxpos, 4] = \
            tx1, ty1, tx2, ty2, ts
        tx1, ty1, tx2, ty2, ts = (boxes[i, c] for c in range(5))
        pos = i + 1
        while pos < N:
            x1, y1, x2, y2 = (boxes[pos, c] for c in range(4))
            area = F32((float(F32(x2 - x1)) + 1.0) * (float(F32(y2 - y1)) + 1.0))
            # the Cython's inline min/max: ``a if a <= b else b`` / ``a if a >= b else b``
            iw = F32(float(F32((tx2 if tx2 <= x2 else x2) - (tx1 if tx1 >= x1 else x1))) + 1.0)
            if iw > 0:
                ih = F32(float(F32((ty2 if ty2 <= y2 else y2) - (ty1 if ty1 >= y1 else y1))) + 1.0)
                if ih > 0:
                    ua = F32((float(F32(tx2 - tx1)) + 1.0) * (float(F32(ty2 - ty1)) + 1.0)
                             + float(area) - float(F32(iw * ih)))
                    if ua == 0:
                        raise ZeroDivisionError("float division")     # as the Cython
                    ov = F32(F32(iw * ih) / ua)
                    if method == 1:
                        weight = F32(1.0 - float(ov)) if ov > Nt else F32(1)
                    elif method == 2:
                        weight = F32(np.exp(float(F32(-F32(ov * ov) / sigma))))
                    else:
                        weight = F32(0) if ov > Nt else F32(1)
                    if merge:
                        mw = F32(math.pow(float(F32(F32(1) - weight)), float(weight_exp)))
                        mx1 = F32(mx1 + F32(F32(boxes[pos, 0] * boxes[pos, 5]) * mw))
                        my1 = F32(my1 + F32(F32(boxes[pos, 1] * boxes[pos, 5]) * mw))
                        mx2 = F32(mx2 + F32(F32(boxes[pos, 2] * boxes[pos, 6]) * mw))
                        my2 = F32(my2 + F32(F32(boxes[pos, 3] * boxes[pos, 6]) * mw))
                        mts = F32(mts + F32(boxes[pos, 5] * mw))
                        mbs = F32(mbs + F32(boxes[pos, 6] * mw))
                    boxes[pos, 4] = F32(weight * boxes[pos, 4])
                    if boxes[pos, 4] < threshold:
                        for c in range(5):
                            boxes[pos, c] = boxes[N - 1, c]
                        N = N - 1
                        pos = pos - 1
            pos = pos + 1
        if merge:
            boxes[i, 0] = F32(mx1 / mts)
            boxes[i, 1] = F32(my1 / mts)
            boxes[i, 2] = F32(mx2 / mbs)
            boxes[i, 3] = F32(my2 / mbs)
    return list(range(N))


# ------------------------------------------------------------------------------------------
# cornernet_inference
# ------------------------------------------------------------------------------------------

def ref_crop_image(image, center, size):
    cty, ctx = center
    height, width = size
    im_h, im_w = image.shape[0:2]
    out = np.zeros((height, width, 3), dtype=image.dtype)
    x0, x1 = max(0, ctx - width // 2), min(ctx + width // 2, im_w)
    y0, y1 = max(0, cty - height // 2), min(cty + height // 2, im_h)
    left, right = ctx - x0, x1 - ctx
    top, bottom = cty - y0, y1 - cty
    cy, cx = height // 2, width // 2
    out[cy - top:cy + bottom, cx - left:cx + right, :] = image[y0:y1, x0:x1, :]
    border = np.array([cy - top, cy + bottom, cx - left, cx + right], dtype=np.float32)
    return out, border


def ref_preprocess(image, scale, stride, mean, std, multiple=128):
    """One scale of cornernet_inference's image preparation -> (NCHW float32 [1], ratios,
    borders, sizes, out_hw). ``multiple`` 128 gives the official ``| 127``."""
    import cv2
    height, width = image.shape[0:2]
    new_h, new_w = int(height * scale), int(width * scale)
    if multiple == 128:
        inp_h, inp_w = new_h | 127, new_w | 127
    else:
        inp_h = ((new_h + 1 + multiple - 1) // multiple) * multiple - 1
        inp_w = ((new_w + 1 + multiple - 1) // multiple) * multiple - 1
    images = np.zeros((1, 3, inp_h, inp_w), dtype=np.float32)
    ratios = np.zeros((1, 2), dtype=np.float32)
    borders = np.zeros((1, 4), dtype=np.float32)
    sizes = np.zeros((1, 2), dtype=np.float32)
    out_h, out_w = (inp_h + 1) // stride, (inp_w + 1) // stride
    resized = cv2.resize(image, (new_w, new_h))
    resized, border = ref_crop_image(resized, [new_h // 2, new_w // 2], [inp_h, inp_w])
    images[0] = (resized / 255.).transpose((2, 0, 1))
    borders[0] = border
    sizes[0] = [new_h, new_w]
    ratios[0] = [out_h / inp_h, out_w / inp_w]
    t = torch.from_numpy(images)
    t = (t - torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)) \
        / torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
    return t.numpy(), ratios, borders, sizes, (out_h, out_w)


def ref_cornernet_inference(image, heads_fn, *, K, ae_threshold, num_dets, flip, scales=(1,),
                            stride=4, num_classes=80, max_per_image=100, sigma=0.5, Nt=0.5,
                            merge=False, weight_exp=10, keep_stale=True, clip=True, kernel=3,
                            mean=None, std=None, multiple=128):
    """``cornernet_inference``: ``heads_fn(images NCHW) -> dict of raw heads``; returns the
    official dict class_id (1-based) -> [n, 5] float32."""
    from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR
    mean = COCO_MEAN_BGR if mean is None else mean
    std = COCO_STD_BGR if std is None else std
    detections = []
    for scale in scales:
        images, ratios, borders, sizes, (out_h, out_w) = ref_preprocess(
            image, scale, stride, mean, std, multiple)
        if flip:
            images = np.concatenate((images, images[:, :, :, ::-1]), axis=0)
        images = np.ascontiguousarray(images)
        h = heads_fn(images)
        dets = ref_decode(h["tl_heat"], h["br_heat"], h["tl_tag"], h["br_tag"], h["tl_off"],
                          h["br_off"], K=K, kernel=kernel, ae_threshold=ae_threshold,
                          num_dets=num_dets)
        if flip:
            dets[1, :, [0, 2]] = out_w - dets[1, :, [2, 0]]
            dets = dets.reshape(1, -1, 8)
        xs, ys = dets[..., 0:4:2], dets[..., 1:4:2]
        xs /= ratios[:, 1][:, None, None]
        ys /= ratios[:, 0][:, None, None]
        xs -= borders[:, 2][:, None, None]
        ys -= borders[:, 0][:, None, None]
        if clip:
            np.clip(xs, 0, sizes[:, 1][:, None, None], out=xs)
            np.clip(ys, 0, sizes[:, 0][:, None, None], out=ys)
        dets[:, :, 0:4] /= F32(scale)
        detections.append(dets)
    detections = np.concatenate(detections, axis=1)[0]
    classes = detections[..., -1]
    keep = detections[:, 4] > -1
    detections, classes = detections[keep], classes[keep]
    return ref_finish(detections, classes, num_classes=num_classes, max_per_image=max_per_image,
                      sigma=sigma, Nt=Nt, merge=merge, weight_exp=weight_exp, keep_stale=keep_stale)


def ref_finish(detections, classes, *, num_classes, max_per_image, sigma, Nt, merge=False,
               weight_exp=10, keep_stale=True):
    top = {}
    for j in range(num_classes):
        rows = detections[classes == j][:, 0:7].astype(np.float32)
        keep = ref_soft_nms(rows, sigma=sigma, Nt=Nt, threshold=0.001, method=2, merge=merge,
                            weight_exp=weight_exp)
        top[j + 1] = rows[:, 0:5] if keep_stale else rows[keep, 0:5]
    scores = np.hstack([top[j][:, -1] for j in range(1, num_classes + 1)])
    if len(scores) > max_per_image:
        kth = len(scores) - max_per_image
        thresh = np.partition(scores, kth)[kth]
        for j in range(1, num_classes + 1):
            top[j] = top[j][top[j][:, -1] >= thresh]
    return top


# ------------------------------------------------------------------------------------------
# cornernet_saccade_inference
# ------------------------------------------------------------------------------------------

def ref_crop_gpu(image, center, size, out_image):
    """crop_image_gpu: image [3, H, W] float64 torch, out_image [3, 255, 255] float32 torch."""
    cty, ctx = center
    height, width = size
    o_h, o_w = out_image.shape[1:3]
    im_h, im_w = image.shape[1:3]
    scale = o_h / max(height, width)
    x0, x1 = max(0, ctx - width // 2), min(ctx + width // 2, im_w)
    y0, y1 = max(0, cty - height // 2), min(cty + height // 2, im_h)
    left, right = ctx - x0, x1 - ctx
    top, bottom = cty - y0, y1 - cty
    cy, cx = o_h // 2, o_w // 2
    oy0, oy1 = cy - int(top * scale), cy + int(bottom * scale)
    ox0, ox1 = cx - int(left * scale), cx + int(right * scale)
    if oy1 <= oy0 or ox1 <= ox0 or y1 <= y0 or x1 <= x0:
        # the official interpolate raises on an empty crop; the runtime leaves it as padding
        return np.array([cty - height // 2, ctx - width // 2])
    crop = image[:, y0:y1, x0:x1].unsqueeze(0)
    out_image[:, oy0:oy1, ox0:ox1] = F.interpolate(
        crop, size=[oy1 - oy0, ox1 - ox0], mode="bilinear", align_corners=False)[0]
    return np.array([cty - height // 2, ctx - width // 2])


def ref_prepare_images(image, locs, mean, std, input_size=255):
    n = locs.shape[0]
    images = torch.zeros(n, 3, input_size, input_size, dtype=torch.float32)
    offsets = np.zeros((n, 2), dtype=np.float32)
    for ind in range(n):
        y, x, scale = locs[ind, 0], locs[ind, 1], locs[ind, 2]
        crop = int(input_size / float(scale))          # numpy 1.x: float64 division
        offsets[ind] = ref_crop_gpu(image, [int(y), int(x)], [crop, crop], images[ind])
    images -= torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
    images /= torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
    return images.numpy(), offsets


def ref_location_nms(locations, thresh=16, argsort=None):
    """``argsort``: the official ``np.argsort`` only reproduces numpy 1.x's tie order where
    numpy runs its generic introsort (no SIMD sort dispatch); by default a stable sort, which is
    what that introsort does for up to 16 elements (insertion sort)."""
    nxt = []
    if argsort is None:
        argsort = lambda v: np.argsort(v, kind="stable")   # noqa: E731
    order = argsort(locations[:, -1])[::-1]
    locations = locations[order]
    ys, xs, scales = locations[:, 0], locations[:, 1], locations[:, 2]
    alive = list(range(locations.shape[0]))
    while alive:
        a = alive[0]
        nxt.append(locations[a])
        rest = []
        for b in alive:
            dist = min(abs(ys[a] - ys[b]), abs(xs[a] - xs[b]))
            ratio = scales[a] / scales[b]
            if dist > thresh / scales[a] or ratio > 1.2 or ratio < 0.8:
                rest.append(b)
        alive = rest
    return np.stack(nxt) if nxt else np.zeros((0, 4))


def ref_saccade_inference(image, heads_fn, *, K=12, num_dets=12, ae_threshold=0.3,
                          init_sizes=(192, 255), att_thresh=0.3, att_scales=(1, 2, 4),
                          att_ratios=(16, 8, 4), max_crops=30, num_classes=80,
                          max_per_image=100, mean=None, std=None, argsort=None, input_size=255):
    """``cornernet_saccade_inference`` (one zoom iteration, as the official config; ``input_size``
    the config's square ``input_size``, output ``(input_size + 1) // 4``).
    ``heads_fn(images) -> dict`` with raw heads and one att map per ``att_ratios`` entry
    (sigmoid-ed). Returns
    ``(dict class -> [n, 5], zoom locations, number of location candidates before NMS)``."""
    from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR
    mean = COCO_MEAN_BGR if mean is None else mean
    std = COCO_STD_BGR if std is None else std
    height, width = image.shape[0:2]
    img = torch.from_numpy((image / 255.).transpose((2, 0, 1)).copy())
    ratio = F32(((input_size + 1) // 4) / input_size)   # rescale_dets_: output / input size

    def run(images):
        h = heads_fn(np.ascontiguousarray(images))
        dets = ref_decode(h["tl_heat"], h["br_heat"], h["tl_tag"], h["br_tag"], h["tl_off"],
                          h["br_off"], K=K, kernel=3, ae_threshold=ae_threshold,
                          num_dets=num_dets, no_border=True)
        atts = []
        for j in range(len(att_ratios)):
            a = torch.from_numpy(np.asarray(h[f"att{j}"], dtype=np.float32))
            amax = F.max_pool2d(a, (3, 3), stride=1, padding=1)
            atts.append((a * (amax == a).float()).numpy())
        return dets, atts

    locations = np.array([[height // 2, width // 2, size / max(height, width)]
                          for size in init_sizes], dtype=np.float32)
    images, offsets = ref_prepare_images(img, locations, mean, std, input_size)
    dets, atts = run(images)
    scales = locations[:, 2]
    nys, nxs, nsc, nscore = [], [], [], []
    for a in range(len(init_sizes)):
        for att, r, zoom in zip(atts, att_ratios, att_scales):
            ys, xs = np.where(att[a, 0] > F32(att_thresh))
            sc = att[a, 0, ys, xs]
            ys = ys * r / np.float64(scales[a]) + np.float64(offsets[a, 0])
            xs = xs * r / np.float64(scales[a]) + np.float64(offsets[a, 1])
            keep = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
            ys, xs, sc = ys[keep], xs[keep], sc[keep]
            nxt_scale = zoom * float(scales[a])
            if scales[a] > 2 or nxt_scale > 4:
                continue
            nsc += [nxt_scale] * len(xs)
            nscore += sc.tolist()
            nys += ys.tolist()
            nxs += xs.tolist()
    next_locs = np.stack((np.array(nys), np.array(nxs), np.array(nsc), np.array(nscore)), axis=1)
    dets[..., 0:4:2] /= ratio
    dets[..., 1:4:2] /= ratio
    dets[..., 0:4:2] /= scales.reshape(-1, 1, 1)
    dets[..., 1:4:2] /= scales.reshape(-1, 1, 1)
    dets[..., 0:4:2] += offsets[:, 1][:, None, None]
    dets[..., 1:4:2] += offsets[:, 0][:, None, None]
    dets = dets.reshape(-1, 8)
    dets = dets[dets[:, 4] > F32(0.3)]
    # reference locations
    rd = dets[dets[:, 4] > F32(0.5)]
    rxs, rys = (rd[:, 0] + rd[:, 2]) / F32(2), (rd[:, 1] + rd[:, 3]) / F32(2)
    m = np.maximum(rd[:, 2] - rd[:, 0], rd[:, 3] - rd[:, 1])
    rsc = np.zeros_like(m)
    for k in range(len(m)):
        rsc[k] = F32(192) / m[k] if m[k] > 96 else (F32(64) / m[k] if m[k] > 32 else F32(24) / m[k])
    ref = np.stack((rys, rxs, rsc, np.ones_like(m)), axis=1).astype(np.float32)
    candidates = np.concatenate((next_locs, ref), axis=0)
    next_locs = ref_location_nms(candidates, thresh=16, argsort=argsort)
    all_dets = [dets]
    if next_locs.shape[0]:
        locs = next_locs[:max_crops]
        images, offsets = ref_prepare_images(img, locs, mean, std, input_size)
        d, _ = run(images)
        d[..., 0:4:2] /= ratio
        d[..., 1:4:2] /= ratio
        s = locs[:, 2].reshape(-1, 1, 1)
        d[..., 0:4:2] = (d[..., 0:4:2].astype(np.float64) / s).astype(np.float32)
        d[..., 1:4:2] = (d[..., 1:4:2].astype(np.float64) / s).astype(np.float32)
        d[..., 0:4:2] += offsets[:, 1][:, None, None]
        d[..., 1:4:2] += offsets[:, 0][:, None, None]
        d = d.reshape(-1, 8)
        all_dets.append(d[d[:, 4] > -1])
    detections = np.concatenate(all_dets, axis=0)
    return ref_finish(detections, detections[:, -1], num_classes=num_classes,
                      max_per_image=max_per_image, sigma=0.7, Nt=0.5, keep_stale=False), \
        next_locs, len(candidates)
