"""TensorRT timing for ``profile``: an adapter over the runtime's ``TensorRTBackend``.

The backend (``cornernet_deploy.runtime.backends.tensorrt``) owns the engine, its pinned/device
buffers and a private stream; its ``run_timed`` records CUDA events around the copy in, the
``execute_async_v3`` and the copy out, and its ``layer_profile`` attaches a ``trt.IProfiler``.
This module renames the stages to the profiler's (``infer`` -> ``inference``) and turns the
per-layer times into the report's ``layers`` entry (top layers, share of the corner-pool plugin, and
separately the reformat layers TensorRT puts around it).
Importing it imports nothing from TensorRT; ``open_engine_runner`` does, and says what is missing.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError

__all__ = ["open_engine_runner", "summarize_layers", "CORNER_POOL_MARKER", "REFORMAT_MARKER", "tensorrt_available"]

# Layer names come from the ONNX node names, and TensorRT keeps a plugin layer's name. The engine
# manifest lists the corner-pool node names (``corner_pool_layers``); for manifests without that list
# a name containing this marker counts (the exporter names the nodes ".../CornerPool").
CORNER_POOL_MARKER = "cornerpool"
# TensorRT's name for the copies it inserts to convert a tensor's format/type for the next layer:
# "Reformatting CopyNode for Input Tensor 0 to <layer>" (and "... Output Tensor ...").
REFORMAT_MARKER = "reformat"


def tensorrt_available() -> Tuple[bool, str]:
    """(True, version) when ``import tensorrt`` works, else (False, the reason)."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        return False, f"tensorrt is not importable ({type(exc).__name__}: {exc})"
    return True, getattr(trt, "__version__", "?")


class _EngineRunner:
    """``run`` / ``run_timed`` (stages named as the profiler's) / ``layer_profile`` of an engine."""

    def __init__(self, backend):
        self.backend = backend
        self.metadata = backend.metadata
        self.input_hw = tuple(backend.input_hw) if backend.input_hw else None
        self.max_batch = backend.max_batch
        self.static_batch = bool(getattr(backend, "static_batch", False))

    def run(self, batch: np.ndarray) -> dict:
        return self.backend.run(batch)

    def run_timed(self, batch: np.ndarray):
        outputs, stages = self.backend.run_timed(batch)
        return outputs, {"h2d": float(stages["h2d"]), "inference": float(stages["infer"]),
                         "d2h": float(stages["d2h"])}

    def layer_profile(self, batch: np.ndarray, runs: int = 10) -> dict:
        names = (getattr(self.backend, "manifest", None) or {}).get("corner_pool_layers")
        return summarize_layers(self.backend.layer_profile(batch, iterations=runs), runs=runs,
                                corner_pool_names=names)

    def close(self) -> None:
        self.backend.close()


def open_engine_runner(path) -> _EngineRunner:
    """Load a TensorRT engine (with its manifest) for timing; one-line UserError when TensorRT,
    cuda-python or a GPU is missing."""
    ok, why = tensorrt_available()
    if not ok:
        raise UserError(f"{Path(path)}: TensorRT engines need the tensorrt Python package and a CUDA "
                        f"GPU; {why}")
    from ..runtime.backends.tensorrt import TensorRTBackend
    return _EngineRunner(TensorRTBackend(path))


def summarize_layers(layers: Sequence[Tuple[str, float]], top: int = 15, runs: int | None = None,
                     corner_pool_names: Optional[Sequence[str]] = None) -> dict:
    """Per-layer mean times ``[(name, ms)]`` -> ``{"total_ms", "runs", "num_layers", "top": [{"name",
    "ms", "share"}], "corner_pool_layers", "corner_pool_ms", "corner_pool_share",
    "corner_pool_reformat_layers", "corner_pool_reformat_ms", "corner_pool_reformat_share"}`` (shares
    of the summed layer time).

    Corner-pool layers are the layers named exactly like a corner-pool node (``corner_pool_names``,
    from the engine manifest), or, without names, those whose name contains "CornerPool". Reformat
    layers that feed or follow one of them (TensorRT names them after the layer they serve) are
    reported separately: they are a cost of the plugin's layout, not of its kernel."""
    items: List[Tuple[str, float]] = sorted(((str(n), float(ms)) for n, ms in layers),
                                            key=lambda kv: -kv[1])
    total = sum(ms for _, ms in items)
    names = set(corner_pool_names or ())

    def is_reformat(name: str) -> bool:
        return REFORMAT_MARKER in name.lower()

    def mentions_pool(name: str) -> bool:
        if names:
            return any(pool in name for pool in names)
        return CORNER_POOL_MARKER in name.lower().replace("_", "")

    pool = [(n, ms) for n, ms in items if not is_reformat(n) and (n in names if names else mentions_pool(n))]
    reformats = [(n, ms) for n, ms in items if is_reformat(n) and mentions_pool(n)]
    pool_ms = sum(ms for _, ms in pool)
    reformat_ms = sum(ms for _, ms in reformats)
    share = (lambda ms: ms / total if total > 0 else None)
    return {
        "runs": runs,
        "num_layers": len(items),
        "total_ms": total,
        "top": [{"name": n, "ms": ms, "share": share(ms)} for n, ms in items[:top]],
        "corner_pool_layers": len(pool),
        "corner_pool_ms": pool_ms,
        "corner_pool_share": share(pool_ms),
        "corner_pool_reformat_layers": len(reformats),
        "corner_pool_reformat_ms": reformat_ms,
        "corner_pool_reformat_share": share(reformat_ms),
    }
