"""``cornernet-deploy build MODEL.onnx``: a TensorRT engine with the corner-pool plugin.

Every option is checked (argparse types here, paths and shapes in ``build_engine``) before TensorRT
is imported, so a mistake is reported as itself rather than as a missing TensorRT.
"""
from __future__ import annotations

import argparse

from ..contract.precision import ENGINE_PRECISIONS
from .common import positive_int


def _trtexec_major(text: str) -> str:
    if text in ("auto", "10", "11"):
        return text
    hint = "; put the ONNX file before --trtexec" if text.lower().endswith(".onnx") else ""
    raise argparse.ArgumentTypeError(f"{text!r}: give the TensorRT major, 10 or 11, or nothing{hint}")


def add_arguments(parser):
    parser.add_argument("onnx", help="ONNX file from `cornernet-deploy export` (corner pool 'plugin' or 'onnx')")
    parser.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp32",
                        help="fp16: give an FP16 export (`export --precision fp16`, required on TensorRT 11); "
                             "on TensorRT 10 an FP32 export also builds with the FP16 builder flag; "
                             "int8: give a model from `cornernet-deploy quantize`")
    parser.add_argument("--min-batch", type=positive_int, metavar="N",
                        help="smallest batch the engine accepts (dynamic-batch exports; default 1)")
    parser.add_argument("--opt-batch", type=positive_int, metavar="N",
                        help="batch TensorRT tunes its kernels for (default: --max-batch)")
    parser.add_argument("--max-batch", type=positive_int, metavar="N",
                        help="largest batch the engine accepts (default 1)")
    parser.add_argument("--input-size", help="HxW for a --dynamic-size export (default: the official size)")
    parser.add_argument("--workspace", type=positive_int, default=None, metavar="MB",
                        help="builder workspace limit (default 1024)")
    parser.add_argument("--profile", help="named build settings from engines/profiles.json (explicit flags win)")
    parser.add_argument("--timing-cache", metavar="FILE", help="read and update this timing cache")
    parser.add_argument("--plugin", metavar="LIB",
                        help="plugin library (default: $CORNERNET_DEPLOY_PLUGIN or the one `plugin build` made "
                             "for the running TensorRT major)")
    parser.add_argument("--no-tf32", action="store_true",
                        help="keep FP32 layers in full FP32 (TensorRT otherwise may use TF32 on Ampere and newer)")
    parser.add_argument("--output", help="engine file (default: engines/NAME_PRECISION.engine)")
    parser.add_argument("--trtexec", nargs="?", const="auto", type=_trtexec_major, metavar="MAJOR",
                        help="build nothing: write the ONNX for TensorRT (ENGINE.trt.onnx) and print the trtexec "
                             "command that builds the same engine, for TensorRT MAJOR (10 or 11; default: the "
                             "importable TensorRT's, else the plugin library's); needs no TensorRT here")


def run(args) -> int:
    from ..presets import apply_preset
    from ..tensorrt.builder import build_engine, plan_build, prepare_trtexec
    apply_preset(args, "engines/profiles.json", args.profile, defaults=dict(workspace=1024))
    settings = dict(precision=args.precision, min_batch=args.min_batch, opt_batch=args.opt_batch,
                    max_batch=args.max_batch, input_size=args.input_size, workspace_mb=args.workspace,
                    timing_cache=args.timing_cache, plugin_library=args.plugin, tf32=not args.no_tf32)
    if args.trtexec:
        import shlex
        plan = plan_build(args.onnx, args.output, **settings)
        command, onnx_for_tensorrt = prepare_trtexec(plan, None if args.trtexec == "auto" else int(args.trtexec))
        print(f"wrote {onnx_for_tensorrt} (the ONNX without its CornerPool function bodies: TensorRT up to "
              "10.6 would inline them instead of using the plugin)")
        print(shlex.join(command))
        print(f"trtexec writes no cornernet-deploy manifest beside {plan.output}: the engine is for trtexec "
              "(--loadEngine, with the same --dynamicPlugins) and C++; `infer`, `profile` and `triton` need "
              "the engine `cornernet-deploy build` makes")
        return 0
    build_engine(args.onnx, args.output, **settings)
    return 0
