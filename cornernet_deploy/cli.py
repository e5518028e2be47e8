"""``cornernet-deploy`` command line: one module per subcommand in ``cornernet_deploy.commands``.

``COMMANDS`` below names every command and holds its help text; each command module defines
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen command's module is imported,
so that ``infer`` never pays for (or needs) torch. Adding a verb: docs/EXTENDING.md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from . import __version__
from .errors import UserError

# name -> module under cornernet_deploy.commands, in the order --help lists them
COMMANDS = {
    "info": "Architectures, parameter counts, input and output sizes",
    "export": "Export a checkpoint to ONNX (corner pooling as a custom op or standard ops)",
    "quantize": "Calibrate an FP32 ONNX export into an INT8 (Q/DQ) model for TensorRT and ONNX Runtime",
    "infer": "Run a model (.onnx, TensorRT .engine or checkpoint) on images and write detections",
    "stream": "Run a model on videos, cameras and RTSP/HTTP streams: annotated videos, JSON Lines",
    "plugin": "Build the TensorRT corner-pool plugin library",
    "build": "Build a TensorRT engine from an exported ONNX model",
    "profile": "Measure per-stage latency across backends and precisions",
    "compare": "Compare raw heads and detections of two models",
    "benchmark": "Accuracy and latency of every format this machine can run (backend x precision), in one table",
    "triton": "Write a Triton Inference Server model repository (detections over HTTP/gRPC)",
    "train": "Fine-tune a model on a COCO-format dataset",
    "eval": "COCO mAP of a model on a COCO-format dataset",
    "demo": "Export the bundled tiny model, detect objects in a generated scene, draw them",
}


DESCRIPTION = ("Deploy CornerNet-family detectors (CornerNet, CornerNet-Squeeze, CornerNet-Saccade): "
               "export checkpoints to ONNX, build TensorRT engines, run, evaluate, profile and compare "
               "them, and train. `cornernet-deploy demo` shows the whole path on the CPU.")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that every half-written artifact is removed on
    the way out exactly as for Ctrl-C (``fileio.atomic_path``)."""


def _terminate(signum, frame):
    raise Terminated()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _load(name: str):
    return importlib.import_module(f"cornernet_deploy.commands.{name}")


def main(argv=None) -> int:
    try:
        try:
            return _main(argv)
        finally:                          # inside the try: --help's output too
            sys.stdout.flush()
    except BrokenPipeError:               # the reader of our output went away (`| head`)
        _quiet_stdout()
        return 141


def _main(argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="cornernet-deploy", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cornernet-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported (others may need torch or TensorRT).
    chosen = next((a for a in argv if not a.startswith("-")), None)
    command_parser = parser
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            command_parser = p
            try:
                module = _load(name)
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.startswith("cornernet_deploy.commands"):
                    print(f"error: command '{name}' is not available in this build", file=sys.stderr)
                    return 2
                print(f"error: command '{name}' needs the Python package '{exc.name}' "
                      f"(pip install {exc.name})", file=sys.stderr)
                return 2
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # with the command's own usage, not the top-level one (exits 2)
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise                             # quietly, in main
    except OSError as exc:                # a full disk, a permission, a vanished file: one line
        from .fileio import write_error_message
        print(f"error: {write_error_message(None, exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: out of memory in `{args.command}`: give it less at once (smaller or fewer "
              "images, batches, sizes)", file=sys.stderr)
        return 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
