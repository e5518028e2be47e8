"""Backends: each loads one kind of model and runs a pre-processed NCHW float32 batch.

``open_backend(model, backend=None, device=None, precision=None, threads=None, ...)`` is the one
way in (the Detector, ``infer``, ``eval``, ``profile``, ``compare`` and the demo use it). The
backend follows from the model (``MODEL_KINDS``): ``.onnx`` -> ONNX Runtime, ``.engine`` /
``.plan`` / ``.trt`` -> TensorRT, a checkpoint ``.pt``/``.pth``/``.pkl`` or an architecture name
(seeded random weights) -> PyTorch (imports torch: comparisons and profiling only).

Every backend (``base.Backend``) has:

* ``run(batch) -> {output name: array}`` (names as in docs/CONTRACTS.md);
* ``run_timed(batch) -> (outputs, {"h2d", "inference", "d2h"})`` in ms, ``None`` for a stage the
  backend does not have (host-memory backends have no copies); ``timing`` names the clock
  (``perf_counter_ns`` or ``cuda-events``);
* ``metadata`` (the export's ``cornernet_deploy`` dict) and what follows from it: ``spec``,
  ``mean``, ``std``, ``class_names``, ``decode``; ``input_hw`` (fixed (H, W) or None),
  ``max_batch``, ``static_batch``; ``name``, ``device``, ``provider``, ``precision``, ``threads``;
* ``describe()`` (the JSON the reports use), ``label``, ``close()`` (also a context manager).

Importing this package imports no framework: each backend imports its own when opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...errors import UserError

__all__ = ["open_backend", "backend_for", "MODEL_KINDS", "BACKENDS", "DEVICES", "PRECISIONS",
           "PROVIDERS", "BACKEND_ALIASES"]

# The one table of model-file kinds: suffix -> backend.
MODEL_KINDS = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
    ".pt": "torch", ".pth": "torch", ".pkl": "torch",
}
BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
PROVIDERS = ("cpu", "cuda", "tensorrt")        # ONNX Runtime execution providers
BACKEND_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "pytorch": "torch", "trt": "tensorrt"}

_WHAT_RUNS = {"torch": "a checkpoint (.pt/.pth/.pkl) or an architecture name",
              "onnxruntime": "an .onnx file", "tensorrt": "a TensorRT .engine"}


def _suffixes(backend: str) -> str:
    return "/".join(s for s, b in MODEL_KINDS.items() if b == backend)


def backend_for(model) -> str:
    """The backend that runs ``model`` (a model file or an architecture name)."""
    from ...zoo import ARCHS

    text = str(model)
    path = Path(text)
    kind = MODEL_KINDS.get(path.suffix.lower())
    if kind:
        return kind
    if text.lower() in ARCHS and not path.suffix:
        return "torch"
    if not path.suffix and not path.exists():
        raise UserError(f"{text}: no such file, and not an architecture name ({', '.join(ARCHS)})")
    raise UserError(f"{text}: unknown model type '{path.suffix or path.name}' (expected "
                    f"{_suffixes('onnxruntime')} for ONNX Runtime, a TensorRT {_suffixes('tensorrt')} "
                    f"built by `cornernet-deploy build`, a checkpoint {_suffixes('torch')}, or an "
                    f"architecture name)")


def _check_choice(value, allowed, what):
    if value is not None and value not in allowed:
        raise UserError(f"unknown {what} '{value}' (choose {', '.join(allowed)})")


def open_backend(model, backend: Optional[str] = None, device: Optional[str] = None,
                 precision: Optional[str] = None, threads: Optional[int] = None, *,
                 provider: Optional[str] = None, arch: Optional[str] = None, input_hw=None,
                 seed: int = 0, plugin_library=None, cache_dir=None):
    """Open ``model`` with the backend its kind calls for.

    ``device``: ``cpu`` or ``cuda`` (default: cuda for a TensorRT engine, else cpu);
    ``provider`` (ONNX Runtime only): ``cpu``, ``cuda`` or ``tensorrt`` (default: from ``device``;
    ``tensorrt`` implies cuda); ``precision``: torch runs the network in it, a TensorRT execution
    provider builds its engine in it, files otherwise carry their own (a mismatch is refused);
    ``threads``: CPU threads of torch / ONNX Runtime. ``arch`` names the architecture of a
    checkpoint that records none; ``input_hw``/``seed`` apply to the torch backend;
    ``plugin_library`` (TensorRT, ONNX Runtime's TensorRT provider) and ``cache_dir`` (where the
    TensorRT provider keeps its engines and timing cache) have sensible defaults.
    """
    text = str(model)
    backend = BACKEND_ALIASES.get(backend, backend) if backend else None
    _check_choice(backend, BACKENDS, "backend")
    _check_choice(device, DEVICES, "device")
    _check_choice(precision, PRECISIONS, "precision")
    _check_choice(provider, PROVIDERS, "provider")
    natural = backend_for(text)
    backend = backend or natural
    if backend != natural:
        raise UserError(f"{text}: the {backend} backend runs {_WHAT_RUNS[backend]}; this is "
                        f"{_WHAT_RUNS[natural]} (backend {natural})")
    if provider is not None and backend != "onnxruntime":
        raise UserError(f"{text}: --provider chooses ONNX Runtime's execution provider and applies to "
                        f".onnx models only")
    if threads is not None and int(threads) < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    from ...zoo import ARCHS
    is_arch = backend == "torch" and not Path(text).suffix and text.lower() in ARCHS
    if not is_arch:
        path = Path(text)
        what = "engine" if backend == "tensorrt" else "model"
        if not path.exists():
            raise UserError(f"{text}: no such file ({what} not found)")
        if not path.is_file():
            raise UserError(f"{text}: is not a file")
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend
        return OnnxRuntimeBackend(text, provider=provider, device=device, precision=precision,
                                  threads=threads, plugin_library=plugin_library, cache_dir=cache_dir)
    if backend == "tensorrt":
        if device not in (None, "cuda"):
            raise UserError("TensorRT engines run on a CUDA GPU: use --device cuda (or leave it out)")
        from .tensorrt import TensorRTBackend
        engine = TensorRTBackend(text, plugin_library=plugin_library)
        if precision and precision != engine.precision:
            engine.close()
            raise UserError(f"{text} is an {engine.precision} engine; rebuild it for {precision}")
        return engine
    from .pytorch import PyTorchBackend
    return PyTorchBackend(None if is_arch else text, arch=text if is_arch else arch,
                          device=device or "cpu", precision=precision or "fp32",
                          input_hw=input_hw, seed=seed, threads=threads)
