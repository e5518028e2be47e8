"""Backends: each loads one kind of model and runs a pre-processed NCHW batch.

``open_backend(model, backend=None, device=None, precision=None, threads=None, ...)`` is the one
way in (the Detector, ``infer``, ``eval``, ``profile``, ``compare``, the demo and the streams use
it). Which backend opens a model is the registry's answer (``registry.backend_for``: by file
suffix, or an architecture name for a backend that opens those); every backend module registers
itself there with what it opens, its devices, providers and precisions (``registry.BackendInfo``).
Adding a backend is one module in this package (docs/EXTENDING.md).

Every backend (``base.Backend``) has:

* ``run(batch) -> {output name: array}`` (names as in docs/CONTRACTS.md);
* ``run_timed(batch) -> (outputs, {"h2d", "inference", "d2h"})`` in ms, ``None`` for a stage the
  backend does not have (host-memory backends have no copies); ``timing`` names the clock
  (``perf_counter_ns`` or ``cuda-events``);
* ``metadata`` (the export's ``cornernet_deploy`` dict) and what follows from it
  (``model_metadata``: ``spec``, ``mean``, ``std``, ``class_names``, ``decode``); ``input_hw``
  (fixed (H, W) or None), ``max_batch``, ``static_batch``; ``name``, ``device``, ``provider``,
  ``precision``, ``threads``;
* ``describe()`` (the JSON the reports use), ``label``, ``close()`` (also a context manager).

Importing this package imports no framework: each backend imports its own when opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...contract.arch import ARCHS
from ...errors import UserError
from . import registry

__all__ = ["open_backend", "backend_for", "registry", "MODEL_KINDS"]


def backend_for(model) -> str:
    """The name of the backend that runs ``model`` (a model file or an architecture name)."""
    return registry.backend_for(model).name


def __getattr__(name):
    # the file-kind table, as the registry has it now (backends register on first use)
    if name == "MODEL_KINDS":
        return registry.model_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_choice(value, allowed, what):
    if value is not None and value not in allowed:
        raise UserError(f"unknown {what} '{value}' (choose {', '.join(allowed)})")


def open_backend(model, backend: Optional[str] = None, device: Optional[str] = None,
                 precision: Optional[str] = None, threads: Optional[int] = None, *,
                 provider: Optional[str] = None, arch: Optional[str] = None, input_hw=None,
                 seed: int = 0, plugin_library=None, cache_dir=None):
    """Open ``model`` with the backend its kind calls for.

    ``device``: one of the backend's devices (default: its own, e.g. cuda for a TensorRT engine,
    cpu for ONNX Runtime); ``provider``: the execution provider of a backend that has several
    (ONNX Runtime: ``cpu``, ``cuda`` or ``tensorrt``; default from ``device``); ``precision``:
    what the network runs in where the backend can choose (torch; ONNX Runtime's TensorRT provider
    builds an FP16 engine of an FP32 file), files otherwise carry their own (a mismatch is
    refused); ``threads``: CPU threads. ``arch`` names the architecture of a checkpoint that
    records none; ``input_hw``/``seed`` apply to an architecture name (random weights);
    ``plugin_library`` (TensorRT, ONNX Runtime's TensorRT provider) and ``cache_dir`` (where a
    backend keeps compiled engines) have sensible defaults.
    """
    text = str(model)
    if backend:
        info = registry.get(backend)
    _check_choice(device, registry.devices(), "device")
    _check_choice(precision, registry.precisions(), "precision")
    _check_choice(provider, registry.providers(), "provider")
    natural = registry.backend_for(text)
    info = info if backend else natural
    if info.name != natural.name and not info.opens(text):
        raise UserError(f"{text}: the {info.name} backend runs {info.runs}; this is {natural.runs} "
                        f"(backend {natural.name})")
    if provider is not None and provider not in info.providers:
        takers = [i for i in registry.all_backends() if provider in i.providers]
        suffixes = "/".join(s for i in takers for s in i.suffixes)
        raise UserError(f"{text}: --provider chooses the execution provider of {takers[0].runs} and "
                        f"applies to {suffixes} models only")
    if device is not None and device not in info.devices:
        suffix = Path(text).suffix.lower()
        others = [i.name for i in registry.all_backends()
                  if device in i.devices and suffix and suffix in i.also_opens]
        hint = f", or --backend {others[0]} (it runs such files on {device})" if others else ""
        raise UserError(f"{text}: the {info.name} backend runs on {' or '.join(info.devices)}: use "
                        f"--device {info.default_device} (or leave it out){hint}")
    if precision is not None and precision not in info.precisions:
        raise UserError(f"{text}: the {info.name} backend runs {', '.join(info.precisions) or 'the precision a file carries'}, "
                        f"not {precision}")
    if threads is not None and int(threads) < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    is_arch = info.can("arch_names") and not Path(text).suffix and text.lower() in ARCHS
    if not is_arch:
        path = Path(text)
        if not path.exists():
            raise UserError(f"{text}: no such file ({info.file_noun} not found)")
        if not path.is_file():
            raise UserError(f"{text}: is not a file")
    return info.opener(text, device=device, precision=precision, threads=threads, provider=provider,
                       arch=arch, input_hw=input_hw, seed=seed, plugin_library=plugin_library,
                       cache_dir=cache_dir)
