"""Build checks of the TensorRT plugin without a GPU or a TensorRT library.

* the kernels compile with nvcc for every GPU we target (one nvcc call, several -gencode);
* the plugin library builds with CMake (-Wall -Wextra -Werror, --no-undefined) against the TensorRT headers,
  exports getCreators/setLoggerFinder and needs no TensorRT library;
* the C++ unit test of the plugin's TensorRT-facing logic passes (plugins/tests/cornerPoolPluginUnitTest.cpp);
* the library records the version of its headers (in the file and through cornernetDeployTensorRTVersion());
* the GPU harness (the plugin's IPluginV3 methods on cudaMalloc buffers) builds, and runs where there is a GPU;
* the real plugin registry of the PyPI lean TensorRT wheels of the *same* major loads each library and
  creates the plugin, and the registry of *another* major is refused - by load_plugin_library before
  TensorRT sees the file, and by the library itself when loaded behind our back - without a crash;
* a second copy of the library is not loaded again; a Runtime whose CUDA initialisation failed is caught.

TensorRT headers come from $CORNERNET_DEPLOY_TRT_INCLUDE_DIRS (several dirs, os.pathsep-separated: one build
per TensorRT version), else the normal search of `cornernet-deploy plugin build` ($TENSORRT_INCLUDE_DIR,
$TENSORRT_ROOT, system). Lean TensorRT runtimes come from $CORNERNET_DEPLOY_LEAN_TENSORRT_DIRS (os.pathsep-
separated `pip install --target` folders, one per major: the wheels of 10.x and 11.x share the module name
tensorrt_lean_bindings, so each is used in its own subprocess), else an importable tensorrt_lean_bindings.
.ci/run sets all of these and CORNERNET_DEPLOY_REQUIRE_TRT_TESTS=1, which turns a missing header set,
tool or runtime into a failure instead of a skip: in CI these tests must run. Builds are cached in the
temp directory by content hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime import plugin_library
from cornernet_deploy.tensorrt import plugin_build

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
KERNEL = PLUGINS / "cornerPoolPlugin" / "cornerPoolKernel.cu"
TARGET_ARCHS = ["75", "80", "86", "87", "89", "90"]  # Turing, A100, Ampere, Orin, Ada, Hopper
KERNEL_INSTANTIATIONS = 24  # {float, half} x {top_left, bottom_right, top, bottom, left, right} x {vector, scalar}
CACHE = Path(tempfile.gettempdir()) / "cornernet_deploy_tests"
REQUIRED = os.environ.get("CORNERNET_DEPLOY_REQUIRE_TRT_TESTS") == "1"
HARNESS_NO_GPU = 77  # cornerPoolPluginGpuHarness: no usable CUDA device


def _unavailable(reason: str):
    """Skip, except in CI (CORNERNET_DEPLOY_REQUIRE_TRT_TESTS=1), where a missing prerequisite is a failure."""
    if REQUIRED:
        pytest.fail(f"{reason} (CORNERNET_DEPLOY_REQUIRE_TRT_TESTS=1: these tests must run here)")
    pytest.skip(reason)


def _nvcc():
    try:
        return plugin_build.find_nvcc()
    except UserError as exc:
        _unavailable(f"CUDA compiler unavailable: {exc}")


def _plugin_sources_digest(*extra: str) -> str:
    h = hashlib.sha256()
    for p in sorted(PLUGINS.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(PLUGINS)).encode())
            h.update(p.read_bytes())
    for e in extra:
        h.update(e.encode())
    return h.hexdigest()[:16]


# ---- kernels: every target architecture, one nvcc call ----------------------------------------------------

def test_kernels_compile_for_all_target_architectures():
    nvcc = _nvcc()
    gencode = []
    for arch in TARGET_ARCHS:
        gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    with tempfile.TemporaryDirectory() as d:
        cmd = [str(nvcc), "-std=c++17", "-O3", "--resource-usage", "--Werror", "all-warnings",
               "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror", *gencode,
               "-c", str(KERNEL), "-o", os.path.join(d, "cornerPoolKernel.o")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    compiled = re.findall(r"Compiling entry function '[^']*cornerPoolKernel[^']*' for 'sm_(\d+)'", proc.stderr)
    for arch in TARGET_ARCHS:
        assert compiled.count(arch) == KERNEL_INSTANTIATIONS, f"sm_{arch}: {compiled.count(arch)} kernels compiled"


# ---- the plugin library via CMake, per TensorRT header version ---------------------------------------------

def _header_dirs():
    listed = os.environ.get("CORNERNET_DEPLOY_TRT_INCLUDE_DIRS")
    if listed:
        return [Path(p) for p in listed.split(os.pathsep) if p]
    try:
        return [plugin_build.find_tensorrt_headers().include_dir]
    except UserError:
        return [None]


def _header_id(d):
    return "no-headers" if d is None else f"trt-{plugin_build.tensorrt_header_version(d) or d.name}"


def _cmake_build(include_dir: Path, name: str, *options: str) -> Path:
    """Configure + build into a content-addressed directory (reused while nothing changed)."""
    cmake = plugin_build.find_cmake()
    nvcc = _nvcc()
    build = CACHE / f"{name}-{_plugin_sources_digest(str(include_dir), str(nvcc), *options)}"
    stamp = build / "build-ok"
    if not stamp.is_file():
        shutil.rmtree(build, ignore_errors=True)
        configure = [str(cmake), "-S", str(PLUGINS), "-B", str(build), f"-DTENSORRT_INCLUDE_DIR={include_dir}",
                     f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DCORNERNET_DEPLOY_WERROR=ON",
                     # one architecture is enough here: every target is compiled by the test above
                     "-DCMAKE_CUDA_ARCHITECTURES=75-real", *options]
        for cmd in (configure, [str(cmake), "--build", str(build), "--parallel", "2"]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        stamp.write_text("ok")
    return build


@pytest.fixture(scope="module", params=_header_dirs(), ids=_header_id)
def plugin_build_dir(request):
    include_dir = request.param
    if include_dir is None:
        _unavailable("TensorRT headers not found: set TENSORRT_INCLUDE_DIR or TENSORRT_ROOT (e.g. the include/ "
                     "of github.com/NVIDIA/TensorRT at a release tag) to build the plugin library")
    if shutil.which("cmake") is None:
        _unavailable("cmake not on PATH")
    return _cmake_build(include_dir, f"plugin-{_header_id(include_dir)}", "-DCORNERNET_DEPLOY_BUILD_TESTS=ON")


def _headers_version(build_dir: Path) -> str:
    cache = (build_dir / "CMakeCache.txt").read_text()
    include_dir = re.search(r"^TENSORRT_INCLUDE_DIR:\w+=(.*)$", cache, re.M).group(1)
    return plugin_build.tensorrt_header_version(Path(include_dir))


def _dynamic_symbols(library: Path, *flags: str) -> list[tuple[str, str]]:
    nm = shutil.which("nm")
    if nm is None:
        _unavailable("nm (binutils) not on PATH")
    out = subprocess.run([nm, "-D", *flags, str(library)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        rows.append((parts[-2], parts[-1]))  # (type, name)
    return rows


def test_library_exports_registration_entry_points_and_kernel_api(plugin_build_dir):
    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    exported = {name for kind, name in _dynamic_symbols(library, "--defined-only") if kind == "T"}
    assert exported == {"getCreators", "setLoggerFinder", "cornernetDeployTensorRTVersion", "cornerPoolForward",
                        "cornerPoolDirectional", "cornerPoolStatusString", "cornerPoolMaxWidth"}


def test_library_needs_no_tensorrt_and_no_shared_cudart(plugin_build_dir):
    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    undefined = [name for kind, name in _dynamic_symbols(library, "--undefined-only") if kind == "U"]
    # Only the C/C++ runtime may be left to the loader (versioned glibc/libstdc++/libgcc symbols).
    unexpected = [n for n in undefined if not re.search(r"@(GLIBC|GLIBCXX|CXXABI|GCC)_", n)]
    assert unexpected == [], f"symbols that would need TensorRT or CUDA at load time: {unexpected}"
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True).stdout
    assert "nvinfer" not in needed and "libcudart" not in needed, needed


def test_library_records_the_version_of_its_headers(plugin_build_dir):
    import ctypes

    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    version = _headers_version(plugin_build_dir)  # from NvInferVersion.h of the headers it was built with
    assert plugin_library.plugin_library_tensorrt_version(library) == version
    major, minor, patch = (int(x) for x in version.split("."))
    exported = ctypes.CDLL(str(library)).cornernetDeployTensorRTVersion
    exported.restype = ctypes.c_int32
    assert exported() == major * 10000 + minor * 100 + patch  # NV_TENSORRT_VERSION


def test_plugin_unit_test_passes(plugin_build_dir):
    proc = subprocess.run([str(plugin_build_dir / "cornerPoolPluginUnitTest")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\d+ checks, 0 failed", proc.stdout), proc.stdout


def test_gpu_harness_builds_and_runs_where_there_is_a_gpu(plugin_build_dir):
    proc = subprocess.run([str(plugin_build_dir / "cornerPoolPluginGpuHarness")], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == HARNESS_NO_GPU:
        pytest.skip(f"compiled; needs a GPU to run: {proc.stdout.strip()}")  # not a CI failure: no GPU there
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\d+ checks, 0 failed", proc.stdout), proc.stdout


# ---- the real TensorRT plugin registries (PyPI lean wheels, one per major; no GPU needed) ------------------

def _lean_runtimes() -> dict:
    """{major: (pip --target folder or None for this interpreter's own, version)}."""
    found = {}
    for folder in filter(None, os.environ.get("CORNERNET_DEPLOY_LEAN_TENSORRT_DIRS", "").split(os.pathsep)):
        for info in Path(folder).glob("tensorrt_lean_cu*_bindings-*.dist-info"):
            version = info.name.split("-")[1].removesuffix(".dist-info")
            found[int(version.split(".")[0])] = (Path(folder), version)
    if not found:
        import importlib.metadata
        import importlib.util
        if importlib.util.find_spec("tensorrt_lean_bindings") is not None:
            for dist in importlib.metadata.distributions():
                name = (dist.metadata["Name"] or "").lower().replace("_", "-")
                if re.fullmatch(r"tensorrt-lean-cu\d+-bindings", name):
                    found[int(dist.version.split(".")[0])] = (None, dist.version)
    return found


LEAN = _lean_runtimes()


def _lean_or_unavailable(major: int):
    if major not in LEAN:
        _unavailable(f"no lean TensorRT {major}.x runtime (pip install --target DIR tensorrt-lean-cu12-bindings=="
                     f"10.16.1.11 tensorrt-lean-cu12-libs==10.16.1.11, or the cu13 11.4.0.106 pair for 11.x, and "
                     f"list DIR in CORNERNET_DEPLOY_LEAN_TENSORRT_DIRS)")
    return LEAN[major]


def _run_in_lean(major: int, script: str, *args: str):
    """Run ``script`` in a fresh interpreter whose tensorrt_lean_bindings is TensorRT ``major``. Fresh: the
    registry is process-global, and without a TensorRT logger the plugin's messages go to stderr."""
    folder, _ = _lean_or_unavailable(major)
    env = dict(os.environ)
    if folder is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)


def _library_major(build_dir: Path) -> int:
    return int(_headers_version(build_dir).split(".")[0])


REGISTRY_SCRIPT = r"""
import json, sys
import numpy as np
import tensorrt_lean_bindings as trt
from cornernet_deploy.runtime.plugin_library import load_plugin_library

library, how = sys.argv[1], sys.argv[2]
registry = trt.get_plugin_registry()
if how == "load_library":
    load_plugin_library(trt, library)
else:  # statically registering build: a plain dlopen must be enough
    import ctypes
    ctypes.CDLL(library)
result = {"version": trt.__version__}
creator = registry.get_creator("CornerPool", "1", "cornernet_deploy")
result["found"] = creator is not None
result["found_without_namespace"] = registry.get_creator("CornerPool", "1", "") is not None
result["fields"] = [f.name for f in creator.field_names]

def create(name, value):
    if isinstance(value, str):
        field = trt.PluginField("mode", np.frombuffer(value.encode() + b"\0", np.int8), trt.PluginFieldType.CHAR)
    else:
        field = trt.PluginField("mode", np.array([value], np.int32), trt.PluginFieldType.INT32)
    return creator.create_plugin(name, trt.PluginFieldCollection([field]), trt.TensorRTPhase.BUILD)

created = {}
for value in ["top_left", "bottom_right", 0, 1]:
    plugin = create(f"node_{value}", value)
    core = plugin.get_capability_interface(trt.PluginCapabilityType.CORE) if plugin is not None else None
    created[str(value)] = None if core is None else [core.plugin_name, core.plugin_version, core.plugin_namespace]
result["created"] = created
result["bad_string"] = create("bad_node", "diagonal") is None
result["bad_int"] = create("bad_int_node", 7) is None
print(json.dumps(result))
"""


def _run_registry_script(major: int, library: Path, how: str):
    proc = _run_in_lean(major, REGISTRY_SCRIPT, str(library), how)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _check_registry_result(result, stderr):
    assert result["found"], result
    assert result["fields"] == ["mode"]
    expected = ["CornerPool", "1", "cornernet_deploy"]
    assert result["created"] == {"top_left": expected, "bottom_right": expected, "0": expected, "1": expected}
    assert result["bad_string"] and result["bad_int"]
    assert 'CornerPool[bad_node]: field \'mode\' is "diagonal"; expected "top_left" or "bottom_right"' in stderr
    assert "CornerPool[bad_int_node]: field 'mode' is 7" in stderr


def test_registry_of_the_same_major_loads_the_library_and_creates_plugins(plugin_build_dir):
    major = _library_major(plugin_build_dir)
    result, stderr = _run_registry_script(major, plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME, "load_library")
    assert result["version"].split(".")[0] == str(major)
    _check_registry_result(result, stderr)
    assert not result["found_without_namespace"]  # registered under its own namespace only


CROSS_MAJOR_SCRIPT = r"""
import json, sys
import tensorrt_lean_bindings as trt
from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime.plugin_library import load_plugin_library

library = sys.argv[1]
registry = trt.get_plugin_registry()
result = {"version": trt.__version__}
try:
    load_plugin_library(trt, library)
    result["refused"] = None
except UserError as exc:
    result["refused"] = str(exc)
result["registered_after_refusal"] = registry.get_creator("CornerPool", "1", "cornernet_deploy") is not None
# Behind our back (trtexec, C++, another tool): the library itself must refuse, not crash.
handle = registry.load_library(library)
creator = registry.get_creator("CornerPool", "1", "cornernet_deploy")
result["registered_by_raw_load"] = creator is not None
if creator is not None:  # what used to happen: the plugin's first log call goes through a foreign vtable
    import numpy as np
    field = trt.PluginField("mode", np.frombuffer(b"diagonal\0", np.int8), trt.PluginFieldType.CHAR)
    creator.create_plugin("bad_node", trt.PluginFieldCollection([field]), trt.TensorRTPhase.BUILD)
print(json.dumps(result))
"""


def test_registry_of_another_major_is_refused_without_a_crash(plugin_build_dir):
    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    major = _library_major(plugin_build_dir)
    other = 11 if major == 10 else 10
    proc = _run_in_lean(other, CROSS_MAJOR_SCRIPT, str(library))
    # Before the version checks, an 11.x library crashed a 10.x process here (SIGSEGV at its first log call).
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    version = _headers_version(plugin_build_dir)
    assert result["refused"] == (f"{library} was built with TensorRT {version} headers but this is TensorRT "
                                 f"{result['version']}: a plugin library only runs in the TensorRT major it was built "
                                 f"for; build one with TensorRT {other} headers (`cornernet-deploy plugin build "
                                 "--tensorrt-root DIR`)")
    assert not result["registered_after_refusal"] and not result["registered_by_raw_load"]
    assert (f"was built with TensorRT {version} headers but this process runs TensorRT "
            f"{'.'.join(result['version'].split('.')[:3])}") in proc.stderr
    assert "so it registers nothing" in proc.stderr


SECOND_COPY_SCRIPT = r"""
import json, shutil, sys
import tensorrt_lean_bindings as trt
from cornernet_deploy.runtime.plugin_library import load_plugin_library

library, copy = sys.argv[1], sys.argv[2]
shutil.copy(library, copy)
registry = trt.get_plugin_registry()
first = load_plugin_library(trt, library)
second = load_plugin_library(trt, copy)   # e.g. CORNERNET_DEPLOY_PLUGIN and the manifest name two copies
raw = registry.load_library(copy)         # what TensorRT does with a second copy
print(json.dumps({"first": first is not None, "second": second is None, "raw_refused": raw is None,
                  "registered": registry.get_creator("CornerPool", "1", "cornernet_deploy") is not None}))
"""


def test_a_second_copy_of_the_library_is_not_loaded_again(plugin_build_dir, tmp_path):
    major = _library_major(plugin_build_dir)
    proc = _run_in_lean(major, SECOND_COPY_SCRIPT, str(plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME),
                        str(tmp_path / "copy.so"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"first": True, "second": True, "raw_refused": True,
                                                                "registered": True}


FAILED_RUNTIME_SCRIPT = r"""
import json
import tensorrt_lean_bindings as trt
from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime import tensorrt_common as common
from cornernet_deploy.runtime.tensorrt_common import create_runtime, make_logger

lines = []
logger = make_logger(trt, lines)
raw = trt.Runtime(logger)   # TensorRT's own behaviour without a usable GPU
common._UNUSABLE.append(raw)  # destroying it would crash this process (as create_runtime knows)
result = {"raw_returned": raw is not None, "raw_logged_errors": [l for l in lines if l.startswith("[ERROR]")]}
lines.clear()
try:
    create_runtime(trt, logger, lines)
    result["error"] = None
except UserError as exc:
    result["error"] = str(exc)
import gc
gc.collect()  # the failed runtime create_runtime saw must not be destroyed now (SIGSEGV)
print(json.dumps(result), flush=True)
"""


@pytest.mark.parametrize("major", [10, 11])
def test_a_runtime_whose_cuda_init_failed_is_caught(major):
    proc = _run_in_lean(major, FAILED_RUNTIME_SCRIPT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["raw_logged_errors"]:
        pytest.skip("TensorRT initialised CUDA here (a GPU is present): nothing to catch")
    # TensorRT hands back a Runtime object anyway; deserializing with it would crash.
    assert result["raw_returned"]
    assert result["error"].startswith("TensorRT could not create its runtime (no usable GPU or driver?): ")
    assert "CUDA initialization failure" in result["error"] and "\n" not in result["error"]


@pytest.fixture(scope="module")
def static_registration_build():
    """(library, major) of a --static-registration build, linked against the lean wheel's libnvinfer_lean."""
    include_dirs = [d for d in _header_dirs() if d is not None]
    usable = [(d, int(plugin_build.tensorrt_header_version(d).split(".")[0])) for d in include_dirs]
    usable = [(d, m) for d, m in usable if m in LEAN]
    if not usable:
        _unavailable("needs TensorRT headers and a lean TensorRT runtime of the same major (its libnvinfer_lean "
                     "links static registration)")
    include_dir, major = usable[-1]
    folder, _ = LEAN[major]
    if folder is not None:
        candidates = sorted((folder / "tensorrt_lean_libs").glob(f"libnvinfer_lean.so.{major}*"))
        nvinfer = candidates[0] if candidates else None
    else:
        nvinfer = plugin_build.python_nvinfer_library()
    if nvinfer is None:
        _unavailable(f"no libnvinfer_lean.so.{major} to link static registration against")
    build = _cmake_build(include_dir, f"plugin-static-registration-{major}", "-DCORNERNET_DEPLOY_STATIC_REGISTRATION=ON",
                         f"-DNVINFER_LIBRARY={nvinfer}")
    return build / plugin_build.PLUGIN_LIBRARY_NAME, major


def test_static_registration_build_registers_under_our_namespace(static_registration_build):
    library, major = static_registration_build
    result, stderr = _run_registry_script(major, library, "dlopen")
    _check_registry_result(result, stderr)


# ---- ONNX Runtime's TensorRT provider route ---------------------------------------------------------------
# What the provider does (onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_custom_ops.cc, and
# the strings of the onnxruntime-gpu 1.21.1 / 1.22.0 / 1.26.0 / 1.27.0 / 1.31.1 wheels' provider library;
# docs/tensorrt.md, "ONNX Runtime's TensorRT provider"): dlopen every trt_extra_plugin_lib_paths entry, nothing more; then list the
# registry - getPluginCreatorList() up to 1.21 (IPluginV2 creators only), getAllCreators() from 1.22 on,
# keeping the kinds "PLUGIN CREATOR_V1" and "PLUGIN CREATOR_V3ONE" - and declare each name as a trt.plugins
# op. TensorRT's ONNX parser then asks getCreator(op_type, plugin_version, plugin_namespace) of the node.
# The Python bindings make the same registry calls: all_creators = getAllCreators() with the same kind
# dispatch (IPluginCreator / IPluginCreatorV3One objects), plugin_creator_list = getPluginCreatorList(),
# get_creator = getCreator().

PROVIDER_ROUTE_SCRIPT = r"""
import ctypes, json, sys
import tensorrt_lean_bindings as trt

library, how, op_type, plugin_version, plugin_namespace = sys.argv[1:6]
registry = trt.get_plugin_registry()
if how == "dlopen":            # all ONNX Runtime does with trt_extra_plugin_lib_paths
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
else:                          # what our backend does before it creates the session
    from cornernet_deploy.runtime.backends.onnxruntime import register_plugin_for_provider
    register_plugin_for_provider(trt, library)
kinds = {c.name: type(c).__name__ for c in registry.all_creators}
print(json.dumps({
    "declared_from_1_22": sorted(n for n, k in kinds.items() if k in ("IPluginCreator", "IPluginCreatorV3One")),
    "kind": kinds.get(op_type),
    # (TensorRT 11 dropped getPluginCreatorList; no ONNX Runtime of that age runs with it)
    "declared_up_to_1_21": (sorted(c.name for c in registry.plugin_creator_list)
                            if hasattr(registry, "plugin_creator_list") else None),
    "parser_finds_it": registry.get_creator(op_type, plugin_version, plugin_namespace) is not None,
}))
"""


@pytest.fixture(scope="module")
def tensorrt_provider_nodes(tmp_path_factory):
    """(op_type, plugin_version, plugin_namespace) of every CornerPool node of the model our backend hands to
    ONNX Runtime's TensorRT provider: a real export of the demo model, retargeted to trt.plugins."""
    import onnx

    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.onnx_function import TENSORRT_EP_PLUGIN_DOMAIN, retarget_corner_pool_to_tensorrt_ep

    path = tmp_path_factory.mktemp("provider") / "demo.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=path, verify=False, progress=None, dynamic_batch=True,
                dynamic_size=True)
    model = onnx.load(str(path))
    assert retarget_corner_pool_to_tensorrt_ep(model) == 2
    nodes = set()
    for node in model.graph.node:
        if node.domain == TENSORRT_EP_PLUGIN_DOMAIN:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            nodes.add((node.op_type, attrs["plugin_version"].decode(), attrs["plugin_namespace"].decode()))
    return sorted(nodes)


def _provider_route(major: int, library: Path, how: str, node) -> dict:
    proc = _run_in_lean(major, PROVIDER_ROUTE_SCRIPT, str(library), how, *node)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tensorrt_provider_finds_the_creator_only_after_we_register_it(plugin_build_dir, tensorrt_provider_nodes):
    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    major = _library_major(plugin_build_dir)
    assert tensorrt_provider_nodes == [("CornerPool", "1", "cornernet_deploy")]
    node = tensorrt_provider_nodes[0]
    # ONNX Runtime alone: the library is mapped, nothing registers, the session could not start
    alone = _provider_route(major, library, "dlopen", node)
    assert node[0] not in alone["declared_from_1_22"] and not alone["parser_finds_it"]
    # after register_plugin_for_provider: declared as a trt.plugins op by ONNX Runtime >= 1.22, as the
    # V3 kind it keeps, and found by the parser under the node's own plugin_version / plugin_namespace
    ours = _provider_route(major, library, "register", node)
    assert node[0] in ours["declared_from_1_22"] and ours["kind"] == "IPluginCreatorV3One"
    assert ours["parser_finds_it"]
    # ONNX Runtime <= 1.21 would not declare it even then: the reason for onnxruntime-gpu >= 1.22
    if major == 10:
        assert node[0] not in ours["declared_up_to_1_21"]
    else:
        assert ours["declared_up_to_1_21"] is None


def test_a_self_registering_build_serves_the_provider_route_too(static_registration_build, tensorrt_provider_nodes):
    """The --static-registration build registers on ONNX Runtime's plain dlopen, and our backend's
    registration takes it as well (TensorRT's loadLibrary alone refuses it: a second registration)."""
    library, major = static_registration_build
    assert plugin_library.registers_on_load(library) == f"libnvinfer_lean.so.{major}"
    node = tensorrt_provider_nodes[0]
    for how in ("dlopen", "register"):
        route = _provider_route(major, library, how, node)
        assert node[0] in route["declared_from_1_22"] and route["parser_finds_it"], (how, route)


def test_cli_plugin_build_end_to_end(tmp_path, capsys):
    """`cornernet-deploy plugin build` from header discovery to the library in --output."""
    include_dirs = [d for d in _header_dirs() if d is not None]
    if not include_dirs or shutil.which("cmake") is None:
        _unavailable("needs TensorRT headers (TENSORRT_INCLUDE_DIR / TENSORRT_ROOT) and cmake")
    _nvcc()
    from cornernet_deploy.cli import main
    # A content-addressed build directory keeps reruns incremental; the output directory is fresh.
    # (the source path is part of the key: CMake refuses a build folder configured for another checkout)
    build_dir = CACHE / f"cli-{_plugin_sources_digest(str(include_dirs[0]), str(PLUGINS))}"
    rc = main(["plugin", "build", "--tensorrt-root", str(include_dirs[0]), "--cuda-arch", "sm_75",
               "--build-dir", str(build_dir), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    library = tmp_path / "out" / plugin_build.PLUGIN_LIBRARY_NAME
    assert rc == 0 and library.is_file()
    version = plugin_build.tensorrt_header_version(include_dirs[0])
    assert f"plugin library:   {library}  (TensorRT {version.split('.')[0]}.x)" in out
    assert f"TensorRT headers: {include_dirs[0].resolve()} (version {version}" in out
    assert plugin_library.plugin_library_tensorrt_version(library) == version
    assert "-DCMAKE_CUDA_ARCHITECTURES=75" in (build_dir / "cornernet_deploy_build.log").read_text()


def test_kernel_library_c_api_validates_arguments_before_touching_the_gpu(tmp_path):
    """The nvcc-built kernel library loads with ctypes anywhere (static cudart) and rejects bad calls
    with its documented status codes before any CUDA call."""
    _nvcc()
    library = plugin_build.compile_kernel_library(CACHE / f"kernels-{_plugin_sources_digest()}", arch="75")
    lib = plugin_build.load_kernel_library(library)
    dummy = 4096  # never dereferenced: every call below fails validation first
    assert lib.cornerPoolForward(2, 0, dummy, dummy, dummy, 1, 1, 2, 2, None) == -1    # mode
    assert lib.cornerPoolForward(0, 2, dummy, dummy, dummy, 1, 1, 2, 2, None) == -2    # dtype
    assert lib.cornerPoolForward(1, 1, dummy, dummy, dummy, 1, -1, 2, 2, None) == -3   # shape
    assert lib.cornerPoolForward(0, 0, None, dummy, dummy, 1, 1, 2, 2, None) == -4     # null pointer
    assert lib.cornerPoolForward(0, 0, None, None, None, 0, 3, 2, 2, None) == 0        # empty: nothing to do
    assert lib.cornerPoolDirectional(4, 0, dummy, dummy, 1, 1, 2, 2, None) == -1       # direction
    assert lib.cornerPoolStatusString(-5).decode().startswith("width too large")
    assert lib.cornerPoolStatusString(-1).decode() == "invalid mode/direction"
