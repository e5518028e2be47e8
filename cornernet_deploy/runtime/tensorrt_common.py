"""What the TensorRT runtime backend and the engine builder share: importing TensorRT, its logger,
and checks that a TensorRT object really came up.

Light on purpose: it imports neither onnx nor torch (the runtime backend on a Jetson has numpy,
OpenCV and TensorRT only), and TensorRT only inside functions.
"""
from __future__ import annotations

import sys

from ..errors import UserError

#: Logger severities that mean the object just created is not usable.
ERROR_PREFIXES = ("[ERROR]", "[INTERNAL_ERROR]")
# TensorRT objects whose creation failed, with their loggers. Destroying a Runtime whose CUDA
# initialisation failed crashes the process (seen with the 10.16 and 11.4 lean runtimes), so they
# are kept for the life of the process instead: a few bytes, and a UserError instead of a SIGSEGV.
_UNUSABLE: list = []


def import_tensorrt(need: str = "Builder"):
    """The ``tensorrt`` module, or UserError saying what is missing. ``need``: the class the caller
    uses (``Builder`` to build engines, ``Runtime`` to run them; lean/dispatch packages have only
    the runtime)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT is not installed: on a machine with an NVIDIA GPU, pip install tensorrt-cu12 "
                        "(CUDA 12 driver) or tensorrt-cu13, or the extras 'cornernet-deploy[gpu-cu12]' / "
                        "'[gpu-cu13]'; Jetson: apt install python3-libnvinfer (docs/jetson.md)") from None
    except OSError as exc:  # the bindings import but their shared libraries do not load
        raise UserError(f"TensorRT is installed but does not load: {exc}") from None
    if not hasattr(trt, need):
        raise UserError(f"the installed 'tensorrt' package has no {need} (a lean/dispatch runtime or a stub)")
    return trt


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def make_logger(trt, lines: list, echo_level=None):
    """A TensorRT logger that keeps every message in ``lines`` (for the build log and for
    :func:`check_created`) and echoes warnings and errors."""
    echo_level = trt.Logger.WARNING if echo_level is None else echo_level

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            name = str(severity).split(".")[-1]
            lines.append(f"[{name}] {msg}")
            if int(severity) <= int(echo_level):
                print(f"TensorRT {name.lower()}: {msg}", file=sys.stderr)

    return CollectingLogger()


def logged_errors(lines, since: int = 0) -> list:
    return [line for line in lines[since:] if line.startswith(ERROR_PREFIXES)]


def check_created(obj, lines: list, since: int, what: str, logger=None):
    """TensorRT returns a Runtime/Builder object even when CUDA failed to initialise (and using or
    even destroying it then crashes): the failure only shows in the log. Raise UserError when ``obj``
    is None or errors were logged since position ``since`` of ``lines``; else return ``obj``."""
    errors = logged_errors(lines, since)
    if obj is None or errors:
        if obj is not None:
            _UNUSABLE.append((obj, logger))
        detail = "; ".join(e.split("] ", 1)[-1] for e in errors)[:600] or "no reason given"
        hint = " (no usable GPU or driver?)" if "CUDA" in detail or "cuda" in detail else ""
        raise UserError(f"TensorRT could not create its {what}{hint}: {detail}")
    return obj


def create_runtime(trt, logger, lines: list):
    """``trt.Runtime(logger)``, checked (see :func:`check_created`). The caller must keep ``logger``
    alive as long as the runtime (TensorRT holds it without a reference)."""
    since = len(lines)
    try:
        runtime = trt.Runtime(logger)
    except (TypeError, RuntimeError) as exc:  # some versions raise instead of returning a dead object
        lines.append(f"[ERROR] {exc}")
        runtime = None
    return check_created(runtime, lines, since, "runtime", logger)


def create_builder(trt, logger, lines: list):
    """``trt.Builder(logger)``, checked (see :func:`check_created`)."""
    since = len(lines)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:
        lines.append(f"[ERROR] {exc}")
        builder = None
    return check_created(builder, lines, since, "builder", logger)
