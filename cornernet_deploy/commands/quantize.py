"""``cornernet-deploy quantize MODEL.onnx --calib IMAGES``: INT8 Q/DQ model (see ``cornernet_deploy.quantize``)."""
from __future__ import annotations

from .common import positive_float, positive_int


def add_arguments(parser):
    from ..quantize import DEFAULT_NUM_IMAGES, DEFAULT_PERCENTILE, METHODS

    parser.add_argument("model", help="FP32 .onnx from `cornernet-deploy export` (any decode, size, batch)")
    parser.add_argument("--calib", nargs="+", required=True, metavar="IMAGES",
                        help="calibration images: folders, files or glob patterns (representative of "
                             "what the model will see; not your evaluation images)")
    parser.add_argument("--num-images", type=positive_int, metavar="N", default=DEFAULT_NUM_IMAGES,
                        help=f"use this many, evenly spaced over the sorted files (default {DEFAULT_NUM_IMAGES})")
    parser.add_argument("--method", choices=list(METHODS), default="minmax",
                        help="activation ranges: minmax (extreme values, default), entropy (KL-optimal "
                             "thresholds) or percentile (see --percentile)")
    parser.add_argument("--percentile", type=positive_float, default=DEFAULT_PERCENTILE,
                        help=f"for --method percentile (default {DEFAULT_PERCENTILE})")
    parser.add_argument("--float-heads", action="store_true",
                        help="keep the last convolution of every head in float")
    parser.add_argument("--output", help="output file (default: MODEL_int8.onnx next to MODEL)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the ONNX Runtime run against the FP32 model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..errors import UserError
    from ..fileio import check_output_file
    from ..quantize import quantize_onnx

    if not args.percentile <= 100:
        raise UserError(f"--percentile lies in (0, 100], got {args.percentile:g}")
    if args.output:
        check_output_file(args.output, "--output")
    result = quantize_onnx(args.model, args.calib, args.output, num_images=args.num_images,
                           method=args.method, percentile=args.percentile, float_heads=args.float_heads,
                           verify=args.verify, show_bar=not args.no_progress)
    return 0 if result.path.exists() else 1
