"""A deterministic synthetic detection dataset: coloured shapes on textured backgrounds.

Each scene has a few filled rectangles, ellipses and triangles (optionally crosses) in random
colours and sizes on a noise, gradient or stripe background. Shapes never overlap (their boxes
may, a little), so every shape is fully visible and its box is exact: it is computed from the
drawn pixel mask, in COCO's continuous convention (a shape covering pixel columns ``c0..c1`` has
``x1 = c0``, ``x2 = c1 + 1``; COCO ``bbox = [x1, y1, x2 - x1, y2 - y1]``).

Everything depends only on the seed (numpy ``Generator``), so a dataset regenerates byte-identical.
Torch-free: the demo and the runtime tests can use it without the training extras.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..fileio import atomic_path, write_text_atomic

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")
ALL_SHAPE_CLASSES = SHAPE_CLASSES + ("cross",)
BACKGROUNDS = ("noise", "gradient", "stripes")


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _colour(rng) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float32)


def _background(rng, h: int, w: int) -> np.ndarray:
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = _colour(rng), _colour(rng)
    if kind == "noise":
        img = c0 + rng.normal(0, rng.uniform(8, 30), (h, w, 3)).astype(np.float32)
        k = int(rng.choice([1, 3, 5]))
        if k > 1:
            img = cv2.GaussianBlur(img, (k, k), 0)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        img = c0 + t[..., None] * (c1 - c0)
    else:  # stripes
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 40)
        t = xx * np.cos(angle) + yy * np.sin(angle)
        on = (np.sin(2 * np.pi * t / period) > 0)[..., None]
        # muted stripes so that shapes stay distinguishable
        c1 = c0 + (c1 - c0) * rng.uniform(0.2, 0.6)
        img = np.where(on, c0, c1)
    return img.astype(np.float32)


def _shape_mask(rng, kind: str, h: int, w: int, x0: int, y0: int, bw: int, bh: int) -> np.ndarray:
    """A filled shape inside the box ``(x0, y0, bw, bh)`` drawn without anti-aliasing."""
    mask = np.zeros((h, w), np.uint8)
    x1, y1 = x0 + bw - 1, y0 + bh - 1
    if kind == "rectangle":
        cv2.rectangle(mask, (x0, y0), (x1, y1), 255, thickness=-1, lineType=cv2.LINE_8)
    elif kind == "ellipse":
        center = (x0 + bw // 2, y0 + bh // 2)
        axes = (max(bw // 2, 2), max(bh // 2, 2))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 255, thickness=-1, lineType=cv2.LINE_8)
    elif kind == "triangle":
        # one vertex on the top edge, two on the bottom edge (or the mirror image): a clear,
        # non-degenerate triangle spanning the whole box
        apex = x0 + int(rng.integers(0, bw))
        pts = [(apex, y0), (x0, y1), (x1, y1)]
        if rng.uniform() < 0.5:
            pts = [(apex, y1), (x0, y0), (x1, y0)]
        cv2.fillPoly(mask, [np.array(pts, np.int32)], 255, lineType=cv2.LINE_8)
    elif kind == "cross":
        tw, th = max(bw // 3, 2), max(bh // 3, 2)
        cx, cy = x0 + bw // 2, y0 + bh // 2
        cv2.rectangle(mask, (x0, cy - th // 2), (x1, cy - th // 2 + th - 1), 255, -1, cv2.LINE_8)
        cv2.rectangle(mask, (cx - tw // 2, y0), (cx - tw // 2 + tw - 1, y1), 255, -1, cv2.LINE_8)
    else:
        raise ValueError(f"unknown shape {kind!r}; choose from {ALL_SHAPE_CLASSES}")
    return mask > 0


def box_iou(a, b) -> float:
    """IoU of two [x1, y1, x2, y2] boxes (continuous coordinates, no +1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _size(image_size, rng) -> tuple:
    """``int`` -> square; ``(h, w)`` -> fixed; ``((lo, hi),)`` style ranges -> drawn per image."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    if len(image_size) == 2 and all(isinstance(s, (int, np.integer)) for s in image_size):
        return int(image_size[0]), int(image_size[1])
    lo, hi = image_size[0]
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def render_scene(seed, image_size=192, num_objects: Sequence[int] = (1, 4),
                 classes: Sequence[str] = SHAPE_CLASSES, min_size: int = 16,
                 max_size: int | None = None, max_box_iou: float = 0.2, gap: int = 2,
                 noise: float = 4.0, return_masks: bool = False):
    """Render one scene in memory: ``(image_bgr uint8 [H, W, 3], boxes float32 [N, 4], labels)``.

    ``seed``: int, sequence of ints or a ``Generator``. ``image_size``: int (square), ``(h, w)``,
    or ``((lo, hi),)`` to draw each side in ``[lo, hi]``. ``num_objects``: inclusive range.
    Boxes are ``[x1, y1, x2, y2]`` (continuous: ``x2`` is one past the last shape column);
    labels index ``classes``. Shapes keep ``gap`` pixels between each other and box IoU below
    ``max_box_iou``; fewer than asked are placed if the image is too crowded.
    ``return_masks=True`` appends the list of boolean shape masks.
    """
    out = _render(seed, image_size, num_objects, classes, min_size, max_size, max_box_iou, gap,
                  noise)
    return out[:3] + (out[4],) if return_masks else out[:3]


def _render(seed, image_size, num_objects, classes, min_size, max_size, max_box_iou, gap, noise):
    """render_scene plus the shapes' pixel areas (COCO ``area``) and masks."""
    rng = _rng(seed)
    h, w = _size(image_size, rng)
    for kind in classes:
        if kind not in ALL_SHAPE_CLASSES:
            raise ValueError(f"unknown shape {kind!r}; choose from {ALL_SHAPE_CLASSES}")
    max_size = int(max_size or max(min_size + 1, int(0.6 * min(h, w))))
    max_size = min(max_size, h, w)
    if min_size > max_size:
        raise ValueError(f"image {h}x{w} too small for shapes of at least {min_size} px")
    image = _background(rng, h, w)
    occupied = np.zeros((h, w), bool)
    kernel = np.ones((2 * gap + 1, 2 * gap + 1), np.uint8)
    n_target = int(rng.integers(num_objects[0], num_objects[1] + 1))
    boxes, labels, areas, masks = [], [], [], []
    for _ in range(n_target):
        for _attempt in range(60):
            label = int(rng.integers(len(classes)))
            bw = int(rng.integers(min_size, max_size + 1))
            bh = int(np.clip(bw * np.exp(rng.uniform(-0.6, 0.6)), min_size, max_size))
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            mask = _shape_mask(rng, classes[label], h, w, x0, y0, bw, bh)
            if not mask.any():
                continue
            ys, xs = np.nonzero(mask)
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
            if (occupied & mask).any() or any(box_iou(box, b) > max_box_iou for b in boxes):
                continue
            # a colour that stands out from the background under the shape
            under = image[mask].mean(axis=0)
            for _c in range(20):
                colour = _colour(rng)
                if np.linalg.norm(colour - under) > 90:
                    break
            image[mask] = colour
            occupied |= cv2.dilate(mask.astype(np.uint8), kernel) > 0
            boxes.append(box)
            labels.append(label)
            areas.append(int(mask.sum()))
            masks.append(mask)
            break
    if noise > 0:
        image = image + rng.normal(0, noise, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return (image, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
            np.array(areas, np.int64), masks)


def scene_to_coco(boxes, labels, image_id: int, first_ann_id: int, areas=None) -> list:
    """COCO annotation dicts (``category_id = label + 1``) for one scene."""
    anns = []
    for k, (b, lab) in enumerate(zip(np.asarray(boxes, np.float64), labels)):
        bw, bh = float(b[2] - b[0]), float(b[3] - b[1])
        anns.append({"id": first_ann_id + k, "image_id": int(image_id), "category_id": int(lab) + 1,
                     "bbox": [float(b[0]), float(b[1]), bw, bh],
                     "area": float(areas[k]) if areas is not None else bw * bh, "iscrowd": 0})
    return anns


def generate_shapes_dataset(out_dir, num_images: int, seed: int = 0, image_size=((128, 256),),
                            classes: Sequence[str] = SHAPE_CLASSES, num_objects=(1, 4),
                            min_size: int = 16, max_size: int | None = None,
                            json_name: str = "annotations.json", image_subdir: str = "images",
                            **scene_kwargs) -> Path:
    """Write ``num_images`` scenes as PNGs under ``out_dir/images`` and a COCO JSON; return its path.

    Image i is ``render_scene((seed, i), ...)``: the same arguments always give the same files,
    and a larger ``num_images`` only appends images. Categories are ``classes`` with ids 1..K.
    """
    out_dir = Path(out_dir)
    image_dir = out_dir / image_subdir
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(int(num_images)):
        kw = dict(max_box_iou=0.2, gap=2, noise=4.0)
        kw.update(scene_kwargs)
        image, boxes, labels, areas, _ = _render((int(seed), i), image_size, num_objects, classes,
                                                 min_size, max_size, **kw)
        file_name = f"{i:06d}.png"
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError(f"PNG encoding failed for {file_name}")
        with atomic_path(image_dir / file_name, suffix=".png") as tmp:
            tmp.write_bytes(buf.tobytes())
        images.append({"id": i + 1, "file_name": file_name, "width": int(image.shape[1]),
                       "height": int(image.shape[0])})
        annotations += scene_to_coco(boxes, labels, i + 1, len(annotations) + 1, areas)
    coco = {
        "info": {"description": "cornernet-deploy synthetic shapes", "seed": int(seed),
                 "version": "1"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"}
                       for k, name in enumerate(classes)],
    }
    json_path = out_dir / json_name
    write_text_atomic(json_path, json.dumps(coco, indent=1))
    return json_path
