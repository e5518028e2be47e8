"""`cornernet-deploy plugin` and cornernet_deploy.tensorrt.plugin_build: header discovery, arch parsing,
library lookup and loading, CLI errors. Fast: no compiler is run here (see test_plugin_compile.py)."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.tensorrt import plugin_build

ROOT = Path(__file__).resolve().parents[1]

HEADER_10_3 = "#define NV_TENSORRT_MAJOR 10 //!< major\n#define NV_TENSORRT_MINOR 3\n#define NV_TENSORRT_PATCH 0\n"
HEADER_11_1 = ("#define TRT_MAJOR_ENTERPRISE 11\n#define TRT_MINOR_ENTERPRISE 1\n#define TRT_PATCH_ENTERPRISE 0\n"
               "#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n")


def fake_headers(directory: Path, version_header: str = HEADER_10_3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "NvInferRuntime.h").write_text("// fake\n")
    (directory / "NvInferVersion.h").write_text(version_header)
    return directory


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("TENSORRT_ROOT", "TENSORRT_INCLUDE_DIR", plugin_build.PLUGIN_ENV):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_modules_import_neither_tensorrt_nor_torch():
    code = ("import sys, cornernet_deploy.commands.plugin, cornernet_deploy.tensorrt.plugin_build\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'tensorrt', 'tensorrt_lean_bindings', 'tensorrt_libs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


# ---- header discovery ------------------------------------------------------------------------------------

def test_version_is_read_from_10x_and_11x_headers(tmp_path):
    assert plugin_build.tensorrt_header_version(fake_headers(tmp_path / "a", HEADER_10_3)) == "10.3.0"
    assert plugin_build.tensorrt_header_version(fake_headers(tmp_path / "b", HEADER_11_1)) == "11.1.0"
    assert plugin_build.tensorrt_header_version(tmp_path / "missing") is None


def test_explicit_root_wins_over_environment(tmp_path, clean_env):
    fake_headers(tmp_path / "explicit" / "include", HEADER_11_1)
    clean_env.setenv("TENSORRT_INCLUDE_DIR", str(fake_headers(tmp_path / "env_include")))
    found = plugin_build.find_tensorrt_headers(tmp_path / "explicit", system_dirs=())
    assert found.include_dir == (tmp_path / "explicit" / "include").resolve()
    assert found.version == "11.1.0" and found.found_via == "--tensorrt-root"
    # The root may also be the include directory itself.
    assert plugin_build.find_tensorrt_headers(tmp_path / "explicit" / "include").include_dir == found.include_dir


def test_explicit_root_without_headers_is_an_error_not_a_fallback(tmp_path, clean_env):
    clean_env.setenv("TENSORRT_INCLUDE_DIR", str(fake_headers(tmp_path / "env_include")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--tensorrt-root .*empty: no NvInferRuntime.h"):
        plugin_build.find_tensorrt_headers(tmp_path / "empty")


def test_environment_order_include_dir_then_root(tmp_path, clean_env):
    clean_env.setenv("TENSORRT_ROOT", str(tmp_path / "root"))
    fake_headers(tmp_path / "root" / "include", HEADER_11_1)
    assert plugin_build.find_tensorrt_headers(system_dirs=()).found_via == "TENSORRT_ROOT"
    clean_env.setenv("TENSORRT_INCLUDE_DIR", str(fake_headers(tmp_path / "inc")))
    found = plugin_build.find_tensorrt_headers(system_dirs=())
    assert found.found_via == "TENSORRT_INCLUDE_DIR" and found.version == "10.3.0"
    clean_env.setenv("TENSORRT_INCLUDE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="TENSORRT_INCLUDE_DIR=.*nowhere does not contain NvInferRuntime.h"):
        plugin_build.find_tensorrt_headers(system_dirs=())


def test_system_directories_then_python_package(tmp_path, clean_env):
    system = fake_headers(tmp_path / "usr" / "include" / "aarch64-linux-gnu")
    found = plugin_build.find_tensorrt_headers(system_dirs=[str(tmp_path / "absent"), str(system)],
                                               python_packages=())
    assert found.include_dir == system.resolve() and found.found_via == "system"

    package = tmp_path / "site" / "fake_tensorrt_pkg"
    (package / "__init__.py").parent.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    fake_headers(package / "include", HEADER_11_1)
    clean_env.syspath_prepend(str(tmp_path / "site"))
    found = plugin_build.find_tensorrt_headers(system_dirs=(), python_packages=["fake_tensorrt_pkg"])
    assert found.found_via == "Python package fake_tensorrt_pkg" and found.version == "11.1.0"
    assert "fake_tensorrt_pkg" not in sys.modules  # located, not imported


def test_no_headers_anywhere_gives_instructions(tmp_path, clean_env):
    with pytest.raises(UserError) as info:
        plugin_build.find_tensorrt_headers(system_dirs=[str(tmp_path / "x")], python_packages=())
    message = str(info.value)
    assert "TensorRT headers not found" in message and str(tmp_path / "x") in message
    assert "--tensorrt-root" in message and "libnvinfer-dev" in message


# ---- CUDA architectures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("87", "87"),
    ("75,80 86;sm_87  89", "75;80;86;87;89"),
    ("compute_90", "90"),
    ("90-virtual,87-real", "90-virtual;87-real"),
    ("100a", "100a"),
    ("native", "native"),
    ("all-major", "all-major"),
])
def test_cuda_arch_lists_are_normalized_for_cmake(spec, expected):
    assert plugin_build.normalize_cuda_archs(spec) == expected


@pytest.mark.parametrize("spec", ["", " , ", "sm_8x", "ampere", "87,native", "8.7"])
def test_bad_cuda_arch_lists_are_rejected(spec):
    with pytest.raises(UserError, match="--cuda-arch"):
        plugin_build.normalize_cuda_archs(spec)


def test_configure_command_passes_headers_compiler_and_archs(tmp_path):
    headers = plugin_build.TensorRTHeaders(tmp_path / "inc", "10.3.0", "test")
    cmd = plugin_build.cmake_configure_command(Path("cmake"), tmp_path / "src", tmp_path / "build", headers,
                                               Path("/cuda/bin/nvcc"), cuda_archs="sm_87", static_registration=True)
    assert cmd[:5] == ["cmake", "-S", str(tmp_path / "src"), "-B", str(tmp_path / "build")]
    assert f"-DTENSORRT_INCLUDE_DIR={tmp_path / 'inc'}" in cmd
    assert "-DCMAKE_CUDA_COMPILER=/cuda/bin/nvcc" in cmd
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in cmd
    assert "-DCORNERNET_DEPLOY_STATIC_REGISTRATION=ON" in cmd
    no_arch = plugin_build.cmake_configure_command(Path("cmake"), tmp_path, tmp_path, headers, Path("nvcc"))
    assert not any(a.startswith("-DCMAKE_CUDA_ARCHITECTURES") for a in no_arch)  # CMakeLists default


# ---- finding and loading the library ---------------------------------------------------------------------

def test_find_plugin_library_from_environment(tmp_path, clean_env):
    library = tmp_path / plugin_build.PLUGIN_LIBRARY_NAME
    library.write_bytes(b"\x7fELF")
    clean_env.setenv(plugin_build.PLUGIN_ENV, str(library))
    assert plugin_build.find_plugin_library() == library.resolve()
    clean_env.setenv(plugin_build.PLUGIN_ENV, str(tmp_path))  # a directory holding the library
    assert plugin_build.find_plugin_library() == library.resolve()
    clean_env.setenv(plugin_build.PLUGIN_ENV, str(tmp_path / "gone.so"))
    with pytest.raises(UserError, match="CORNERNET_DEPLOY_PLUGIN=.*gone.so does not exist"):
        plugin_build.find_plugin_library(required=False)  # an explicit setting that is wrong is always an error


def test_find_plugin_library_default_location(tmp_path, clean_env):
    clean_env.setattr(plugin_build, "default_output_dir", lambda: tmp_path / "lib")
    assert plugin_build.find_plugin_library(required=False) is None
    with pytest.raises(UserError, match="cornernet-deploy plugin build"):
        plugin_build.find_plugin_library()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / plugin_build.PLUGIN_LIBRARY_NAME).write_bytes(b"\x7fELF")
    assert plugin_build.find_plugin_library() == tmp_path / "lib" / plugin_build.PLUGIN_LIBRARY_NAME


class FakeRegistry:
    def __init__(self, handle="handle", creators=(("CornerPool", "1", "cornernet_deploy"),)):
        self.handle, self.creators, self.loaded = handle, set(creators), []

    def load_library(self, path):
        self.loaded.append(path)
        return self.handle

    def get_creator(self, name, version, namespace):
        return object() if (name, version, namespace) in self.creators else None


def fake_trt(registry):
    return types.SimpleNamespace(get_plugin_registry=lambda: registry)


def test_load_plugin_library_registers_once_and_checks_the_creator(tmp_path):
    library = tmp_path / "lib.so"
    library.write_bytes(b"")
    registry = FakeRegistry()
    trt = fake_trt(registry)
    assert plugin_build.load_plugin_library(trt, library) == "handle"
    assert plugin_build.load_plugin_library(trt, library) == "handle"
    assert registry.loaded == [str(library)]

    with pytest.raises(UserError, match="could not load"):
        plugin_build.load_plugin_library(fake_trt(FakeRegistry(handle=None)), library)
    with pytest.raises(UserError, match="registers no cornernet_deploy::CornerPool version 1"):
        plugin_build.load_plugin_library(fake_trt(FakeRegistry(creators=())), library)


# ---- the CLI ---------------------------------------------------------------------------------------------

def test_cli_without_verb_prints_help(capsys):
    assert main(["plugin"]) == 2
    out = capsys.readouterr().out
    assert "build" in out and "path" in out


def test_cli_build_reports_user_errors(tmp_path, clean_env, capsys):
    assert main(["plugin", "build", "--cuda-arch", "sm_8x"]) == 2
    assert "'sm_8x' is not a CUDA architecture" in capsys.readouterr().err
    assert main(["plugin", "build", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert main(["plugin", "build", "--tensorrt-root", str(tmp_path)]) == 2
    assert f"--tensorrt-root {tmp_path}: no NvInferRuntime.h" in capsys.readouterr().err


def test_cli_path_prints_the_library(tmp_path, clean_env, capsys):
    library = tmp_path / plugin_build.PLUGIN_LIBRARY_NAME
    library.write_bytes(b"")
    clean_env.setenv(plugin_build.PLUGIN_ENV, str(library))
    assert main(["plugin", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(library.resolve())
