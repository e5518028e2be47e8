"""``cornernet-deploy profile MODEL...``: per-stage latency of one or more models, backends and
precisions, side by side (see ``cornernet_deploy.profiling``)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def add_arguments(parser):
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help=".onnx (ONNX Runtime), .engine (TensorRT), or for the torch backend a "
                             "checkpoint (.pt/.pth/.pkl) or an architecture name (random weights)")
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help="torch, onnxruntime or tensorrt (repeat or comma-separate; default: "
                             "from each MODEL)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="cpu or cuda (default: cuda for TensorRT, cpu otherwise)")
    parser.add_argument("--precision", action="append", metavar="P",
                        help="fp32 or fp16 (repeat or comma-separate: one row each; torch only, "
                             "files carry their own precision)")
    parser.add_argument("--batch", type=int, default=1, help="images per iteration (default 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations (default 20)")
    parser.add_argument("--images", metavar="DIR",
                        help="folder of images (default: generated scenes of the model's input size)")
    parser.add_argument("--num-images", type=int, default=8,
                        help="generated scenes (or the first N images of --images) to cycle through")
    parser.add_argument("--flip", action="store_true",
                        help="add the flipped copy of every image, as the official CornerNet test")
    parser.add_argument("--threads", action="append", metavar="N",
                        help="CPU threads for torch/onnxruntime (repeat or comma-separate: one row "
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
            if item.lower() in ("default", "0"):
                out.append(None)
                continue
            try:
                n = int(item)
            except ValueError:
                raise UserError(f"--threads takes whole numbers (or 'default'), got {item!r}") from None
            if n < 1:
                raise UserError(f"--threads must be >= 1, got {n}")
            out.append(n)
    return out or [None]


def run(args) -> int:
    import sys

    from rich.console import Console

    from ..profiling.profile import (build_report, common_canvas, generated_images, load_images,
                                     profile_runners)
    from ..profiling.report import layer_table, profile_table, write_json, write_plot
    from ..profiling.runners import (BACKENDS, DEVICES, PRECISIONS, infer_backend, open_runner,
                                     parse_list)

    backends = parse_list(args.backend, BACKENDS, "backend")
    precisions = parse_list(args.precision, PRECISIONS, "precision") or [None]
    devices = parse_list([args.device] if args.device else [], DEVICES, "device")
    device = devices[0] if devices else None
    threads = _threads(args.threads)
    if args.num_images < 1:
        raise UserError("--num-images must be >= 1")
    for out in (args.json, args.plot):
        if out and Path(out).is_dir():
            raise UserError(f"{out}: is a directory, give a file name")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise UserError(f"--plot writes a PNG image: give a file name ending in .png, not {args.plot}")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))

    runners = []
    try:
        for model in args.models:
            natural = infer_backend(model)
            for backend in backends or [natural]:
                for precision in precisions:
                    for n in threads:
                        say(f"loading {model} ({backend}"
                            + (f", {precision}" if precision else "") + ")")
                        runners.append(open_runner(model, backend, device, precision, threads=n,
                                                   arch=args.arch))
        if args.layers and not any(r.backend == "tensorrt" for r in runners):
            raise UserError("--layers needs a TensorRT engine (it reads TensorRT's per-layer profiler)")
        canvas = common_canvas(runners)
        for r in runners:
            if r.input_hw and tuple(r.input_hw) != canvas:
                say(f"note: {r.label} takes {r.input_hw[0]}x{r.input_hw[1]} inputs, the first "
                    f"fixed-size model {canvas[0]}x{canvas[1]}: their rows do different work")
        if args.images:
            images = load_images(args.images, limit=args.num_images)
            source = str(args.images)
        else:
            images = generated_images(args.num_images, canvas)
            source = f"generated:{args.num_images}x{canvas[0]}x{canvas[1]}"
        say(f"profiling {len(runners)} configuration(s): {args.warmup} warm-up + {args.iters} timed "
            f"iterations of {args.batch} image(s)")
        rows = profile_runners(runners, images, batch=args.batch, warmup=args.warmup,
                               iters=args.iters, flip=args.flip, layers=args.layers, progress=say)
    finally:
        for r in runners:
            r.close()
    settings = {"batch": args.batch, "warmup": args.warmup, "iters": args.iters, "images": source,
                "num_images": len(images), "flip": bool(args.flip), "device": device,
                "threads": [t for t in threads], "interleaved": True}
    report = build_report(rows, settings)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    console.print(profile_table(report))
    for entry in report["results"]:
        if entry.get("layers"):
            console.print(layer_table(entry))
    if args.json:
        write_json(args.json, report)
        say(f"wrote {args.json}")
    if args.plot:
        write_plot(args.plot, report)
        say(f"wrote {args.plot}")
    return 0
