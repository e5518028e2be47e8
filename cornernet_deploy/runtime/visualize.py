"""Draw detections on an image (OpenCV only)."""
from __future__ import annotations

import cv2
import numpy as np

from .detections import Detections

# What `demo` and `infer --save-vis` draw by default: the official pipeline keeps up to 100
# detections per image down to a score of 0.001, far too many boxes to see anything.
DRAW_SCORE_THRESHOLD = 0.5


def _colour(class_id: int) -> tuple:
    # well-separated, deterministic colours per class (golden-ratio hue steps)
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def label_origin(box_xy: tuple, label_wh: tuple, image_wh: tuple) -> tuple:
    """Top-left corner of a label of ``label_wh`` for a box with top-left ``box_xy``: just above the
    box, inside it when the box touches the top, shifted left (and up) so that the whole label
    stays inside the image (as far as the image is large enough)."""
    (x1, y1), (lw, lh), (width, height) = box_xy, label_wh, image_wh
    x = max(0, min(x1, width - lw))
    y = y1 - lh if y1 - lh >= 0 else y1
    return x, max(0, min(y, height - lh))


def draw_detections(image: np.ndarray, detections: Detections,
                    score_threshold: float = DRAW_SCORE_THRESHOLD, thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with labelled boxes for detections scoring at least
    ``score_threshold`` (0 draws them all)."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    scale = max(0.35, min(height, width) / 600)
    for box, score, cls, name in zip(detections.boxes, detections.scores, detections.class_ids,
                                     detections.class_names):
        if score < score_threshold:
            continue
        colour = _colour(int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        lx, ly = label_origin((x1, y1), (tw, th + base), (width, height))
        cv2.rectangle(canvas, (lx, ly), (lx + tw - 1, ly + th + base - 1), colour, -1)
        cv2.putText(canvas, label, (lx, ly + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
