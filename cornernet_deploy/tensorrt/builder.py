"""ONNX -> TensorRT engine, with every corner pool on our plugin, FP32 or FP16 on TensorRT 10 and 11.

Precision (see ``tensorrt-notes`` §4): TensorRT 11 removed weak typing (``BuilderFlag.FP16``);
every network is strongly typed and runs in the types the ONNX file has. So:

- ONNX exported with ``--precision fp16`` (FP16 network, float32 input/outputs, in-graph decode on
  float32 heat maps): built strongly typed on TensorRT 10 and 11 alike: one path for JetPack 6
  (10.3) and 11.x. This is the recommended FP16 route.
- ONNX in FP32 + ``--precision fp16``: TensorRT 10 only, with the FP16 builder flag (TensorRT picks
  per layer; our plugin declares FP16 support); TensorRT 11 refuses and says to export in FP16.

FP32 engines: TensorRT may run FP32 convolutions/matmuls in TF32 on Ampere and newer (its default);
``tf32=False`` (``build --no-tf32``) keeps them in full FP32, for comparisons against FP32 references.

Artifacts, each written only when complete: the engine, ``NAME.manifest.json`` (TensorRT version,
GPU, precision, shapes, the plugin library with its hash and TensorRT header version, ONNX hash,
the corner-pool layer names, and the export metadata the runtime needs), ``NAME.build.log`` and,
when asked, the timing cache (after the engine: a cache problem never costs the engine).
Every argument is checked before TensorRT is imported, so mistakes get their own message.
"""
from __future__ import annotations

import datetime
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..contract.arch import parse_hw
from ..contract.manifest import EngineManifest, log_path, manifest_path
from ..contract.metadata import ModelMetadata, parse_metadata
from ..contract.op import CORNER_POOL
from ..contract.precision import ENGINE_PRECISIONS
from ..errors import UserError, warn
from ..fileio import check_not_input, check_output_file, sha256_file, write_bytes_atomic, write_text_atomic
from ..onnx_files import load_export
from ..runtime.tensorrt_common import create_builder, import_tensorrt, make_logger, tensorrt_major

__all__ = ["build_engine", "BuildResult", "BuildPlan", "plan_build", "trtexec_command", "polygraphy_commands",
           "command_target", "write_onnx_for_tensorrt", "onnx_for_tensorrt_path", "polygraphy_data_paths",
           "check_plugin_layers", "plugin_layer_names", "manifest_path", "log_path"]


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
    manifest: EngineManifest
    seconds: float


def _corner_pool_nodes(model) -> list:
    return [n for n in model.graph.node
            if n.op_type == CORNER_POOL.op_type and n.domain == CORNER_POOL.domain]


def plugin_layer_names(trt, network) -> list:
    """Names of the plugin layers of a parsed network. The parser names each layer after its ONNX
    node, and it inserts plugins of its own for some ops, so layers are matched by name, not counted."""
    plugin_types = {getattr(trt.LayerType, n) for n in ("PLUGIN_V3", "PLUGIN_V2", "PLUGIN") if hasattr(trt.LayerType, n)}
    return [layer.name for layer in (network.get_layer(i) for i in range(network.num_layers))
            if layer.type in plugin_types]


def check_plugin_layers(expected_nodes: list, plugin_layers: list) -> None:
    """Every CornerPool node must have become a plugin layer of its own name (not an inlined function
    body); ``plugin_layers`` are the names of the network's plugin layers."""
    present = set(plugin_layers)
    # The parser names a layer after its node, with "_N" appended if the name was already taken
    # (onnx-tensorrt ImporterContext::registerLayer / generateUniqueName).
    suffixed = {name.rsplit("_", 1)[0] for name in present if name.rsplit("_", 1)[-1].isdigit()}
    missing = [n.name for n in expected_nodes if n.name not in present and n.name not in suffixed]
    if missing:
        names = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise UserError(f"{len(missing)} of {len(expected_nodes)} CornerPool nodes did not become plugin layers "
                        f"after parsing ({names}): the parser did not map every corner pool to the "
                        "cornernet_deploy plugin")


def _check_batches(min_batch, opt_batch, max_batch) -> None:
    for name, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        if value is not None and int(value) < 1:
            raise UserError(f"{name} must be at least 1, got {value}")


def _attach_timing_cache(config, cache_path, echo=warn):
    """Give the builder the timing cache in ``cache_path`` (if any). ``create_timing_cache`` may return
    None and ``set_timing_cache`` returns False for a cache of another device/version: then fall back
    to an empty cache with a warning rather than fail after the build."""
    data = Path(cache_path).read_bytes() if cache_path and Path(cache_path).is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None and data:
        echo(f"{cache_path}: TensorRT cannot read this timing cache; starting an empty one")
        data, cache = b"", config.create_timing_cache(b"")
    if cache is None:
        echo("TensorRT could not create a timing cache; building without one")
        return None
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        if not data:
            echo("TensorRT refused an empty timing cache; building without one")
            return None
        echo(f"{cache_path}: timing cache was made on another GPU or TensorRT version; starting an empty one")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            return None
    return cache


def _save_timing_cache(config, cache_path, echo=warn) -> None:
    try:
        cache = config.get_timing_cache()
        if cache is None:
            raise RuntimeError("no timing cache to save")
        write_bytes_atomic(cache_path, bytes(cache.serialize()))
    except Exception as exc:  # the engine is already written; a cache is only a speed-up for next time
        echo(f"could not save the timing cache {cache_path}: {exc}")


@dataclass
class BuildPlan:
    """What an engine build does, decided from the arguments and the ONNX file before TensorRT is
    imported: ``build_engine`` carries it out, ``trtexec_command`` and ``polygraphy_commands`` write
    it as those tools' flags."""
    onnx_path: Path
    output: Path
    precision: str
    onnx_precision: str
    model: object            # the onnx ModelProto
    metadata: ModelMetadata
    nodes: list              # its CornerPool nodes
    min_batch: int
    opt_batch: int
    max_batch: int
    hw: tuple
    workspace_mb: int
    timing_cache: Path | None
    plugin_library: Path | None
    tf32: bool

    @property
    def input_name(self) -> str:
        return self.metadata.input_name

    @property
    def dynamic_input(self) -> bool:
        """Whether the ONNX input has a dynamic dimension (batch or size), so a profile is needed."""
        return self.metadata.batch is None or self.metadata.input_hw is None

    def shapes(self) -> tuple:
        """(min, opt, max) input shapes of the optimization profile."""
        return tuple((b, 3, *self.hw) for b in (self.min_batch, self.opt_batch, self.max_batch))

    def strongly_typed(self, major: int, version: str = "") -> bool:
        """Whether the network is built strongly typed on a TensorRT of this major; UserError for a
        precision that TensorRT cannot build there."""
        if self.precision == "fp16" and self.onnx_precision == "fp32" and major >= 11:
            raise UserError(f"TensorRT {version or major} builds only strongly typed networks: export an "
                            "FP16 model (`cornernet-deploy export --precision fp16`) and build that")
        return major >= 11 or self.onnx_precision == "fp16"

    def precision_flags(self, strongly_typed: bool) -> tuple:
        """``BuilderFlag`` names to set (weakly typed TensorRT 10 only): FP16 lets TensorRT pick FP16
        per layer; INT8 makes the Q/DQ layers run in int8, with FP16 for the rest."""
        if strongly_typed:
            return ()
        return {"fp16": ("FP16",), "int8": ("INT8", "FP16")}.get(self.precision, ())


def plan_build(onnx_path, output=None, *, precision: str = "fp32", min_batch: int | None = None,
               opt_batch: int | None = None, max_batch: int | None = None, input_size=None,
               workspace_mb: int = 1024, timing_cache=None, plugin_library=None,
               tf32: bool = True) -> BuildPlan:
    """Check every argument and the ONNX file (one-line UserErrors) and resolve the shapes."""
    onnx_path = Path(onnx_path)
    if precision not in ENGINE_PRECISIONS:
        raise UserError(f"--precision must be {', '.join(ENGINE_PRECISIONS[:-1])} or "
                        f"{ENGINE_PRECISIONS[-1]}, not {precision!r}")
    _check_batches(min_batch, opt_batch, max_batch)
    if workspace_mb is None or int(workspace_mb) < 1:
        raise UserError(f"--workspace must be at least 1 (MB), got {workspace_mb}")
    output = check_output_file(output or Path("engines") / f"{onnx_path.stem}_{precision}.engine", "--output")
    if timing_cache is not None:
        check_output_file(timing_cache, "--timing-cache")
    if plugin_library is not None and not Path(plugin_library).is_file():
        raise UserError(f"--plugin {plugin_library}: no such file")
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: no such ONNX file")
    inputs = [("the ONNX model", onnx_path), ("--plugin", plugin_library)]
    check_not_input(output, inputs + [("--timing-cache", timing_cache)], "--output")
    for written, what in ((manifest_path(output), "manifest"), (log_path(output), "build log")):
        check_not_input(written, inputs + [("--timing-cache", timing_cache)], "--output",
                        label=f"--output {output}: its {what} is written beside it, as {written}, which")
    if timing_cache is not None:             # read and rewritten: only the others are inputs
        check_not_input(timing_cache, inputs, "--timing-cache")

    requested_hw = parse_hw(input_size) if input_size else None
    model, metadata = load_export(onnx_path)   # no torch, so engines build on a Jetson
    onnx_precision = metadata.precision
    if precision == "fp32" and onnx_precision == "fp16":
        raise UserError(f"{onnx_path} is an FP16 export; build it with --precision fp16")
    if (precision == "int8") != (onnx_precision == "int8"):  # INT8 = explicit Q/DQ (TensorRT 11 has no other)
        raise UserError(f"{onnx_path} is an INT8 (Q/DQ) model; build it with --precision int8"
                        if onnx_precision == "int8" else
                        f"{onnx_path} is a float model; quantize it first (`cornernet-deploy quantize "
                        f"{onnx_path} --calib IMAGES`) and build the INT8 model it writes")

    # shapes: batch from the flags (dynamic exports) or the file; H, W from the file or --input-size
    static_batch = metadata.batch
    if static_batch is not None:
        if any(b not in (None, static_batch) for b in (min_batch, opt_batch, max_batch)):
            raise UserError(f"{onnx_path} has a static batch of {static_batch}; export with --dynamic-batch "
                            "to build for other batch sizes")
        min_batch = opt_batch = max_batch = static_batch
    else:
        max_batch = max_batch if max_batch is not None else (opt_batch if opt_batch is not None else 1)
        opt_batch = opt_batch if opt_batch is not None else max_batch
        min_batch = min_batch if min_batch is not None else 1
        if not (1 <= min_batch <= opt_batch <= max_batch):
            raise UserError(f"batch sizes must satisfy 1 <= min ({min_batch}) <= opt ({opt_batch}) <= max ({max_batch})")
    if metadata.input_hw:
        hw = metadata.input_hw
        if requested_hw and requested_hw != hw:
            raise UserError(f"{onnx_path} takes {hw[0]}x{hw[1]} inputs; export with --dynamic-size for other sizes")
    else:
        hw = requested_hw or tuple(metadata.spec.input_size)
    return BuildPlan(onnx_path=onnx_path, output=Path(output), precision=precision,
                     onnx_precision=onnx_precision, model=model, metadata=metadata,
                     nodes=_corner_pool_nodes(model), min_batch=min_batch, opt_batch=opt_batch,
                     max_batch=max_batch, hw=hw, workspace_mb=int(workspace_mb),
                     timing_cache=Path(timing_cache) if timing_cache else None,
                     plugin_library=Path(plugin_library) if plugin_library else None, tf32=bool(tf32))


def build_engine(onnx_path, output=None, *, precision: str = "fp32", min_batch: int | None = None,
                 opt_batch: int | None = None, max_batch: int | None = None, input_size=None,
                 workspace_mb: int = 1024, timing_cache=None, plugin_library=None, tf32: bool = True,
                 progress=print) -> BuildResult:
    start = time.perf_counter()
    progress = progress or (lambda _msg: None)
    # Everything the user gave is checked before TensorRT is imported.
    plan = plan_build(onnx_path, output, precision=precision, min_batch=min_batch, opt_batch=opt_batch,
                      max_batch=max_batch, input_size=input_size, workspace_mb=workspace_mb,
                      timing_cache=timing_cache, plugin_library=plugin_library, tf32=tf32)
    # from here on, the plan's values (resolved and checked), not the raw arguments
    onnx_path, output, model, metadata, nodes = plan.onnx_path, plan.output, plan.model, plan.metadata, plan.nodes
    min_batch, opt_batch, max_batch, hw = plan.min_batch, plan.opt_batch, plan.max_batch, plan.hw
    precision, tf32, timing_cache = plan.precision, plan.tf32, plan.timing_cache

    from ..onnx_function import strip_corner_pool_function
    from ..runtime.cuda import device_info
    from ..runtime.plugin_library import find_plugin_library, load_plugin_library, plugin_library_tensorrt_version

    trt = import_tensorrt("Builder")
    major = tensorrt_major(trt)
    strongly_typed = plan.strongly_typed(major, trt.__version__)

    log_lines: list = []
    logger = make_logger(trt, log_lines)
    plugin_path = plan.plugin_library or find_plugin_library(tensorrt_major=major)
    load_plugin_library(trt, plugin_path)
    progress(f"TensorRT {trt.__version__}, plugin {plugin_path}")

    builder = create_builder(trt, logger, log_lines)
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and major < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # No ENABLE_PLUGIN_OVERRIDE: the FunctionProtos are stripped below and our nodes carry
    # plugin_namespace, which is enough on every version; the flag would also let any plugin named like
    # an ONNX op replace a builtin.
    # Up to TensorRT 10.6 a same-named local function always wins over a plugin: parse without ours.
    strip_corner_pool_function(model)
    progress(f"parsing {onnx_path} ({len(nodes)} CornerPool nodes)")
    if not parser.parse(model.SerializeToString(), str(onnx_path.parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_path}: {errors}")
    check_plugin_layers(nodes, plugin_layer_names(trt, network))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    for flag in plan.precision_flags(strongly_typed):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    input_name = plan.input_name
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *plan.shapes())
    config.add_optimization_profile(profile)
    if timing_cache:
        _attach_timing_cache(config, timing_cache)

    progress(f"building {precision} engine for batch {min_batch}..{max_batch} at {hw[0]}x{hw[1]} "
             "(minutes on a large model)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        tail = "; ".join(line for line in log_lines if line.startswith(("[ERROR]", "[INTERNAL_ERROR]")))[-600:]
        write_text_atomic(log_path(output), "\n".join(log_lines) + "\n")
        raise UserError(f"TensorRT engine build failed: {tail or 'see ' + str(log_path(output))}")
    engine_bytes = bytes(serialized)

    # the export's metadata with what the engine fixed: its input size, and its batch if static
    built = parse_metadata(dict(metadata.raw, input_hw=list(hw),
                                batch=None if min_batch != max_batch else max_batch), onnx_path)
    manifest = EngineManifest(
        toolkit_version=__version__,
        built=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        tensorrt_version=trt.__version__, gpu=device_info(), precision=precision,
        strongly_typed=strongly_typed, tf32=bool(tf32), input_name=input_name,
        input_min=(min_batch, 3, *hw), input_opt=(opt_batch, 3, *hw), input_max=(max_batch, 3, *hw),
        outputs=metadata.outputs, engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        plugin_library=str(plugin_path), plugin_sha256=sha256_file(plugin_path),
        plugin_tensorrt_version=plugin_library_tensorrt_version(plugin_path),
        corner_pool_layers=tuple(n.name for n in nodes), onnx=str(onnx_path),
        onnx_sha256=sha256_file(onnx_path), metadata=built)
    write_text_atomic(log_path(output), "\n".join(log_lines) + "\n")
    write_text_atomic(manifest_path(output), manifest.to_json())
    write_bytes_atomic(output, engine_bytes)  # after its manifest: an engine never exists without one
    if timing_cache:
        _save_timing_cache(config, timing_cache)
    seconds = time.perf_counter() - start
    progress(f"wrote {output} ({len(engine_bytes) / 1e6:.1f} MB) in {seconds:.1f} s; manifest {manifest_path(output)}")
    return BuildResult(output, manifest, seconds)


# trtexec spells the builder flags so (samples/common/sampleOptions.cpp of 10.3, 10.16, 11.1; 11.x
# removed --fp16/--int8 with weak typing, and strongly typed is its only mode, so no --stronglyTyped)
_TRTEXEC_FLAGS = {"FP16": "--fp16", "INT8": "--int8"}
# and polygraphy so (polygraphy/tools/args/backend/trt/config.py and loader.py of 0.49.0 and 0.53.6)
_POLYGRAPHY_FLAGS = {"FP16": "--fp16", "INT8": "--int8"}


def onnx_for_tensorrt_path(plan: BuildPlan) -> Path:
    """Where ``build --trtexec/--polygraphy`` writes the ONNX for TensorRT: next to the engine."""
    return plan.output.with_suffix(".trt.onnx")


def polygraphy_data_paths(plan: BuildPlan) -> tuple:
    """(inputs, ONNX Runtime outputs): the JSON files the polygraphy commands pass from one side to the
    other, next to the engine."""
    return plan.output.with_suffix(".polygraphy-inputs.json"), plan.output.with_suffix(".onnxruntime-outputs.json")


def trtexec_command(plan: BuildPlan, major: int, plugin_library, onnx_for_tensorrt) -> list:
    """The trtexec command that builds (and times) the engine ``build_engine`` would build from
    ``plan`` on a TensorRT of this major; ``onnx_for_tensorrt``: the ONNX without our function bodies
    (TensorRT <= 10.6 inlines a same-named local function instead of using the plugin). A plugin
    library that registers itself on load (``plugin build --static-registration``) goes to
    ``--staticPlugins`` (a plain dlopen); TensorRT's loadLibrary (``--dynamicPlugins``) would register
    its creator a second time and fail."""
    from ..runtime.plugin_library import registers_on_load

    strongly_typed = plan.strongly_typed(major)
    plugins = "--staticPlugins" if registers_on_load(plugin_library) else "--dynamicPlugins"
    cmd = ["trtexec", f"--onnx={onnx_for_tensorrt}", f"--saveEngine={plan.output}", f"{plugins}={plugin_library}"]
    if plan.dynamic_input:   # trtexec refuses shapes for a static input
        for name, shape in zip(("--minShapes", "--optShapes", "--maxShapes"), plan.shapes()):
            cmd.append(f"{name}={plan.input_name}:{'x'.join(map(str, shape))}")
    if strongly_typed and major < 11:
        cmd.append("--stronglyTyped")
    cmd += [_TRTEXEC_FLAGS[flag] for flag in plan.precision_flags(strongly_typed)]
    if not plan.tf32:
        cmd.append("--noTF32")
    cmd.append(f"--memPoolSize=workspace:{plan.workspace_mb}M")
    if plan.timing_cache:
        cmd.append(f"--timingCacheFile={plan.timing_cache}")
    return cmd


def polygraphy_commands(plan: BuildPlan, major: int, plugin_library, onnx_for_tensorrt) -> tuple:
    """(ONNX Runtime command, TensorRT command): ``polygraphy run`` twice, comparing the engine
    ``build_engine`` would build from ``plan`` with ONNX Runtime on the same inputs.

    ONNX Runtime (CPU) runs the export as it is (its CornerPool function bodies compute the corner
    pools) on polygraphy's generated inputs (the opt batch of a dynamic export) and saves those inputs
    and its outputs; TensorRT builds from ``onnx_for_tensorrt`` (function bodies removed, so the
    parser maps every node to our plugin) with the plan's profile, precision, TF32 and workspace,
    runs the saved inputs and compares with the saved outputs, elementwise, with the head tolerance
    of ``contract.agreement`` for the precision. polygraphy loads ``--plugins`` with a plain dlopen
    (``LoadPlugins``: ``ctypes.CDLL``), so the library must register itself on load, into the
    ``libnvinfer.so.<major>`` the builder uses: ``plugin build --static-registration``."""
    from ..contract.agreement import choose_tolerance
    from ..runtime.plugin_library import registers_on_load

    registers_with = registers_on_load(plugin_library)
    if registers_with is None:
        raise UserError(f"polygraphy loads plugin libraries with a plain dlopen (--plugins), and {plugin_library} "
                        "registers its creator only when TensorRT's loadLibrary asks it (the default build): "
                        "build one that registers itself on load (`cornernet-deploy plugin build "
                        f"--static-registration --output DIR`, TensorRT {major} installed) and pass it with --plugin")
    if registers_with != f"libnvinfer.so.{major}":
        raise UserError(f"{plugin_library} registers itself with {registers_with}, not with the libnvinfer.so.{major} "
                        f"polygraphy builds engines with: build it against the full TensorRT {major} "
                        "(`cornernet-deploy plugin build --static-registration --tensorrt-root DIR`)")
    strongly_typed = plan.strongly_typed(major)
    inputs, outputs = polygraphy_data_paths(plan)
    name = plan.input_name

    def shape_arg(shape) -> str:
        return f"{name}:[{','.join(map(str, shape))}]"

    onnxruntime = ["polygraphy", "run", str(plan.onnx_path), "--onnxrt", "--providers", "cpu"]
    if plan.dynamic_input:
        onnxruntime += ["--input-shapes", shape_arg(plan.shapes()[1])]
    onnxruntime += ["--save-inputs", str(inputs), "--save-outputs", str(outputs)]

    tensorrt = ["polygraphy", "run", str(onnx_for_tensorrt), "--trt", "--plugins", str(plugin_library)]
    if plan.dynamic_input:
        for flag, shape in zip(("--trt-min-shapes", "--trt-opt-shapes", "--trt-max-shapes"), plan.shapes()):
            tensorrt += [flag, shape_arg(shape)]
    if strongly_typed and major < 11:
        tensorrt.append("--strongly-typed")
    tensorrt += [_POLYGRAPHY_FLAGS[flag] for flag in plan.precision_flags(strongly_typed)]
    if plan.tf32:            # polygraphy clears TensorRT's TF32 flag unless asked
        tensorrt.append("--tf32")
    tolerance = choose_tolerance(None, [plan.precision, plan.onnx_precision])
    tensorrt += ["--pool-limit", f"workspace:{plan.workspace_mb}M", "--load-inputs", str(inputs),
                 "--load-outputs", str(outputs), "--atol", repr(tolerance.head_atol),
                 "--rtol", repr(tolerance.head_rtol)]
    return onnxruntime, tensorrt


def command_target(plan: BuildPlan, major=None, option: str = "--trtexec") -> tuple:
    """(TensorRT major, plugin library) a printed command is for; TensorRT itself is not needed.
    ``major``: 10 or 11; None: the importable TensorRT's, else the plugin library's."""
    from ..runtime.plugin_library import (check_library_matches, find_plugin_library,
                                          importable_tensorrt_version, plugin_library_tensorrt_version)

    inputs = [("the ONNX model", plan.onnx_path), ("--plugin", plan.plugin_library),
              ("--timing-cache", plan.timing_cache)]
    written = [(onnx_for_tensorrt_path(plan), "the ONNX for TensorRT")]
    if option == "--polygraphy":
        written += zip(polygraphy_data_paths(plan), ("polygraphy's inputs", "ONNX Runtime's outputs"))
    for path, what in written:
        check_not_input(path, inputs, "--output",
                        label=f"--output {plan.output}: {what} is written beside it, as {path}, which")
    if major is None:
        running = importable_tensorrt_version()
        library = plan.plugin_library or find_plugin_library(required=False)
        known = running or (plugin_library_tensorrt_version(library) if library else None)
        if known is None:
            raise UserError(f"which TensorRT is the command for? Give {option} 10 or {option} 11 (no "
                            "TensorRT is importable here and no plugin library says)")
        major = int(known.split(".")[0])
    plugin = plan.plugin_library or find_plugin_library(tensorrt_major=major)
    library_version = plugin_library_tensorrt_version(plugin)
    if library_version is None or int(library_version.split(".")[0]) != major:
        check_library_matches(plugin, library_version, f"{major}.0")   # raises: no tag, or another major
    return major, plugin


def write_onnx_for_tensorrt(plan: BuildPlan) -> Path:
    """Write the plan's ONNX without our function bodies (atomically) to ``onnx_for_tensorrt_path``."""
    from ..onnx_function import strip_corner_pool_function

    path = onnx_for_tensorrt_path(plan)
    strip_corner_pool_function(plan.model)
    write_bytes_atomic(path, plan.model.SerializeToString())
    return path
