"""Build the TensorRT corner-pool plugin library (``libcornernet_deploy_plugins.so``): build tooling.

One library per TensorRT major version (see ``runtime/plugin_library.py``, which finds, checks and
loads it at run time). :func:`build_plugin` runs CMake on ``plugins/`` of a source checkout
(``cornernet-deploy plugin build``); by default into ``<checkout>/build/lib/tensorrt-<major>/``
(outside a checkout: ``$XDG_CACHE_HOME/cornernet_deploy/lib/tensorrt-<major>/``), where
``find_plugin_library`` looks.

Only TensorRT *headers* are needed to build: the library registers through the exported
``getCreators``/``setLoggerFinder`` and links no TensorRT library. Header search order (first hit wins):
``--tensorrt-root`` (``DIR/include`` or ``DIR`` itself), ``$TENSORRT_INCLUDE_DIR``, ``$TENSORRT_ROOT/include``,
the system (``/usr/include/<arch>-linux-gnu`` from the libnvinfer-dev package, ``/usr/include``,
``/usr/local/tensorrt/include``, ``/opt/tensorrt/include``), then an ``include/`` directory inside an
installed ``tensorrt_libs`` / ``tensorrt`` Python package (no PyPI wheel checked so far ships
headers; this is for builds that do).

Importing this module imports neither TensorRT nor torch.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..contract.op import PLUGIN_LIBRARY_NAME
from ..errors import UserError, warn
from ..fileio import atomic_path, check_output_dir, user_cache_dir
from ..runtime.plugin_library import (checkout_root, default_library_dir,
                                      importable_tensorrt_version, major_dir_name,
                                      plugin_library_tensorrt_version)

# Where Debian/Ubuntu/JetPack packages (libnvinfer-dev) and tar installs put the headers.
SYSTEM_INCLUDE_DIRS = (
    "/usr/include/x86_64-linux-gnu",
    "/usr/include/aarch64-linux-gnu",
    "/usr/include",
    "/usr/local/tensorrt/include",
    "/opt/tensorrt/include",
)
# Python distributions that might carry TensorRT files (libs and, in some builds, include/).
PYTHON_TENSORRT_PACKAGES = ("tensorrt_libs", "tensorrt_lean_libs", "tensorrt")

_HEADER = "NvInferRuntime.h"
_ARCH_PATTERN = re.compile(r"^(?:sm_|compute_)?(\d{2,3}[af]?)(-real|-virtual)?$")
# The IPluginV3 plugin needs TensorRT 10.0 or newer.
OLDEST_TENSORRT_MAJOR = 10
# Named CUDA architectures and the CMake version that introduced them (JetPack 6's apt cmake is 3.22).
_NAMED_ARCH_MIN_CMAKE = {"native": (3, 24), "all": (3, 23), "all-major": (3, 23)}


@dataclass(frozen=True)
class TensorRTHeaders:
    include_dir: Path
    version: Optional[str]  # "10.3.0", from NvInferVersion.h
    found_via: str          # which rule found them, for messages


def plugin_source_dir() -> Path:
    root = checkout_root()
    if root is None:
        raise UserError("the plugin sources (plugins/CMakeLists.txt) are not next to this installation; "
                        "run `cornernet-deploy plugin build` from a source checkout of cornernet-deploy")
    return root / "plugins"


def default_build_dir() -> Path:
    root = checkout_root()
    return (root / "build" / "plugins") if root else user_cache_dir("build")


# --------------------------------------------------------------------------------------------------------
# TensorRT headers

def tensorrt_header_version(include_dir: Path) -> Optional[str]:
    """"MAJOR.MINOR.PATCH" from NvInferVersion.h (10.x defines NV_TENSORRT_*, newer TRT_*_ENTERPRISE)."""
    try:
        text = (Path(include_dir) / "NvInferVersion.h").read_text(errors="replace")
    except OSError:
        return None
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        m = (re.search(rf"#define\s+TRT_{part}_ENTERPRISE\s+(\d+)", text)
             or re.search(rf"#define\s+NV_TENSORRT_{part}\s+(\d+)", text))
        if not m:
            return None
        parts.append(m.group(1))
    return ".".join(parts)


def check_header_version(headers: TensorRTHeaders) -> int:
    """The headers' major version; UserError (before any build work) for headers older than 10.0 or
    without a readable version."""
    if headers.version is None:
        raise UserError(f"cannot read the TensorRT version from {headers.include_dir / 'NvInferVersion.h'}; "
                        "the plugin library must know the version it is built for")
    major = int(headers.version.split(".")[0])
    if major < OLDEST_TENSORRT_MAJOR:
        raise UserError(f"TensorRT {headers.version} headers found in {headers.include_dir} (via {headers.found_via}); "
                        f"the CornerPool plugin uses IPluginV3 and needs TensorRT {OLDEST_TENSORRT_MAJOR}.0 or newer "
                        "headers (pass --tensorrt-root DIR)")
    return major


def _headers_at(include_dir: Path, found_via: str) -> Optional[TensorRTHeaders]:
    include_dir = Path(include_dir)
    if (include_dir / _HEADER).is_file():
        return TensorRTHeaders(include_dir.resolve(), tensorrt_header_version(include_dir), found_via)
    return None


def _python_package_dirs(names: Iterable[str]) -> list[Path]:
    dirs = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)  # locates without importing the package
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def find_tensorrt_headers(tensorrt_root=None, *, system_dirs: Iterable[str] = SYSTEM_INCLUDE_DIRS,
                          python_packages: Iterable[str] = PYTHON_TENSORRT_PACKAGES) -> TensorRTHeaders:
    """Locate the TensorRT headers (see the module docstring for the order); UserError if none."""
    if tensorrt_root:
        root = Path(tensorrt_root).expanduser()
        found = _headers_at(root / "include", "--tensorrt-root") or _headers_at(root, "--tensorrt-root")
        if found is None:
            raise UserError(f"--tensorrt-root {root}: no {_HEADER} in {root / 'include'} or {root}")
        return found
    env_include = os.environ.get("TENSORRT_INCLUDE_DIR")
    if env_include:
        found = _headers_at(Path(env_include), "TENSORRT_INCLUDE_DIR")
        if found is None:
            raise UserError(f"TENSORRT_INCLUDE_DIR={env_include} does not contain {_HEADER}")
        return found
    env_root = os.environ.get("TENSORRT_ROOT")
    if env_root:
        found = _headers_at(Path(env_root) / "include", "TENSORRT_ROOT")
        if found is None:
            raise UserError(f"TENSORRT_ROOT={env_root}: no {_HEADER} in {Path(env_root) / 'include'}")
        return found
    searched = []
    for d in system_dirs:
        searched.append(d)
        found = _headers_at(Path(d), "system")
        if found:
            return found
    for pkg_dir in _python_package_dirs(python_packages):
        searched.append(str(pkg_dir / "include"))
        found = _headers_at(pkg_dir / "include", f"Python package {pkg_dir.name}")
        if found:
            return found
    raise UserError(
        "TensorRT headers not found (searched " + ", ".join(searched) + "). Install them (Debian/Ubuntu/"
        "JetPack: apt install libnvinfer-dev; or unpack a TensorRT tar) and pass --tensorrt-root DIR or set "
        "TENSORRT_ROOT / TENSORRT_INCLUDE_DIR. The PyPI tensorrt wheels contain no headers.")


# --------------------------------------------------------------------------------------------------------
# Tools

def find_nvcc() -> Path:
    candidates = []
    if os.environ.get("CUDACXX"):
        candidates.append(Path(os.environ["CUDACXX"]))
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "bin" / "nvcc")
    which = shutil.which("nvcc")
    if which:
        candidates.append(Path(which))
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise UserError("nvcc (the CUDA compiler) not found: install the CUDA toolkit, put nvcc on PATH or set "
                    "CUDA_HOME (JetPack: /usr/local/cuda)")


def find_cmake() -> Path:
    which = shutil.which("cmake")
    if not which:
        raise UserError("cmake not found on PATH (3.18 or newer is needed: apt install cmake or pip install cmake)")
    return Path(which)


def cmake_version(cmake: Path) -> Optional[tuple]:
    """(major, minor) of ``cmake --version``, or None if it cannot be read."""
    try:
        out = subprocess.run([str(cmake), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"cmake version (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_cmake_supports_archs(cmake: Path, normalized_archs: Optional[str]) -> None:
    """``native``/``all``/``all-major`` need a newer CMake than our minimum: refuse before configuring."""
    needed = _NAMED_ARCH_MIN_CMAKE.get(normalized_archs or "")
    if needed is None:
        return
    have = cmake_version(cmake)
    if have is not None and have < needed:
        raise UserError(f"--cuda-arch {normalized_archs} needs CMake {needed[0]}.{needed[1]} or newer, "
                        f"{cmake} is {have[0]}.{have[1]}: give the architectures as numbers (e.g. 87 for "
                        "Jetson Orin) or pip install cmake")


def normalize_cuda_archs(spec: str) -> str:
    """'75,87 sm_90' -> '75;87;90' (CMAKE_CUDA_ARCHITECTURES); also 'native', 'all', 'all-major',
    and CMake's -real/-virtual suffixes. UserError on anything else."""
    items = [s for s in re.split(r"[,;\s]+", spec.strip()) if s]
    if not items:
        raise UserError("--cuda-arch is empty; give e.g. 87 (Jetson Orin) or 75,80,86,89,90")
    if len(items) == 1 and items[0] in ("native", "all", "all-major"):
        return items[0]
    out = []
    for item in items:
        m = _ARCH_PATTERN.match(item)
        if not m:
            raise UserError(f"--cuda-arch: '{item}' is not a CUDA architecture (examples: 75, sm_87, 90-virtual, native)")
        out.append(m.group(1) + (m.group(2) or ""))
    return ";".join(out)


def python_nvinfer_library() -> Optional[Path]:
    """libnvinfer(.so.N) of a pip-installed TensorRT (full, else lean), for static registration builds."""
    dirs = _python_package_dirs(PYTHON_TENSORRT_PACKAGES)
    for pattern in ("libnvinfer.so*", "libnvinfer_lean.so*"):
        for d in dirs:
            hits = sorted(d.glob(pattern))
            if hits:
                return hits[0]
    return None


# --------------------------------------------------------------------------------------------------------
# Build

def cmake_configure_command(cmake: Path, source_dir: Path, build_dir: Path, headers: TensorRTHeaders,
                            nvcc: Path, cuda_archs: Optional[str] = None,
                            static_registration: bool = False, extra: Iterable[str] = (),
                            tensorrt_root=None) -> list[str]:
    """``tensorrt_root``: the ``--tensorrt-root`` given, where a static-registration build finds
    libnvinfer (its lib/ or lib64/; CMake would otherwise look under $TENSORRT_ROOT only)."""
    cmd = [str(cmake), "-S", str(source_dir), "-B", str(build_dir),
           f"-DTENSORRT_INCLUDE_DIR={headers.include_dir}",
           f"-DCMAKE_CUDA_COMPILER={nvcc}",
           "-DCMAKE_BUILD_TYPE=Release"]
    if cuda_archs:
        cmd.append(f"-DCMAKE_CUDA_ARCHITECTURES={normalize_cuda_archs(cuda_archs)}")
    if static_registration:
        cmd.append("-DCORNERNET_DEPLOY_STATIC_REGISTRATION=ON")
        if tensorrt_root:
            cmd.append(f"-DTENSORRT_ROOT={Path(tensorrt_root).expanduser()}")
    cmd.extend(extra)
    return cmd


def _run_logged(cmd: list[str], log_path: Path, what: str) -> None:
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise UserError(f"{what} failed (exit {proc.returncode}); full log: {log_path}\n" + "\n".join(tail))


def build_plugin(tensorrt_root=None, cuda_archs: Optional[str] = None, build_dir=None, output_dir=None,
                 jobs: Optional[int] = None, static_registration: bool = False,
                 echo: Callable[[str], None] = print) -> Path:
    """Configure and build the plugin library for the TensorRT major of the headers found; copy it
    into ``output_dir`` (default: ``default_library_dir()/tensorrt-<major>``); return its path.
    Every check that can fail (paths, headers, tools, CMake features) runs before CMake does."""
    source_dir = plugin_source_dir()
    if build_dir is not None:
        check_output_dir(build_dir, "--build-dir")
        real = Path(build_dir).resolve()
        if real == source_dir.resolve() or real in source_dir.resolve().parents:
            raise UserError(f"--build-dir {build_dir}: holds the plugin sources ({source_dir}); CMake "
                            "would write its files among them: give another folder")
    if output_dir is not None:
        check_output_dir(output_dir, "--output")
    headers = find_tensorrt_headers(tensorrt_root)
    major = check_header_version(headers)
    archs = normalize_cuda_archs(cuda_archs) if cuda_archs else None
    nvcc = find_nvcc()
    cmake = find_cmake()
    check_cmake_supports_archs(cmake, archs)
    build_dir = Path(build_dir) if build_dir else default_build_dir() / major_dir_name(major)
    output_dir = Path(output_dir) if output_dir else default_library_dir() / major_dir_name(major)
    installed = importable_tensorrt_version()
    if installed is not None and int(installed.split(".")[0]) != major:
        warn(f"building for TensorRT {headers.version} headers, but the importable tensorrt is {installed}: "
             f"this library will only load into a TensorRT {major}.x process (build one with TensorRT "
             f"{installed.split('.')[0]} headers too for this Python)")
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = build_dir / "cornernet_deploy_build.log"
    log_path.write_text("")
    echo(f"TensorRT headers: {headers.include_dir} (version {headers.version}, via {headers.found_via})")
    echo(f"CUDA compiler:    {nvcc}")
    echo(f"build directory:  {build_dir}  (log: {log_path})")
    extra = []
    if static_registration and not (tensorrt_root or os.environ.get("TENSORRT_ROOT")):
        nvinfer = python_nvinfer_library()
        if nvinfer:  # e.g. a pip-installed TensorRT; otherwise CMake searches the system
            extra.append(f"-DNVINFER_LIBRARY={nvinfer}")
    _run_logged(cmake_configure_command(cmake, source_dir, build_dir, headers, nvcc, archs,
                                        static_registration, extra, tensorrt_root), log_path, "CMake configure")
    build_cmd = [str(cmake), "--build", str(build_dir), "--target", "cornernet_deploy_plugins",
                 "--parallel", str(jobs or max(1, min(4, os.cpu_count() or 1)))]
    _run_logged(build_cmd, log_path, "CMake build")
    built = build_dir / PLUGIN_LIBRARY_NAME
    if not built.is_file():
        raise UserError(f"the build finished but {built} is missing; see {log_path}")
    tagged = plugin_library_tensorrt_version(built)
    if tagged != headers.version:  # a stale build directory configured for other headers
        raise UserError(f"{built} says it was built with TensorRT {tagged} headers, not {headers.version}; "
                        f"remove {build_dir} and build again")
    target = output_dir / PLUGIN_LIBRARY_NAME
    with atomic_path(target, suffix=".so") as tmp:  # a loader never sees a half-copied library
        shutil.copy2(built, tmp)
    echo(f"plugin library:   {target}  (TensorRT {major}.x)")
    return target


def compile_kernel_library(output_dir, arch: str = "native", echo: Callable[[str], None] = lambda _m: None) -> Path:
    """Compile only the corner-pool kernels (no TensorRT) into ``output_dir/libcornerpool_kernels_<arch>.so``
    for ctypes use in GPU tests and benchmarks. ``arch``: 'native' (the GPUs of this machine) or e.g. '90'.
    Reuses an existing library that is newer than the kernel sources."""
    sources = plugin_source_dir() / "cornerPoolPlugin"
    kernel = sources / "cornerPoolKernel.cu"
    arch_flag = "-arch=native" if arch == "native" else f"-arch=sm_{normalize_cuda_archs(arch)}"
    target = Path(output_dir) / f"libcornerpool_kernels_{arch}.so"
    newest_source = max(p.stat().st_mtime for p in (kernel, sources / "cornerPoolKernel.h"))
    if target.is_file() and target.stat().st_mtime > newest_source:
        return target
    nvcc = find_nvcc()
    with atomic_path(target, suffix=".so") as tmp:
        cmd = [str(nvcc), "-std=c++17", "-O3", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", arch_flag,
               str(kernel), "-o", str(tmp)]
        echo(" ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"nvcc failed to compile the corner-pool kernels:\n{proc.stderr[-4000:]}")
    return target


def load_kernel_library(path):
    """ctypes handle of a library exporting the corner-pool C API (the kernel-only library or the plugin
    library), with argument types set. Pointers and the stream are passed as integers."""
    import ctypes

    lib = ctypes.CDLL(str(path))
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.cornerPoolForward.argtypes = [i, i, p, p, p, i, i, i, i, p]
    lib.cornerPoolForward.restype = i
    lib.cornerPoolDirectional.argtypes = [i, i, p, p, i, i, i, i, p]
    lib.cornerPoolDirectional.restype = i
    lib.cornerPoolStatusString.argtypes = [i]
    lib.cornerPoolStatusString.restype = ctypes.c_char_p
    lib.cornerPoolMaxWidth.argtypes = []
    lib.cornerPoolMaxWidth.restype = i
    return lib


