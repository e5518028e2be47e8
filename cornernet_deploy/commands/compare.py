"""``cornernet-deploy compare MODEL_A MODEL_B``: raw-head differences and detection agreement of
two models (checkpoint or architecture name, ONNX, TensorRT engine) on the same images.

Exit status: 0 within the tolerances, 1 past them (each failed check on one line), 2 for a
usage error. See ``cornernet_deploy.profiling.compare`` for the definitions."""
from __future__ import annotations

import sys

from ..errors import UserError
from .common import score


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
                        help="fp32, fp16, bf16, int8 or auto (default: the lower precision of the two models)")
    parser.add_argument("--score-threshold", "--min-score", dest="min_score", type=score, metavar="SCORE",
                        help="count detections from this score (in [0, 1]) up as missed/extra "
                             "(default 0.1)")
    parser.add_argument("--backend", metavar="B[,B]",
                        help="backend other than the one a file kind calls for, e.g. openvino for an "
                             ".onnx model; one value: every model it runs; two: one per model "
                             "(e.g. onnxruntime,openvino to check OpenVINO against ONNX Runtime on one file)")
    parser.add_argument("--precision", metavar="P[,P]",
                        help="arithmetic of a backend that can choose it (torch, openvino: fp32, bf16, "
                             "fp16); one value: both models; two: one per model (e.g. fp32,bf16)")
    parser.add_argument("--device", metavar="DEVICE",
                        help="where the models run: cpu (default), cuda, or OpenVINO's gpu, npu, auto")
    parser.add_argument("--provider", metavar="P[,P]",
                        help="ONNX Runtime execution provider (cpu, cuda, tensorrt) of the .onnx "
                             "models; two values: one per model (e.g. cpu,tensorrt to check "
                             "ONNX Runtime's TensorRT provider against its CPU)")
    parser.add_argument("--native-preprocess", action="store_true",
                        help="give each model its own pre-processing (a fixed-size export resizes "
                             "into its canvas, a dynamic-size model or checkpoint pads at scale 1, "
                             "as the official test) instead of one shared input: shows what a "
                             "fixed export size costs")
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
                       f"{report['images']} image(s), {report['preprocess']} pre-processing; "
                       f"tolerance profile {tol['name']}"))
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
    if d["swaps"] or d["tie_flips"]:
        console.print(Text(f"near-ties: {d['swaps']} swap(s) of equal-scored detections; "
                           f"{d['tie_flips']} tie flip(s) on {d['tie_flip_images']} image(s) whose raw "
                           "heads agree within the fp32 allowance (not judged)"))


def _providers(text, models):
    """--provider P (every .onnx model) or PA,PB (one per model) -> [provider or None per model]."""
    from ..runtime.backends import registry
    from .common import option_list

    if not text:
        return [None, None]
    items = [t.strip().lower() for t in str(text).split(",")]
    option_list(items, registry.providers(), "provider")
    onnx = [bool(registry.backend_for(m).providers) for m in models]
    if len(items) == 1:
        if not any(onnx):
            raise UserError("--provider applies to .onnx models, and neither model is one")
        return [items[0] if o else None for o in onnx]
    if len(items) != 2:
        raise UserError(f"--provider takes one value, or two (one per model); got {text!r}")
    for name, o in zip(("MODEL_A", "MODEL_B"), onnx):
        if not o:
            raise UserError(f"--provider {text} gives one provider per model, but {name} is not an "
                            ".onnx file: give one value")
    return items


def _pair(text, option: str, allowed, what: str, aliases=None) -> list:
    """``OPTION V`` (both models) or ``VA,VB`` (one per model) -> [VA, VB], each checked."""
    from .common import option_list

    if not text:
        return [None, None]
    items = [t.strip().lower() for t in str(text).split(",")]
    if len(items) not in (1, 2) or not all(items):
        raise UserError(f"{option} takes one value, or two (one per model); got {text!r}")
    items = [option_list([item], allowed, what, aliases)[0] for item in items]
    return items * 2 if len(items) == 1 else items


def _backends(text, models) -> list:
    """--backend B (every model B runs) or BA,BB (one per model) -> [backend or None per model]."""
    from ..runtime.backends import registry

    names = [info.name for info in registry.all_backends()]
    pair = _pair(text, "--backend", names, "backend", registry.aliases())
    if not text or "," in str(text):
        return pair
    info = registry.get(pair[0])
    chosen = [pair[0] if info.opens(m) else None for m in models]
    if not any(chosen):
        raise UserError(f"--backend {text}: the {info.name} backend runs {info.runs}, and neither "
                        "model is one")
    return chosen


def run(args) -> int:
    from ..fileio import check_not_input, check_output_file, write_json_atomic
    from ..profiling.compare import choose_tolerance, compare_backends
    from ..profiling.profile import generated_images, load_images
    from ..runtime.backends import open_backend, registry
    from .common import console, model_inputs, option_list

    if args.num_images < 1:
        raise UserError("--num-images must be >= 1")
    devices = option_list([args.device] if args.device else [], registry.devices(), "device")
    device = devices[0] if devices else None
    if args.json:
        check_output_file(args.json, "--json")
        check_not_input(args.json, model_inputs([args.model_a, args.model_b]) + [("--images", args.images)],
                        "--json")
    profile = str(args.tolerance_profile).lower()
    choose_tolerance(profile, [])            # validate the name before loading anything
    models = (args.model_a, args.model_b)
    providers = _providers(args.provider, models)
    backends = _backends(args.backend, models)
    precisions = _pair(args.precision, "--precision", registry.precisions(), "precision")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    # a folder's images are read before the models load, so a wrong --images costs nothing
    images = load_images(args.images, limit=args.num_images, note=say) if args.images else None

    opened = []
    try:
        for model, backend, provider, precision in zip(models, backends, providers, precisions):
            chosen = ", ".join(v for v in (backend, provider, precision) if v)
            say(f"loading {model}" + (f" ({chosen})" if chosen else ""))
            opened.append(open_backend(model, backend, device=device, precision=precision,
                                       provider=provider, arch=args.arch))
        a, b = opened
        tolerance = choose_tolerance(profile, [a.precision, b.precision])
        if images is None:
            hw = tuple(a.input_hw or b.input_hw or a.spec.input_size)
            images = generated_images(args.num_images, hw)
        report = compare_backends(a, b, images, tolerance, min_score=args.min_score,
                                  native=args.native_preprocess, progress=say)
    finally:
        for backend in opened:
            backend.close()
    print_report(report, console())
    if args.json:
        write_json_atomic(args.json, report, indent=1)
        say(f"wrote {args.json}")
    if report["passed"]:
        print(f"PASS: B agrees with A within the {tolerance.name} tolerances")
        return 0
    for line in report["failures"]:
        print(f"FAIL: {line}", file=sys.stderr)
    return 1
