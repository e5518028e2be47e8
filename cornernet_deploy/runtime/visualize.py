"""Draw detections on an image (OpenCV only)."""
from __future__ import annotations

import cv2
import numpy as np

from .detections import Detections


def _colour(class_id: int) -> tuple:
    # well-separated, deterministic colours per class (golden-ratio hue steps)
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(image: np.ndarray, detections: Detections, score_threshold: float = 0.0,
                    thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with labelled boxes for detections above the threshold."""
    canvas = image.copy()
    scale = max(0.35, min(canvas.shape[:2]) / 600)
    for box, score, cls, name in zip(detections.boxes, detections.scores, detections.class_ids,
                                     detections.class_names):
        if score < score_threshold:
            continue
        colour = _colour(int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f"{name} {score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = max(y1, th + base)
        cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(canvas, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
