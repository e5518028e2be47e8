"""``cornernet-deploy build MODEL.onnx``: a TensorRT engine with the corner-pool plugin."""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("onnx", help="ONNX file from `cornernet-deploy export` (corner pool 'plugin' or 'onnx')")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                        help="fp16: give an FP16 export (`export --precision fp16`, required on TensorRT 11); "
                             "on TensorRT 10 an FP32 export also builds with the FP16 builder flag; "
                             "int8: give a model from `cornernet-deploy quantize`")
    parser.add_argument("--min-batch", type=int)
    parser.add_argument("--opt-batch", type=int)
    parser.add_argument("--max-batch", type=int)
    parser.add_argument("--input-size", help="HxW for a --dynamic-size export (default: the official size)")
    parser.add_argument("--workspace", type=int, default=None, metavar="MB", help="builder workspace limit (default 1024)")
    parser.add_argument("--profile", help="named build settings from engines/profiles.json (explicit flags win)")
    parser.add_argument("--timing-cache", metavar="FILE", help="read and update this timing cache")
    parser.add_argument("--plugin", metavar="LIB", help="plugin library (default: $CORNERNET_DEPLOY_PLUGIN or the built one)")
    parser.add_argument("--output", help="engine file (default: engines/NAME_PRECISION.engine)")


def run(args) -> int:
    from ..presets import apply_preset
    from ..tensorrt.builder import build_engine
    apply_preset(args, "engines/profiles.json", args.profile, defaults=dict(workspace=1024))
    build_engine(args.onnx, args.output, precision=args.precision, min_batch=args.min_batch,
                 opt_batch=args.opt_batch, max_batch=args.max_batch, input_size=args.input_size,
                 workspace_mb=args.workspace, timing_cache=args.timing_cache, plugin_library=args.plugin)
    return 0
