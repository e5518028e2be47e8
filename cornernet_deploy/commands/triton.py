"""``cornernet-deploy triton MODEL --repo DIR``: a Triton Inference Server model repository.

Torch-free. See ``cornernet_deploy/serving/repository.py`` for the layout and the README the
repository carries for how to start and call it.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import nonnegative_int, positive_int, score


def add_arguments(parser):
    from ..runtime.preprocess import DEFAULT_MAX_PIXELS

    parser.add_argument("model", help=".onnx from `export` (served by ONNX Runtime inside the Python model) "
                                      "or a TensorRT .engine from `build` with its manifest (served by Triton's "
                                      "TensorRT backend)")
    parser.add_argument("--repo", required=True, metavar="DIR", help="repository to write (new or empty; "
                                                                     "--overwrite replaces one written by this command)")
    parser.add_argument("--name", help="model name clients call (default: the model file's name); "
                                       "an engine's network is NAME_net")
    parser.add_argument("--max-batch", type=positive_int, metavar="N",
                        help="images per execution of the Python model (default: the engine's maximum batch, "
                             "8 for ONNX)")
    parser.add_argument("--instances", type=positive_int, default=1, metavar="K",
                        help="network instances per GPU (engine) / Python-model instances (ONNX); default 1")
    parser.add_argument("--python-instances", type=positive_int, metavar="P",
                        help="engine only: Python-model (pre/post-processing) instances (default: --instances)")
    batching = parser.add_mutually_exclusive_group()
    batching.add_argument("--dynamic-batching-delay-us", type=nonnegative_int, metavar="U",
                          help="dynamic batcher queue delay in microseconds (default 2000)")
    batching.add_argument("--no-dynamic-batching", action="store_true", help="one request per execution")
    parser.add_argument("--threads", type=nonnegative_int, default=0, metavar="T",
                        help="ONNX only: ONNX Runtime threads per instance (default 0: its own default)")
    parser.add_argument("--score-threshold", type=score, default=0.0,
                        help="drop detections below this score (default 0: every detection, as `infer`)")
    parser.add_argument("--max-pixels", type=nonnegative_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"the served model refuses images of more pixels, from their header before "
                             f"decoding (default {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    parser.add_argument("--plugin", metavar="LIB", help="engine only: corner-pool plugin library "
                                                        "(default: the one the manifest records)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing repository")


def _serving(model) -> str | None:
    """How ``triton`` serves this kind of file (``BackendInfo.serving``), None for an unknown kind."""
    from ..runtime.backends import registry
    kind = registry.model_kinds().get(Path(model).suffix.lower())
    return registry.get(kind).serving if kind else None


def run(args) -> int:
    from ..serving.repository import DEFAULT_DELAY_US, write_repository

    if args.plugin and _serving(args.model) == "python":
        raise UserError(f"--plugin is for engines; {args.model} runs inside the Python model, without "
                        "the TensorRT plugin")
    if args.no_dynamic_batching:
        delay = None
    else:
        delay = DEFAULT_DELAY_US if args.dynamic_batching_delay_us is None else args.dynamic_batching_delay_us
    result = write_repository(args.model, args.repo, name=args.name, max_batch=args.max_batch,
                              instances=args.instances, python_instances=args.python_instances,
                              delay_us=delay, threads=args.threads, score_threshold=args.score_threshold,
                              plugin=args.plugin, overwrite=args.overwrite,
                              max_pixels=args.max_pixels)
    print(f"wrote Triton repository {result.repo} (models: {', '.join(result.models)}); "
          f"start it as {result.repo / 'README.md'} says")
    return 0
