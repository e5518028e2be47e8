"""``cornernet-deploy eval MODEL --data COCO.json --images DIR``: COCO mAP with pycocotools."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from ..errors import UserError
from .common import add_device_arguments


def add_arguments(parser):
    parser.add_argument("model", help=".onnx, TensorRT .engine, or a checkpoint (.pt/.pkl, PyTorch)")
    parser.add_argument("--data", required=True, help="COCO JSON with images, annotations, categories")
    parser.add_argument("--images", required=True, help="folder holding the dataset's images")
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.add_argument("--json", help="also write the metrics as JSON here")
    parser.add_argument("--no-progress", action="store_true")
    add_device_arguments(parser)


METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def evaluate(detector, data, images, max_images=None, progress=True) -> dict:
    """COCO bbox metrics of ``detector`` on a COCO-format dataset (category ids matched by name
    when the model's class names are the dataset's, else by the model's category ids)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UserError("eval needs pycocotools: pip install pycocotools") from None
    from tqdm import tqdm

    from ..runtime.preprocess import load_image

    data, images = Path(data), Path(images)
    if not data.is_file():
        raise UserError(f"{data}: no such annotation file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(data))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:  # pycocotools asserts the format
        raise UserError(f"{data}: not a COCO annotation file ({exc})") from None
    by_name = {c["name"]: c["id"] for c in gt.loadCats(gt.getCatIds())}
    names = list(detector.class_names)
    if all(n in by_name for n in names):
        category_ids = [by_name[n] for n in names]
    else:
        category_ids = list(detector.category_ids)
    image_ids = sorted(gt.getImgIds())[:max_images]
    if not image_ids:
        raise UserError(f"{data}: no images")
    results = []
    for image_id in tqdm(image_ids, unit="img", desc="eval", disable=not progress):
        info = gt.loadImgs(image_id)[0]
        dets = detector(load_image(images / info["file_name"]))
        results += dets.to_coco(image_id, category_ids)
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
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}
    metrics.update(images=len(image_ids), detections=len(results), summary=summary.getvalue())
    return metrics


def run(args) -> int:
    from ..fileio import write_text_atomic
    from ..runtime.detector import Detector

    detector = Detector.load(args.model, device=args.device, provider=args.provider)
    metrics = evaluate(detector, args.data, args.images, args.max_images, not args.no_progress)
    print(metrics.pop("summary", ""), end="")
    print(f"mAP@[.5:.95] {metrics['AP']:.4f}  mAP@0.5 {metrics['AP50']:.4f}  "
          f"({metrics['images']} images, {metrics['detections']} detections)")
    if args.json:
        write_text_atomic(args.json, json.dumps(metrics, indent=1))
    return 0
