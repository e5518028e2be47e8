"""What each format costs: accuracy and latency of one model per backend and precision, in one table.

``run_benchmark`` takes a checkpoint (or an architecture name, or an FP32 export) and for every
format of ``FORMATS`` that this machine can run:

1. **prepares** the file it runs (``Artifacts``): the FP32 export (``exporter.export_onnx``), the
   INT8 Q/DQ model (``quantize.quantize_onnx``, on the calibration images) and TensorRT engines
   (``tensorrt.builder.build_engine``), kept in a folder and reused while the SHA-256 of their
   inputs (the source file, the calibration images, the settings, the toolkit version) and of the
   file itself are what ``artifacts.json`` recorded;
2. **evaluates** it on the COCO dataset with ``evaluation.evaluate`` through ``Detector.load``:
   exactly what ``cornernet-deploy eval FILE --backend B --precision P`` computes. Each evaluation
   runs in a fresh child process (``python -m cornernet_deploy.profiling.benchmark``), whose peak
   resident memory (Linux ``VmHWM``: interpreter, libraries, model, activations) is
   the row's memory; a child that reads the dataset without a model gives the baseline;
3. **times** every runnable format side by side with ``profile.profile_backends`` (interleaved
   iterations, per-stage statistics, each model fed as ``eval`` feeds it: a dynamic-size export
   pads each image at scale 1), on the first images of the dataset.

The report (schema in docs/benchmark.md, ``validate_benchmark``) has one row per format: file size,
AP, AP50, AP small/medium/large, AP deltas to the reference row (points), end-to-end and network
latency (median, p90), throughput, speed-up over the reference (its end-to-end median / this
row's), peak memory; a format that cannot run here has ``status: "unavailable"`` and the reason,
the one-line error its preparation or opening gave (no TensorRT, no GPU, no calibration images...).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import __version__
from ..errors import UserError
from ..fileio import sha256_file, write_json_atomic, write_text_atomic

__all__ = ["Format", "FORMATS", "FORMAT_NAMES", "Artifacts", "run_benchmark", "validate_benchmark",
           "benchmark_table", "unavailable_table", "render_plot", "write_plot", "write_json",
           "REPORT_SCHEMA", "REPORT_FORMAT", "MEMORY_METHOD", "DEFAULT_REFERENCE"]

REPORT_SCHEMA = "cornernet_deploy.benchmark"
REPORT_FORMAT = 1
DEFAULT_REFERENCE = "onnxruntime-fp32"
MEMORY_METHOD = ("peak resident set size (Linux VmHWM, else getrusage ru_maxrss) of a fresh process that opens the "
                 "format and evaluates the dataset with it: interpreter, libraries, model, "
                 "activations and the evaluation's detections; memory.baseline_mib is the same "
                 "process without a model")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
SIZE_METRICS = ("APs", "APm", "APl")    # null where the dataset has no objects of that size


@dataclass(frozen=True)
class Format:
    """One row: a backend, device and precision, and the artifact it runs."""

    name: str
    title: str
    backend: str
    source: str                       # "checkpoint", "onnx", "onnx-int8", "engine-fp32", ...
    device: str = "cpu"
    precision: Optional[str] = None   # asked of the backend (files otherwise carry their own)
    provider: Optional[str] = None

    def open_options(self, threads: Optional[int]) -> dict:
        """The ``open_backend`` / ``Detector.load`` keywords of this row."""
        return {"backend": self.backend, "device": self.device, "precision": self.precision,
                "provider": self.provider, "threads": threads}


FORMATS = (
    Format("torch-fp32", "PyTorch FP32", "torch", "checkpoint", precision="fp32"),
    Format("torch-bf16", "PyTorch BF16 (CPU autocast)", "torch", "checkpoint", precision="bf16"),
    Format("onnxruntime-fp32", "ONNX Runtime FP32", "onnxruntime", "onnx"),
    Format("onnxruntime-int8", "ONNX Runtime INT8 (Q/DQ)", "onnxruntime", "onnx-int8"),
    Format("openvino-fp32", "OpenVINO FP32", "openvino", "onnx", precision="fp32"),
    Format("openvino-bf16", "OpenVINO BF16", "openvino", "onnx", precision="bf16"),
    Format("openvino-int8", "OpenVINO INT8 (Q/DQ)", "openvino", "onnx-int8"),
    Format("openvino-gpu-fp32", "OpenVINO GPU FP32", "openvino", "onnx", "gpu", "fp32"),
    Format("openvino-gpu-fp16", "OpenVINO GPU FP16", "openvino", "onnx", "gpu", "fp16"),
    Format("openvino-gpu-int8", "OpenVINO GPU INT8 (Q/DQ)", "openvino", "onnx-int8", "gpu"),
    Format("openvino-npu-fp16", "OpenVINO NPU FP16", "openvino", "onnx", "npu", "fp16"),
    Format("onnxruntime-cuda-fp32", "ONNX Runtime CUDA FP32", "onnxruntime", "onnx", "cuda",
           provider="cuda"),
    Format("onnxruntime-tensorrt-fp32", "ONNX Runtime TensorRT provider FP32", "onnxruntime", "onnx",
           "cuda", provider="tensorrt"),
    Format("onnxruntime-tensorrt-fp16", "ONNX Runtime TensorRT provider FP16", "onnxruntime", "onnx",
           "cuda", "fp16", provider="tensorrt"),
    Format("tensorrt-fp32", "TensorRT FP32", "tensorrt", "engine-fp32", "cuda"),
    Format("tensorrt-fp16", "TensorRT FP16", "tensorrt", "engine-fp16", "cuda"),
    Format("tensorrt-int8", "TensorRT INT8 (Q/DQ)", "tensorrt", "engine-int8", "cuda"),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)
_BY_NAME = {f.name: f for f in FORMATS}


def _say(progress, message: str) -> None:
    if progress:
        progress(message)


# ----------------------------------------------------------------------------------------------
# artifacts
# ----------------------------------------------------------------------------------------------

def _digest(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Artifacts:
    """The files the formats run, made on first use and kept in ``folder`` with a record of the
    inputs each was made from (``artifacts.json``); ``get(kind)`` returns the path or raises the
    UserError that says why there is none (the same error again on every call). A file there
    that the record does not name (a user's own export under an artifact's name) is never
    replaced: ``check_folder`` refuses it before any work; a recorded one that changed since is
    made again."""

    MANIFEST = "artifacts.json"
    # what each kind is made from: the one statement of it (making and check_folder both read it)
    NEEDS = {"onnx-int8": "onnx", "engine-fp32": "onnx", "engine-fp16": "onnx", "engine-int8": "onnx-int8"}

    def __init__(self, model, folder, *, calib=None, calib_images: int = 100, arch=None,
                 progress=None):
        from ..contract.arch import ARCHS

        self.model = str(model)
        self.folder = Path(folder)
        self.calib, self.calib_images, self.arch = calib, int(calib_images), arch
        self.progress = progress
        self.is_arch = not Path(self.model).suffix and self.model.lower() in ARCHS
        self.stem = self.model.lower() if self.is_arch else Path(self.model).stem
        self._done: Dict[str, Path] = {}
        self._failed: Dict[str, str] = {}
        self._export_precision = None
        if Path(self.model).suffix.lower() == ".onnx":
            from ..onnx_files import load_export
            _, metadata = load_export(self.model)
            self._export_precision = metadata.precision
            if metadata.precision != "fp32":
                raise UserError(f"{self.model} is an {metadata.precision} export; benchmark prepares the "
                                "formats from a checkpoint or an FP32 export")

    # the record -------------------------------------------------------------------------------
    def _manifest(self) -> dict:
        try:
            data = json.loads((self.folder / self.MANIFEST).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _manifest_is_ours(self) -> bool:
        """No record yet, or one this class wrote (not a file of the user's by that name)."""
        path = self.folder / self.MANIFEST
        if not (path.exists() or path.is_symlink()):
            return True
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and all(isinstance(e, dict) and "inputs_sha256" in e
                                              for e in data.values())

    def path(self, kind: str) -> Optional[Path]:
        """Where ``kind`` is made; None where nothing is (the model itself, a checkpoint)."""
        if kind == "onnx":
            return None if self._export_precision == "fp32" else self.folder / f"{self.stem}.onnx"
        if kind == "onnx-int8":
            return self.folder / f"{self.stem}_int8.onnx"
        if kind.startswith("engine-"):
            return self.folder / f"{self.stem}_{kind[len('engine-'):]}.engine"
        return None

    def check_folder(self, kinds) -> None:
        """Refuse, before any work, a folder holding a file under a name that ``kinds`` (and what
        they are made from) would be written to, where the record names no such file."""
        where = f"--artifacts {self.folder}"
        if not self._manifest_is_ours():
            raise UserError(f"{where}: holds a {self.MANIFEST} that benchmark did not write; give "
                            "another folder")
        todo = set()
        for kind in kinds:
            while kind:
                todo.add(kind)
                kind = self.NEEDS.get(kind)
        recorded = self._manifest()
        for kind in sorted(todo):
            path = self.path(kind)
            if path is not None and (path.exists() or path.is_symlink()) and path.name not in recorded:
                raise UserError(f"{where}: {path.name} is there but was not made by benchmark, which "
                                "would replace it; give another folder or move the file")

    def _record(self, path: Path, key: str) -> None:
        manifest = self._manifest()
        manifest[path.name] = {"inputs_sha256": key, "sha256": sha256_file(path),
                               "toolkit_version": __version__}
        write_text_atomic(self.folder / self.MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")

    def _reusable(self, path: Path, key: str) -> bool:
        entry = self._manifest().get(path.name)
        return (path.is_file() and isinstance(entry, dict) and entry.get("inputs_sha256") == key
                and entry.get("sha256") == sha256_file(path))

    def _make(self, path: Path, key: str, make: Callable[[Path], None], what: str) -> Path:
        if self._reusable(path, key):
            _say(self.progress, f"reusing {path} ({what}; its inputs are unchanged)")
            return path
        _say(self.progress, f"making {path} ({what})")
        self.folder.mkdir(parents=True, exist_ok=True)
        make(path)
        self._record(path, key)
        return path

    # the kinds --------------------------------------------------------------------------------
    def get(self, kind: str) -> Path:
        if kind in self._done:
            return self._done[kind]
        if kind in self._failed:
            raise UserError(self._failed[kind])
        try:
            path = getattr(self, "_" + kind.replace("-", "_"))()
        except UserError as exc:
            self._failed[kind] = str(exc)
            raise
        self._done[kind] = path
        return path

    def _checkpoint(self):
        if Path(self.model).suffix.lower() == ".onnx":
            raise UserError(f"needs a checkpoint (.pt/.pth/.pkl) or an architecture name; {self.model} "
                            "is an export")
        return Path(self.model) if not self.is_arch else self.model

    def _source_inputs(self) -> list:
        """What the FP32 export is made of, for the key."""
        if self.is_arch:
            return [{"arch": self.model.lower(), "seed": 0}]
        return [{"file": sha256_file(self.model), "arch": self.arch}]

    def _onnx(self) -> Path:
        if self._export_precision == "fp32":
            return Path(self.model)
        from ..errors import require_torch
        require_torch("exporting the checkpoint for the ONNX formats")
        path = self.path("onnx")
        key = _digest({"step": "export", "toolkit": __version__, "inputs": self._source_inputs(),
                       "settings": {"corner_pool": "plugin", "decode": "none", "size": "family default"}})

        def make(out):
            from ..exporter import export_onnx
            from ..runtime.backends import open_backend
            # the model the torch rows run (an architecture name: the same seeded weights)
            with open_backend(self.model, arch=self.arch) as source:
                export_onnx(model=source.net, output=out, progress=self.progress)
        return self._make(path, key, make, "the FP32 export")

    def _calibration(self) -> list:
        from ..quantize import select_calibration_images
        if not self.calib:
            raise UserError("no calibration images: give --calib (images like the ones the model "
                            "will see, not the evaluation set)")
        return select_calibration_images(self.calib, self.calib_images)

    def _onnx_int8(self) -> Path:
        images = self._calibration()
        source = self.get(self.NEEDS["onnx-int8"])
        path = self.path("onnx-int8")
        key = _digest({"step": "quantize", "toolkit": __version__, "source": sha256_file(source),
                       "calibration": [sha256_file(p) for p in images],
                       "settings": {"method": "minmax", "num_images": self.calib_images}})

        def make(out):
            from ..quantize import quantize_onnx
            quantize_onnx(source, [str(p) for p in images], out, num_images=len(images),
                          progress=self.progress, show_bar=self.progress is not None)
        return self._make(path, key, make, f"INT8, calibrated on {len(images)} images")

    def _engine(self, precision: str) -> Path:
        from ..tensorrt.builder import build_engine
        source = self.get(self.NEEDS[f"engine-{precision}"])
        path = self.path(f"engine-{precision}")
        key = _digest({"step": "build", "toolkit": __version__, "source": sha256_file(source),
                       "precision": precision})
        return self._make(path, key, lambda out: build_engine(source, out, precision=precision,
                                                              progress=self.progress),
                          f"TensorRT {precision} engine")

    def _engine_fp32(self):
        return self._engine("fp32")

    def _engine_fp16(self):
        return self._engine("fp16")

    def _engine_int8(self):
        return self._engine("int8")


# ----------------------------------------------------------------------------------------------
# evaluation and memory, one child process per format
# ----------------------------------------------------------------------------------------------

def _peak_rss_mib() -> float:
    """This process's peak resident memory. Linux: ``VmHWM`` of /proc/self/status, the high-water
    mark of this program's own memory; not ``ru_maxrss``, which Linux carries over from the parent
    through fork and exec (every child of a 450 MiB parent would report at least 450 MiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10)    # bytes on macOS, KiB elsewhere


def _child(job: dict) -> dict:
    """In the child: evaluate one format (or, without ``model``, only read the dataset)."""
    import time

    from ..evaluation import evaluate
    from ..runtime.detector import Detector

    start = time.perf_counter()
    if job.get("model") is None:
        import contextlib
        import io

        from pycocotools.coco import COCO
        with contextlib.redirect_stdout(io.StringIO()):
            COCO(job["data"])
        return {"peak_rss_mib": _peak_rss_mib()}
    detector = Detector.load(job["model"], **job["options"])
    metrics = evaluate(detector, job["data"], job["images"], job["max_images"], job["progress"],
                       job["match"], note=lambda m: print(f"note: {m}", file=sys.stderr))
    metrics.pop("summary", None)
    return {"metrics": metrics, "peak_rss_mib": _peak_rss_mib(), "seconds": time.perf_counter() - start}


def _run_child(job: dict) -> dict:
    """Run ``_child(job)`` in a fresh interpreter; ``{"error": line}`` when it could not."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-m", "cornernet_deploy.profiling.benchmark"],
                          input=json.dumps(job), stdout=subprocess.PIPE, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        return {"error": f"the evaluation process ended with status {proc.returncode} without a "
                         "result (its messages are above)"}
    return result


def _child_main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        result = _child(job)
    except UserError as exc:
        result = {"error": str(exc)}
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# checks before any work
# ----------------------------------------------------------------------------------------------

def select_formats(names: Sequence[str], devices: Sequence[str]) -> List[Format]:
    """``FORMATS`` named in ``names`` (all when empty), on ``devices`` (all when empty)."""
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise UserError(f"unknown format '{unknown[0]}' (choose {', '.join(FORMAT_NAMES)})")
    chosen = [f for f in FORMATS if (not names or f.name in names) and (not devices or f.device in devices)]
    if not chosen:
        raise UserError(f"no format of {', '.join(names)} runs on {', '.join(devices)}")
    return chosen


def model_classes(model, arch=None):
    """(class names, category ids) of a checkpoint, architecture name or export, read without
    running anything, for the dataset check."""
    from ..contract.arch import ARCHS
    text = str(model)
    if not Path(text).suffix and text.lower() in ARCHS:
        spec = ARCHS[text.lower()]
        return spec.class_names, spec.category_ids
    path = Path(text)
    if not path.is_file():
        raise UserError(f"{text}: no such file, and not an architecture name ({', '.join(ARCHS)})")
    if path.suffix.lower() == ".onnx":
        from ..onnx_files import load_export
        _, metadata = load_export(path)
        return metadata.class_names, metadata.category_ids
    from ..runtime.backends import registry
    if not registry.backend_for(path).can("arch_names"):    # the backend of checkpoints
        raise UserError(f"{text}: benchmark prepares the formats from a checkpoint (.pt/.pth/.pkl), an "
                        "architecture name or an FP32 .onnx export")
    from ..errors import require_torch
    require_torch("benchmarking a checkpoint")
    from ..models.checkpoint import spec_from_checkpoint
    try:
        spec = spec_from_checkpoint(path, arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return spec.class_names, spec.category_ids


def check_dataset(model, data, images, match: str = "name", arch=None):
    """The dataset exists, is COCO, and its categories pair with the model's classes (as ``eval``
    pairs them); one-line UserErrors. Returns the image ids in evaluation order."""
    import contextlib
    import io
    from types import SimpleNamespace

    from ..evaluation import match_categories

    data, images = Path(data), Path(images)
    if not data.is_file():
        raise UserError(f"{data}: no such annotation file")
    if not images.is_dir():
        raise UserError(f"{images}: no such image folder")
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise UserError("benchmark needs pycocotools: pip install pycocotools") from None
    names, ids = model_classes(model, arch)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(data))
        match_categories(SimpleNamespace(class_names=names, category_ids=ids), gt, data, match)
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise UserError(f"{data}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    ids = sorted(gt.getImgIds())
    if not ids:
        raise UserError(f"{data}: no images")
    return gt, ids


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------

def _file_bytes(path) -> Optional[int]:
    """Bytes of a model file (an IR: .xml + .bin; an architecture name: None)."""
    path = Path(str(path))
    if not path.is_file():
        return None
    size = path.stat().st_size
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def _reference(rows: List[dict], reference: Optional[str]) -> str:
    """The reference row: ``reference``, else ``DEFAULT_REFERENCE``, else the first that runs;
    UserError when it cannot run (or nothing can)."""
    runnable = [r["format"] for r in rows if r["status"] == "ok"]
    if not runnable:
        raise UserError("no format can run here: " + "; ".join(f"{r['format']}: {r['reason']}" for r in rows))
    name = reference or (DEFAULT_REFERENCE if DEFAULT_REFERENCE in runnable else runnable[0])
    if name not in runnable:
        raise UserError(f"the reference format {name} cannot run here: "
                        + next(r["reason"] for r in rows if r["format"] == name))
    return name


def run_benchmark(model, data, images, *, formats: Sequence[Format] = FORMATS, folder="benchmark_artifacts",
                  calib=None, calib_images: int = 100, reference: Optional[str] = None,
                  threads: Optional[int] = None, max_images: Optional[int] = None,
                  timing_images: int = 8, warmup: int = 3, iters: int = 20, match: str = "name",
                  arch=None, progress: Optional[Callable[[str], None]] = None,
                  eval_progress: bool = False) -> dict:
    """Prepare, evaluate and time ``formats`` of ``model`` (see the module docstring); the report."""
    from ..runtime.backends import open_backend, registry
    from ..runtime.images import read_image
    from .profile import build_report, environment, profile_backends

    if reference is not None and reference not in [f.name for f in formats]:
        raise UserError(f"--reference {reference} is not among the formats benchmarked "
                        f"({', '.join(f.name for f in formats)})")
    gt, image_ids = check_dataset(model, data, images, match, arch)
    artifacts = Artifacts(model, folder, calib=calib, calib_images=calib_images, arch=arch,
                          progress=progress)
    artifacts.check_folder([fmt.source for fmt in formats])
    rows: List[dict] = []
    for fmt in formats:
        row = {"format": fmt.name, "title": fmt.title, "backend": fmt.backend, "device": fmt.device,
               "precision": fmt.precision, "provider": fmt.provider}
        info = registry.get(fmt.backend)
        problem = info.device_check(fmt.device) if info.device_check else None
        try:
            if problem:
                raise UserError(problem)
            path = artifacts.get(fmt.source)
            row.update(status="ok", file=str(path), file_bytes=_file_bytes(path))
        except UserError as exc:
            row.update(status="unavailable", reason=str(exc))
        rows.append(row)

    ref_name = _reference(rows, reference)
    runnable = [r for r in rows if r["status"] == "ok"]
    baseline = _run_child({"data": str(data)})
    evaluated = min(len(image_ids), max_images or len(image_ids))
    for k, row in enumerate(runnable):
        fmt = _BY_NAME[row["format"]]
        _say(progress, f"[{k + 1}/{len(runnable)}] evaluating {fmt.name} on {evaluated} images")
        result = _run_child({"model": row["file"], "options": fmt.open_options(threads),
                             "data": str(data), "images": str(images), "max_images": max_images,
                             "match": match, "progress": eval_progress})
        if "error" in result:
            row.update(status="unavailable", reason=result["error"])
            continue
        metrics = result["metrics"]
        row.update(metrics={m: metrics[m] for m in METRICS}, detections=metrics["detections"],
                   images=metrics["images"], peak_rss_mib=result["peak_rss_mib"],
                   eval_seconds=result["seconds"])
        _say(progress, f"    AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  peak "
                       f"{result['peak_rss_mib']:.0f} MiB")

    ref_name = _reference(rows, ref_name)
    runnable = [r for r in rows if r["status"] == "ok"]
    opened = []
    try:
        for row in runnable:
            fmt = _BY_NAME[row["format"]]
            opened.append(open_backend(row["file"], **fmt.open_options(threads), arch=arch))
            row["label"] = opened[-1].label
        pictures = [read_image(Path(images) / gt.loadImgs(i)[0]["file_name"])
                    for i in image_ids[:timing_images]]
        _say(progress, f"timing {len(opened)} formats side by side: {warmup} warm-up + {iters} "
                       f"iterations over {len(pictures)} images of the dataset")
        timed = profile_backends(opened, pictures, batch=1, warmup=warmup, iters=iters,
                                 native=True, progress=progress)
    finally:
        for backend in opened:
            backend.close()
    settings = {"batch": 1, "warmup": warmup, "iters": iters, "images": str(images),
                "num_images": len(pictures), "flip": False, "native_preprocess": True}
    profiled = build_report(timed, settings)
    for row, entry in zip(runnable, profiled["results"]):
        row.update(describe={k: entry[k] for k in ("label", "model", "backend", "provider", "device",
                                                   "precision", "arch", "decode", "threads", "timing")},
                   stages=entry["stages"], throughput_ips=entry["throughput_ips"])

    ref = next(r for r in runnable if r["format"] == ref_name)
    ref_e2e = ref["stages"]["end_to_end"]["median"]
    for row in runnable:
        row["delta"] = {m: 100.0 * (row["metrics"][m] - ref["metrics"][m]) for m in ("AP", "AP50")}
        row["speedup"] = ref_e2e / row["stages"]["end_to_end"]["median"]
    env = environment()
    return {
        "schema": REPORT_SCHEMA, "format": REPORT_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": env["machine"], "versions": env["versions"],
        "settings": {"model": str(model), "data": str(data), "images": str(images),
                     "num_images": evaluated, "calib": [str(c) for c in calib or []],
                     "calib_images": calib_images, "artifacts": str(folder), "reference": ref_name,
                     "threads": threads, "timing_images": len(pictures), "warmup": warmup,
                     "iters": iters, "batch": 1, "flip": False, "match_classes": match},
        "units": {"latency": "ms", "memory": "MiB", "file": "bytes", "delta": "AP points (x100)"},
        "memory": {"method": MEMORY_METHOD, "baseline_mib": baseline.get("peak_rss_mib")},
        "speedup_definition": "reference end-to-end median / this row's end-to-end median (above 1: faster)",
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------
# presenting it
# ----------------------------------------------------------------------------------------------

_TOP = {"schema": str, "format": int, "created": str, "machine": dict, "versions": dict,
        "settings": dict, "memory": dict, "rows": list}
_OK_ROW = {"format": str, "title": str, "backend": str, "device": str, "status": str, "file": str,
           "metrics": dict, "delta": dict, "stages": dict, "throughput_ips": (int, float),
           "speedup": (int, float), "peak_rss_mib": (int, float), "label": str}


def validate_benchmark(report: dict) -> None:
    """Raise ``ValueError`` listing every way ``report`` departs from docs/benchmark.md."""
    from .report import _check_keys
    problems: List[str] = []
    _check_keys(report, _TOP, "report", problems)
    if problems:
        raise ValueError("; ".join(problems))
    if (report["schema"], report["format"]) != (REPORT_SCHEMA, REPORT_FORMAT):
        problems.append(f"report: schema/format must be {REPORT_SCHEMA} / {REPORT_FORMAT}")
    if report["settings"].get("reference") not in [r.get("format") for r in report["rows"]]:
        problems.append("settings.reference: not a row")
    for i, row in enumerate(report["rows"]):
        where = f"rows[{i}]"
        if row.get("status") == "unavailable":
            if not isinstance(row.get("reason"), str) or not row["reason"]:
                problems.append(f"{where}.reason: a runnable row or a reason")
            continue
        _check_keys(row, _OK_ROW, where, problems)
        for m in METRICS:
            v = (row.get("metrics") or {}).get(m)
            if v is None and m in SIZE_METRICS:         # eval: no objects of that size in the data
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                problems.append(f"{where}.metrics.{m}: expected a number in [0, 1]"
                                + (" or null" if m in SIZE_METRICS else ""))
        for stage in ("preprocess", "inference", "postprocess", "end_to_end"):
            s = (row.get("stages") or {}).get(stage)
            if not isinstance(s, dict) or not all(isinstance(s.get(k), (int, float)) for k in ("median", "p90")):
                problems.append(f"{where}.stages.{stage}: expected median and p90")
    if problems:
        raise ValueError("; ".join(problems))


def write_json(path, report: dict) -> None:
    validate_benchmark(report)
    write_json_atomic(path, report, indent=1)      # strict JSON: a non-finite number is null


def _mb(n) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}"


def benchmark_table(report: dict):
    """The runnable rows as one rich ``Table``."""
    from rich.table import Table
    from rich.text import Text

    from .report import fmt_ms

    ref = report["settings"]["reference"]
    table = Table(title=f"{report['settings']['model']}: accuracy on {report['settings']['num_images']} "
                        f"images, latency over {report['settings']['iters']} interleaved iterations "
                        f"(ms, median / p90); deltas and speed-up vs {ref}", header_style="bold")
    for col in ("format", "file MB", "AP", "AP50", "APs", "APm", "APl", "ΔAP", "ΔAP50",
                "end to end", "network", "img/s", "peak MiB", "speed-up"):
        table.add_column(col, justify="left" if col == "format" else "right",
                         no_wrap=col != "format")
    for row in report["rows"]:
        if row["status"] != "ok":
            continue
        m, d, s = row["metrics"], row["delta"], row["stages"]

        def lat(stage):
            x = s.get(stage)
            return f"{fmt_ms(x['median'])} / {fmt_ms(x['p90'])}" if x else "-"

        table.add_row(Text(row["format"] + (" (ref)" if row["format"] == ref else "")),
                      _mb(row.get("file_bytes")),
                      *("-" if m[k] is None else f"{m[k]:.4f}" for k in ("AP", "AP50", "APs", "APm", "APl")),
                      f"{d['AP']:+.2f}", f"{d['AP50']:+.2f}", lat("end_to_end"), lat("inference"),
                      f"{row['throughput_ips']:.1f}", f"{row['peak_rss_mib']:.0f}", f"{row['speedup']:.2f}x")
    return table


def unavailable_table(report: dict):
    """The rows that could not run here, with the reason; None when every row ran."""
    from rich.table import Table
    from rich.text import Text

    rows = [r for r in report["rows"] if r["status"] != "ok"]
    if not rows:
        return None
    table = Table(title="Not run on this machine", header_style="bold")
    table.add_column("format", no_wrap=True)
    table.add_column("why", overflow="fold")
    for r in rows:
        table.add_row(r["format"], Text(r["reason"]))
    return table


def _log_ticks(lo: float, hi: float) -> List[float]:
    """1-2-5 ticks between ``lo`` and ``hi``."""
    ticks = []
    for exp in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1):
        ticks += [m * 10.0 ** exp for m in (1, 2, 5) if lo <= m * 10.0 ** exp <= hi]
    return ticks


def render_plot(report: dict) -> np.ndarray:
    """AP against end-to-end median latency (log scale), one labelled point per runnable row
    (BGR image)."""
    import cv2

    rows = [r for r in report["rows"] if r["status"] == "ok"]
    lat = [max(r["stages"]["end_to_end"]["median"], 1e-3) for r in rows]
    ap = [r["metrics"]["AP"] for r in rows]
    width, height, left, right, top, bottom = 900, 560, 80, 230, 60, 70
    img = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    x_lo, x_hi = min(lat) / 1.5, max(lat) * 1.5
    y_lo, y_hi = min(ap), max(ap)
    pad = max((y_hi - y_lo) * 0.15, 0.01)
    y_lo, y_hi = max(0.0, y_lo - pad), min(1.0, y_hi + pad)

    def xy(t, a):
        u = (np.log10(t) - np.log10(x_lo)) / (np.log10(x_hi) - np.log10(x_lo))
        return (int(left + (width - left - right) * u),
                int(height - bottom - (height - top - bottom) * (a - y_lo) / max(y_hi - y_lo, 1e-9)))

    cv2.rectangle(img, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for t in _log_ticks(x_lo, x_hi):
        x, _ = xy(t, y_lo)
        cv2.line(img, (x, height - bottom), (x, height - bottom + 5), (0, 0, 0), 1)
        cv2.putText(img, f"{t:g}", (x - 10, height - bottom + 20), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for k in range(5):
        a = y_lo + (y_hi - y_lo) * k / 4
        _, y = xy(x_lo, a)
        cv2.putText(img, f"{a:.3f}", (left - 60, y + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "end-to-end median latency (ms, log scale)", (left + 130, height - 25), font, 0.55,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "AP (COCO [.5:.95]) against latency, one point per format", (left, 35), font,
                0.6, (0, 0, 0), 1, cv2.LINE_AA)
    colours = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
               (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23)]
    for k, (r, t, a) in enumerate(zip(rows, lat, ap)):
        x, y = xy(t, a)
        colour = colours[k % len(colours)]
        cv2.circle(img, (x, y), 6, colour, -1, cv2.LINE_AA)
        cv2.putText(img, str(k + 1), (x + 8, y - 6), font, 0.45, colour, 1, cv2.LINE_AA)
        cv2.putText(img, f"{k + 1} {r['format']}", (width - right + 12, top + 18 + 20 * k), font, 0.45,
                    colour, 1, cv2.LINE_AA)
    cv2.putText(img, f"{report['machine'].get('cpu', '')}  |  {report['created']}", (10, height - 6),
                font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    return img


def write_plot(path, report: dict) -> None:
    from .report import write_png
    write_png(path, render_plot(report))


if __name__ == "__main__":      # the evaluation child (``_run_child``)
    sys.exit(_child_main())
