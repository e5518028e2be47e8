"""Per-stage latency of one or more backends on the same images, and the report they make.

One iteration = one batch of ``batch`` images through the official single-scale test pipeline,
split into stages (all in milliseconds):

* ``preprocess``: resize, centre in the model's canvas, normalise (``runtime.preprocess``), stack;
  with ``flip`` also the mirrored copies (the network batch doubles) -- host clock;
* ``h2d``, ``inference``, ``d2h``: the backend's ``run_timed`` (``runtime.backends``: CUDA events
  on the backend's own stream for torch/CUDA and TensorRT; host clock elsewhere, ONNX Runtime on a
  GPU timing its ``io_binding`` copies apart; ``h2d``/``d2h`` are absent (null) for backends that
  work in host memory: torch on CPU, ONNX Runtime on CPU);
* ``postprocess``: decode (``runtime.decode``), flip merge, rescale to image pixels, per-class
  soft-NMS and the per-image limit (``runtime.postprocess``) -- host clock;
* ``end_to_end``: host clock around the whole iteration (so on a GPU it includes the launch
  overheads and synchronisation that the event times leave out).

Throughput = images per second of the mean end-to-end time (``batch * 1000 / mean``).
Warm-up iterations run first and are not recorded. With several backends the iterations are
interleaved (backend 1, backend 2, ..., then again) so that slow drifts of a shared machine hit
every backend alike. The stages are those of the real pipeline (``CornerNetPipeline``, timed by its
``StageClock``): CornerNet-Saccade's attention/zoom loop is timed whole, its network passes added up.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from .layers import summarize_layers
from .stats import PERCENTILE_METHOD, ratio, ratios_to_baseline, summarize
from ..runtime.backends.base import HOST_CLOCK, ms_between, now_ns
from ..runtime.pipeline import DEVICE_STAGES, STAGES

__all__ = ["STAGES", "DEVICE_STAGES", "RowResult", "profile_backends", "common_canvas", "load_images",
           "generated_images", "build_report", "environment", "REPORT_SCHEMA", "REPORT_FORMAT"]

REPORT_SCHEMA = "cornernet_deploy.profile"
REPORT_FORMAT = 1


@dataclass
class RowResult:
    """Samples of one backend (ms per stage; None for a stage the backend does not have)."""

    backend: object
    batch: int
    network_batch: int
    samples: Dict[str, Optional[List[float]]] = field(default_factory=dict)
    layers: Optional[dict] = None
    detections_per_image: float = 0.0
    canvas: Optional[tuple] = None

    def summaries(self) -> Dict[str, Optional[dict]]:
        return {s: (summarize(v) if v else None) for s, v in self.samples.items()}


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------

def load_images(folder, limit: Optional[int] = None,
                note: Optional[Callable[[str], None]] = None) -> List[np.ndarray]:
    """The image files of ``folder`` as ``infer`` finds them (``runtime.images.collect_images``:
    sorted by name, not recursive, hidden files skipped), the first ``limit``, as BGR uint8.
    What was skipped and the conversions (grayscale, alpha, 16-bit) are told to ``note`` as
    "note: ..." lines, as ``infer`` does, instead of as Python warnings."""
    from ..runtime.images import collect_images, read_image
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise UserError(f"{folder}: --images must be a directory of images")
    tell = (lambda message: note(f"note: {message}")) if note else None
    files = collect_images([str(folder)], note=tell)
    return [read_image(p, tell) for p in (files[:limit] if limit else files)]


def generated_images(count: int, image_hw, seed: int = 0) -> List[np.ndarray]:
    """``count`` generated scenes (``data.shapes.render_scene``) of ``image_hw`` pixels."""
    from ..data.shapes import render_scene
    h, w = (int(image_hw[0]), int(image_hw[1]))
    return [render_scene(seed + i, image_size=(h, w))[0] for i in range(int(count))]


# ----------------------------------------------------------------------------------------------
# the staged loop
# ----------------------------------------------------------------------------------------------

class _Staged:
    """One backend through the real pipeline (``CornerNetPipeline.for_backend``, the Detector's),
    its stages read from the pipeline's ``StageClock``."""

    def __init__(self, backend, batch: int, flip: bool, canvas=None, native: bool = False):
        from ..runtime.pipeline import CornerNetPipeline

        self.backend, self.batch, self.flip = backend, int(batch), bool(flip)
        # native: the model's own input size, as the Detector (eval, infer) runs it; a dynamic-size
        # model then pads each image at scale 1 (no canvas)
        self.canvas = (tuple(backend.input_hw) if backend.input_hw else None) if native else \
            tuple(backend.input_hw or canvas or backend.spec.input_size)
        self.network_batch = self.batch * (2 if flip else 1)
        if backend.max_batch is not None:
            if backend.static_batch and self.network_batch != backend.max_batch:
                raise UserError(f"{backend.model} takes exactly {backend.max_batch} image(s) per batch; "
                                f"asked for {self.network_batch}"
                                + (" (--batch doubled by --flip)" if flip else "")
                                + ": use --batch accordingly, or export with --dynamic-batch")
            if self.network_batch > backend.max_batch:
                raise UserError(f"{backend.model} takes at most {backend.max_batch} image(s) per batch; "
                                f"asked for {self.network_batch}")
        # the batch's images go through the network together, as one call of `batch` images
        self.pipeline = CornerNetPipeline.for_backend(backend, input_hw=self.canvas,
                                                      max_images_per_step=self.batch)
        self.pipeline.family.check_flip(self.flip)

    def iteration(self, images: Sequence[np.ndarray]):
        from ..runtime.pipeline import StageClock

        clock = StageClock()
        t0 = now_ns()
        results = self.pipeline.batch(images, flip=self.flip, clock=clock)
        return clock.stages(ms_between(t0, now_ns())), results

    def network_input(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """One network batch as the pipeline feeds it (for TensorRT's per-layer profile)."""
        return np.stack([self.pipeline.preprocess(images[j % len(images)])[0]
                         for j in range(self.network_batch)])


def common_canvas(backends: Sequence):
    """The input size a dynamic-size backend is given: the first fixed-size backend's input (so
    that the rows compare the same work), else the architecture's official input size."""
    for b in backends:
        if b.input_hw:
            return tuple(b.input_hw)
    return tuple(backends[0].spec.input_size) if backends else None


def _backend_info(backend):
    from ..runtime.backends import registry
    return registry.get(backend.name)


def profile_backends(backends: Sequence, images: Sequence[np.ndarray], *, batch: int = 1,
                    warmup: int = 3, iters: int = 20, flip: bool = False, layers: bool = False,
                    layer_runs: int = 10, progress: Optional[Callable[[str], None]] = None,
                    native: bool = False) -> List[RowResult]:
    """Time every backend on the same batches (interleaved, see the module docstring).
    ``native``: each backend gets its own pre-processing, as ``eval`` and ``infer`` run it (a
    dynamic-size model pads each image at scale 1) instead of the common canvas."""
    if batch < 1:
        raise UserError("--batch must be >= 1")
    if warmup < 0:
        raise UserError("--warmup must be >= 0")
    if iters < 1:
        raise UserError("--iters must be >= 1")
    if not images:
        raise UserError("no images to profile on")
    canvas = common_canvas(backends)
    staged = [_Staged(b, batch, flip, canvas, native) for b in backends]
    rows = [RowResult(b, batch, s.network_batch, {st: [] for st in STAGES}, canvas=s.canvas)
            for b, s in zip(backends, staged)]
    det_counts = [0] * len(backends)
    for it in range(warmup + iters):
        start = (it * batch) % len(images)
        chunk = [images[(start + j) % len(images)] for j in range(batch)]
        for k, (s, row) in enumerate(zip(staged, rows)):
            stages, results = s.iteration(chunk)
            if it < warmup:
                continue
            det_counts[k] += sum(len(d) for d in results)
            for name, value in stages.items():
                row.samples[name].append(value)
        done = it + 1 - warmup
        if progress and done > 0 and (done % 10 == 0 or done == iters):
            progress(f"iteration {done}/{iters}")
    for k, row in enumerate(rows):
        for name in STAGES:
            values = row.samples[name]
            if any(v is None for v in values):
                row.samples[name] = None           # the backend has no such stage
        row.detections_per_image = det_counts[k] / float(iters * batch)
    if layers:
        for s, row in zip(staged, rows):
            if not _backend_info(s.backend).can("layer_profile"):
                continue
            manifest = getattr(s.backend, "manifest", None)
            names = list(manifest.corner_pool_layers) if manifest is not None else None  # ONNX node names
            timings = s.backend.layer_profile(s.network_input(images), iterations=layer_runs)
            row.layers = summarize_layers(timings, runs=layer_runs, corner_pool_names=names)
    return rows


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------

def _version(dist: str) -> Optional[str]:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, else what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction sets that decide which CPU formats are fast: AVX-512 and AVX2 (FP32), VNNI (INT8
# dot products), AVX512-BF16 and AMX (BF16/INT8 matrix tiles), AVX512-FP16.
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def cpu_flags() -> List[str]:
    """Which of ``CPU_FEATURES`` this CPU has (Linux /proc/cpuinfo; empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [name for name in CPU_FEATURES if name in have]
    except OSError:
        pass
    return []


def _gpus() -> List[dict]:
    """GPUs as seen by an already imported torch or the TensorRT backend's cuda-python helper;
    nothing is imported just for this."""
    out = []
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    p = torch.cuda.get_device_properties(i)
                    out.append({"index": i, "name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                                "memory_gib": round(p.total_memory / 2 ** 30, 1),
                                "cuda": torch.version.cuda})
                return out
        except Exception:
            pass
    if "tensorrt" in sys.modules:
        try:
            from ..runtime.cuda import device_info
            out.append({"index": 0, **device_info(0)})
        except Exception:
            pass
    return out


def environment() -> dict:
    """Machine and library versions for the report (no imports of torch/TensorRT for this)."""
    from .. import __version__
    versions = {"cornernet_deploy": __version__, "python": platform.python_version(),
                "numpy": np.__version__}
    for name, dist in (("onnxruntime", "onnxruntime"), ("onnxruntime_gpu", "onnxruntime-gpu"),
                       ("opencv", "opencv-python-headless"), ("opencv_python", "opencv-python"),
                       ("onnx", "onnx"), ("torch", "torch"), ("openvino", "openvino"),
                       ("tensorrt", "tensorrt"),
                       ("cuda_python", "cuda-python")):
        v = _version(dist)
        if v:
            versions[name] = v
    try:
        import cv2
        versions["opencv"] = cv2.__version__
        versions.pop("opencv_python", None)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
        versions["torch_threads"] = torch.get_num_threads()
    trt = sys.modules.get("tensorrt")
    if trt is not None:
        versions["tensorrt"] = getattr(trt, "__version__", versions.get("tensorrt"))
    machine = {"platform": platform.platform(), "machine": platform.machine(),
               "cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
               "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
               "gpus": _gpus()}
    return {"machine": machine, "versions": versions}


def build_report(rows: Sequence[RowResult], settings: dict) -> dict:
    """The JSON report (schema in docs/profiling.md; ``report.validate_report``)."""
    base = rows[0].summaries() if rows else {}
    base_tp = None
    results = []
    for i, row in enumerate(rows):
        summaries = row.summaries()
        e2e = summaries.get("end_to_end")
        inf = summaries.get("inference")
        throughput = row.batch * 1000.0 / e2e["mean"] if e2e and e2e["mean"] > 0 else None
        inf_throughput = row.batch * 1000.0 / inf["mean"] if inf and inf["mean"] > 0 else None
        if i == 0:
            base_tp = throughput
        ratios = ratios_to_baseline(summaries, base)
        ratios["throughput"] = ratio(throughput, base_tp)
        entry = dict(row.backend.describe())
        entry.update({
            "network": row.backend.spec.summary,
            "canvas_hw": list(row.canvas) if row.canvas else None,
            "batch": row.batch, "network_batch": row.network_batch,
            "stages": summaries, "throughput_ips": throughput,
            "inference_throughput_ips": inf_throughput, "ratios": ratios,
            "detections_per_image": row.detections_per_image,
            "layers": row.layers,
        })
        results.append(entry)
    env = environment()
    warning = different_networks([entry["network"] for entry in results])
    return {
        "schema": REPORT_SCHEMA, "format": REPORT_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": env["machine"], "versions": env["versions"], "settings": dict(settings),
        "units": "ms", "stages": list(STAGES), "percentiles": PERCENTILE_METHOD,
        "ratio_definition": "median of this row / median of the first row (latency: below 1 is "
                            "faster); throughput: this row / the first row (above 1 is faster)",
        "host_clock": HOST_CLOCK, "warnings": [warning] if warning else [], "results": results,
    }


def different_networks(networks: Sequence[str]) -> Optional[str]:
    """A warning when the rows of one table run different networks (architecture, widths,
    depth, classes: ``ArchSpec.summary``), whose ratios then compare work, not backends."""
    distinct = list(dict.fromkeys(networks))
    if len(distinct) < 2:
        return None
    groups = []
    for net in distinct:
        rows = [str(i + 1) for i, n in enumerate(networks) if n == net]
        groups.append(f"row{'s' if len(rows) > 1 else ''} {', '.join(rows)}: {net}")
    rows = "; ".join(groups)
    return (f"the rows are {len(distinct)} different networks, so their ratios compare different "
            f"work, not backends or precisions ({rows})")
