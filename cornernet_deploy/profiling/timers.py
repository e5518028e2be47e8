"""Clocks used by the profiler.

* Host stages (and every stage of a CPU backend): ``time.perf_counter_ns`` around the work.
* GPU stages: CUDA events recorded on the runner's own (non-default) stream, read after the stream
  is synchronised, so the numbers are device time and include no Python overhead. PyTorch uses
  ``torch.cuda.Event(enable_timing=True)``; TensorRT uses the backend's ``run_timed`` or, failing
  that, ``cudaEventRecord``/``cudaEventElapsedTime`` through cuda-python (``profiling.tensorrt``).
"""
from __future__ import annotations

import time

__all__ = ["now_ns", "ms_between", "Stopwatch", "HOST_CLOCK", "CUDA_EVENTS"]

HOST_CLOCK = "perf_counter_ns"
CUDA_EVENTS = "cuda-events"

now_ns = time.perf_counter_ns


def ms_between(start_ns: int, end_ns: int) -> float:
    """Milliseconds between two ``perf_counter_ns`` readings."""
    return (end_ns - start_ns) / 1e6


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.ms`` (host wall-clock, perf_counter_ns)."""

    __slots__ = ("start", "ms")

    def __enter__(self) -> "Stopwatch":
        self.ms = None
        self.start = now_ns()
        return self

    def __exit__(self, *exc) -> None:
        self.ms = ms_between(self.start, now_ns())
