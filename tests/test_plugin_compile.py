"""Build checks of the TensorRT plugin without a GPU or a TensorRT library.

* the kernels compile with nvcc for every GPU we target (one nvcc call, several -gencode);
* the plugin library builds with CMake (-Wall -Wextra -Werror, --no-undefined) against the TensorRT headers,
  exports getCreators/setLoggerFinder and needs no TensorRT library;
* the C++ unit test of the plugin's TensorRT-facing logic passes (plugins/tests/cornerPoolPluginUnitTest.cpp);
* with the PyPI lean TensorRT bindings installed, the real plugin registry loads the library and creates
  the plugin (pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs).

TensorRT headers come from $CORNERNET_DEPLOY_TRT_INCLUDE_DIRS (several dirs, os.pathsep-separated: one build
per TensorRT version, for compatibility checks), else the normal search of `cornernet-deploy plugin build`
($TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT, system). Builds are cached in the temp directory by content hash.
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
from cornernet_deploy.tensorrt import plugin_build

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
KERNEL = PLUGINS / "cornerPoolPlugin" / "cornerPoolKernel.cu"
TARGET_ARCHS = ["75", "80", "86", "87", "89", "90"]  # Turing, A100, Ampere, Orin, Ada, Hopper
KERNEL_INSTANTIATIONS = 12  # {float, half} x {top_left, bottom_right, top, bottom, left, right}
CACHE = Path(tempfile.gettempdir()) / "cornernet_deploy_tests"


def _nvcc():
    try:
        return plugin_build.find_nvcc()
    except UserError as exc:
        pytest.skip(f"CUDA compiler unavailable: {exc}")


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
        pytest.skip("TensorRT headers not found: set TENSORRT_INCLUDE_DIR or TENSORRT_ROOT (e.g. the include/ "
                    "of github.com/NVIDIA/TensorRT at a release tag) to build the plugin library")
    if shutil.which("cmake") is None:
        pytest.skip("cmake not on PATH")
    return _cmake_build(include_dir, f"plugin-{_header_id(include_dir)}", "-DCORNERNET_DEPLOY_BUILD_TESTS=ON")


def _dynamic_symbols(library: Path, *flags: str) -> list[tuple[str, str]]:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not on PATH")
    out = subprocess.run([nm, "-D", *flags, str(library)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        rows.append((parts[-2], parts[-1]))  # (type, name)
    return rows


def test_library_exports_registration_entry_points_and_kernel_api(plugin_build_dir):
    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    exported = {name for kind, name in _dynamic_symbols(library, "--defined-only") if kind == "T"}
    assert exported == {"getCreators", "setLoggerFinder", "cornerPoolForward", "cornerPoolDirectional",
                        "cornerPoolStatusString", "cornerPoolMaxWidth"}


def test_library_needs_no_tensorrt_and_no_shared_cudart(plugin_build_dir):
    library = plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME
    undefined = [name for kind, name in _dynamic_symbols(library, "--undefined-only") if kind == "U"]
    # Only the C/C++ runtime may be left to the loader (versioned glibc/libstdc++/libgcc symbols).
    unexpected = [n for n in undefined if not re.search(r"@(GLIBC|GLIBCXX|CXXABI|GCC)_", n)]
    assert unexpected == [], f"symbols that would need TensorRT or CUDA at load time: {unexpected}"
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True).stdout
    assert "nvinfer" not in needed and "libcudart" not in needed, needed


def test_plugin_unit_test_passes(plugin_build_dir):
    proc = subprocess.run([str(plugin_build_dir / "cornerPoolPluginUnitTest")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\d+ checks, 0 failed", proc.stdout), proc.stdout


# ---- the real TensorRT plugin registry (PyPI lean bindings; no GPU needed) --------------------------------

REGISTRY_SCRIPT = r"""
import json, sys
import numpy as np
import tensorrt_lean_bindings as trt
from cornernet_deploy.tensorrt.plugin_build import load_plugin_library

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


def _lean_bindings_or_skip():
    import importlib.util
    if importlib.util.find_spec("tensorrt_lean_bindings") is None:
        pytest.skip("PyPI lean TensorRT bindings not installed "
                    "(pip install tensorrt-lean-cu13-bindings tensorrt-lean-cu13-libs)")


def _run_registry_script(library: Path, how: str):
    # A fresh process: the registry is process-global, and no TensorRT logger exists there, so the plugin's
    # error messages go to stderr where the test can read them.
    proc = subprocess.run([sys.executable, "-c", REGISTRY_SCRIPT, str(library), how], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
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


def test_tensorrt_registry_loads_library_and_creates_plugins(plugin_build_dir):
    _lean_bindings_or_skip()
    result, stderr = _run_registry_script(plugin_build_dir / plugin_build.PLUGIN_LIBRARY_NAME, "load_library")
    _check_registry_result(result, stderr)
    assert not result["found_without_namespace"]  # registered under its own namespace only


def test_static_registration_build_registers_under_our_namespace():
    _lean_bindings_or_skip()
    nvinfer = plugin_build.python_nvinfer_library()
    include_dirs = [d for d in _header_dirs() if d is not None]
    if nvinfer is None or not include_dirs:
        pytest.skip("needs TensorRT headers and a pip-installed libnvinfer(_lean) to link static registration")
    build = _cmake_build(include_dirs[0], "plugin-static-registration", "-DCORNERNET_DEPLOY_STATIC_REGISTRATION=ON",
                         f"-DNVINFER_LIBRARY={nvinfer}")
    result, stderr = _run_registry_script(build / plugin_build.PLUGIN_LIBRARY_NAME, "dlopen")
    _check_registry_result(result, stderr)


def test_cli_plugin_build_end_to_end(tmp_path, capsys):
    """`cornernet-deploy plugin build` from header discovery to the library in --output."""
    include_dirs = [d for d in _header_dirs() if d is not None]
    if not include_dirs or shutil.which("cmake") is None:
        pytest.skip("needs TensorRT headers (TENSORRT_INCLUDE_DIR / TENSORRT_ROOT) and cmake")
    _nvcc()
    from cornernet_deploy.cli import main
    # A content-addressed build directory keeps reruns incremental; the output directory is fresh.
    build_dir = CACHE / f"cli-{_plugin_sources_digest(str(include_dirs[0]))}"
    rc = main(["plugin", "build", "--tensorrt-root", str(include_dirs[0]), "--cuda-arch", "sm_75",
               "--build-dir", str(build_dir), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    library = tmp_path / "out" / plugin_build.PLUGIN_LIBRARY_NAME
    assert rc == 0 and library.is_file()
    assert f"plugin library:   {library}" in out
    assert f"TensorRT headers: {include_dirs[0].resolve()}" in out
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
