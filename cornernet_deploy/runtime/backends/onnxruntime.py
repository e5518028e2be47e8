"""ONNX Runtime backend: the CPU, CUDA or TensorRT execution provider.

The input is the export's (``input_dtype``: normalised float32, or uint8 pixels that the graph
normalises: a quarter of the bytes to copy to the GPU).

* ``cpu`` (default): ``session.run`` on host arrays; ``run_timed`` is the host clock around it.
* ``cuda`` (``onnxruntime-gpu``): input and outputs bound on the GPU with ``io_binding``: the input
  is copied to the device once, the outputs stay there until they are copied back, and
  ``run_timed`` times the three apart on the host clock (each of these ORT calls returns only
  when its work is done).
* ``tensorrt`` (``onnxruntime-gpu`` >= 1.22 built with TensorRT, plus TensorRT's libraries): ORT's
  TensorRT provider builds an engine from the model and runs it, with the CUDA provider behind
  it for anything it does not take. Our corner pools reach TensorRT as the plugin: the backend
  registers our library in TensorRT's plugin registry before the session starts
  (``register_plugin_for_provider``: ONNX Runtime itself only ``dlopen``s
  ``trt_extra_plugin_lib_paths`` and never asks the library for its creators), the provider
  declares every registered creator as an op of the ``trt.plugins`` domain (IPluginV3 creators
  such as ours from 1.22 on: ``check_tensorrt_provider``), and the session gets a copy of the
  model whose CornerPool nodes are in that domain and whose standard-op function body is removed
  (``onnx_function.retarget_corner_pool_to_tensorrt_ep``). docs/tensorrt.md ("ONNX Runtime's TensorRT provider") says
  what of this was checked against which sources. Engines and the timing cache are kept
  in ``cache_dir`` (default ``$XDG_CACHE_HOME/cornernet_deploy/onnxruntime-tensorrt``; a folder per
  model file content, since the provider's own cache key ignores the weights). ``precision="fp16"``
  asks the provider for an FP16 engine of an FP32 model (``trt_fp16_enable``; TensorRT 10 only).

A provider that is not installed, or that ONNX Runtime could not start (no GPU, missing CUDA or
TensorRT libraries: ORT would silently fall back to the CPU), is a one-line error naming what to
install. No torch.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from pathlib import Path
from typing import List, Optional

import numpy as np

from ...contract.op import CORNER_POOL
from ...contract.metadata import METADATA_KEY, check_graph_outputs, parse_metadata, read_metadata
from ...contract.precision import EXPORT_PRECISIONS
from ...errors import UserError
from ...fileio import user_cache_dir
from . import registry
from .base import Backend, ms_between, now_ns

__all__ = ["OnnxRuntimeBackend", "EXECUTION_PROVIDERS", "provider_chain", "default_cache_dir",
           "register_plugin_for_provider", "check_tensorrt_provider", "TENSORRT_PROVIDER_MIN_VERSION"]

_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}   # input dtype -> ORT's type
EXECUTION_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                       "tensorrt": "TensorrtExecutionProvider"}
_INSTALL = {
    "cuda": "pip install onnxruntime-gpu (in place of onnxruntime; it needs a CUDA GPU and the CUDA "
            "and cuDNN versions that release was built for)",
    "tensorrt": "pip install 'onnxruntime-gpu>=1.22' and the tensorrt its TensorRT provider was built for "
                "(in place of onnxruntime; 1.22-1.26: CUDA 12 builds, 1.27 on: CUDA 13, all with "
                "TensorRT 10; docs/tensorrt.md, \"ONNX Runtime's TensorRT provider\")",
}
# The first ONNX Runtime whose TensorRT provider lists IPluginV3 creators (IPluginRegistry::
# getAllCreators; up to 1.21 it calls getPluginCreatorList, which lists IPluginV2 creators only).
TENSORRT_PROVIDER_MIN_VERSION = (1, 22)
# The provider library of an onnxruntime-gpu wheel (onnxruntime/capi/), whose DT_NEEDED says which
# TensorRT major it was built for.
_TENSORRT_PROVIDER_LIBRARY = "libonnxruntime_providers_tensorrt.so"


def default_cache_dir() -> Path:
    return user_cache_dir("onnxruntime-tensorrt")


def provider_chain(provider: str, available: List[str], *, device_id: int = 0,
                   tensorrt_options: Optional[dict] = None) -> list:
    """The ``providers`` argument of an ORT session for ``provider`` (cpu | cuda | tensorrt), each
    GPU provider backed by the next (TensorRT -> CUDA -> CPU) for nodes it does not take; a
    UserError naming the package to install when ``available`` (``ort.get_available_providers()``)
    lacks one of them."""
    order = {"cpu": ["cpu"], "cuda": ["cuda", "cpu"], "tensorrt": ["tensorrt", "cuda", "cpu"]}[provider]
    chain = []
    for p in order:
        ep = EXECUTION_PROVIDERS[p]
        if ep not in available:
            raise UserError(f"ONNX Runtime on '{provider}' needs its {ep}, which this installation "
                            f"lacks (it has {', '.join(available) or 'none'}): {_INSTALL[p]}")
        if p == "tensorrt":
            chain.append((ep, dict(tensorrt_options or {}, device_id=device_id)))
        elif p == "cuda":
            chain.append((ep, {"device_id": device_id}))
        else:
            chain.append(ep)
    return chain


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX Runtime is not installed: pip install onnxruntime (CPU) or "
                        "onnxruntime-gpu (CUDA / TensorRT)") from None
    return ort


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path, provider: Optional[str] = None, device: Optional[str] = None,
                 precision: Optional[str] = None, threads: Optional[int] = None,
                 plugin_library=None, cache_dir=None, device_id: int = 0):
        ort = _import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file (model not found)")
        provider = provider or ("cuda" if device == "cuda" else "cpu")
        if device == "cpu" and provider != "cpu":
            raise UserError(f"--device cpu contradicts --provider {provider} (a GPU provider)")
        self._ort, self.path, self.provider = ort, path, provider
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.device_id = int(device_id)
        self.threads = int(threads) if threads else None
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 4      # fatal only: our errors say what failed, in one line
        available = ort.get_available_providers()
        provider_chain(provider, available)     # is it installed? (before any other work)
        model_source = str(path)
        tensorrt_options = None
        if provider == "tensorrt":
            model_source, tensorrt_options = self._tensorrt_session_model(path, precision,
                                                                          plugin_library, cache_dir)
        chain = provider_chain(provider, available, device_id=self.device_id,
                               tensorrt_options=tensorrt_options)
        try:
            self.session = ort.InferenceSession(model_source, options, providers=chain)
        except Exception as exc:  # ORT raises its own exception types for every bad file
            if provider == "tensorrt":
                raise UserError(f"ONNX Runtime's TensorRT provider could not run {path}: "
                                f"{_first_line(exc)} ({_INSTALL['tensorrt']})") from None
            raise UserError(f"{path} is not a loadable ONNX model: {_first_line(exc)}") from None
        wanted = EXECUTION_PROVIDERS[provider]
        if wanted not in self.session.get_providers():
            raise UserError(f"ONNX Runtime could not start its {wanted} (it fell back to "
                            f"{', '.join(self.session.get_providers())}): {_INSTALL[provider]}")
        if provider != "tensorrt":
            raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
            self.model_metadata = parse_metadata(raw, path)
            self.metadata = self.model_metadata.raw
            self.precision = self._check_precision(precision, path)
        # decoding a 3-class heat map as 80 classes, or 20 corners as 100, would go wrong later
        types = {"tensor(float)": "float32", "tensor(int64)": "int64"}
        check_graph_outputs({o.name: (types.get(o.type, o.type), o.shape) for o in self.session.get_outputs()},
                            self.model_metadata, path)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name = self.session.get_inputs()[0].name
        graph_input = self.session.get_inputs()[0].type          # "tensor(float)", "tensor(uint8)"
        if graph_input != _ORT_TYPES[self.input_dtype]:
            raise UserError(f"{path}: its metadata says the network takes {self.input_dtype} input, "
                            f"but its graph input is {graph_input}")
        shape = self.session.get_inputs()[0].shape
        self.input_hw = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.max_batch = shape[0] if isinstance(shape[0], int) else None
        self.static_batch = self.max_batch is not None

    # -- precision -------------------------------------------------------------------------------
    def _check_precision(self, precision, path) -> str:
        file_precision = self.model_metadata.precision
        if not precision or precision == file_precision:
            return file_precision
        if self.provider == "tensorrt" and file_precision == "fp32" and precision == "fp16":
            return "fp16"                       # the provider builds an FP16 engine
        raise UserError(f"{path} is an {file_precision} model; --precision {precision} applies to the "
                        f"torch backend and to ONNX Runtime's TensorRT provider (fp16 from an fp32 "
                        f"export); export with --precision {precision} for such an ONNX")

    def _tensorrt_session_model(self, path: Path, precision, plugin_library, cache_dir):
        """(serialized model for the session, TensorRT provider options)."""
        import onnx

        from ...onnx_function import retarget_corner_pool_to_tensorrt_ep
        from ..plugin_library import find_plugin_library, needed_libraries
        from ..tensorrt_common import tensorrt_major

        data = path.read_bytes()
        try:
            model = onnx.load_from_string(data)
        except Exception as exc:
            raise UserError(f"{path} is not a loadable ONNX model: {_first_line(exc)}") from None
        self.model_metadata = read_metadata(model, path)
        self.metadata = self.model_metadata.raw
        self.precision = self._check_precision(precision, path)
        retarget_corner_pool_to_tensorrt_ep(model)
        trt = _import_tensorrt_for_provider()
        provider_library = Path(self._ort.__file__).parent / "capi" / _TENSORRT_PROVIDER_LIBRARY
        check_tensorrt_provider(self._ort.__version__, needed_libraries(provider_library), trt.__version__)
        library = Path(plugin_library) if plugin_library else find_plugin_library(
            tensorrt_major=tensorrt_major(trt))
        register_plugin_for_provider(trt, library)
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        engines = root / f"{path.stem}-{hashlib.sha256(data).hexdigest()[:16]}"
        engines.mkdir(parents=True, exist_ok=True)
        options = {"trt_extra_plugin_lib_paths": str(library),
                   "trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines),
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(root),
                   "trt_fp16_enable": self.precision == "fp16"}
        self.cache_dir = engines
        return model.SerializeToString(), options

    # -- running ---------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> dict:
        batch = self.network_batch(batch)
        if self.device != "cpu":
            return self.run_timed(batch)[0]
        with _allocation_failures_as_memory_error():
            outputs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outputs))

    def run_timed(self, batch: np.ndarray):
        if self.device == "cpu":
            return super().run_timed(batch)
        ort, sess = self._ort, self.session
        batch = self.network_batch(batch)
        binding = sess.io_binding()
        t0 = now_ns()
        x = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.device_id)
        t1 = now_ns()
        binding.bind_ortvalue_input(self.input_name, x)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.device_id)
        with _allocation_failures_as_memory_error():
            sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = now_ns()
        values = binding.copy_outputs_to_cpu()
        t3 = now_ns()
        return (dict(zip(self.output_names, values)),
                {"h2d": ms_between(t0, t1), "inference": ms_between(t1, t2), "d2h": ms_between(t2, t3)})

    def close(self) -> None:
        self.session = None


@contextlib.contextmanager
def _allocation_failures_as_memory_error():
    """ONNX Runtime reports an allocator failure as its own ``Fail`` exception; callers (infer, the
    served model) handle running out of memory as ``MemoryError``, one line naming the image."""
    try:
        yield
    except Exception as exc:
        if "Failed to allocate memory" in str(exc) or "bad_alloc" in str(exc):
            raise MemoryError(f"ONNX Runtime: {_first_line(exc)}") from None
        raise


def _import_tensorrt_for_provider():
    """The ``tensorrt`` module: on a GPU machine the TensorRT whose library ONNX Runtime's TensorRT
    provider loads too (one process, one plugin registry)."""
    try:
        import tensorrt
    except Exception as exc:        # not installed, or a broken install
        raise UserError(f"ONNX Runtime's TensorRT provider needs the tensorrt Python package to "
                        f"register our corner-pool plugin ({type(exc).__name__}: {exc}): "
                        f"{_INSTALL['tensorrt']}") from None
    return tensorrt


def check_tensorrt_provider(ort_version: str, provider_needs: list, tensorrt_version: str) -> None:
    """UserError when ONNX Runtime's TensorRT provider cannot find our plugin: an ONNX Runtime older
    than 1.22 (its provider lists IPluginV2 creators only), or a provider built for another TensorRT
    major than the importable ``tensorrt`` (``provider_needs``: the DT_NEEDED entries of its library,
    e.g. ``libnvinfer.so.10``; the two would load two TensorRT libraries with two plugin registries).
    An empty ``provider_needs`` (a provider library not found where the wheel puts it) is not judged."""
    release = tuple(int(x) for x in re.findall(r"\d+", str(ort_version))[:2])
    if release < TENSORRT_PROVIDER_MIN_VERSION:
        need = ".".join(map(str, TENSORRT_PROVIDER_MIN_VERSION))
        raise UserError(f"ONNX Runtime {ort_version}'s TensorRT provider lists only IPluginV2 creators "
                        f"(getPluginCreatorList), and our CornerPool creator is an IPluginV3 one, listed from "
                        f"ONNX Runtime {need} on: pip install 'onnxruntime-gpu>={need}'")
    majors = sorted({int(n.rsplit(".", 1)[1]) for n in provider_needs
                     if re.fullmatch(r"libnvinfer\.so\.\d+", n)})
    running = int(str(tensorrt_version).split(".")[0])
    if majors and running not in majors:
        raise UserError(f"ONNX Runtime {ort_version}'s TensorRT provider is built for TensorRT {majors[0]} "
                        f"(it links libnvinfer.so.{majors[0]}) but the importable tensorrt is {tensorrt_version}: "
                        f"the provider and our plugin would sit in two TensorRT libraries; install TensorRT "
                        f"{majors[0]}.x for this route ('tensorrt-cu12<{majors[0] + 1}' or "
                        f"'tensorrt-cu13<{majors[0] + 1}', the CUDA major of this onnxruntime-gpu)")


def register_plugin_for_provider(trt, library) -> None:
    """Put our CornerPool creator into TensorRT's plugin registry before the session starts, and
    check that the provider will find it.

    ONNX Runtime only ``dlopen``s the paths of ``trt_extra_plugin_lib_paths`` (its
    ``tensorrt_execution_provider_custom_ops.cc``) and never calls the library's ``getCreators``,
    which is how our default build registers: without this the provider finds no creator and the
    session fails to start (a ``--static-registration`` build registers on that ``dlopen``;
    ``load_plugin_library`` takes both). The provider (>= 1.22) then declares, once per process, the
    names of the registry's ``getAllCreators()`` entries of kind IPluginCreator or
    IPluginCreatorV3One as ``trt.plugins`` ops, and TensorRT's ONNX parser looks a node up with
    ``getCreator(op_type, plugin_version, plugin_namespace)``; both are checked here the same way.
    ``trt``: the tensorrt module, or a lean/dispatch one (as for ``load_plugin_library``)."""
    from ..plugin_library import load_plugin_library
    load_plugin_library(trt, library)
    registry = trt.get_plugin_registry()
    listed = any(isinstance(c, trt.IPluginCreatorV3One) and c.name == CORNER_POOL.plugin_name
                 for c in registry.all_creators)
    if not listed or registry.get_creator(CORNER_POOL.plugin_name, CORNER_POOL.plugin_version,
                                          CORNER_POOL.plugin_namespace) is None:
        raise UserError(f"{library} loaded, but TensorRT's registry lists no IPluginV3 creator "
                        f"{CORNER_POOL.plugin_namespace}::{CORNER_POOL.plugin_name} version "
                        f"{CORNER_POOL.plugin_version} for ONNX Runtime's TensorRT provider to find")


def device_problem(device: str):
    """Why ONNX Runtime cannot run on ``device`` here (its provider is not installed), or None."""
    try:
        ort = _import_onnxruntime()
        provider_chain("cpu" if device == "cpu" else "cuda", ort.get_available_providers())
    except UserError as exc:
        return str(exc)
    return None


def _open(model, *, device=None, precision=None, threads=None, provider=None, plugin_library=None,
          cache_dir=None, **_ignored):
    return OnnxRuntimeBackend(model, provider=provider, device=device, precision=precision,
                              threads=threads, plugin_library=plugin_library, cache_dir=cache_dir)


def _describe(path):
    """An export's metadata and ONNX opset, read with onnx (not run)."""
    from ...onnx_files import load_export
    model, meta = load_export(path, load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return meta, [("file", "ONNX export"), *meta.describe()[:3], ("opset", str(opset)), *meta.describe()[3:]]


registry.register(registry.BackendInfo(
    name="onnxruntime", opener=_open, describer=_describe, suffixes=(".onnx",), runs="an .onnx file", aliases=("ort", "onnx"),
    devices=("cpu", "cuda"), default_device="cpu", providers=tuple(EXECUTION_PROVIDERS),
    precisions=EXPORT_PRECISIONS, capabilities=frozenset({"timed_copies"}), serving="python",
    device_check=device_problem))
