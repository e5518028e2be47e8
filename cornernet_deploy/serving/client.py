"""Calling the served detector with ``tritonclient`` (HTTP or gRPC), and a bounded load generator.

    from cornernet_deploy.serving.client import detect, load_test
    dets = detect("127.0.0.1:8000", "http", "shapes", png_bytes)        # a Detections-like tuple
    result = load_test("127.0.0.1:8001", "grpc", "shapes", png_bytes, clients=8, requests_per_client=10)

Used by the real-server tests and ``benchmarks/bench_serving.py``; the generated README shows the
same calls for users. ``tritonclient`` is imported on first use (``pip install -e '.[serve]'``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Sequence

import numpy as np


class ServedDetections(NamedTuple):
    boxes: np.ndarray      # [n, 4] float32 x1 y1 x2 y2
    scores: np.ndarray     # [n] float32
    class_ids: np.ndarray  # [n] int32


def triton_module(protocol: str):
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be http or grpc, not {protocol!r}")
    return module


def make_inputs(module, images) -> list:
    """One request's input: ``bytes`` (or a list of them) -> IMAGE_BYTES; a uint8 array
    [H, W, 3] or [B, H, W, 3] -> IMAGE."""
    if isinstance(images, (bytes, bytearray)):
        images = [bytes(images)]
    if isinstance(images, np.ndarray):
        pixels = images[None] if images.ndim == 3 else images
        tensor = module.InferInput("IMAGE", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(pixels))
        return [tensor]
    data = np.array([[bytes(b)] for b in images], dtype=object).reshape(len(images), 1)
    tensor = module.InferInput("IMAGE_BYTES", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor]


def split_detections(result) -> List[ServedDetections]:
    counts = result.as_numpy("NUM_DETECTIONS")[:, 0]
    boxes, scores, classes = (result.as_numpy(n) for n in ("BOXES", "SCORES", "CLASSES"))
    return [ServedDetections(boxes[i, :k], scores[i, :k], classes[i, :k]) for i, k in enumerate(counts)]


def detect(url: str, protocol: str, model: str, images, client=None) -> List[ServedDetections]:
    """Detections of every image of one request."""
    module = triton_module(protocol)
    client = client or module.InferenceServerClient(url)
    return split_detections(client.infer(model, make_inputs(module, images)))


@dataclass
class LoadResult:
    clients: int
    requests: int
    wall_s: float
    latencies_ms: List[float] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    answers: list = field(default_factory=list)   # ServedDetections per successful request

    @property
    def throughput(self) -> float:
        """Answered requests per second of wall time."""
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> str:
        return (f"{self.clients} clients x {self.requests // max(self.clients, 1)} requests: "
                f"{len(self.latencies_ms)} answered, {len(self.errors)} errors, {self.throughput:.1f} req/s, "
                f"latency p50 {self.percentile(50):.0f} ms, p90 {self.percentile(90):.0f} ms, "
                f"p99 {self.percentile(99):.0f} ms")


def load_test(url: str, protocol: str, model: str, images, *, clients: int, requests_per_client: int,
              timeout_s: Optional[float] = 300.0) -> LoadResult:
    """``clients`` threads, each with its own client, send ``requests_per_client`` requests back to
    back (all threads start together). Every answer and error is kept; the run is bounded by the
    per-request ``timeout_s`` (gRPC ``client_timeout``, HTTP ``network_timeout``)."""
    module = triton_module(protocol)
    result = LoadResult(clients, clients * requests_per_client, 0.0)
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker():
        if protocol == "http":
            client = module.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
            call = lambda inputs: client.infer(model, inputs)  # noqa: E731
        else:
            client = module.InferenceServerClient(url)
            call = lambda inputs: client.infer(model, inputs, client_timeout=timeout_s)  # noqa: E731
        inputs = make_inputs(module, images)
        start.wait()
        for _ in range(requests_per_client):
            t0 = time.perf_counter()
            try:
                answer = split_detections(call(inputs))
            except Exception as exc:  # the load test reports every failure, it does not stop
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            ms = (time.perf_counter() - t0) * 1e3
            with lock:
                result.latencies_ms.append(ms)
                result.answers.append(answer)
        client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - t0
    return result


def batch_sizes_executed(url: str, model: str) -> dict:
    """{batch size: executions} from Triton's statistics endpoint (HTTP ``/v2/models/MODEL/stats``)."""
    import tritonclient.http as http
    stats = http.InferenceServerClient(url).get_inference_statistics(model)
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for s in stats["model_stats"] for b in s.get("batch_stats", [])}


def settled_batch_sizes(url: str, model: str, quiet_s: float = 0.3, timeout_s: float = 30.0) -> dict:
    """``batch_sizes_executed`` once it has not changed for ``quiet_s``: the snapshot to take
    before a measured load, with no request in flight. Triton adds an execution to its statistics
    after it has sent the answer, so a read right after an earlier answer can miss that answer's
    execution, which ``executed_since`` would then count as part of the load."""
    deadline = time.monotonic() + timeout_s
    last, since = batch_sizes_executed(url, model), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Triton's statistics of {model} kept changing for {timeout_s:g} s")
        time.sleep(0.05)
        now = batch_sizes_executed(url, model)
        if now != last:
            last, since = now, time.monotonic()
    return last


def executed_since(url: str, model: str, before: dict, images: int, timeout_s: float = 30.0) -> dict:
    """{batch size: executions} since the statistics ``before`` (``settled_batch_sizes``), read
    once they count ``images`` images. Triton adds an execution to its statistics after it has
    sent the answers, so a read right after the last answer can miss the last executions; this
    polls (every 50 ms) and raises TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = batch_sizes_executed(url, model)
        executed = {b: after.get(b, 0) - before.get(b, 0) for b in after}
        counted = sum(b * n for b, n in executed.items())
        if counted >= images:
            return executed
        if time.monotonic() > deadline:
            raise TimeoutError(f"Triton's statistics of {model} count {counted} of {images} images "
                               f"after {timeout_s:g} s")
        time.sleep(0.05)


def same_detections(a: Sequence[ServedDetections], b: Sequence[ServedDetections]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.boxes, y.boxes) and np.array_equal(x.scores, y.scores)
        and np.array_equal(x.class_ids, y.class_ids) for x, y in zip(a, b))
