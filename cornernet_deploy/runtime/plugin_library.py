"""The TensorRT corner-pool plugin library at run time: find it, check it, load it.

One library per TensorRT major version: the plugin-facing interfaces (ILogger, ILoggerFinder,
IPluginRegistry) have different vtables in 10.x and 11.x, so a library runs only in a TensorRT of
the major version of its headers (minor no newer). Each library carries its headers' version
(``contract.op.PLUGIN_VERSION_TAG`` in the file, and ``cornernetDeployTensorRTVersion()``).

* :func:`find_plugin_library` tells the TensorRT backend, ONNX Runtime's TensorRT provider and the
  engine builder which library to load for the running TensorRT: ``$CORNERNET_DEPLOY_PLUGIN`` if
  set (a file, or a directory holding the library or ``tensorrt-<major>/`` folders), else where
  ``cornernet-deploy plugin build`` puts it (``default_library_dir``);
* :func:`verify_plugin_library` accepts only our library (an ELF shared object with our tag, and
  the recorded SHA-256 where there is one): what an engine manifest names is never trusted as is;
* :func:`load_plugin_library` refuses a library of another major (one line, before TensorRT
  touches it), skips the load when the creator is already registered, and registers it otherwise;
* :func:`registers_on_load` tells the two builds apart: the default one registers only when TensorRT's
  ``loadLibrary`` asks it (``getCreators``), the ``--static-registration`` one as soon as it is
  loaded, which is all that loaders doing a plain ``dlopen`` (ONNX Runtime's
  ``trt_extra_plugin_lib_paths``, polygraphy's ``--plugins``, trtexec's ``--staticPlugins``) ever do.

Building the library is ``tensorrt/plugin_build.py`` (build tooling, not needed at run time).
Importing this module imports neither TensorRT nor torch.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

from ..contract.op import CORNER_POOL, PLUGIN_LIBRARY_NAME, PLUGIN_VERSION_TAG
from ..errors import UserError, warn
from ..fileio import sha256_file, user_cache_dir
from .tensorrt_common import tensorrt_major

__all__ = ["PLUGIN_ENV", "PLUGIN_LIBRARY_NAME", "default_library_dir", "major_dir_name",
           "find_plugin_library", "built_plugin_libraries", "plugin_library_tensorrt_version",
           "check_library_matches", "verify_plugin_library", "load_plugin_library", "needed_libraries",
           "registers_on_load", "importable_tensorrt_version", "checkout_root"]

PLUGIN_ENV = "CORNERNET_DEPLOY_PLUGIN"
_CREATOR = (CORNER_POOL.plugin_name, CORNER_POOL.plugin_version, CORNER_POOL.plugin_namespace)
_ELF_MAGIC = b"\x7fELF"
_ET_DYN = 3
_SHT_DYNAMIC, _DT_NEEDED = 6, 1


def checkout_root() -> Optional[Path]:
    """The source checkout this package runs from, or None when installed without sources."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "plugins" / "CMakeLists.txt").is_file() else None


def default_library_dir() -> Path:
    """Where ``plugin build`` puts its libraries, one ``tensorrt-<major>/`` folder per TensorRT
    major: ``<checkout>/build/lib``, or outside a checkout ``$XDG_CACHE_HOME/cornernet_deploy/lib``."""
    root = checkout_root()
    return (root / "build" / "lib") if root else user_cache_dir("lib")


def major_dir_name(major: int) -> str:
    return f"tensorrt-{major}"


def importable_tensorrt_version() -> Optional[str]:
    """``tensorrt.__version__`` of the Python TensorRT this interpreter would import, or None.
    Asked in a child process: importing TensorRT here would load its libraries for nothing."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        proc = subprocess.run([sys.executable, "-c", "import tensorrt; print(tensorrt.__version__)"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    version = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""
    return version if re.match(r"^\d+\.\d+", version) else None




def plugin_library_tensorrt_version(path) -> Optional[str]:
    """"X.Y.Z" of the TensorRT headers a plugin library was built with, read from the file (the
    library is not loaded), or None for a file without the tag (not ours, or built before the tag)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    m = re.search(PLUGIN_VERSION_TAG, data)
    return ".".join(g.decode() for g in m.groups()) if m else None


def verify_plugin_library(path, expected_sha256: Optional[str] = None, what: str = "plugin library") -> str:
    """Accept ``path`` only if it is our plugin library: an ELF shared object carrying our TensorRT
    version tag and, when ``expected_sha256`` is given (an engine manifest records it), with that
    SHA-256. Returns the tag's version; a one-line UserError otherwise. What a manifest names is
    never copied or loaded without this check."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    # e_type (bytes 16-17, little-endian on every platform TensorRT runs on) must be ET_DYN
    if len(head) < 18 or head[:4] != _ELF_MAGIC or int.from_bytes(head[16:18], "little") != _ET_DYN:
        raise UserError(f"{what} {path} is not a shared library (not an ELF .so): refusing it")
    version = plugin_library_tensorrt_version(path)
    if version is None:
        raise UserError(f"{what} {path} is not a cornernet-deploy plugin library (no "
                        "cornernet_deploy_tensorrt_headers tag): refusing it")
    if expected_sha256 and sha256_file(path) != expected_sha256:
        raise UserError(f"{path} is not the plugin library the engine was built with (its SHA-256 "
                        "differs from the manifest's plugin_sha256); pass the right one with --plugin")
    return version


def needed_libraries(path) -> list:
    """The DT_NEEDED entries of a 64-bit little-endian ELF file (x86-64, aarch64): the libraries the
    loader loads with it, read from the file without loading it; [] for anything else (not ELF,
    another class, no dynamic section, unreadable)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return []
    if data[:4] != _ELF_MAGIC or data[4:6] != b"\x02\x01":
        return []
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        needed = []
        for _name, kind, _flags, _addr, offset, size, link, _info, _align, _entsize in sections:
            if kind != _SHT_DYNAMIC:
                continue
            strings = sections[link][4]   # sh_offset of the string table the dynamic section links
            for pos in range(offset, offset + size, 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == 0:              # DT_NULL ends the table
                    break
                if tag == _DT_NEEDED:
                    end = data.index(b"\0", strings + value)
                    needed.append(data[strings + value:end].decode("ascii", "replace"))
        return needed
    except (struct.error, IndexError, ValueError):
        return []


def registers_on_load(path) -> Optional[str]:
    """The TensorRT library (``libnvinfer.so.N``, or a lean/dispatch one) that a plugin library built
    with ``plugin build --static-registration`` registers its creator with as soon as it is loaded,
    or None for the default build: that one needs no TensorRT library (tests check it) and registers
    only when TensorRT's ``loadLibrary`` calls its ``getCreators``."""
    return next((n for n in needed_libraries(path) if n.startswith("libnvinfer")), None)


def check_library_matches(path, library_version: Optional[str], runtime_version: str) -> Optional[str]:
    """UserError when the library cannot run in this TensorRT (another major, or no version tag);
    a warning text when its headers are of a newer minor than the runtime; else None."""
    runtime_major = int(str(runtime_version).split(".")[0])
    if library_version is None:
        raise UserError(f"{path} carries no TensorRT version (not a cornernet-deploy plugin library, or built "
                        f"by an older cornernet-deploy): rebuild it with `cornernet-deploy plugin build` using "
                        f"TensorRT {runtime_major} headers")
    library = tuple(int(x) for x in library_version.split(".")[:2])
    runtime = tuple(int(x) for x in str(runtime_version).split(".")[:2])
    if library[0] != runtime[0]:
        raise UserError(f"{path} was built with TensorRT {library_version} headers but this is TensorRT "
                        f"{runtime_version}: a plugin library only runs in the TensorRT major it was built for; "
                        f"build one with TensorRT {runtime[0]} headers (`cornernet-deploy plugin build "
                        f"--tensorrt-root DIR`)")
    if library > runtime:
        return (f"{path} was built with TensorRT {library_version} headers, newer than this TensorRT "
                f"{runtime_version}; TensorRT supports plugins built with headers of its own or an older "
                f"minor version: rebuild it with TensorRT {runtime[0]}.{runtime[1]} headers if it misbehaves")
    return None


def _library_in(directory: Path, major: Optional[int]) -> Optional[Path]:
    candidates = [directory / major_dir_name(major) / PLUGIN_LIBRARY_NAME] if major else []
    candidates.append(directory / PLUGIN_LIBRARY_NAME)
    return next((c for c in candidates if c.is_file()), None)


def find_plugin_library(required: bool = True, tensorrt_major: Optional[int] = None) -> Optional[Path]:
    """The plugin library to load into a TensorRT of major version ``tensorrt_major``:
    ``$CORNERNET_DEPLOY_PLUGIN`` (a file, or a directory holding the library or ``tensorrt-<major>/``),
    else the default build output for that major. Raises UserError when ``required`` and nothing is
    found, else returns None. Which version a found library was built for is checked when it is loaded."""
    env = os.environ.get(PLUGIN_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.exists():
            raise UserError(f"{PLUGIN_ENV}={env}: {path} does not exist")
        found = _library_in(path, tensorrt_major) if path.is_dir() else path
        if found is None:
            raise UserError(f"{PLUGIN_ENV}={env}: no {PLUGIN_LIBRARY_NAME} in {path}"
                            + (f" nor in {path / major_dir_name(tensorrt_major)}" if tensorrt_major else ""))
        return found.resolve()
    if tensorrt_major:
        found = _library_in(default_library_dir(), tensorrt_major)
    else:
        found = next(iter(built_plugin_libraries()), None)
    if found is not None:
        return found
    if required:
        expected = default_library_dir() / (major_dir_name(tensorrt_major) if tensorrt_major else "") / PLUGIN_LIBRARY_NAME
        raise UserError(f"TensorRT plugin library not found ({expected}); build it with `cornernet-deploy plugin "
                        f"build`" + (f" (TensorRT {tensorrt_major} headers)" if tensorrt_major else "")
                        + f" or point {PLUGIN_ENV} at it")
    return None


def built_plugin_libraries() -> list:
    """Every library under the default build output, newest TensorRT major first."""
    root = default_library_dir()
    found = sorted(root.glob(f"tensorrt-*/{PLUGIN_LIBRARY_NAME}"),
                   key=lambda p: -int(p.parent.name.split("-")[-1]) if p.parent.name.split("-")[-1].isdigit() else 0)
    if (root / PLUGIN_LIBRARY_NAME).is_file():
        found.append(root / PLUGIN_LIBRARY_NAME)
    return found


_loaded: dict = {}


def load_plugin_library(trt, path=None, echo: Callable[[str], None] = warn):
    """Make ``trt``'s plugin registry know CornerPool (``trt`` = the imported tensorrt module, or
    tensorrt_lean/tensorrt_dispatch), once per process:

    * when CornerPool is already registered (another copy of the library, or a statically registering
      build) nothing is loaded: TensorRT would refuse a second registration;
    * a library built for another TensorRT major is refused before TensorRT sees it (it would crash
      the process or lose its messages); a newer minor is loaded with a warning (``echo``);
    * otherwise the library is loaded and the creator checked: through the registry's
      ``load_library`` (the default build), or with a plain ``dlopen`` for a build that registers
      itself on load (:func:`registers_on_load`).

    Returns the library handle (the registry's, or the ``ctypes.CDLL``), or None when nothing had
    to be loaded."""
    major = tensorrt_major(trt)
    path = Path(path) if path else find_plugin_library(tensorrt_major=major)
    key = (id(trt), str(Path(path).resolve()))
    if key in _loaded:
        return _loaded[key]
    registry = trt.get_plugin_registry()
    if registry.get_creator(*_CREATOR) is not None:
        _loaded[key] = None
        return None
    if not Path(path).is_file():
        raise UserError(f"plugin library {path} does not exist")
    note = check_library_matches(path, plugin_library_tensorrt_version(path), trt.__version__)
    if note:
        echo(note)
    registers_with = registers_on_load(path)
    if registers_with:
        # Its creator registers while the library loads; loadLibrary would then register it a second
        # time through getCreators, fail, and return no handle (seen with the 11.4 lean registry).
        try:
            handle = ctypes.CDLL(str(path))
        except OSError as exc:
            raise UserError(f"could not load the plugin library {path}: {exc}") from None
        if registry.get_creator(*_CREATOR) is None:
            raise UserError(f"{path} registers its creator with {registers_with} when loaded, which is not "
                            f"the plugin registry of this TensorRT ({getattr(trt, '__name__', 'tensorrt')} "
                            f"{trt.__version__}); use the default build here (`cornernet-deploy plugin build` "
                            "without --static-registration)")
    else:
        handle = registry.load_library(str(path))
        if handle is None:
            raise UserError(f"TensorRT could not load the plugin library {path} (see the TensorRT log above)")
    if registry.get_creator(*_CREATOR) is None:
        raise UserError(f"{path} loaded but registers no {CORNER_POOL.plugin_namespace}::{CORNER_POOL.plugin_name} "
                        f"version {CORNER_POOL.plugin_version}; rebuild it with `cornernet-deploy plugin build`")
    _loaded[key] = handle
    return handle
