"""COCO bbox evaluation of a detector (pycocotools), as a library: ``eval`` and the benchmark call it.

Every file pycocotools loads is scored or refused in one line (``check_dataset``): image ids may
be numbers or text, as pycocotools allows; an annotation without ``area`` gets its box's area (a
note says how many); a missing or malformed ``bbox`` names the annotation; duplicate image ids,
an annotation of a category the file does not list (``train`` refuses the same file) and a
dataset with nothing to score (no annotations, or only crowd ones: pycocotools would print
mAP -1) are refused. A metric pycocotools reports as -1 (no ground truth in that size range) is
None in the returned metrics.

The model's classes are matched to the dataset's categories by name; a dataset whose names are
not the model's is refused (matching by id instead would score, say, every "ellipse" detection
as a "rectangle" and report a plausible but wrong mAP), unless ``match="id"`` asks for the
model's category ids explicitly. Results are rounded to 2 decimals before scoring, as the
official evaluation does. Torch-free; pycocotools is imported when an evaluation starts.
"""
from __future__ import annotations

import contextlib
import io
import math
from collections import Counter
from pathlib import Path

from .errors import UserError

__all__ = ["METRIC_NAMES", "match_categories", "check_dataset", "evaluate"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _names(items, limit: int = 6) -> str:
    items = list(items)
    return ", ".join(map(repr, items[:limit])) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def match_categories(detector, gt, data, match: str = "name", note=None) -> list:
    """The dataset category id for each model class (None: the dataset has no such category, its
    detections are not scored). UserError when the two cannot be paired as ``match`` says."""
    note = note or (lambda message: None)
    model_names = list(detector.class_names)
    model_ids = [int(i) for i in detector.category_ids]
    cats = gt.dataset.get("categories") or []
    annotated = {int(a["category_id"]) for a in gt.dataset.get("annotations", [])}
    if not cats:
        if match == "name":
            raise UserError(f"{data}: lists no 'categories', so the model's classes "
                            f"({_names(model_names)}) cannot be matched by name; add the categories "
                            f"(id and name each), or pass --match-classes id to score the model's "
                            f"category ids {model_ids} as the annotations' category_id")
        # the annotations' ids are all there is: make them the categories pycocotools scores
        gt.dataset["categories"] = [{"id": c, "name": str(c)} for c in sorted(annotated)]
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        cats = gt.dataset["categories"]
    data_names = [str(c.get("name", c["id"])) for c in cats]
    data_ids = [int(c["id"]) for c in cats]
    if match == "id":
        known = set(data_ids)
        if not known & set(model_ids):
            raise UserError(f"{data}: none of the model's category ids {model_ids} is a category "
                            f"of the dataset ({data_ids[:10]})")
        name_of = dict(zip(data_ids, data_names))
        pairs = [f"{m!r} -> {name_of[i]!r}" for m, i in zip(model_names, model_ids) if i in known and m != name_of[i]]
        if pairs:
            note(f"matching by id: model class -> dataset category: {', '.join(pairs[:6])}"
                 + (" ..." if len(pairs) > 6 else ""))
        unmatched = [data_names[k] for k, i in enumerate(data_ids) if i not in model_ids and i in annotated]
        if unmatched:
            note(f"the model has no class for the dataset's {_names(unmatched)}: they score AP 0")
        return [i if i in known else None for i in model_ids]
    repeated = sorted({n for n in data_names if data_names.count(n) > 1})
    if repeated:
        raise UserError(f"{data}: category names {_names(repeated)} appear more than once; pass "
                        f"--match-classes id to match by id")
    by_name = dict(zip(data_names, data_ids))
    only_model = [n for n in model_names if n not in by_name]
    only_data = [n for n, i in by_name.items() if n not in model_names]
    if len(only_model) == len(model_names) or (only_model and only_data):
        raise UserError(f"class names differ: the model's {_names(only_model)} are not in {data}, "
                        f"whose {_names(only_data)} the model does not know; rename the dataset's "
                        f"categories, or pass --match-classes id to pair the model's category ids "
                        f"{model_ids[:10]} with the dataset's")
    if only_model:
        note(f"the dataset has no category for the model's {_names(only_model)}: "
             f"their detections are not scored")
    unmatched = [n for n in only_data if by_name[n] in annotated]
    if unmatched:
        note(f"the model has no class for the dataset's {_names(unmatched)}: they score AP 0")
    return [by_name.get(n) for n in model_names]


def _id_order(image_id):
    """Sort key of image ids that may be numbers or text (pycocotools takes either)."""
    return (1, str(image_id)) if isinstance(image_id, str) else (0, image_id)


def _annotation(k: int, ann) -> str:
    return f"annotation #{k}" + (f" (id {ann['id']!r})" if isinstance(ann, dict) and "id" in ann else "")


def check_dataset(gt, data, image_ids, note=None) -> None:
    """Refuse (one-line UserError) what would be scored wrongly, fill what can be: see the module
    doc. ``image_ids``: the images to be scored."""
    note = note or (lambda message: None)
    counts = Counter(img["id"] for img in gt.dataset.get("images", []))
    repeated = [i for i, n in counts.items() if n > 1]
    if repeated:
        raise UserError(f"{data}: image id {repeated[0]!r} appears {counts[repeated[0]]} times"
                        + (f" ({len(repeated)} ids repeat)" if len(repeated) > 1 else "")
                        + "; every image needs its own id (pycocotools keeps only the last)")
    categories = {c["id"] for c in gt.dataset.get("categories", [])}
    filled = 0
    for k, ann in enumerate(gt.dataset.get("annotations", [])):
        box = ann.get("bbox")
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
                or box[2] < 0 or box[3] < 0):
            raise UserError(f"{data}: {_annotation(k, ann)} has bbox {box!r}; expected [x, y, width, "
                            "height]: 4 finite numbers, width and height >= 0")
        if ann.get("category_id") not in categories:
            raise UserError(f"{data}: {_annotation(k, ann)} has category_id {ann.get('category_id')!r}, "
                            f"which is not among the file's categories {sorted(categories)[:10]}")
        if "area" not in ann:
            ann["area"] = float(box[2]) * float(box[3])
            filled += 1
    if filled:
        note(f"{data}: {filled} annotation(s) without 'area' are scored with their box's area "
             "(width x height) for the small/medium/large split")
    wanted = set(image_ids)
    scored = [a for a in gt.dataset.get("annotations", []) if a.get("image_id") in wanted and not a.get("iscrowd")]
    if not scored:
        crowd = sum(1 for a in gt.dataset.get("annotations", []) if a.get("image_id") in wanted)
        raise UserError(f"{data}: nothing to score: the {len(image_ids)} image(s) evaluated have "
                        + (f"only crowd annotations ({crowd})" if crowd else "no annotations")
                        + ", so mAP is undefined (pycocotools would print -1)")


def evaluate(detector, data, images, max_images=None, progress=True, match="name", note=None) -> dict:
    """COCO bbox metrics of ``detector`` on a COCO-format dataset; the model's classes are paired
    with the dataset's categories as ``match_categories`` says."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UserError("eval needs pycocotools: pip install pycocotools") from None
    from tqdm import tqdm

    from .runtime.images import read_image

    data, images = Path(data), Path(images)
    if not data.is_file():
        raise UserError(f"{data}: no such annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(data))
        category_ids = match_categories(detector, gt, data, match, note)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:  # pycocotools asserts the format
        raise UserError(f"{data}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    image_ids = sorted(gt.getImgIds(), key=_id_order)[:max_images]
    if not image_ids:
        raise UserError(f"{data}: no images")
    check_dataset(gt, data, image_ids, note)
    scored = [c is not None for c in category_ids]
    coco_ids = [-1 if c is None else c for c in category_ids]
    results = []
    for image_id in tqdm(image_ids, unit="img", desc="eval", disable=not progress):
        info = gt.loadImgs([image_id])[0]     # a list: pycocotools would iterate a text id
        path = images / info["file_name"]
        image = read_image(path, note)
        try:
            dets = detector(image)
        except UserError as exc:      # e.g. NaN outputs: the run stops, naming the image
            raise UserError(f"{path}: {exc}") from None
        dets = dets[[scored[c] for c in dets.class_ids.tolist()]]
        results += dets.to_coco(image_id, coco_ids)
    if not results:
        return {name: 0.0 for name in METRIC_NAMES} | {"images": len(image_ids), "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    # pycocotools' -1: no ground truth of that size range; None (JSON null), not a score
    metrics = {name: float(v) if v >= 0 else None for name, v in zip(METRIC_NAMES, ev.stats)}
    metrics.update(images=len(image_ids), detections=len(results), summary=summary.getvalue())
    return metrics
