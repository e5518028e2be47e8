"""``cornernet-deploy eval MODEL --data COCO.json --images DIR``: COCO mAP with pycocotools
(``cornernet_deploy.evaluation``: class matching, scoring)."""
from __future__ import annotations

import sys

from .common import add_device_arguments, backend_options, model_inputs, plural, positive_int


def add_arguments(parser):
    parser.add_argument("model", help=".onnx, TensorRT .engine, OpenVINO .xml, or a checkpoint "
                                      "(.pt/.pkl, PyTorch)")
    parser.add_argument("--data", required=True, help="COCO JSON with images, annotations, categories")
    parser.add_argument("--images", required=True, help="folder holding the dataset's images")
    parser.add_argument("--num-images", "--max-images", dest="num_images", type=positive_int,
                        metavar="N", help="evaluate the first N images only (by image id)")
    parser.add_argument("--match-classes", choices=("name", "id"), default="name",
                        help="pair the model's classes with the dataset's categories by name "
                             "(default; differing names are refused) or by the model's category ids")
    parser.add_argument("--json", metavar="FILE", help="also write the metrics as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_arguments(parser)


def run(args) -> int:
    from tqdm import tqdm

    from ..fileio import check_not_input, check_output_file, write_json_atomic
    from ..evaluation import evaluate
    from ..runtime.detector import Detector

    if args.json:
        check_output_file(args.json, "--json")
        check_not_input(args.json, model_inputs([args.model]) + [("--data", args.data),
                                                                  ("--images", args.images)], "--json")
    detector = Detector.load(args.model, **backend_options(args))
    metrics = evaluate(detector, args.data, args.images, args.num_images, not args.no_progress,
                       args.match_classes, note=lambda m: tqdm.write(f"note: {m}", file=sys.stderr))
    print(metrics.pop("summary", ""), end="")
    print(f"mAP@[.5:.95] {metrics['AP']:.4f}  mAP@0.5 {metrics['AP50']:.4f}  "
          f"({plural(metrics['images'], 'image')}, {plural(metrics['detections'], 'detection')})")
    if args.json:
        write_json_atomic(args.json, metrics, indent=1)
    return 0
