"""ONNX -> TensorRT engine, with every corner pool on our plugin, FP32 or FP16 on TensorRT 10 and 11.

Precision (see ``tensorrt-notes`` §4): TensorRT 11 removed weak typing (``BuilderFlag.FP16``);
every network is strongly typed and runs in the types the ONNX file has. So:

- ONNX exported with ``--precision fp16`` (FP16 network, float32 input/outputs, in-graph decode on
  float32 heat maps): built strongly typed on TensorRT 10 and 11 alike: one path for JetPack 6
  (10.3) and 11.x. This is the recommended FP16 route.
- ONNX in FP32 + ``--precision fp16``: TensorRT 10 only, with the FP16 builder flag (TensorRT picks
  per layer; our plugin declares FP16 support); TensorRT 11 refuses and says to export in FP16.

Artifacts, each written only when complete: the engine, ``NAME.manifest.json`` (TensorRT version,
GPU, precision, shapes, plugin and ONNX hashes, and the export metadata the runtime needs) and
``NAME.build.log``.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..fileio import write_bytes_atomic, write_text_atomic
from ..onnx_function import DOMAIN, OP_TYPE, strip_corner_pool_function

MANIFEST_FORMAT = 1


def manifest_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.stem + ".manifest.json")


def log_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.stem + ".build.log")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU)") from None
    if not hasattr(trt, "Builder"):
        raise UserError("the installed 'tensorrt' package has no builder (a lean/dispatch runtime or a stub)")
    return trt


def tensorrt_major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def make_logger(trt, lines: list, echo_level=None):
    """A TensorRT logger that keeps every message (for the build log) and echoes warnings+."""
    echo_level = trt.Logger.WARNING if echo_level is None else echo_level

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            lines.append(f"[{str(severity).split('.')[-1]}] {msg}")
            if int(severity) <= int(echo_level):
                print(f"TensorRT {str(severity).split('.')[-1].lower()}: {msg}")

    return CollectingLogger()


def _progress_monitor(trt):
    """Console progress of the build phases (TensorRT >= 10 ``IProgressMonitor``)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.start = time.perf_counter()

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                print(f"  [{time.perf_counter() - self.start:6.1f} s] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            pass

    return Monitor()


@dataclass
class BuildResult:
    engine: Path
    manifest: dict
    seconds: float


def _corner_pool_nodes(model) -> list:
    return [n for n in model.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN]


def count_plugin_layers(trt, network) -> int:
    plugin_types = {getattr(trt.LayerType, n) for n in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN") if hasattr(trt.LayerType, n)}
    return sum(network.get_layer(i).type in plugin_types for i in range(network.num_layers))


def check_plugin_layers(expected_nodes: list, plugin_layers: int) -> None:
    """Every CornerPool node must have become a plugin layer (not an inlined function body)."""
    if plugin_layers != len(expected_nodes):
        names = ", ".join(n.name for n in expected_nodes[:4])
        raise UserError(f"{len(expected_nodes)} CornerPool nodes ({names}) but {plugin_layers} plugin layers "
                        "after parsing: the parser did not map every corner pool to the cornernet_deploy plugin")


def build_engine(onnx_path, output=None, *, precision: str = "fp32", min_batch: int | None = None,
                 opt_batch: int | None = None, max_batch: int | None = None, input_size=None,
                 workspace_mb: int = 1024, timing_cache=None, plugin_library=None,
                 progress=print) -> BuildResult:
    import onnx

    from ..exporter import parse_hw, read_metadata
    from .cuda import device_info
    from .plugin_build import find_plugin_library, load_plugin_library

    start = time.perf_counter()
    onnx_path = Path(onnx_path)
    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"--precision must be fp32, fp16 or int8, not {precision!r}")
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    try:
        model = onnx.load(str(onnx_path))
    except Exception:
        raise UserError(f"{onnx_path} is not an ONNX model") from None
    metadata = read_metadata(model)
    if metadata is None:
        raise UserError(f"{onnx_path} was not exported by cornernet-deploy (no metadata); use `cornernet-deploy export`")
    nodes = _corner_pool_nodes(model)
    onnx_precision = metadata.get("precision", "fp32")

    # shapes: batch from the flags (dynamic exports) or the file; H, W from the file or --input-size
    static_batch = metadata.get("batch")
    if static_batch is not None:
        if any(b not in (None, static_batch) for b in (min_batch, opt_batch, max_batch)):
            raise UserError(f"{onnx_path} has a static batch of {static_batch}; export with --dynamic-batch "
                            "to build for other batch sizes")
        min_batch = opt_batch = max_batch = static_batch
    else:
        max_batch = max_batch or opt_batch or 1
        opt_batch = opt_batch or max_batch
        min_batch = min_batch or 1
        if not (1 <= min_batch <= opt_batch <= max_batch):
            raise UserError(f"batch sizes must satisfy 1 <= min ({min_batch}) <= opt ({opt_batch}) <= max ({max_batch})")
    if metadata.get("input_hw"):
        hw = tuple(metadata["input_hw"])
        if input_size and parse_hw(input_size) != hw:
            raise UserError(f"{onnx_path} takes {hw[0]}x{hw[1]} inputs; export with --dynamic-size for other sizes")
    else:
        hw = parse_hw(input_size) if input_size else tuple(metadata["spec"]["input_size"])
    output = Path(output or Path("engines") / f"{onnx_path.stem}_{precision}.engine")

    if (precision == "int8") != (onnx_precision == "int8"):  # INT8 = explicit Q/DQ (TensorRT 11 has no other)
        raise UserError(f"{onnx_path} is an INT8 (Q/DQ) model; build it with --precision int8"
                        if onnx_precision == "int8" else
                        f"{onnx_path} is a float model; quantize it first (`cornernet-deploy quantize "
                        f"{onnx_path} --calib IMAGES`) and build the INT8 model it writes")

    trt = import_tensorrt()
    major = tensorrt_major(trt)
    strongly_typed = major >= 11 or onnx_precision == "fp16"
    if precision == "fp16" and onnx_precision == "fp32" and major >= 11:
        raise UserError(f"TensorRT {trt.__version__} builds only strongly typed networks: export an FP16 "
                        "model (`cornernet-deploy export --precision fp16`) and build that")
    if precision == "fp32" and onnx_precision == "fp16":
        raise UserError(f"{onnx_path} is an FP16 export; build it with --precision fp16")

    log_lines: list = []
    logger = make_logger(trt, log_lines)
    plugin_path = Path(plugin_library) if plugin_library else find_plugin_library()
    load_plugin_library(trt, plugin_path)
    progress(f"TensorRT {trt.__version__}, plugin {plugin_path}")

    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and major < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "ENABLE_PLUGIN_OVERRIDE"):
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)  # 10.15+: plugins beat builtins
    # Up to TensorRT 10.6 a same-named local function always wins over a plugin: parse without ours.
    strip_corner_pool_function(model)
    progress(f"parsing {onnx_path} ({len(nodes)} CornerPool nodes)")
    if not parser.parse(model.SerializeToString(), str(onnx_path.parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    check_plugin_layers(nodes, count_plugin_layers(trt, network))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8" and not strongly_typed:  # TensorRT 10: Q/DQ layers need the INT8 flag; FP16 for the rest
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    input_name = metadata["input_name"]
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (min_batch, 3, *hw), (opt_batch, 3, *hw), (max_batch, 3, *hw))
    config.add_optimization_profile(profile)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    progress(f"building {precision} engine for batch {min_batch}..{max_batch} at {hw[0]}x{hw[1]} "
             "(minutes on a large model)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        tail = "; ".join(line for line in log_lines if line.startswith(("[ERROR]", "[INTERNAL_ERROR]")))[-600:]
        write_text_atomic(log_path(output), "\n".join(log_lines) + "\n")
        raise UserError(f"TensorRT engine build failed: {tail or 'see ' + str(log_path(output))}")
    engine_bytes = bytes(serialized)
    if timing_cache:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))

    gpu = device_info()
    manifest = {
        "format": MANIFEST_FORMAT, "toolkit_version": __version__,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tensorrt_version": trt.__version__, "gpu": gpu, "precision": precision,
        "strongly_typed": strongly_typed,
        "input": {"name": input_name, "min": [min_batch, 3, *hw], "opt": [opt_batch, 3, *hw], "max": [max_batch, 3, *hw]},
        "outputs": metadata["outputs"], "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "plugin_library": str(plugin_path), "plugin_sha256": sha256_file(plugin_path),
        "onnx": str(onnx_path), "onnx_sha256": sha256_file(onnx_path),
        "metadata": {**metadata, "input_hw": list(hw), "batch": None if min_batch != max_batch else max_batch},
    }
    write_text_atomic(log_path(output), "\n".join(log_lines) + "\n")
    write_text_atomic(manifest_path(output), json.dumps(manifest, indent=1))
    write_bytes_atomic(output, engine_bytes)  # last: an engine never exists without its manifest
    seconds = time.perf_counter() - start
    progress(f"wrote {output} ({len(engine_bytes) / 1e6:.1f} MB) in {seconds:.1f} s; manifest {manifest_path(output)}")
    return BuildResult(output, manifest, seconds)
