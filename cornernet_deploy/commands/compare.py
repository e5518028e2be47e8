"""``cornernet-deploy compare MODEL_A MODEL_B``: raw-head differences and detection agreement of
two models (checkpoint or architecture name, ONNX, TensorRT engine) on the same images.

Exit status: 0 within the tolerances, 1 past them (each failed check on one line), 2 for a
usage error. See ``cornernet_deploy.profiling.compare`` for the definitions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError


def add_arguments(parser):
    parser.add_argument("model_a", metavar="MODEL_A",
                        help="reference: checkpoint (.pt/.pth/.pkl) or architecture name (PyTorch), "
                             ".onnx (ONNX Runtime) or .engine (TensorRT)")
    parser.add_argument("model_b", metavar="MODEL_B", help="the model to check against MODEL_A")
    parser.add_argument("--images", metavar="DIR",
                        help="folder of images (default: generated scenes of the model's input size)")
    parser.add_argument("--num-images", type=int, default=4,
                        help="generated scenes (or the first N images of --images); default 4")
    parser.add_argument("--arch", help="architecture of a checkpoint that records none (official .pkl "
                                       "files are recognised from their keys)")
    parser.add_argument("--tolerance-profile", default="auto", metavar="PROFILE",
                        help="fp32, fp16, int8 or auto (default: the lower precision of the two models)")
    parser.add_argument("--min-score", type=float,
                        help="count detections from this score up as missed/extra (default 0.1)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="cpu or cuda for the torch/onnxruntime models (default cpu)")
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON (atomically)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")


def _fmt(x, digits=3):
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3e}"


def print_report(report: dict, console) -> None:
    from rich.table import Table
    from rich.text import Text

    tol = report["tolerance"]
    console.print(Text(f"A (reference): {report['a']['label']}\nB: {report['b']['label']}\n"
                       f"{report['images']} image(s); tolerance profile {tol['name']}"))
    if report["heads"] is not None:
        t = Table(title=f"Raw heads: |b - a| (rel = |b - a| / max(|a|, |b|)); allowance "
                        f"{tol['head_atol']:g} + {tol['head_rtol']:g}*|a|")
        for col in ("head", "shape", "max abs", "mean abs", "max rel", "mean rel", "used", "ok"):
            t.add_column(col, justify="left" if col in ("head", "shape") else "right")
        for name, h in report["heads"].items():
            t.add_row(name, "x".join(str(s) for s in h["shape"] or []), _fmt(h["max_abs"]),
                      _fmt(h["mean_abs"]), _fmt(h["max_rel"]), _fmt(h["mean_rel"]),
                      f"{h['tolerance_used']:.3g}x", "yes" if h["within_tolerance"] else "NO")
        console.print(t)
    if report.get("note"):
        console.print(Text("note: " + report["note"]))
    d = report["detections"]
    t = Table(title=f"Detections (greedy match within class, IoU >= 0.5; counted from score "
                    f"{d['min_score']:g})")
    for col in ("A", "B", "matched", "missed", "extra", "agreement", "max |dscore|",
                "mean |dscore|", "min IoU", "max |dbox| px"):
        t.add_column(col, justify="right")
    t.add_row(str(d["count_a"]), str(d["count_b"]), str(d["matched"]), str(d["missed"]),
              str(d["extra"]), f"{d['agreement']:.3f}", _fmt(d["max_score_delta"]),
              _fmt(d["mean_score_delta"]), _fmt(d["min_iou"], 4), _fmt(d["max_box_delta_px"]))
    console.print(t)


def run(args) -> int:
    from rich.console import Console

    from ..fileio import write_text_atomic
    from ..profiling.compare import choose_tolerance, compare_runners
    from ..profiling.profile import generated_images, load_images
    from ..profiling.runners import DEVICES, open_runner, parse_list

    if args.num_images < 1:
        raise UserError("--num-images must be >= 1")
    devices = parse_list([args.device] if args.device else [], DEVICES, "device")
    device = devices[0] if devices else None
    if args.json and Path(args.json).is_dir():
        raise UserError(f"{args.json}: is a directory, give a file name")
    profile = str(args.tolerance_profile).lower()
    choose_tolerance(profile, [])            # validate the name before loading anything
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))

    runners = []
    try:
        for model in (args.model_a, args.model_b):
            say(f"loading {model}")
            dev = device if device or not str(model).lower().endswith((".engine", ".plan", ".trt")) else None
            runners.append(open_runner(model, device=dev, arch=args.arch))
        a, b = runners
        tolerance = choose_tolerance(profile, [a.precision, b.precision])
        if args.images:
            images = load_images(args.images, limit=args.num_images)
        else:
            hw = tuple(a.input_hw or b.input_hw or a.spec.input_size)
            images = generated_images(args.num_images, hw)
        report = compare_runners(a, b, images, tolerance, min_score=args.min_score, progress=say)
    finally:
        for r in runners:
            r.close()
    console = Console() if sys.stdout.isatty() else Console(width=160)
    print_report(report, console)
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=1) + "\n")
        say(f"wrote {args.json}")
    if report["passed"]:
        print(f"PASS: B agrees with A within the {tolerance.name} tolerances")
        return 0
    for line in report["failures"]:
        print(f"FAIL: {line}", file=sys.stderr)
    return 1
