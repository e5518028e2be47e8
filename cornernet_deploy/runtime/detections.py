"""The runtime's result type: detections of one image in original image pixels."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from cornernet_deploy.contract.arch import COCO_CATEGORY_IDS

__all__ = ["Detections"]


def _rounder(decimals: Optional[int]):
    if decimals is None:
        # the shortest decimal that reads back as the same float32 (0.87654, not 0.8765400052)
        return lambda x: float(str(np.float32(x)))
    # the official COCO export, decimals=2: float("{:.2f}".format(x)) on the float32 value
    return lambda x: float("{:.{}f}".format(float(x), int(decimals)))


@dataclass
class Detections:
    """Detections of one image.

    ``boxes`` ``(n, 4)`` float32 ``x1, y1, x2, y2`` in original image pixels; ``scores`` ``(n,)``
    float32; ``class_ids`` ``(n,)`` int64, 0-based heat-map channel; ``class_names`` the name of
    each detection's class (a list of ``n`` strings, aligned with ``class_ids``). The pipeline
    returns them sorted by score, descending.
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    class_names: List[str] = field(default_factory=list)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        self.class_names = list(self.class_names)
        n = len(self.boxes)
        if not (len(self.scores) == len(self.class_ids) == len(self.class_names) == n):
            raise ValueError("boxes, scores, class_ids and class_names need the same length")

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index) -> "Detections":
        """Subset by a boolean mask, an index array or a slice."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Detections(self.boxes[idx], self.scores[idx], self.class_ids[idx],
                          [self.class_names[i] for i in idx.tolist()])

    def filter(self, score_threshold: float) -> "Detections":
        """Detections with ``score >= score_threshold`` (order kept)."""
        return self[self.scores >= np.float32(score_threshold)]

    def to_coco(self, image_id, category_ids: Optional[Sequence[int]] = None,
                decimals: Optional[int] = 2) -> List[dict]:
        """COCO result dicts as the official ``convert_to_coco``: ``bbox = [x, y, w, h]`` with
        ``w = x2 - x1`` (float32), every number rounded to ``decimals`` (2, official: the score
        too; None: the float32 values exactly); ``category_id = category_ids[class_id]``
        (default: the COCO ids of the 80 classes)."""
        cats = COCO_CATEGORY_IDS if category_ids is None else category_ids
        _round = _rounder(decimals)
        out = []
        for box, score, cls in zip(self.boxes, self.scores, self.class_ids.tolist()):
            w = np.float32(box[2] - box[0])
            h = np.float32(box[3] - box[1])
            out.append({
                "image_id": image_id,
                "category_id": int(cats[cls]),
                "bbox": [_round(box[0]), _round(box[1]), _round(w), _round(h)],
                "score": _round(score),
            })
        return out

    def __repr__(self) -> str:
        head = ", ".join(f"{n} {s:.2f}" for n, s in zip(self.class_names[:3], self.scores[:3]))
        more = ", ..." if len(self) > 3 else ""
        return f"Detections(n={len(self)}{': ' + head + more if len(self) else ''})"
