"""``cornernet-deploy benchmark MODEL --data COCO.json --images DIR``: every format this machine can
run (PyTorch, ONNX Runtime, OpenVINO, TensorRT; FP32, BF16, FP16, INT8), its accuracy on the
dataset and its latency, in one table (see ``cornernet_deploy.profiling.benchmark``)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from .common import nonnegative_int, positive_int


def add_arguments(parser):
    from ..profiling.benchmark import DEFAULT_REFERENCE, FORMAT_NAMES

    parser.add_argument("model", metavar="MODEL",
                        help="a checkpoint (.pt/.pth/.pkl), an architecture name (seeded random "
                             "weights) or an FP32 .onnx export; the other formats are made from it")
    parser.add_argument("--data", required=True, metavar="COCO.json",
                        help="COCO annotations of the evaluation images (classes named as the model's)")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of the dataset's images")
    parser.add_argument("--calib", action="append", metavar="IMAGES",
                        help="calibration images for the INT8 rows (folder, files or glob; repeat); "
                             "without them the INT8 rows are listed as not run")
    parser.add_argument("--calib-images", type=positive_int, default=100, metavar="N",
                        help="use N calibration images, evenly spaced (default 100)")
    parser.add_argument("--formats", action="append", metavar="NAME",
                        help=f"formats to run (repeat or comma-separate; default: all): "
                             f"{', '.join(FORMAT_NAMES)}")
    parser.add_argument("--device", action="append", metavar="DEVICE",
                        help="only the formats on these devices (cpu, cuda, gpu, npu; repeat or "
                             "comma-separate); a device this machine lacks is an error")
    parser.add_argument("--reference", metavar="NAME",
                        help=f"the row deltas and speed-ups are against (default {DEFAULT_REFERENCE}, "
                             "else the first row that runs)")
    parser.add_argument("--artifacts", default="benchmark_artifacts", metavar="DIR",
                        help="where the prepared files are kept and reused while their inputs are "
                             "unchanged (default ./benchmark_artifacts)")
    parser.add_argument("--num-images", type=positive_int, metavar="N",
                        help="evaluate the first N images only (by image id, as eval)")
    parser.add_argument("--timing-images", type=positive_int, default=8, metavar="N",
                        help="time on the first N images of the dataset (default 8)")
    parser.add_argument("--warmup", type=nonnegative_int, default=3, metavar="N",
                        help="untimed iterations first (default 3)")
    parser.add_argument("--iters", type=positive_int, default=20, metavar="N",
                        help="timed iterations per format, interleaved (default 20)")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of every backend (default: each library's own)")
    parser.add_argument("--match-classes", choices=("name", "id"), default="name",
                        help="pair the model's classes with the dataset's categories as eval does")
    parser.add_argument("--arch", help="architecture of a checkpoint that records none")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON (atomically)")
    parser.add_argument("--plot", metavar="FILE.png", help="write AP against latency as a PNG")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def run(args) -> int:
    from ..fileio import check_output_dir
    from ..profiling.benchmark import (FORMAT_NAMES, benchmark_table, run_benchmark, select_formats,
                                       unavailable_table, write_json, write_plot)
    from ..runtime.backends import registry
    from .common import check_report_outputs, console, model_inputs, option_list

    names = option_list(args.formats, FORMAT_NAMES, "format")
    devices = option_list(args.device, registry.devices(), "device")
    for device in devices:
        problem = registry.unusable_device(device)
        if problem:
            raise UserError(f"--device {device}: not on this machine ({problem})")
    formats = select_formats(names, devices)
    if args.reference and args.reference not in FORMAT_NAMES:
        raise UserError(f"unknown format '{args.reference}' for --reference (choose {', '.join(FORMAT_NAMES)})")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG image: give a file name ending in .png, not {args.plot}")
    inputs = (model_inputs([args.model]) + [("--data", args.data), ("--images", args.images)]
              + [("--calib", folder) for folder in args.calib or []])
    check_report_outputs(args.json, args.plot, inputs)
    check_output_dir(args.artifacts, "--artifacts")
    def say(message):
        print(message, file=sys.stderr)

    report = run_benchmark(args.model, args.data, args.images, formats=formats, folder=args.artifacts,
                           calib=args.calib, calib_images=args.calib_images, reference=args.reference,
                           threads=args.threads, max_images=args.num_images,
                           timing_images=args.timing_images, warmup=args.warmup, iters=args.iters,
                           match=args.match_classes, arch=args.arch,
                           progress=None if args.quiet else say, eval_progress=not args.quiet)
    out = console()
    out.print(benchmark_table(report))
    missing = unavailable_table(report)
    if missing is not None:
        out.print(missing)
    machine = report["machine"]
    out.print(f"machine: {machine['cpu']} ({machine['logical_cpus']} logical CPUs; "
              f"{', '.join(machine['cpu_flags']) or 'no AVX2/AVX-512/AMX flags'}); GPUs: "
              f"{', '.join(g.get('name', '?') for g in machine['gpus']) or 'none seen'}")
    for path, write in ((args.json, write_json), (args.plot, write_plot)):
        if path:
            write(path, report)
            if not args.quiet:
                say(f"wrote {path}")
    return 0
