"""What the commands share: value types for ``argparse`` and the console.

A value of the wrong kind or out of range is a usage error: argparse prints one line naming the
option and exits with status 2, before any work starts.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


def _number(text: str, kind, name: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, iterations)."""
    value = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (warm-up runs, worker processes, seeds)."""
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: 0 .. 2**64 - 1 (what torch.manual_seed takes)."""
    value = nonnegative_int(text)
    if value >= 2 ** 64:
        raise argparse.ArgumentTypeError(f"seeds lie in 0 .. 2**64 - 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, multipliers)."""
    value = _number(text, float, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value:g}")
    return value


def score(text: str) -> float:
    """A detection score threshold in [0, 1]."""
    value = _number(text, float, "a number")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"scores lie in [0, 1], got {value:g}")
    return value


def console():
    """A rich console; when the output is not a terminal (piped, redirected) lines are not wrapped
    at 80 columns, so paths and table rows stay whole for the next tool."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    width = os.environ.get("COLUMNS", "")
    return Console(width=int(width) if width.isdigit() and int(width) > 0 else 200, soft_wrap=True)


def option_list(values, allowed, what: str, aliases=None) -> list:
    """A repeatable, comma-separated option: ``["a,b", "c"]`` -> ``["a", "b", "c"]`` (order kept,
    duplicates dropped, ``aliases`` mapped), each checked against ``allowed`` with a one-line
    ``UserError``."""
    from ..errors import UserError

    out = []
    for value in values or ():
        for item in str(value).split(","):
            item = item.strip().lower()
            if not item:
                continue
            item = (aliases or {}).get(item, item)
            if item not in allowed:
                raise UserError(f"unknown {what} '{item}' (choose {', '.join(allowed)})")
            if item not in out:
                out.append(item)
    return out


def add_device_arguments(parser) -> None:
    """``--backend``, ``--device``, ``--provider``, ``--precision`` and ``--threads``: how a model
    runs (``runtime.backends.open_backend``); the choices are what the registered backends offer
    (``backend_options(args)`` hands them on)."""
    from ..runtime.backends import registry

    names = [info.name for info in registry.all_backends()]
    parser.add_argument("--backend", metavar="NAME",
                        help=f"run the model with this backend ({', '.join(names)}; default: the one "
                             "its file kind calls for, e.g. onnxruntime for .onnx; openvino also "
                             "runs .onnx files)")
    parser.add_argument("--device", choices=registry.devices(),
                        help="where the model runs (default: its backend's own, e.g. cuda for a "
                             "TensorRT engine, cpu for ONNX Runtime; for an .onnx model, cuda means "
                             "ONNX Runtime's CUDA provider; gpu, npu and auto are OpenVINO's)")
    parser.add_argument("--provider", choices=registry.providers(),
                        help="execution provider of a backend that has several (ONNX Runtime: cpu, "
                             "cuda with onnxruntime-gpu, tensorrt with onnxruntime-gpu + TensorRT and "
                             "our corner-pool plugin, engines cached); default: from --device")
    parser.add_argument("--precision", choices=registry.precisions(),
                        help="arithmetic of a backend that can choose it for a float file (torch: "
                             "bf16 on the CPU, fp16 on cuda; OpenVINO: bf16/fp16 where the device has "
                             "it; ONNX Runtime's TensorRT provider: fp16); other files carry their own")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads of the backend (default: the library's own)")


def backend_options(args) -> dict:
    """The ``open_backend`` keywords of ``add_device_arguments``' options."""
    return {name: getattr(args, name, None)
            for name in ("backend", "device", "provider", "precision", "threads")}


def plural(count: int, noun: str, nouns: str = "") -> str:
    """``1 image``, ``2 images`` (``nouns``: an irregular plural)."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def model_inputs(models) -> list:
    """``(what, path)`` pairs of the files that MODEL arguments read, for
    ``fileio.check_not_input``: each file and the manifest an engine has beside it."""
    from ..contract.manifest import manifest_path

    pairs = []
    for model in models:
        pairs += [("the model", model), ("the model's manifest", manifest_path(model))]
        if str(model).lower().endswith(".xml"):      # an OpenVINO IR's weights are beside it
            pairs.append(("the model's weights", Path(model).with_suffix(".bin")))
    return pairs


def check_report_outputs(json_path, plot_path, inputs) -> None:
    """``--json`` and ``--plot`` of a reporting command (profile, benchmark): each a writable file
    that is none of ``inputs`` (``fileio.check_not_input`` pairs), and not both the same file."""
    from ..errors import UserError
    from ..fileio import check_not_input, check_output_file

    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path:
            check_output_file(path, option)
            check_not_input(path, inputs, option)
    if json_path and plot_path and os.path.realpath(json_path) == os.path.realpath(plot_path):
        raise UserError(f"--json and --plot both name {plot_path}: the plot would replace the report")
