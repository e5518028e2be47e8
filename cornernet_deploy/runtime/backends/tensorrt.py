"""TensorRT backend: a serialized engine from ``cornernet-deploy build`` plus its manifest.

Buffers are allocated once for the engine's largest batch: device memory (cudaMalloc), pinned host
memory (cudaMallocHost) and a private stream. ``run`` copies in, enqueues, copies out and waits;
``run_timed`` does the same with CUDA events between the stages (``h2d``, ``inference``, ``d2h``). Engines are
specific to a GPU model and a TensorRT version: a mismatch is refused with a clear message, not a
deserialisation crash. No torch.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ...contract.manifest import EngineManifest
from ...contract.precision import EXPORT_PRECISIONS
from ...errors import UserError, warn
from ...fileio import sha256_file
from . import registry
from .base import CUDA_EVENTS, Backend


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"
    timing = CUDA_EVENTS

    def __init__(self, path, plugin_library=None, device: int = 0, check_compatibility: bool = True):
        # the runtime's TensorRT pieces, not the engine builder: the runtime never imports onnx
        from ..cuda import check, cudart, device_info
        from ..plugin_library import load_plugin_library
        from ..tensorrt_common import create_runtime, import_tensorrt, make_logger

        path = Path(path)
        if not path.is_file():
            raise UserError(f"engine not found: {path}")
        self.manifest = EngineManifest.load(path)
        self.model_metadata = self.manifest.metadata
        self.metadata = self.model_metadata.raw

        trt = import_tensorrt("Runtime")
        self.trt, self.rt, self._check = trt, cudart(), check
        if check_compatibility:
            built_trt, here = self.manifest.tensorrt_version, trt.__version__
            if built_trt != here:
                raise UserError(f"{path} was built with TensorRT {built_trt}, this machine has {here}: "
                                "rebuild it here with `cornernet-deploy build`")
            gpu = device_info(device)
            built_gpu = self.manifest.gpu
            if (built_gpu.get("name"), built_gpu.get("compute_capability")) != (gpu["name"], gpu["compute_capability"]):
                raise UserError(f"{path} was built for {built_gpu.get('name')} (sm {built_gpu.get('compute_capability')}), "
                                f"this GPU is {gpu['name']} (sm {gpu['compute_capability']}): rebuild it here")
        try:
            check(self.rt.cudaSetDevice(device))
        except RuntimeError as exc:
            raise UserError(f"cannot use CUDA device {device} ({exc}): no usable GPU or driver?") from None
        library = Path(plugin_library) if plugin_library else self._plugin_path()
        self._warn_if_plugin_changed(library)
        load_plugin_library(trt, library)
        self._log: list = []
        self._logger = make_logger(trt, self._log)  # must outlive the runtime: TensorRT keeps a bare pointer
        # TensorRT hands back a Runtime even when CUDA failed to initialise; create_runtime checks the log.
        self.runtime = create_runtime(trt, self._logger, self._log)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not deserialize {path}: " + " ".join(self._log[-3:]))
        self.context = self.engine.create_execution_context()
        if self.context is None:  # e.g. out of device memory for the activations
            raise UserError(f"TensorRT could not create an execution context for {path}: "
                            + (" ".join(self._log[-3:]) or "no reason given (out of GPU memory?)"))
        self.path = path
        self.precision = self.manifest.precision
        self.input_name = self.manifest.input_name
        max_shape = self.manifest.input_max
        self.input_hw = self.manifest.input_hw
        self.max_batch = self.manifest.max_batch
        self._min_batch = self.manifest.min_batch
        self.static_batch = self.manifest.static_batch
        self.output_names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
                             if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]
        # non-blocking: our copies and kernels never wait on (nor hold up) the legacy default stream
        self.stream = check(self.rt.cudaStreamCreateWithFlags(getattr(self.rt, "cudaStreamNonBlocking", 0x01)))
        self._allocate(tuple(max_shape))
        self._events = [check(self.rt.cudaEventCreate()) for _ in range(4)]

    def _plugin_path(self):
        """The library recorded at build time if it is still there and made for this TensorRT major,
        else the one ``plugin build`` made for this major."""
        from ..plugin_library import find_plugin_library, plugin_library_tensorrt_version
        from ..tensorrt_common import tensorrt_major
        major = tensorrt_major(self.trt)
        recorded = Path(self.manifest.plugin_library or "")
        version = plugin_library_tensorrt_version(recorded) if recorded.is_file() else None
        if version is not None and int(version.split(".")[0]) == major:
            return recorded
        return find_plugin_library(tensorrt_major=major)

    def _warn_if_plugin_changed(self, library: Path) -> None:
        built_with = self.manifest.plugin_sha256
        if built_with and library.is_file() and sha256_file(library) != built_with:
            warn(f"{library} is not the plugin library {self.manifest.plugin_library} the engine was built "
                 "with (different SHA-256); it must implement the same CornerPool, or rebuild the engine")

    def _set_input_shape(self, shape) -> None:
        if not self.context.set_input_shape(self.input_name, tuple(int(d) for d in shape)):
            raise UserError(f"TensorRT refused input shape {tuple(shape)} for {self.input_name} (the engine's "
                            f"profile: {list(self.manifest.input_min)} .. {list(self.manifest.input_max)})")

    def _allocate(self, max_input_shape):
        """Device and pinned host buffers for the largest batch, bound to the context once."""
        trt, check, rt = self.trt, self._check, self.rt
        self._set_input_shape(max_input_shape)
        self.buffers = {}
        for name in [self.input_name] + self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            device = check(rt.cudaMalloc(max(nbytes, 1)))
            host_ptr = check(rt.cudaMallocHost(max(nbytes, 1)))
            host = np.ctypeslib.as_array((ctypes.c_byte * max(nbytes, 1)).from_address(int(host_ptr)))
            self.buffers[name] = {"device": device, "host_ptr": host_ptr, "host": host, "dtype": dtype,
                                  "max_shape": shape}
            self.context.set_tensor_address(name, int(device))

    def _enqueue(self, batch: np.ndarray, events: bool):
        rt, check = self.rt, self._check
        kind_h2d = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        n = batch.shape[0]
        if n > self.max_batch:
            raise UserError(f"batch of {n} exceeds the engine's maximum of {self.max_batch}")
        if tuple(batch.shape[2:]) != self.input_hw:
            raise UserError(f"the engine takes {self.input_hw[0]}x{self.input_hw[1]} inputs, got {batch.shape[2:]}")
        if self.static_batch and n != self.max_batch:
            raise UserError(f"the engine takes exactly {self.max_batch} images per batch")
        if n < self._min_batch:
            raise UserError(f"batch of {n} is below the engine's minimum of {self._min_batch} (build with "
                            "--min-batch 1 to run smaller batches)")
        self._set_input_shape(batch.shape)
        inp = self.buffers[self.input_name]
        data = self.network_batch(batch)
        if data.dtype != inp["dtype"]:
            raise UserError(f"{self.path}: the engine's input is {inp['dtype']}, its manifest says "
                            f"{self.input_dtype}; rebuild it with `cornernet-deploy build`")
        inp["host"][: data.nbytes] = data.view(np.int8).reshape(-1)
        if events:
            check(rt.cudaEventRecord(self._events[0], self.stream))
        check(rt.cudaMemcpyAsync(inp["device"], inp["host_ptr"], data.nbytes, kind_h2d, self.stream))
        if events:
            check(rt.cudaEventRecord(self._events[1], self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed: " + " ".join(self._log[-3:]))
        if events:
            check(rt.cudaEventRecord(self._events[2], self.stream))
        shapes = {}
        for name in self.output_names:
            buf = self.buffers[name]
            shape = tuple(self.context.get_tensor_shape(name))
            nbytes = int(np.prod(shape)) * buf["dtype"].itemsize
            check(rt.cudaMemcpyAsync(buf["host_ptr"], buf["device"], nbytes, kind_d2h, self.stream))
            shapes[name] = (shape, nbytes)
        if events:
            check(rt.cudaEventRecord(self._events[3], self.stream))
        check(rt.cudaStreamSynchronize(self.stream))
        outputs = {}
        for name, (shape, nbytes) in shapes.items():
            buf = self.buffers[name]
            outputs[name] = buf["host"][:nbytes].view(buf["dtype"]).reshape(shape).copy()
        return outputs

    def run(self, batch: np.ndarray) -> dict:
        return self._enqueue(batch, events=False)

    def run_timed(self, batch: np.ndarray):
        """(outputs, {"h2d": ms, "inference": ms, "d2h": ms}) measured with CUDA events on our stream."""
        outputs = self._enqueue(batch, events=True)
        ev, check, rt = self._events, self._check, self.rt
        stages = {"h2d": check(rt.cudaEventElapsedTime(ev[0], ev[1])),
                  "inference": check(rt.cudaEventElapsedTime(ev[1], ev[2])),
                  "d2h": check(rt.cudaEventElapsedTime(ev[2], ev[3]))}
        return outputs, stages

    def layer_profile(self, batch: np.ndarray, iterations: int = 10) -> list:
        """[(layer name, mean ms)] from TensorRT's per-layer profiler, slowest first."""
        trt = self.trt
        times: dict = {}

        class Profiler(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name, ms):
                times.setdefault(layer_name, []).append(ms)

        self.context.profiler = Profiler()
        try:
            for _ in range(iterations):
                self.run(batch)
        finally:
            self.context.profiler = None
        return sorted(((k, float(np.mean(v))) for k, v in times.items()), key=lambda kv: -kv[1])

    def close(self):
        rt = getattr(self, "rt", None)
        if rt is None:
            return
        for buf in getattr(self, "buffers", {}).values():
            rt.cudaFree(buf["device"])
            rt.cudaFreeHost(buf["host_ptr"])
        self.buffers = {}
        for ev in getattr(self, "_events", []):
            rt.cudaEventDestroy(ev)
        self._events = []
        if getattr(self, "stream", None) is not None:
            rt.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def tensorrt_available():
    """(True, version) when ``import tensorrt`` works, else (False, the reason): for skip reasons
    and messages; importing this module does not import TensorRT."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or a broken install raising OSError on its libraries
        return False, f"tensorrt is not importable ({type(exc).__name__}: {exc})"
    return True, getattr(trt, "__version__", "?")


def device_problem(device: str):
    """Why TensorRT cannot run here (not installed, no GPU), or None."""
    from ..cuda import gpu_status
    from ..tensorrt_common import import_tensorrt
    try:
        import_tensorrt("Runtime")
    except UserError as exc:
        return str(exc)
    ok, why = gpu_status()
    return None if ok else why


def _open(model, *, device=None, precision=None, plugin_library=None, **_ignored):
    engine = TensorRTBackend(model, plugin_library=plugin_library)
    if precision and precision != engine.precision:
        engine.close()
        raise UserError(f"{model} is an {engine.precision} engine; rebuild it for {precision}")
    return engine


def _describe(path):
    """An engine's manifest (the engine itself is not deserialized: no TensorRT needed)."""
    from ...contract.metadata import printable
    m = EngineManifest.load(path)
    gpu = m.gpu.get("name")
    cc = m.gpu.get("compute_capability")
    short = (lambda sha: sha[:16] + "..." if sha else "not recorded")
    rows = [("file", "TensorRT engine (its manifest)"),
            ("TensorRT", printable(m.tensorrt_version or "not recorded")),
            ("GPU", printable(f"{gpu or '?'}" + (f" (compute capability {cc})" if cc else ""))),
            ("precision", m.precision + (", strongly typed" if m.strongly_typed else "")
             + ("" if m.tf32 is None else f", tf32 {'on' if m.tf32 else 'off'}")),
            ("input profile", f"{m.input_name}: min {list(m.input_min)}, opt {list(m.input_opt)}, "
                              f"max {list(m.input_max)}"),
            ("plugin", printable(f"{m.plugin_library or 'not recorded'}"
                                 + (f" (TensorRT {m.plugin_tensorrt_version} headers)" if m.plugin_tensorrt_version else "")
                                 + f", sha256 {short(m.plugin_sha256)}")),
            ("corner pools", f"{len(m.corner_pool_layers)} plugin layers"),
            ("built", printable(f"{m.built or '?'} from {m.onnx or '?'}"
                                + (f" (sha256 {short(m.onnx_sha256)})" if m.onnx_sha256 else ""))),
            ("engine sha256", short(m.engine_sha256))]
    described = dict(m.metadata.describe())
    rows += [(k, described[k]) for k in ("decode", "corner pool", "classes", "outputs", "test", "quantization")]
    return m.metadata, rows


registry.register(registry.BackendInfo(
    name="tensorrt", opener=_open, describer=_describe, suffixes=(".engine", ".plan", ".trt"), runs="a TensorRT .engine",
    aliases=("trt",), devices=("cuda",), default_device="cuda", precisions=EXPORT_PRECISIONS,
    capabilities=frozenset({"timed_copies", "layer_profile"}), serving="tensorrt_plan",
    file_noun="engine", device_check=device_problem))
