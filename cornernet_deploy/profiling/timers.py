"""Clocks used by the profiler.

* Host stages (and every stage of a host-memory backend): ``time.perf_counter_ns`` around the work.
* GPU stages: the backend's ``run_timed`` (``runtime.backends``): CUDA events recorded on its own
  (non-default) stream for torch on CUDA and TensorRT, read after the stream is synchronised, so the
  numbers are device time without Python overhead; the host clock around each synchronous
  ``io_binding`` call for ONNX Runtime on a GPU.
"""
from __future__ import annotations

from ..runtime.backends.base import CUDA_EVENTS, HOST_CLOCK, ms_between, now_ns

__all__ = ["now_ns", "ms_between", "Stopwatch", "HOST_CLOCK", "CUDA_EVENTS"]


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.ms`` (host wall-clock, perf_counter_ns)."""

    __slots__ = ("start", "ms")

    def __enter__(self) -> "Stopwatch":
        self.ms = None
        self.start = now_ns()
        return self

    def __exit__(self, *exc) -> None:
        self.ms = ms_between(self.start, now_ns())
