"""What every backend shares: the model description read from its metadata, the timed call on the
host clock, the JSON description the reports use, ``close``.

A subclass sets ``name``, ``path`` (or None), ``metadata``, ``input_hw``, ``max_batch``,
``static_batch``, ``precision`` (and, where they differ from the defaults here, ``device``,
``provider``, ``threads``, ``timing``) and implements ``run``; its module registers it
(``registry.register``). Torch-free.
"""
from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ...contract.metadata import ModelMetadata, parse_metadata
from ...errors import UserError

__all__ = ["Backend", "HOST_CLOCK", "CUDA_EVENTS", "now_ns", "ms_between", "Timings"]

# The clocks of ``run_timed``: the host clock around a call, or CUDA events on the backend's own
# stream (device time, no Python overhead; read after the stream is synchronised).
HOST_CLOCK = "perf_counter_ns"
CUDA_EVENTS = "cuda-events"

now_ns = time.perf_counter_ns

Timings = Dict[str, Optional[float]]


def ms_between(start_ns: int, end_ns: int) -> float:
    """Milliseconds between two ``perf_counter_ns`` readings."""
    return (end_ns - start_ns) / 1e6


class Backend:
    """A loaded model: ``run(batch NCHW) -> {output name: array}``; the batch is float32
    normalised, or uint8 pixels for an export that normalises in its graph (``input_dtype``)."""

    name = "?"
    timing = HOST_CLOCK
    device = "cpu"
    provider: Optional[str] = None      # ONNX Runtime's execution provider; None elsewhere
    threads: Optional[int] = None       # CPU threads (None: the library's default)
    path: Optional[Path] = None
    precision = "fp32"
    input_hw: Optional[Tuple[int, int]] = None
    max_batch: Optional[int] = None
    static_batch = False
    metadata: dict

    # -- what the model is (the export metadata, through its one reader) ------------------------
    @cached_property
    def model_metadata(self) -> ModelMetadata:
        """``metadata`` parsed and checked (``contract.metadata.parse_metadata``); a backend that
        has parsed it already assigns this attribute itself."""
        return parse_metadata(self.metadata, str(self.path) if self.path is not None else f"the {self.name} model")

    @property
    def spec(self):
        return self.model_metadata.spec

    @property
    def arch(self) -> str:
        return self.spec.name

    @property
    def mean(self):
        return self.model_metadata.mean

    @property
    def std(self):
        return self.model_metadata.std

    @property
    def class_names(self):
        return self.model_metadata.class_names

    @property
    def decode(self) -> str:
        return self.model_metadata.decode

    @property
    def input_dtype(self) -> str:
        """What the network's input holds: "float32" (normalised) or "uint8" (pixels)."""
        return self.model_metadata.input_dtype

    def network_batch(self, batch) -> np.ndarray:
        """``batch`` as the network takes it: contiguous, of its input dtype. Normalised floats
        for a pixel-input model (or pixels for a float-input one) are refused: they would run
        and give wrong detections without a word."""
        batch = np.asarray(batch)
        pixels = self.input_dtype == "uint8"
        if (batch.dtype == np.uint8) != pixels:
            raise UserError(f"{self.model} takes {self.input_dtype} input "
                            f"({'uint8 pixels, normalised in its graph' if pixels else 'normalised pixels'}); "
                            f"got a {batch.dtype} batch")
        return np.ascontiguousarray(batch, np.uint8 if pixels else np.float32)

    @property
    def model(self) -> str:
        """The model as the user named it: a file, or an architecture name (random weights)."""
        return str(self.path) if self.path is not None else self.arch

    @property
    def label(self) -> str:
        name = Path(self.model).name if self.path is not None else self.model
        kind = self.name + (f":{self.provider}" if self.provider not in (None, "cpu", "cuda") else "")
        threads = f", {self.threads} thr" if self.threads else ""
        return f"{name} [{kind}/{self.device}/{self.precision}{threads}]"

    def describe(self) -> dict:
        """JSON-ready description (a row of the profile report, a side of the comparison)."""
        return {
            "label": self.label, "model": self.model, "backend": self.name,
            "provider": self.provider, "device": self.device, "precision": self.precision,
            "arch": self.spec.name, "num_classes": self.spec.num_classes, "decode": self.decode,
            "input_dtype": self.input_dtype, "input_hw": list(self.input_hw) if self.input_hw else None,
            "static_batch": self.max_batch if self.static_batch else None,
            "threads": self.threads, "timing": self.timing,
        }

    # -- running ------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> dict:
        raise NotImplementedError

    def run_timed(self, batch: np.ndarray) -> Tuple[dict, Timings]:
        """``(outputs, {"h2d", "inference", "d2h"})`` in ms; this default is for backends that
        work in host memory: the host clock around ``run``, no copies (None)."""
        t0 = now_ns()
        outputs = self.run(batch)
        t1 = now_ns()
        return outputs, {"h2d": None, "inference": ms_between(t0, t1), "d2h": None}

    def close(self) -> None:
        """Release device memory, streams and sessions (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"
