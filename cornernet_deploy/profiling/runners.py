"""Model runners for ``profile`` and ``compare``: one interface over PyTorch, ONNX Runtime and
TensorRT, with a timed call that splits host-to-device copy, inference and device-to-host copy.

``open_runner(model, backend=None, device=None, precision=None, ...)`` picks the backend from the
model argument (``.onnx`` -> onnxruntime, ``.engine``/``.plan``/``.trt`` -> tensorrt, a
checkpoint ``.pt``/``.pth``/``.pkl`` or an architecture name -> torch). Every runner has:

* ``label``, ``model``, ``backend``, ``device``, ``precision``, ``timing`` (clock used for the
  device stages), ``threads`` (None = the library's default);
* ``spec`` (``ArchSpec``), ``mean``, ``std``, ``class_names``, ``decode`` ("none" | "graph"),
  ``input_hw`` (fixed (H, W) or None), ``max_batch`` / ``static_batch``, ``metadata`` (the ONNX
  metadata dict, or the equivalent for a checkpoint);
* ``run(batch) -> {name: array}`` and ``run_timed(batch) -> (outputs, {"h2d", "inference", "d2h"})``
  in ms (``h2d``/``d2h`` None where the backend works in host memory);
* ``session()``: a context manager to wrap calls in (applies per-runner thread settings).

Importing this module imports neither torch nor TensorRT: each is imported when a runner for it
is opened.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import UserError
from ..zoo import ARCHS, COCO_MEAN_BGR, COCO_STD_BGR
from .timers import CUDA_EVENTS, HOST_CLOCK, ms_between, now_ns

__all__ = ["BACKENDS", "DEVICES", "PRECISIONS", "Runner", "open_runner", "infer_backend",
           "parse_list", "ONNX_SUFFIXES", "ENGINE_SUFFIXES", "CHECKPOINT_SUFFIXES"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pkl")
_BACKEND_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "pytorch": "torch", "trt": "tensorrt"}

Timings = Dict[str, Optional[float]]


def parse_list(values, allowed, what: str):
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (order kept, duplicates dropped), each checked
    against ``allowed`` with a one-line ``UserError``."""
    out = []
    for value in values or ():
        for item in str(value).split(","):
            item = item.strip().lower()
            if not item:
                continue
            item = _BACKEND_ALIASES.get(item, item) if what == "backend" else item
            if item not in allowed:
                raise UserError(f"unknown {what} '{item}' (choose {', '.join(allowed)})")
            if item not in out:
                out.append(item)
    return out


def infer_backend(model: str) -> str:
    """The backend that runs ``model`` (a file or an architecture name)."""
    suffix = Path(model).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnxruntime"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    if suffix in CHECKPOINT_SUFFIXES or model.lower() in ARCHS:
        return "torch"
    if not Path(model).exists():
        raise UserError(f"{model}: no such file, and not an architecture name "
                        f"({', '.join(ARCHS)})")
    raise UserError(f"{model}: unknown model type '{suffix or Path(model).name}' (expected .onnx, a "
                    f"TensorRT .engine, a checkpoint .pt/.pth/.pkl, or an architecture name)")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: is not a file")


class Runner:
    """Common attributes and helpers; subclasses implement ``run`` and ``run_timed``."""

    backend = "?"
    timing = HOST_CLOCK

    def __init__(self, model: str, device: str, precision: str):
        self.model, self.device, self.precision = str(model), device, precision
        self.threads: Optional[int] = None
        self.static_batch = False
        self.max_batch: Optional[int] = None
        self.input_hw: Optional[Tuple[int, int]] = None

    # filled by subclasses: spec, mean, std, class_names, decode, metadata
    @property
    def label(self) -> str:
        name = Path(self.model).name if Path(self.model).suffix else self.model
        threads = f", {self.threads} thr" if self.threads else ""
        return f"{name} [{self.backend}/{self.device}/{self.precision}{threads}]"

    @property
    def arch(self) -> str:
        return self.spec.name

    @contextlib.contextmanager
    def session(self):
        yield self

    def run(self, batch: np.ndarray) -> dict:
        return self.run_timed(batch)[0]

    def run_timed(self, batch: np.ndarray):
        raise NotImplementedError

    def describe(self) -> dict:
        """JSON-ready description of this runner (part of the profile/compare reports)."""
        return {
            "label": self.label, "model": self.model, "backend": self.backend,
            "device": self.device, "precision": self.precision, "arch": self.spec.name,
            "num_classes": self.spec.num_classes, "decode": self.decode,
            "input_hw": list(self.input_hw) if self.input_hw else None,
            "static_batch": self.max_batch if self.static_batch else None,
            "threads": self.threads, "timing": self.timing,
        }

    def close(self) -> None:
        pass

    def _adopt_backend(self, impl) -> None:
        """Take model description and shapes from a runtime backend (its export metadata)."""
        from ..runtime.pipeline import spec_from_metadata
        spec, extras = spec_from_metadata(impl.metadata)
        self.spec, self.metadata = spec, impl.metadata
        self.mean, self.std = extras["mean"], extras["std"]
        self.class_names = extras["class_names"]
        self.decode = extras["decode"] or "none"
        self.input_hw = impl.input_hw
        self.max_batch = impl.max_batch


# ----------------------------------------------------------------------------------------------
# PyTorch (imports torch; never used by the runtime)
# ----------------------------------------------------------------------------------------------

class TorchRunner(Runner):
    """A checkpoint, or an architecture name with random weights (seeded: the same name always
    gives the same weights). CPU: host clock; CUDA: events on a dedicated stream, input copied
    from pinned host memory, outputs copied back into pinned buffers."""

    backend = "torch"

    def __init__(self, model: str, device: str = "cpu", precision: str = "fp32",
                 threads: Optional[int] = None, arch: Optional[str] = None, seed: int = 0,
                 input_hw=None):
        super().__init__(model, device, precision)
        try:
            import torch
        except ModuleNotFoundError:
            raise UserError("the torch backend needs PyTorch (pip install 'cornernet-deploy[torch]')") from None
        from ..runtime.backends.pytorch import PyTorchBackend

        self.torch = torch
        if precision == "fp16" and device != "cuda":
            raise UserError("fp16 with the torch backend needs --device cuda (PyTorch has no fast "
                            "half-precision convolutions on the CPU)")
        is_arch = model.lower() in ARCHS and not Path(model).suffix
        if not is_arch:
            _check_file(Path(model))
        # the runtime's PyTorch backend builds and loads the network (one place for that)
        reference = PyTorchBackend(None if is_arch else model, arch=model if is_arch else arch,
                                   device=device, precision=precision, seed=seed)
        spec, net = reference.spec, reference.model
        self.spec = spec
        self.threads = int(threads) if threads else None
        self.dtype = reference.dtype
        self.torch_device = reference.device
        self.net = net
        self.mean, self.std = COCO_MEAN_BGR, COCO_STD_BGR
        self.class_names = tuple(spec.class_names)
        self.decode = "none"
        self.input_hw = tuple(int(s) for s in input_hw) if input_hw else None
        self.metadata = {"arch": spec.name, "decode": "none", "precision": precision,
                         "input_hw": list(self.input_hw) if self.input_hw else None,
                         "source": "random weights (seed %d)" % seed if is_arch else "checkpoint"}
        if device == "cuda":
            self.timing = CUDA_EVENTS
            self.stream = torch.cuda.Stream(self.torch_device)
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            self._pinned_in = None
            self._pinned_out: dict = {}

    @contextlib.contextmanager
    def session(self):
        if self.threads is None:
            yield self
            return
        previous = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        try:
            yield self
        finally:
            self.torch.set_num_threads(previous)

    def run_timed(self, batch: np.ndarray):
        torch = self.torch
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.device == "cpu":
            with torch.inference_mode():
                t0 = now_ns()
                heads = self.net(torch.from_numpy(batch).to(self.dtype))
                out = {k: v.float().numpy() for k, v in heads.items()}
                t1 = now_ns()
            return out, {"h2d": None, "inference": ms_between(t0, t1), "d2h": None}
        # CUDA: everything on our own stream, timed by events recorded on it
        if self._pinned_in is None or self._pinned_in.shape != batch.shape:
            self._pinned_in = torch.empty(batch.shape, dtype=torch.float32).pin_memory()
        self._pinned_in.numpy()[...] = batch          # host staging copy (not a device stage)
        e0, e1, e2, e3 = self.events
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            e0.record(self.stream)
            x = self._pinned_in.to(self.torch_device, non_blocking=True)
            e1.record(self.stream)
            heads = self.net(x.to(self.dtype))
            heads = {k: v.float() for k, v in heads.items()}
            e2.record(self.stream)
            outs = {}
            for k, v in heads.items():
                buf = self._pinned_out.get(k)
                if buf is None or buf.shape != v.shape:
                    buf = self._pinned_out[k] = torch.empty(v.shape, dtype=torch.float32).pin_memory()
                buf.copy_(v, non_blocking=True)
                outs[k] = buf
            e3.record(self.stream)
        self.stream.synchronize()
        times = {"h2d": e0.elapsed_time(e1), "inference": e1.elapsed_time(e2),
                 "d2h": e2.elapsed_time(e3)}
        return {k: v.numpy().copy() for k, v in outs.items()}, times


# ----------------------------------------------------------------------------------------------
# ONNX Runtime
# ----------------------------------------------------------------------------------------------

class OnnxRuntimeRunner(Runner):
    """``OnnxRuntimeBackend`` of the runtime. CPU: one timed ``session.run``. CUDA (the CUDA
    execution provider): input/outputs bound on the device with ``io_binding``, so the copy in,
    the run and the copy out are timed apart (host clock; each of these ORT calls is synchronous)."""

    backend = "onnxruntime"

    def __init__(self, model: str, device: str = "cpu", precision: Optional[str] = None,
                 threads: Optional[int] = None):
        path = Path(model)
        _check_file(path)
        import onnxruntime as ort

        from ..runtime.backends.onnxruntime import OnnxRuntimeBackend

        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("--device cuda with onnxruntime needs the CUDA execution provider "
                                "(pip install onnxruntime-gpu); available: "
                                + ", ".join(ort.get_available_providers()))
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.ort = ort
        self.impl = OnnxRuntimeBackend(path, providers=providers, threads=threads)
        file_precision = self.impl.metadata.get("precision", "fp32")
        if precision and precision != file_precision:
            raise UserError(f"{path} is an {file_precision} model; --precision {precision} applies to "
                            f"the torch backend (export with --precision {precision} for such an ONNX)")
        super().__init__(model, device, file_precision)
        self.threads = int(threads) if threads else None
        self._adopt_backend(self.impl)
        self.static_batch = self.max_batch is not None

    def run_timed(self, batch: np.ndarray):
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.device == "cpu":
            t0 = now_ns()
            out = self.impl.run(batch)
            t1 = now_ns()
            return out, {"h2d": None, "inference": ms_between(t0, t1), "d2h": None}
        ort, sess = self.ort, self.impl.session
        binding = sess.io_binding()
        t0 = now_ns()
        x = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        t1 = now_ns()
        binding.bind_ortvalue_input(self.metadata["input_name"], x)
        for name in self.impl.output_names:
            binding.bind_output(name, "cuda")
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = now_ns()
        values = binding.copy_outputs_to_cpu()
        t3 = now_ns()
        return (dict(zip(self.impl.output_names, values)),
                {"h2d": ms_between(t0, t1), "inference": ms_between(t1, t2), "d2h": ms_between(t2, t3)})


# ----------------------------------------------------------------------------------------------
# TensorRT
# ----------------------------------------------------------------------------------------------

class TensorRTRunner(Runner):
    """A TensorRT engine built by ``cornernet-deploy build`` (with its manifest), through the
    runtime's ``TensorRTBackend``: its ``run_timed`` times the stages with CUDA events on the
    backend's own stream; ``layer_profile`` uses the engine's ``IProfiler``."""

    backend = "tensorrt"
    timing = CUDA_EVENTS

    def __init__(self, model: str, device: Optional[str] = "cuda", precision: Optional[str] = None,
                 threads: Optional[int] = None):
        path = Path(model)
        _check_file(path)
        if device not in (None, "cuda"):
            raise UserError("TensorRT engines run on a CUDA GPU: use --device cuda (or leave it out)")
        from .tensorrt import open_engine_runner
        self.impl = open_engine_runner(path)
        file_precision = self.impl.metadata.get("precision", "fp32")
        if precision and precision != file_precision:
            raise UserError(f"{path} is an {file_precision} engine; rebuild it for {precision}")
        super().__init__(model, "cuda", file_precision)
        self._adopt_backend(self.impl)
        self.static_batch = self.impl.static_batch

    def run_timed(self, batch: np.ndarray):
        return self.impl.run_timed(np.ascontiguousarray(batch, dtype=np.float32))

    def layer_profile(self, batch: np.ndarray, runs: int = 10) -> dict:
        return self.impl.layer_profile(np.ascontiguousarray(batch, dtype=np.float32), runs=runs)

    def close(self) -> None:
        close = getattr(self.impl, "close", None)
        if close:
            close()


def open_runner(model: str, backend: Optional[str] = None, device: Optional[str] = None,
                precision: Optional[str] = None, threads: Optional[int] = None,
                arch: Optional[str] = None, input_hw=None) -> Runner:
    """Open ``model`` with ``backend`` (default: from the model argument)."""
    model = str(model)
    natural = infer_backend(model)
    backend = backend or natural
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}' (choose {', '.join(BACKENDS)})")
    if backend != natural:
        kinds = {"torch": "a checkpoint (.pt/.pth/.pkl) or an architecture name",
                 "onnxruntime": "an .onnx file", "tensorrt": "a TensorRT .engine"}
        raise UserError(f"{model}: the {backend} backend runs {kinds[backend]}; this is "
                        f"{kinds[natural]} (backend {natural})")
    if device is not None and device not in DEVICES:
        raise UserError(f"unknown device '{device}' (choose {', '.join(DEVICES)})")
    if precision is not None and precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}' (choose {', '.join(PRECISIONS)})")
    if backend == "torch":
        return TorchRunner(model, device or "cpu", precision or "fp32", threads=threads, arch=arch,
                           input_hw=input_hw)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(model, device or "cpu", precision, threads=threads)
    return TensorRTRunner(model, device, precision, threads=threads)
