"""``cornernet-deploy build MODEL.onnx``: a TensorRT engine with the corner-pool plugin.

Every option is checked (argparse types here, paths and shapes in ``build_engine``) before TensorRT
is imported, so a mistake is reported as itself rather than as a missing TensorRT.
"""
from __future__ import annotations

import argparse

from ..contract.precision import ENGINE_PRECISIONS
from .common import positive_int


def _major_of(option: str):
    """argparse type of ``--trtexec``/``--polygraphy``'s optional MAJOR."""
    def parse(text: str) -> str:
        if text in ("auto", "10", "11"):
            return text
        hint = f"; put the ONNX file before {option}" if text.lower().endswith(".onnx") else ""
        raise argparse.ArgumentTypeError(f"{text!r}: give the TensorRT major, 10 or 11, or nothing{hint}")
    return parse


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
    parser.add_argument("--trtexec", nargs="?", const="auto", type=_major_of("--trtexec"), metavar="MAJOR",
                        help="build nothing: write the ONNX for TensorRT (ENGINE.trt.onnx) and print the trtexec "
                             "command that builds the same engine, for TensorRT MAJOR (10 or 11; default: the "
                             "importable TensorRT's, else the plugin library's); needs no TensorRT here")
    parser.add_argument("--polygraphy", nargs="?", const="auto", type=_major_of("--polygraphy"), metavar="MAJOR",
                        help="build nothing: write the ONNX for TensorRT (ENGINE.trt.onnx) and print the two "
                             "polygraphy commands that compare the same engine with ONNX Runtime on the same "
                             "inputs (MAJOR as for --trtexec); the plugin library must register itself on load "
                             "(`plugin build --static-registration`): polygraphy only dlopens it")


def _major(value: str):
    return None if value == "auto" else int(value)


def run(args) -> int:
    from ..presets import apply_preset
    from ..tensorrt.builder import build_engine, plan_build
    apply_preset(args, "engines/profiles.json", args.profile, defaults=dict(workspace=1024))
    settings = dict(precision=args.precision, min_batch=args.min_batch, opt_batch=args.opt_batch,
                    max_batch=args.max_batch, input_size=args.input_size, workspace_mb=args.workspace,
                    timing_cache=args.timing_cache, plugin_library=args.plugin, tf32=not args.no_tf32)
    if args.trtexec or args.polygraphy:
        return _print_commands(args, plan_build(args.onnx, args.output, **settings))
    build_engine(args.onnx, args.output, **settings)
    return 0


def _print_commands(args, plan) -> int:
    """``--trtexec`` / ``--polygraphy``: every command is made (and checked) before the ONNX for
    TensorRT they read is written."""
    import shlex

    from ..tensorrt.builder import (command_target, onnx_for_tensorrt_path, polygraphy_commands,
                                    trtexec_command, write_onnx_for_tensorrt)
    onnx_for_tensorrt = onnx_for_tensorrt_path(plan)
    trtexec = polygraphy = None
    if args.trtexec:
        major, plugin = command_target(plan, _major(args.trtexec), "--trtexec")
        trtexec = trtexec_command(plan, major, plugin, onnx_for_tensorrt)
    if args.polygraphy:
        major, plugin = command_target(plan, _major(args.polygraphy), "--polygraphy")
        polygraphy = polygraphy_commands(plan, major, plugin, onnx_for_tensorrt)
    write_onnx_for_tensorrt(plan)
    print(f"wrote {onnx_for_tensorrt} (the ONNX without its CornerPool function bodies: TensorRT up to "
          "10.6 would inline them instead of using the plugin)")
    if trtexec:
        print(shlex.join(trtexec))
        print(f"trtexec writes no cornernet-deploy manifest beside {plan.output}: the engine is for trtexec "
              "(--loadEngine, with the same plugin option) and C++; `infer`, `profile` and `triton` need "
              "the engine `cornernet-deploy build` makes")
    if polygraphy:
        onnxruntime, tensorrt = polygraphy
        print("ONNX Runtime (CPU) runs the export, with its function bodies, and saves its inputs and outputs:")
        print(shlex.join(onnxruntime))
        print(f"TensorRT builds the same engine from {onnx_for_tensorrt} with the plugin, runs those inputs and "
              f"compares its outputs with ONNX Runtime's (the {plan.precision} tolerance of `compare`'s heads):")
        print(shlex.join(tensorrt))
    return 0
