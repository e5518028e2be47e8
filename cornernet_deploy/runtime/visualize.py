"""Draw detections on an image (OpenCV only): ``draw_detections``.

Every box is drawn first, then every label, so that no box edge crosses a label. Labels are
placed best score first, each at the first free place among: above the box, inside its top, below
it, inside its bottom (left-aligned, else right-aligned), then slid up or down past the labels in
the way; only when the image has no free place left does a label overlap another. A label is its
text on a filled rectangle of the class colour, the text black or white, whichever contrasts more
with that colour; boxes have a dark outline, so that light and dark backgrounds both show them.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .detections import Detections

__all__ = ["DRAW_SCORE_THRESHOLD", "draw_detections", "label_layout", "text_colour", "LABEL_FONT"]

# What `demo` and `infer --save-vis` draw by default: the official pipeline keeps up to 100
# detections per image down to a score of 0.001, far too many boxes to see anything.
DRAW_SCORE_THRESHOLD = 0.5
LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)

Rect = Tuple[int, int, int, int]            # x, y, width, height


def _colour(class_id: int) -> tuple:
    # well-separated, deterministic colours per class (golden-ratio hue steps)
    hue = int((class_id * 0.618033988749895 % 1.0) * 179)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _luminance(bgr) -> float:
    # WCAG 2 relative luminance of an sRGB colour
    def linear(c):
        c = c / 255.0
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    b, g, r = (linear(float(c)) for c in bgr)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_colour(fill) -> tuple:
    """Black or white, whichever has the higher WCAG contrast ratio with ``fill`` (BGR)."""
    lum = _luminance(fill)
    return _BLACK if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else _WHITE


def label_scale(image_hw) -> float:
    return max(0.35, min(image_hw[0], image_hw[1]) / 600)


def _overlap(a: Rect, b: Rect) -> int:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def _clamp(v: int, low: int, high: int) -> int:
    return max(low, min(v, high))


def _candidates(box, size, image_wh):
    """Places for a label of ``size`` at box ``(x1, y1, x2, y2)``, in order of preference,
    each kept inside the image (as far as it is large enough)."""
    (x1, y1, x2, y2), (lw, lh), (width, height) = box, size, image_wh
    xs = [x1, x2 - lw + 1]                                   # left-aligned, right-aligned
    ys = [y1 - lh, y1, y2 + 1, y2 - lh + 1]                  # above, inside top, below, inside bottom
    seen = []
    for y in ys:
        for x in xs:
            place = (_clamp(x, 0, max(0, width - lw)), _clamp(y, 0, max(0, height - lh)))
            if place not in seen:
                seen.append(place)
    return seen


def label_layout(boxes: Sequence, sizes: Sequence[Tuple[int, int]], image_wh) -> List[Rect]:
    """Rectangles ``(x, y, w, h)`` for labels of ``sizes`` at integer ``boxes`` (x1, y1, x2, y2),
    placed in the given order (best first) so that they overlap neither each other nor the image
    border while there is room (see the module docstring)."""
    width, height = image_wh
    placed: List[Rect] = []
    for box, (lw, lh) in zip(boxes, sizes):
        candidates = _candidates(box, (lw, lh), image_wh)
        best = None
        for x, y in candidates:
            if not any(_overlap((x, y, lw, lh), r) for r in placed):
                best = (x, y)
                break
        if best is None:
            # slide from the preferred place up and down past the labels in the way
            x0, y0 = candidates[0]
            for step in range(1, (height // max(lh, 1)) + 1):
                for y in (y0 - step * lh, y0 + step * lh):
                    if 0 <= y <= height - lh and not any(_overlap((x0, y, lw, lh), r) for r in placed):
                        best = (x0, y)
                        break
                if best is not None:
                    break
        if best is None:                     # no room left: the least covered place
            best = min(candidates, key=lambda p: sum(_overlap((p[0], p[1], lw, lh), r) for r in placed))
        placed.append((best[0], best[1], lw, lh))
    return placed


def draw_detections(image: np.ndarray, detections: Detections,
                    score_threshold: float = DRAW_SCORE_THRESHOLD, thickness: int = 2) -> np.ndarray:
    """A copy of ``image`` (BGR uint8) with labelled boxes for detections scoring at least
    ``score_threshold`` (0 draws them all)."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    scale = label_scale((height, width))
    shown = [k for k in np.argsort(-detections.scores, kind="stable")
             if detections.scores[k] >= score_threshold]
    boxes = [tuple(int(round(float(v))) for v in detections.boxes[k]) for k in shown]
    colours = [_colour(int(detections.class_ids[k])) for k in shown]
    for box, colour in reversed(list(zip(boxes, colours))):     # the best box's edges on top
        cv2.rectangle(canvas, box[:2], box[2:], _BLACK, thickness + 2)
        cv2.rectangle(canvas, box[:2], box[2:], colour, thickness)
    texts = [f"{detections.class_names[k]} {detections.scores[k]:.2f}" for k in shown]
    sizes, baselines = [], []
    for text in texts:
        (tw, th), base = cv2.getTextSize(text, LABEL_FONT, scale, 1)
        sizes.append((tw, th + base))
        baselines.append(base)
    for text, colour, (x, y, w, h), base in zip(texts, colours, label_layout(boxes, sizes, (width, height)),
                                                baselines):
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, -1)
        cv2.putText(canvas, text, (x, y + h - base), LABEL_FONT, scale, text_colour(colour), 1, cv2.LINE_AA)
    return canvas
