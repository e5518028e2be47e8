"""OpenVINO backend: an .onnx export (``--backend openvino``) or an OpenVINO IR (``.xml`` + ``.bin``)
on OpenVINO's CPU, an Intel GPU or NPU, or AUTO (OpenVINO picks).

* Corner pooling: OpenVINO neither knows our ``cornernet_deploy::CornerPool`` node nor uses the
  model-local function that carries its body, so each node is replaced by the standard-op body of
  its mode before OpenVINO reads the model (``onnx_function.expand_corner_pool_nodes``); the
  ``--corner-pool onnx`` exports need nothing. Both decodes, float and uint8 (``--input uint8``) inputs and the INT8
  Q/DQ models of ``quantize`` are read as they are (OpenVINO runs Q/DQ convolutions in int8).
* Precision: a float (fp32) file runs in the inference precision asked for, ``fp32`` (the
  default; set explicitly: OpenVINO documents bf16 as its CPU default where the CPU computes
  BF16 natively; on the AVX512-BF16 host without AMX this was tested on it compiled f32 anyway),
  ``bf16`` or ``fp16``, where the device lists that capability (``OPTIMIZATION_CAPABILITIES``);
  fp16 and int8 files carry their own precision (on the CPU their float layers run in fp32; on a
  GPU or NPU in the device's default).
* ``threads``: ``INFERENCE_NUM_THREADS`` of the CPU device; latency hint (one stream), one infer
  request reused, ``run_timed`` is the host clock around it (host memory: no copies).
* Compiled-model cache: ``cache_dir`` (default ``$XDG_CACHE_HOME/cornernet_deploy/openvino``;
  where that cannot be made or written, a warning and no cache: it only saves compile time),
  OpenVINO's ``CACHE_DIR``: it keys each blob on the model's content and the device; on the CPU the
  threads and the precision hint are applied when a blob is read back (a bf16 model read from a
  blob an fp32 run wrote computes what a fresh bf16 compile does: tested).
* An IR keeps the export metadata in its ``rt_info`` (OpenVINO copies ONNX ``metadata_props``
  there); ``save_ir`` writes one from any export.

* Signals: OpenVINO's CPU plugin points the calling thread's alternate signal stack at memory of
  its own when it starts, and that memory is unmapped when the plugin is unloaded with its last
  ``Core``; the next Ctrl-C or SIGTERM on that thread then crashed the process (SIGSEGV, openvino
  2026.4.1, after ``compare --backend openvino``). Every entry point here keeps the thread's own
  alternate stack (``signal_stack_kept``).

No torch; ``onnx`` is imported only to read an .onnx file.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from ...contract.metadata import METADATA_KEY, ModelMetadata, parse_metadata
from ...contract.precision import COMPUTE_PRECISIONS
from ...errors import UserError, warn
from ...fileio import user_cache_dir
from . import registry
from .base import Backend

__all__ = ["OpenVinoBackend", "DEVICES", "save_ir", "default_cache_dir", "device_problem",
           "signal_stack_kept"]

# our device names -> OpenVINO's
DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
# our precision names -> OpenVINO's element types (inference precision hint) and capabilities
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_CAPABILITIES = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
_INSTALL = "pip install 'cornernet-deploy[openvino]'"


def default_cache_dir() -> Path:
    return user_cache_dir("openvino")


class _SignalStack(ctypes.Structure):      # stack_t of <signal.h> on Linux (x86-64, aarch64)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SS_ONSTACK = 1


@contextlib.contextmanager
def signal_stack_kept():
    """The calling thread's alternate signal stack (``sigaltstack``) as it was before the block,
    whatever OpenVINO set inside it (see the module doc). Linux only; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(before)) != 0 or before.ss_flags & _SS_ONSTACK:
        yield                    # cannot read it, or running on it (inside a handler): leave it
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)   # SS_DISABLE in ss_flags disables it again


def _keeps_signal_stack(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with signal_stack_kept():
            return function(*args, **kwargs)
    return wrapper


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise UserError(f"OpenVINO is not installed: {_INSTALL}") from None
    return openvino


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # OpenVINO's messages start with "Exception from src/...cpp:NN:" lines; the reason follows
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or [type(exc).__name__])[0][:300]


def _present(core) -> list:
    """Our names of the devices OpenVINO sees ("GPU.0", "GPU.1" -> "gpu")."""
    names = {d.split(".")[0] for d in core.available_devices}
    return [ours for ours, theirs in DEVICES.items() if theirs in names]


@_keeps_signal_stack
def device_problem(device: str) -> Optional[str]:
    """Why OpenVINO cannot use ``device`` here (one line), or None."""
    try:
        ov = _import_openvino()
    except UserError as exc:
        return str(exc)
    if device == "auto":
        return None
    core = ov.Core()
    if device in _present(core):
        return None
    return (f"OpenVINO sees no {DEVICES[device]} on this machine (it sees "
            f"{', '.join(core.available_devices) or 'nothing'})")


def _read_onnx(core, path: Path):
    from ...onnx_files import load_export
    from ...onnx_function import expand_corner_pool_nodes

    model, metadata = load_export(path)
    try:
        expand_corner_pool_nodes(model)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    try:
        return core.read_model(model.SerializeToString(), b""), metadata
    except RuntimeError as exc:
        raise UserError(f"OpenVINO could not read {path}: {_first_line(exc)}") from None


def _read_ir(core, path: Path):
    if not path.with_suffix(".bin").is_file():
        raise UserError(f"{path}: its weights {path.with_suffix('.bin').name} are missing (an IR is "
                        "an .xml and a .bin of the same name)")
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise UserError(f"{path} is not an OpenVINO IR that OpenVINO can read: {_first_line(exc)}") from None
    key = ["framework", METADATA_KEY]
    raw = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else None
    return model, parse_metadata(raw, path)


def read_model(core, path) -> "tuple[object, ModelMetadata]":
    """(``openvino.Model``, ``ModelMetadata``) of an .onnx export or an IR; one-line UserErrors."""
    path = Path(path)
    if path.suffix.lower() == ".xml":
        return _read_ir(core, path)
    return _read_onnx(core, path)


@_keeps_signal_stack
def save_ir(model_path, output) -> Path:
    """Write the OpenVINO IR (``output`` .xml and its .bin) of an .onnx export (any corner-pool
    form) or of another IR; weights stay FP32 (no compression to FP16), the export metadata goes
    along. Both files appear only when complete (the .bin first)."""
    ov = _import_openvino()
    output = Path(output)
    if output.suffix.lower() != ".xml":
        raise UserError(f"{output}: an OpenVINO IR is named NAME.xml (its weights go to NAME.bin)")
    model, _ = read_model(ov.Core(), model_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.stem}.", dir=output.parent) as tmp:
        staged = Path(tmp) / output.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), output.with_suffix(".bin"))
        os.replace(staged, output)
    return output


class OpenVinoBackend(Backend):
    name = "openvino"

    @_keeps_signal_stack
    def __init__(self, path, device: Optional[str] = None, precision: Optional[str] = None,
                 threads: Optional[int] = None, cache_dir=None):
        ov = _import_openvino()
        self.path = Path(path)
        self.device = device or "cpu"
        if self.device not in DEVICES:
            raise UserError(f"OpenVINO runs on {', '.join(DEVICES)}, not {self.device}")
        core = ov.Core()
        problem = device_problem(self.device)
        if problem:
            raise UserError(f"{self.path}: {problem}")
        model, self.model_metadata = read_model(core, self.path)
        self.metadata = self.model_metadata.raw
        self.precision = self._precision(core, precision)
        self.threads = int(threads) if threads else None
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.model_metadata.precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = _HINTS[self.precision]
        elif self.device == "cpu":
            config["INFERENCE_PRECISION_HINT"] = _HINTS["fp32"]     # the float layers around
        if self.threads:
            if self.device != "cpu":
                raise UserError(f"--threads sets OpenVINO's CPU threads; {self.device} takes none")
            config["INFERENCE_NUM_THREADS"] = self.threads
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(self.cache_dir, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable")
            core.set_property({"CACHE_DIR": str(self.cache_dir)})
        except OSError as exc:
            if cache_dir:                   # asked for by name: a mistake to report
                raise UserError(f"OpenVINO's model cache {self.cache_dir}: {exc.strerror}") from None
            # the default one is only a speed-up (a read-only home, a container): run without it
            warn(f"OpenVINO's model cache {self.cache_dir}: {exc.strerror}; compiling without a "
                 "cache (set XDG_CACHE_HOME to a writable folder to keep compiled models)")
            self.cache_dir = None
        try:
            self.compiled = core.compile_model(model, DEVICES[self.device], config)
        except RuntimeError as exc:
            raise UserError(f"OpenVINO could not compile {self.path} for {DEVICES[self.device]}: "
                            f"{_first_line(exc)}") from None
        self.request = self.compiled.create_infer_request()
        wanted = set(self.model_metadata.outputs)
        self.output_names = []
        for port in self.compiled.outputs:
            names = sorted(set(port.names) & wanted)
            if not names:
                raise UserError(f"{self.path}: OpenVINO output {sorted(port.names)} is none of the "
                                f"outputs the metadata lists ({', '.join(self.model_metadata.outputs)})")
            self.output_names.append(names[0])
        shape = self.compiled.inputs[0].get_partial_shape()
        dims = [d.get_length() if d.is_static else None for d in shape]
        self.input_hw = tuple(dims[2:]) if None not in dims[2:] else None
        self.max_batch = dims[0]
        self.static_batch = self.max_batch is not None

    def _precision(self, core, precision) -> str:
        file_precision = self.model_metadata.precision
        if file_precision != "fp32":
            if precision and precision != file_precision:
                raise UserError(f"{self.path} is an {file_precision} model; OpenVINO's --precision "
                                f"({', '.join(COMPUTE_PRECISIONS)}) applies to fp32 files")
            return file_precision
        precision = precision or "fp32"
        if self.device != "auto":
            have = core.get_property(DEVICES[self.device], "OPTIMIZATION_CAPABILITIES")
            if _CAPABILITIES[precision] not in have:
                raise UserError(f"OpenVINO's {DEVICES[self.device]} here has no {precision} "
                                f"arithmetic (it lists {', '.join(have)})")
        return precision

    def run(self, batch: np.ndarray) -> dict:
        self.request.infer({0: self.network_batch(batch)})
        return {name: self.request.get_output_tensor(i).data.copy()
                for i, name in enumerate(self.output_names)}

    def close(self) -> None:
        self.request = None
        self.compiled = None


@_keeps_signal_stack
def _describe(path):
    """An IR's export metadata (read by OpenVINO, not compiled) and its operation count."""
    model, meta = _read_ir(_import_openvino().Core(), Path(path))
    return meta, [("file", "OpenVINO IR (.xml + .bin)"), *meta.describe(),
                  ("operations", str(len(model.get_ordered_ops())))]


def _open(model, *, device=None, precision=None, threads=None, cache_dir=None, **_ignored):
    return OpenVinoBackend(model, device=device, precision=precision, threads=threads,
                           cache_dir=cache_dir)


registry.register(registry.BackendInfo(
    name="openvino", opener=_open, describer=_describe, suffixes=(".xml",), also_opens=(".onnx",),
    runs="an OpenVINO IR (.xml + .bin), or an .onnx export with --backend openvino",
    aliases=("ov",), devices=tuple(DEVICES), default_device="cpu", precisions=COMPUTE_PRECISIONS,
    serving=None, device_check=device_problem))
