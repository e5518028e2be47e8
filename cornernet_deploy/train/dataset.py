"""COCO-format detection datasets for training (numpy + OpenCV, no pycocotools needed).

Boxes follow the official loader (``core/dbs/coco.py``): COCO ``[x, y, w, h]`` becomes
``[x, y, x + w, y + h]`` float32; every annotation is kept (``iscrowd`` ones too, as the official
loader does, unless ``skip_crowd``); images without annotations are kept as negatives. Labels are
0-based heat-map channels: the position of the annotation's ``category_id`` in ``category_ids``
(the JSON's categories sorted by id unless given, e.g. a COCO model's 80 ids).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..contract.metadata import check_class_name
from ..errors import UserError


@dataclass
class ImageRecord:
    image_id: int
    file_name: str
    path: Path
    boxes: np.ndarray    # [N, 4] float32 x1, y1, x2, y2
    labels: np.ndarray   # [N] int64, 0-based
    width: int | None = None
    height: int | None = None


class CocoDataset:
    """Images and boxes of one COCO JSON file.

    ``records`` (one :class:`ImageRecord` per image, JSON order), ``category_ids``,
    ``class_names``; ``load_image(i)`` reads image i as BGR uint8.
    """

    def __init__(self, ann_file, image_dir, category_ids: Sequence[int] | None = None,
                 skip_crowd: bool = False):
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        if not self.ann_file.is_file():
            raise UserError(f"annotation file not found: {self.ann_file}")
        if not self.image_dir.is_dir():
            raise UserError(f"image directory not found: {self.image_dir}")
        try:
            data = json.loads(self.ann_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.ann_file} is not a readable JSON file ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"{self.ann_file} is not a COCO detection file (no 'images' list)")
        annotations = data.get("annotations", [])
        categories = data.get("categories", [])
        if not isinstance(annotations, list) or not isinstance(categories, list):
            raise UserError(f"{self.ann_file}: 'annotations' and 'categories' must be lists")
        try:
            cats = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{self.ann_file}: every category needs an integer 'id'") from None
        if category_ids is None:
            if not cats:
                raise UserError(f"{self.ann_file} lists no categories")
            category_ids = sorted(cats)
        self.category_ids = tuple(int(c) for c in category_ids)
        self.class_names = tuple(cats.get(c, f"class_{i}") for i, c in enumerate(self.category_ids))
        for cat_id, name in cats.items():   # a newline in a name would split a line of labels.txt
            check_class_name(name, f"{self.ann_file}: category {cat_id} name")
        label_of = {c: i for i, c in enumerate(self.category_ids)}
        # official order within an image: categories in file order, annotations in file order
        cat_rank = {c: i for i, c in enumerate(cats)}

        per_image: dict[int, list] = {}
        for k, ann in enumerate(annotations):
            try:
                image_id, cat, bbox = int(ann["image_id"]), int(ann["category_id"]), ann["bbox"]
                x, y, w, h = (float(v) for v in bbox)
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{self.ann_file}: annotation #{k} needs image_id, category_id "
                                "and a 4-number bbox") from None
            if skip_crowd and ann.get("iscrowd", 0):
                continue
            if cat not in label_of:
                raise UserError(f"{self.ann_file}: annotation #{k} has category_id {cat}, which is "
                                f"not among the model's categories {list(self.category_ids)[:10]}")
            per_image.setdefault(image_id, []).append((cat_rank.get(cat, 0), k, x, y, w, h, label_of[cat]))

        self.records: list[ImageRecord] = []
        for k, img in enumerate(data["images"]):
            try:
                image_id, file_name = int(img["id"]), str(img["file_name"])
            except (KeyError, TypeError, ValueError):
                raise UserError(f"{self.ann_file}: image #{k} needs 'id' and 'file_name'") from None
            anns = sorted(per_image.get(image_id, []))
            boxes = np.array([[x, y, x + w, y + h] for _, _, x, y, w, h, _ in anns],
                             dtype=np.float32).reshape(-1, 4)
            labels = np.array([lab for *_, lab in anns], dtype=np.int64)
            self.records.append(ImageRecord(image_id, file_name, self.image_dir / file_name, boxes,
                                            labels, img.get("width"), img.get("height")))
        if not self.records:
            raise UserError(f"{self.ann_file} lists no images")

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> np.ndarray:
        path = self.records[index].path
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"cannot read image {path} (missing or not an image)")
        return image

    def check_images(self) -> None:
        """Raise UserError naming the first few images that do not exist."""
        missing = [str(r.path) for r in self.records if not r.path.is_file()]
        if missing:
            more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            raise UserError(f"{len(missing)} image(s) of {self.ann_file} not found under "
                            f"{self.image_dir}: {', '.join(missing[:3])}{more}")
