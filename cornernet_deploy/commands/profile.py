"""``cornernet-deploy profile MODEL...``: per-stage latency of one or more models, backends and
precisions, side by side (see ``cornernet_deploy.profiling``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from .common import nonnegative_int, positive_int


def add_arguments(parser):
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=".onnx (ONNX Runtime), .engine (TensorRT), or for the torch backend a "
                             "checkpoint (.pt/.pth/.pkl) or an architecture name (random weights)")
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="a registered backend: torch, onnxruntime, openvino, tensorrt, ... "
                             "(repeat or comma-separate: one row each; default: from each MODEL; "
                             "openvino also runs .onnx files)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="cpu or cuda, or OpenVINO's gpu, npu, auto (default: cuda for TensorRT, "
                             "cpu otherwise; for an .onnx model cuda means ONNX Runtime's CUDA provider)")
    parser.add_argument("--provider", action="append", metavar="P",
                        help="ONNX Runtime execution providers for .onnx models: cpu, cuda, tensorrt "
                             "(repeat or comma-separate: one row each; default: from --device)")
    parser.add_argument("--precision", action="append", metavar="P",
                        help="fp32, fp16 or bf16 (repeat or comma-separate: one row each; torch, "
                             "OpenVINO, and ONNX Runtime's TensorRT provider (fp16); other files carry "
                             "their own precision)")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=positive_int, default=1, metavar="N",
                        help="images per iteration (default 1)")
    parser.add_argument("--warmup", type=nonnegative_int, default=3, metavar="N",
                        help="untimed iterations first (default 3)")
    parser.add_argument("--iters", type=positive_int, default=20, metavar="N",
                        help="timed iterations (default 20)")
    parser.add_argument("--images", metavar="DIR",
                        help="folder of images (default: generated scenes of the model's input size)")
    parser.add_argument("--num-images", type=positive_int, default=8, metavar="N",
                        help="generated scenes (or the first N images of --images) to cycle through")
    parser.add_argument("--flip", action="store_true",
                        help="add the flipped copy of every image, as the official CornerNet test")
    parser.add_argument("--threads", action="append", metavar="N",
                        help="CPU threads for torch/onnxruntime/openvino (repeat or comma-separate: one row "
                             "each; default: the library's default)")
    parser.add_argument("--arch", help="architecture of a checkpoint that records none")
    parser.add_argument("--layers", action="store_true",
                        help="TensorRT: per-layer times (IProfiler), top layers and the corner-pool "
                             "plugin's share")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON (atomically)")
    parser.add_argument("--plot", metavar="FILE.png", help="write a bar chart of the stage medians")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def _threads(values):
    out = []
    for value in values or ():
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "default":
                out.append(None)
                continue
            try:
                out.append(positive_int(item))
            except argparse.ArgumentTypeError as exc:
                raise UserError(f"--threads takes whole numbers of at least 1 (or 'default'): {exc}") from None
    return out or [None]


def run(args) -> int:
    import sys

    from ..profiling.profile import (build_report, common_canvas, generated_images, load_images,
                                     profile_backends)
    from ..profiling.report import layer_table, profile_table, write_json, write_plot
    from ..runtime.backends import open_backend, registry
    from .common import check_report_outputs, console, model_inputs, option_list

    names = [info.name for info in registry.all_backends()]
    backends = option_list(args.backend, names, "backend", registry.aliases())
    precisions = option_list(args.precision, registry.precisions(), "precision") or [None]
    devices = option_list([args.device] if args.device else [], registry.devices(), "device")
    device = devices[0] if devices else None
    providers = option_list(args.provider, registry.providers(), "provider") or [None]
    threads = _threads(args.threads)
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG image: give a file name ending in .png, not {args.plot}")
    inputs = model_inputs(args.models) + [("--images", args.images)]
    check_report_outputs(args.json, args.plot, inputs)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    # a folder's images are read before the models load, so a wrong --images costs nothing
    images = load_images(args.images, limit=args.num_images, note=say) if args.images else None

    opened = []
    try:
        for model in args.models:
            natural = registry.backend_for(model).name
            for backend in backends or [natural]:
                for provider in providers if registry.get(backend).providers else [None]:
                    for precision in precisions:
                        for n in threads:
                            say(f"loading {model} ({backend}" + (f", {provider}" if provider else "")
                                + (f", {precision}" if precision else "") + ")")
                            opened.append(open_backend(model, backend, device, precision, threads=n,
                                                       provider=provider, arch=args.arch))
        if args.layers and not any(registry.get(b.name).can("layer_profile") for b in opened):
            raise UserError("--layers needs a TensorRT engine (it reads TensorRT's per-layer profiler)")
        canvas = common_canvas(opened)
        for b in opened:
            if b.input_hw and tuple(b.input_hw) != canvas:
                say(f"note: {b.label} takes {b.input_hw[0]}x{b.input_hw[1]} inputs, the first "
                    f"fixed-size model {canvas[0]}x{canvas[1]}: their rows do different work")
        if images is not None:
            source = str(args.images)
        else:
            images = generated_images(args.num_images, canvas)
            source = f"generated:{args.num_images}x{canvas[0]}x{canvas[1]}"
        say(f"profiling {len(opened)} configuration(s): {args.warmup} warm-up + {args.iters} timed "
            f"iterations of {args.batch} image(s)")
        rows = profile_backends(opened, images, batch=args.batch, warmup=args.warmup,
                                iters=args.iters, flip=args.flip, layers=args.layers, progress=say)
    finally:
        for b in opened:
            b.close()
    settings = {"batch": args.batch, "warmup": args.warmup, "iters": args.iters, "images": source,
                "num_images": len(images), "flip": bool(args.flip), "device": device,
                "threads": [t for t in threads], "interleaved": True}
    report = build_report(rows, settings)
    out = console()
    out.print(profile_table(report))
    for entry in report["results"]:
        if entry.get("layers"):
            out.print(layer_table(entry))
    if args.json:
        write_json(args.json, report)
        say(f"wrote {args.json}")
    if args.plot:
        write_plot(args.plot, report)
        say(f"wrote {args.plot}")
    return 0
