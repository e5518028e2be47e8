"""TensorRT backend: a serialized engine from ``cornernet-deploy build`` plus its manifest.

Buffers are allocated once for the engine's largest batch: device memory (cudaMalloc), pinned host
memory (cudaMallocHost) and a private stream. ``run`` copies in, enqueues, copies out and waits;
``run_timed`` does the same with CUDA events between the stages (``h2d``, ``inference``, ``d2h``). Engines are
specific to a GPU model and a TensorRT version: a mismatch is refused with a clear message, not a
deserialisation crash. No torch.
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np

from ...errors import UserError
from .base import CUDA_EVENTS, Backend


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"
    timing = CUDA_EVENTS

    def __init__(self, path, plugin_library=None, device: int = 0, check_compatibility: bool = True):
        from ...tensorrt.builder import import_tensorrt, make_logger, manifest_path
        from ...tensorrt.cuda import check, cudart, device_info
        from ...tensorrt.plugin_build import load_plugin_library

        path = Path(path)
        if not path.is_file():
            raise UserError(f"engine not found: {path}")
        mpath = manifest_path(path)
        if not mpath.is_file():
            raise UserError(f"{path} has no manifest ({mpath.name}); engines must be built with "
                            "`cornernet-deploy build`")
        try:
            self.manifest = json.loads(mpath.read_text())
            self.metadata = self.manifest["metadata"]
        except (ValueError, KeyError):
            raise UserError(f"{mpath} is not a cornernet-deploy engine manifest") from None

        trt = import_tensorrt()
        self.trt, self.rt, self._check = trt, cudart(), check
        if check_compatibility:
            built_trt, here = self.manifest.get("tensorrt_version"), trt.__version__
            if built_trt != here:
                raise UserError(f"{path} was built with TensorRT {built_trt}, this machine has {here}: "
                                "rebuild it here with `cornernet-deploy build`")
            gpu = device_info(device)
            built_gpu = self.manifest.get("gpu", {})
            if (built_gpu.get("name"), built_gpu.get("compute_capability")) != (gpu["name"], gpu["compute_capability"]):
                raise UserError(f"{path} was built for {built_gpu.get('name')} (sm {built_gpu.get('compute_capability')}), "
                                f"this GPU is {gpu['name']} (sm {gpu['compute_capability']}): rebuild it here")
        check(self.rt.cudaSetDevice(device))
        load_plugin_library(trt, plugin_library or self._plugin_path())
        self._log: list = []
        self.runtime = trt.Runtime(make_logger(trt, self._log))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not deserialize {path}: " + " ".join(self._log[-3:]))
        self.context = self.engine.create_execution_context()
        self.path = path
        self.precision = self.manifest.get("precision", "fp32")
        self.input_name = self.manifest["input"]["name"]
        min_shape, max_shape = self.manifest["input"]["min"], self.manifest["input"]["max"]
        self.input_hw = tuple(max_shape[2:])
        self.max_batch = max_shape[0]
        self.static_batch = min_shape[0] == max_shape[0]
        self.output_names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)
                             if self.engine.get_tensor_mode(self.engine.get_tensor_name(i)) == trt.TensorIOMode.OUTPUT]
        self.stream = check(self.rt.cudaStreamCreate())
        self._allocate(tuple(max_shape))
        self._events = [check(self.rt.cudaEventCreate()) for _ in range(4)]

    def _plugin_path(self):
        from ...tensorrt.plugin_build import find_plugin_library
        recorded = Path(self.manifest.get("plugin_library", ""))
        return recorded if recorded.is_file() else find_plugin_library()

    def _allocate(self, max_input_shape):
        """Device and pinned host buffers for the largest batch, bound to the context once."""
        trt, check, rt = self.trt, self._check, self.rt
        self.context.set_input_shape(self.input_name, max_input_shape)
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
        self.context.set_input_shape(self.input_name, tuple(batch.shape))
        inp = self.buffers[self.input_name]
        data = np.ascontiguousarray(batch, dtype=inp["dtype"])
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
