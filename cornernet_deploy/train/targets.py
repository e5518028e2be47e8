"""Ground-truth targets of CornerNet, CornerNet-Squeeze and CornerNet-Saccade (numpy in, numpy out).

Reproduces the official samplers (``core/sample/cornernet.py``, ``core/sample/cornernet_saccade.py``
and ``core/sample/utils.py`` of princeton-vl/CornerNet-Lite) for one image; the data pipeline runs
this in loader workers, so nothing here imports torch.

Conventions (as the official code):
- ``boxes`` are ``[x1, y1, x2, y2]`` in *input-image* pixels, after augmentation and clipping,
  float32 (the official detections array is float32); ``labels`` are 0-based class indices
  (heat-map channels).
- A corner at input coordinate ``x`` goes to output coordinate ``fx = x * out_w / in_w``; its cell is
  ``int(fx)`` and its offset target ``fx - int(fx)`` (channel 0 = x, 1 = y).
- The arithmetic is done in float64 from the float32 box values, as numpy 1.x (the official
  environment) promoted ``np.float32 * float``; the box width/height is subtracted in float32 first.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..contract.arch import SACCADE_ATT_LAYOUT

MAX_OBJECTS = 128  # tag slots per image (official ``max_tag_len`` / ``max_objects``)

# Saccade attention maps of the official three-level model (``core/dbs/detection.py``): innermost
# / coarsest first; other depths: ``ArchSpec.attention_ratios()`` / ``attention_ranges()``.
SACCADE_ATT_RATIOS = tuple(ratio for ratio, _, _ in SACCADE_ATT_LAYOUT)   # input pixels per cell
SACCADE_ATT_RANGES = tuple(span for _, span, _ in SACCADE_ATT_LAYOUT)     # longer box side, inclusive
SACCADE_MIN_SCALE = 16                                # smaller objects become ignore regions


def gaussian_radius(det_size: Sequence[float], min_overlap: float) -> float:
    """The official ``gaussian_radius`` (CornerNet-Lite version), quirks included.

    Three quadratics ``a r^2 - b r + c = 0`` (the third with ``b < 0`` and the ``+`` root), each
    root divided by ``2a``; the minimum is returned. ``det_size`` is ``(height, width)`` in
    output cells. The formulas are not the exact IoU-preserving radii (e.g. the first uses
    ``(1 - o) / (1 + o)`` and the second ``b = 2(h + w)``); they are reproduced, not fixed.
    """
    height, width = det_size

    a1 = 1
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - np.sqrt(b1 ** 2 - 4 * a1 * c1)) / (2 * a1)

    a2 = 4
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 - np.sqrt(b2 ** 2 - 4 * a2 * c2)) / (2 * a2)

    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / (2 * a3)
    return float(min(r1, r2, r3))


def corner_radius(width: float, height: float, gaussian_iou: float) -> int:
    """``max(0, int(gaussian_radius((ceil(h), ceil(w)), iou)))`` with w, h in output cells."""
    r = gaussian_radius((math.ceil(height), math.ceil(width)), gaussian_iou)
    return max(0, int(r))


def gaussian_2d(diameter: int, sigma: float) -> np.ndarray:
    """A ``diameter x diameter`` float64 Gaussian, peak exactly 1, values < eps * max set to 0."""
    m = (diameter - 1.0) / 2.0
    y, x = np.ogrid[-m:m + 1, -m:m + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h


def draw_gaussian(heatmap: np.ndarray, center: Sequence[int], radius: int, k: float = 1.0) -> None:
    """Combine (element-wise max) a Gaussian of ``radius`` centred at integer ``(x, y)``, in place.

    Diameter ``2r + 1``, sigma ``diameter / 6``; the part outside the map is cut off.
    """
    diameter = 2 * radius + 1
    gaussian = gaussian_2d(diameter, sigma=diameter / 6)
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if right <= -left or bottom <= -top:  # centre entirely off the map (never after clipping)
        return
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = gaussian[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch * k, out=region)


def _as_boxes(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return boxes


def _corner(x32, ratio: float):
    """(cell, offset) of one coordinate: float64 product of the float32 value, as numpy 1.x."""
    f = float(x32) * ratio
    i = int(f)
    return i, f - i


def _box_geometry(box, width_ratio, height_ratio, gaussian_iou):
    xtl, ytl, xbr, ybr = box[0], box[1], box[2], box[3]
    cxtl, oxtl = _corner(xtl, width_ratio)
    cytl, oytl = _corner(ytl, height_ratio)
    cxbr, oxbr = _corner(xbr, width_ratio)
    cybr, oybr = _corner(ybr, height_ratio)
    w = float(np.float32(xbr) - np.float32(xtl)) * width_ratio
    h = float(np.float32(ybr) - np.float32(ytl)) * height_ratio
    radius = corner_radius(w, h, gaussian_iou)
    return (cxtl, cytl, oxtl, oytl), (cxbr, cybr, oxbr, oybr), radius


def _empty(num_classes, output_size, max_objects):
    oh, ow = int(output_size[0]), int(output_size[1])
    return {
        "tl_heat": np.zeros((num_classes, oh, ow), dtype=np.float32),
        "br_heat": np.zeros((num_classes, oh, ow), dtype=np.float32),
        "tl_off": np.zeros((max_objects, 2), dtype=np.float32),
        "br_off": np.zeros((max_objects, 2), dtype=np.float32),
        "tl_ind": np.zeros((max_objects,), dtype=np.int64),
        "br_ind": np.zeros((max_objects,), dtype=np.int64),
        "mask": np.zeros((max_objects,), dtype=np.uint8),
    }


def _check_labels(labels, n, num_classes):
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{n} boxes but {labels.shape[0]} labels")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    return labels


def _fill_slot(out: dict, n: int, tl, br, ow: int, max_objects: int) -> int:
    """Offsets and flat indices of one object in slot ``n`` (while slots remain); the next slot."""
    if n >= max_objects:
        return n
    out["tl_off"][n] = tl[2:]
    out["br_off"][n] = br[2:]
    out["tl_ind"][n] = tl[1] * ow + tl[0]
    out["br_ind"][n] = br[1] * ow + br[0]
    return n + 1


def cornernet_targets(boxes, labels, num_classes: int, input_size: Sequence[int],
                      output_size: Sequence[int], gaussian_iou: float = 0.3,
                      max_objects: int = MAX_OBJECTS, gaussian_bump: bool = True) -> dict:
    """Targets of one image, as ``core/sample/cornernet.py``.

    Returns a dict of numpy arrays: ``tl_heat``/``br_heat`` [C, oh, ow] float32, ``tl_off``/``br_off``
    [max_objects, 2] float32 (x, y), ``tl_ind``/``br_ind`` [max_objects] int64 (``y * ow + x``),
    ``mask`` [max_objects] uint8 (1 for the first ``min(N, max_objects)`` slots).

    The official sampler fails on more than 128 objects; here every object still gets its heat-map
    bumps, and only the first ``max_objects`` get tag/offset slots.
    """
    boxes = _as_boxes(boxes)
    labels = _check_labels(labels, boxes.shape[0], num_classes)
    out = _empty(num_classes, output_size, max_objects)
    ow = int(output_size[1])
    width_ratio = output_size[1] / input_size[1]
    height_ratio = output_size[0] / input_size[0]
    n = 0
    for box, cls in zip(boxes, labels):
        tl, br, radius = _box_geometry(box, width_ratio, height_ratio, gaussian_iou)
        if gaussian_bump:
            draw_gaussian(out["tl_heat"][cls], tl[:2], radius)
            draw_gaussian(out["br_heat"][cls], br[:2], radius)
        else:
            out["tl_heat"][cls, tl[1], tl[0]] = 1
            out["br_heat"][cls, br[1], br[0]] = 1
        n = _fill_slot(out, n, tl, br, ow, max_objects)
    out["mask"][:n] = 1
    return out


def attention_targets(boxes, input_size: Sequence[int] = (255, 255),
                      ratios: Sequence[int] = SACCADE_ATT_RATIOS,
                      ranges: Sequence[Sequence[float]] = SACCADE_ATT_RANGES) -> list:
    """Saccade attention targets (``create_attention_mask``): a list of [1, h, w] float32 maps.

    Map i has cells of ``ratios[i]`` input pixels; an object whose longer side lies in
    ``ranges[i]`` (inclusive) sets the cell of its box centre to 1.
    """
    boxes = _as_boxes(boxes)
    maps = [np.zeros((1, -(-int(input_size[0]) // r), -(-int(input_size[1]) // r)), np.float32)
            for r in ratios]
    for box in boxes:
        w = box[2] - box[0]
        h = box[3] - box[1]
        longer = max(w, h)
        for att, ratio, (lo, hi) in zip(maps, ratios, ranges):
            if lo <= longer <= hi:
                # float32 sum, then float64 (numpy 1.x promotion of ``f32 / int``)
                x = int(float(np.float32(box[0]) + np.float32(box[2])) / 2 / ratio)
                y = int(float(np.float32(box[1]) + np.float32(box[3])) / 2 / ratio)
                att[0, y, x] = 1
    return maps


def saccade_targets(boxes, labels, positive, num_classes: int, input_size: Sequence[int],
                    output_size: Sequence[int], gaussian_iou: float = 0.5,
                    max_objects: int = MAX_OBJECTS, min_scale: float = SACCADE_MIN_SCALE,
                    att_ratios: Sequence[int] = SACCADE_ATT_RATIOS,
                    att_ranges=SACCADE_ATT_RANGES) -> dict:
    """Targets of one image, as ``core/sample/cornernet_saccade.py``.

    ``positive[i]`` says whether object i kept more than half of its area through the crop (the
    official ``overlap``); an object is a positive only if also its longer side, measured on the
    integer corners ``int(x2) - int(x1)``, is at least ``min_scale``. The others are drawn into
    ``tl_valid``/``br_valid`` instead, which end up 0 under their Gaussians and 1 elsewhere (the
    masked focal loss ignores those pixels). Adds ``tl_valid``, ``br_valid`` [C, oh, ow] float32
    and ``atts`` (list of [1, h, w] maps from every box, see :func:`attention_targets`).
    """
    boxes = _as_boxes(boxes)
    labels = _check_labels(labels, boxes.shape[0], num_classes)
    positive = np.asarray(positive, dtype=bool).reshape(-1)
    if positive.shape[0] != boxes.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {positive.shape[0]} positive flags")
    out = _empty(num_classes, output_size, max_objects)
    invalid_tl = np.zeros_like(out["tl_heat"])
    invalid_br = np.zeros_like(out["br_heat"])
    ow = int(output_size[1])
    width_ratio = output_size[1] / input_size[1]
    height_ratio = output_size[0] / input_size[0]
    n = 0
    for box, cls, pos in zip(boxes, labels, positive):
        det_max = max(int(box[3]) - int(box[1]), int(box[2]) - int(box[0]))
        valid = det_max >= min_scale
        tl, br, radius = _box_geometry(box, width_ratio, height_ratio, gaussian_iou)
        if pos and valid:
            draw_gaussian(out["tl_heat"][cls], tl[:2], radius)
            draw_gaussian(out["br_heat"][cls], br[:2], radius)
            n = _fill_slot(out, n, tl, br, ow, max_objects)
        else:
            draw_gaussian(invalid_tl[cls], tl[:2], radius)
            draw_gaussian(invalid_br[cls], br[:2], radius)
    out["mask"][:n] = 1
    out["tl_valid"] = (invalid_tl == 0).astype(np.float32)
    out["br_valid"] = (invalid_br == 0).astype(np.float32)
    out["atts"] = attention_targets(boxes, input_size, att_ratios, att_ranges)
    return out
