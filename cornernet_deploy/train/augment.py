"""Training-time augmentation of the official CornerNet samplers, seeded by a numpy ``Generator``.

CornerNet / CornerNet-Squeeze (``core/sample/cornernet.py``): random crop of ``input * scale``
around a random centre (zero fill), resize to the input size, clip/drop boxes, horizontal flip,
colour jitter, PCA lighting, normalisation. CornerNet-Saccade (``core/sample/cornernet_saccade.py``):
zoom on a random object, crop around it, flip, colour, lighting, normalisation, and per-object
"kept more than half of its area" flags.

Images are BGR ``uint8`` [H, W, 3] in, float32 normalised [H, W, 3] out; boxes are float32
``[x1, y1, x2, y2]`` (float32 throughout, as the official detections array); labels any integer
array, filtered alongside the boxes. The official code draws from three generators
(``np.random``, ``data_rng`` and Python's ``random``); here one ``Generator`` drives everything,
so the distributions are the official ones but the streams are not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..contract.arch import COCO_MEAN_BGR, COCO_STD_BGR
from ..runtime.preprocess import crop_image  # the official crop_image, shared with test time

# PCA lighting of the official COCO loader (``core/dbs/coco.py``), applied in BGR channel order.
COCO_EIGVAL = np.array([0.2141788, 0.01817699, 0.00341571], dtype=np.float32)
COCO_EIGVEC = np.array([
    [-0.58752847, -0.69563484, 0.41340352],
    [-0.5832747, 0.00994535, -0.81221408],
    [-0.56089297, 0.71832671, 0.41158938],
], dtype=np.float32)

# ``np.arange(min, max, step)`` of the configs: 0.6 .. 1.3 (CornerNet/Squeeze) and 0.5 .. 1.1
# (Saccade: float rounding makes arange(0.5, 1.1, 0.1) end at 1.1, seven values).
CORNERNET_RAND_SCALES = tuple(np.arange(0.6, 1.4, 0.1))
SACCADE_RAND_SCALES = tuple(np.arange(0.5, 1.1, 0.1))


# --------------------------------------------------------------------------------------- geometry
def get_border(border: int, size: int) -> int:
    """Halve ``border`` until the centre range ``[border, size - border)`` is non-empty."""
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


def random_crop(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                scales: Sequence[float], view_size: Sequence[int], border: int = 128):
    """Crop ``int(view * scale)`` pixels around a random centre, zero fill outside the image.

    The centre is drawn in ``[b, size - b)`` with ``b = get_border(border, size)`` per axis; boxes
    are shifted into the crop (not clipped).
    """
    view_h, view_w = int(view_size[0]), int(view_size[1])
    img_h, img_w = image.shape[0:2]
    scale = rng.choice(np.asarray(scales, dtype=np.float64))
    height, width = int(view_h * scale), int(view_w * scale)
    cropped = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)

    w_border = get_border(border, img_w)
    h_border = get_border(border, img_h)
    ctx = int(rng.integers(w_border, img_w - w_border))
    cty = int(rng.integers(h_border, img_h - h_border))

    x0, x1 = max(ctx - width // 2, 0), min(ctx + width // 2, img_w)
    y0, y1 = max(cty - height // 2, 0), min(cty + height // 2, img_h)
    left, right = ctx - x0, x1 - ctx
    top, bottom = cty - y0, y1 - cty
    c_ctx, c_cty = width // 2, height // 2
    cropped[c_cty - top:c_cty + bottom, c_ctx - left:c_ctx + right] = image[y0:y1, x0:x1]

    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    # two float32 steps, as the official code (one combined shift may round differently)
    boxes[:, 0:4:2] -= x0
    boxes[:, 1:4:2] -= y0
    boxes[:, 0:4:2] += c_ctx - left
    boxes[:, 1:4:2] += c_cty - top
    return cropped, boxes


def resize(image: np.ndarray, boxes: np.ndarray, size: Sequence[int]):
    """Resize to ``size`` (H, W) (bilinear, aspect not kept) and scale the boxes alike."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    height, width = image.shape[0:2]
    new_h, new_w = int(size[0]), int(size[1])
    image = cv2.resize(image, (new_w, new_h))
    boxes[:, 0:4:2] *= new_w / width
    boxes[:, 1:4:2] *= new_h / height
    return image, boxes


def clip_boxes(boxes: np.ndarray, image_hw: Sequence[int], *others):
    """Clip to ``[0, W-1] x [0, H-1]``, drop boxes with no width or height; filter ``others`` too."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    height, width = int(image_hw[0]), int(image_hw[1])
    boxes[:, 0:4:2] = np.clip(boxes[:, 0:4:2], 0, width - 1)
    boxes[:, 1:4:2] = np.clip(boxes[:, 1:4:2], 0, height - 1)
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
    return (boxes[keep],) + tuple(np.asarray(o)[keep] for o in others)


def flip_horizontal(image: np.ndarray, boxes: np.ndarray):
    """Mirror the image; ``x1' = W - x2 - 1``, ``x2' = W - x1 - 1`` (official pixel-index rule)."""
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    width = image.shape[1]
    image = np.ascontiguousarray(image[:, ::-1])
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]] - 1
    return image, boxes


# ----------------------------------------------------------------------------------- photometric
def color_jitter_(image: np.ndarray, rng: np.random.Generator, var: float = 0.4) -> None:
    """Brightness, contrast and saturation in random order, each ``alpha = 1 + U(-var, var)``.

    ``image`` float32 BGR in [0, 1], modified in place. The grey image and its mean are taken once,
    from the image before any jitter: contrast blends with the grey mean, saturation with the grey
    image, brightness scales.
    """
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey_mean = grey.mean()
    for which in rng.permutation(3):
        alpha = 1.0 + rng.uniform(-var, var)
        if which == 0:    # brightness
            image *= alpha
        elif which == 1:  # contrast
            image *= alpha
            image += grey_mean * (1 - alpha)
        else:             # saturation
            image *= alpha
            image += grey[:, :, None] * (1 - alpha)


def lighting_(image: np.ndarray, rng: np.random.Generator, alphastd: float = 0.1,
              eigval: np.ndarray = COCO_EIGVAL, eigvec: np.ndarray = COCO_EIGVEC) -> None:
    """AlexNet-style PCA lighting: add ``eigvec @ (eigval * alpha)``, ``alpha ~ N(0, alphastd)``."""
    alpha = rng.normal(scale=alphastd, size=(3,))
    image += np.dot(eigvec, eigval * alpha)


def normalize(image: np.ndarray, mean=COCO_MEAN_BGR, std=COCO_STD_BGR) -> np.ndarray:
    """uint8 or [0, 1] float BGR -> ``(x - mean) / std`` float32 (uint8 is divided by 255 first)."""
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    image = image.astype(np.float32, copy=True)
    image -= np.asarray(mean, dtype=np.float32)
    image /= np.asarray(std, dtype=np.float32)
    return image


# ------------------------------------------------------------------------------------- pipelines
@dataclass
class AugmentConfig:
    """Sampler settings; the defaults are the official CornerNet / Squeeze ones."""

    input_size: tuple = (511, 511)
    rand_crop: bool = True
    rand_scales: tuple = CORNERNET_RAND_SCALES
    border: int = 128
    flip: bool = True
    color: bool = True
    lighting: bool = True
    mean: tuple = COCO_MEAN_BGR
    std: tuple = COCO_STD_BGR
    # Saccade only
    saccade_scales: tuple = field(default=SACCADE_RAND_SCALES)
    rand_center: bool = True


def _photometric(image: np.ndarray, rng, cfg: AugmentConfig, color: bool, lighting: bool):
    image = image.astype(np.float32) / 255.0
    if color:
        color_jitter_(image, rng)
        if lighting:
            lighting_(image, rng)
    return normalize(image, cfg.mean, cfg.std)


def augment_cornernet(image: np.ndarray, boxes, labels, rng: np.random.Generator,
                      cfg: AugmentConfig | None = None, train: bool = True):
    """One training sample of CornerNet / Squeeze: ``(image float32 HWC normalised, boxes, labels)``.

    ``train=False`` only resizes to the input size, clips and normalises (the official debug path,
    plus normalisation). Boxes come out in input-image pixels, clipped, empty ones dropped.
    """
    cfg = cfg or AugmentConfig()
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    if train and cfg.rand_crop:
        image, boxes = random_crop(image, boxes, rng, cfg.rand_scales, cfg.input_size, cfg.border)
    image, boxes = resize(image, boxes, cfg.input_size)
    boxes, labels = clip_boxes(boxes, image.shape[:2], labels)
    if train and cfg.flip and rng.uniform() > 0.5:
        image, boxes = flip_horizontal(image, boxes)
    image = _photometric(image, rng, cfg, color=train and cfg.color, lighting=cfg.lighting)
    return image, boxes, labels


# ------------------------------------------------------------------------------------ Saccade
def _saccade_clip(boxes, border):
    """Clip to ``[x0, x1 - 1] x [y0, y1 - 1]`` with ``border = (y0, y1, x0, x1)``; keep indices."""
    boxes = boxes.copy()
    y0, y1, x0, x1 = border
    boxes[:, 0:4:2] = np.clip(boxes[:, 0:4:2], x0, x1 - 1)
    boxes[:, 1:4:2] = np.clip(boxes[:, 1:4:2], y0, y1 - 1)
    keep = np.where(((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0))[0]
    return boxes[keep], keep


def _ref_scale(boxes, rng, random_crop: bool):
    """Zoom making a random object's longer side U{96..254}, U{32..96} or U{16..32} pixels."""
    if boxes.shape[0] == 0:
        return None, None
    if random_crop and rng.uniform() > 0.7:
        return None, None
    ind = int(rng.integers(boxes.shape[0]))
    box = boxes[ind]
    longer = float(max(box[3] - box[1], box[2] - box[0]))
    if longer > 96:
        return int(rng.integers(96, 255)) / longer, ind
    if longer > 32:
        return int(rng.integers(32, 97)) / longer, ind
    return int(rng.integers(16, 33)) / longer, ind


def _crop_centre(rng, image_side, input_side, lo, hi, has_ref, centered):
    """One axis of ``crop_image_dets``: the crop centre coordinate."""
    if image_side <= input_side:
        return image_side // 2
    if not has_ref or not centered:
        cmin = max(hi - input_side, 0) if has_ref else 0
        cmax = min(image_side - input_side, lo) if has_ref else image_side - input_side
        if int(cmin) > int(cmax):  # object larger than the input (only with inputs < 255)
            cmin = cmax = (cmin + cmax) / 2
        return int(rng.integers(int(cmin), int(cmax) + 1)) + input_side // 2
    mid = (lo + hi) // 2
    cmin = max(mid - int(rng.integers(0, 15)), 0)
    cmax = min(mid + int(rng.integers(0, 15)), image_side - 1)
    return int(rng.integers(int(cmin), int(cmax) + 1))


def augment_saccade(image: np.ndarray, boxes, labels, rng: np.random.Generator,
                    cfg: AugmentConfig | None = None, train: bool = True):
    """One training sample of CornerNet-Saccade.

    Returns ``(image float32 HWC normalised, boxes, labels, kept)`` where ``kept[i]`` says that
    box i still has more than half of its (zoomed, unclipped) area; ``cfg.input_size`` defaults to
    the official 255 x 255 when ``cfg`` is None. With ``train=False`` the whole image is resized
    to the input (no zoom/crop/flip/colour).
    """
    cfg = cfg or AugmentConfig(input_size=(255, 255))
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    in_h, in_w = int(cfg.input_size[0]), int(cfg.input_size[1])
    if not train:
        image, boxes = resize(image, boxes, cfg.input_size)
        boxes, labels = clip_boxes(boxes, image.shape[:2], labels)
        return normalize(image, cfg.mean, cfg.std), boxes, labels, np.ones(len(boxes), bool)

    orig = boxes.copy()
    boxes, keep = _saccade_clip(boxes, (0, image.shape[0], 0, image.shape[1]))
    # The official config leaves rand_crop off for Saccade: always zoom on an object if any.
    scale, ref = _ref_scale(boxes, rng, random_crop=False)
    if scale is None:
        scale = float(rng.choice(np.asarray(cfg.saccade_scales, dtype=np.float64)))
    orig[:, 0:4] *= scale
    h, w = image.shape[0:2]
    image = cv2.resize(image, (int(w * scale), int(h * scale)))
    boxes = _scaled(boxes, scale)

    centered = cfg.rand_center and rng.uniform() > 0.5
    has_ref = ref is not None
    rx0, ry0, rx1, ry1 = (boxes[ref, :4] if has_ref else (None,) * 4)
    xc = _crop_centre(rng, image.shape[1], in_w, rx0, rx1, has_ref, centered)
    yc = _crop_centre(rng, image.shape[0], in_h, ry0, ry1, has_ref, centered)
    image, border, offset = crop_image(image, (yc, xc), (in_h, in_w))
    boxes[:, 0:4:2] -= int(offset[1])
    boxes[:, 1:4:2] -= int(offset[0])
    boxes, keep2 = _saccade_clip(boxes, border)
    keep = keep[keep2]

    if cfg.flip and rng.uniform() > 0.5:
        image, boxes = flip_horizontal(image, boxes)

    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    o = orig[keep]
    orig_area = (o[:, 2] - o[:, 0]) * (o[:, 3] - o[:, 1])
    kept = area / orig_area > 0.5
    image = _photometric(image, rng, cfg, color=cfg.color, lighting=cfg.lighting)
    return image, boxes, labels[keep], kept


def _scaled(boxes, scale):
    boxes = boxes.copy()
    boxes[:, 0:4] *= scale
    return boxes
