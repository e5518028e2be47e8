"""``cornernet-deploy infer MODEL IMAGES...``: detections as COCO-style JSON, optional drawings.

Torch-free. All outputs appear only once every image has been processed: a bad image stops the
run with a one-line error and leaves nothing behind.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from ..errors import UserError
from .common import add_device_arguments
from ..fileio import write_text_atomic


def add_arguments(parser):
    parser.add_argument("model", help=".onnx from `export` or TensorRT .engine from `build`")
    parser.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--output", default="detections", help="output folder (default: ./detections)")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="drop detections below this score (official: none)")
    parser.add_argument("--save-vis", action="store_true", help="also write images with labelled boxes")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="force flip test-time augmentation")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="disable flip test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=1, help="images per backend call")
    parser.add_argument("--no-progress", action="store_true")
    add_device_arguments(parser)


def run(args) -> int:
    import warnings

    import cv2
    from tqdm import tqdm

    from ..runtime.detector import Detector
    from ..runtime.images import collect_images
    from ..runtime.preprocess import ImageConversionWarning, load_image
    from ..runtime.visualize import draw_detections

    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    paths = collect_images(args.images)
    detector = Detector.load(args.model, device=args.device, provider=args.provider)
    out_dir = Path(args.output)
    results, per_image = [], []
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=".infer-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        bar = tqdm(total=len(paths), unit="img", disable=args.no_progress, desc="infer")
        for i in range(0, len(paths), args.batch_size):
            chunk = paths[i:i + args.batch_size]
            images = []
            for p in chunk:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ImageConversionWarning)
                    images.append(load_image(p))
                for w in caught:
                    tqdm.write(f"note: {w.message}")
            for image_id, (p, image, dets) in enumerate(zip(chunk, images, detector.batch(images, flip=args.flip)), i + 1):
                dets = dets.filter(args.score_threshold)
                for entry, name in zip(dets.to_coco(image_id, detector.category_ids), dets.class_names):
                    results.append({**entry, "file_name": str(p), "category_name": name})
                per_image.append({"id": image_id, "file_name": str(p), "width": image.shape[1],
                                  "height": image.shape[0], "detections": len(dets)})
                if args.save_vis:
                    ok, buf = cv2.imencode(".png", draw_detections(image, dets))
                    if not ok:
                        raise UserError(f"could not encode the drawing of {p}")
                    (staging / f"{image_id:06d}_{p.stem}.png").write_bytes(buf.tobytes())
            bar.update(len(chunk))
        bar.close()
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in staging.iterdir():
            f.replace(out_dir / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_text_atomic(out_dir / "images.json", json.dumps(per_image, indent=1))
    write_text_atomic(out_dir / "detections.json", json.dumps(results))
    seconds = time.perf_counter() - start
    print(f"{len(paths)} images, {len(results)} detections in {seconds:.2f} s "
          f"({len(paths) / seconds:.1f} img/s) -> {out_dir / 'detections.json'}")
    return 0
