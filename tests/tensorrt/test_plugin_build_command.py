"""`cornernet-deploy plugin` and cornernet_deploy.tensorrt.plugin_build: header discovery, arch parsing,
library lookup and loading, CLI errors. Fast: no compiler is run here (see test_plugin_compile.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime import plugin_library
from cornernet_deploy.tensorrt import plugin_build
from support import linked_library, tagged_library

ROOT = Path(__file__).resolve().parents[2]

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
    for var in ("TENSORRT_ROOT", "TENSORRT_INCLUDE_DIR", plugin_library.PLUGIN_ENV):
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
    assert not any(a.startswith("-DTENSORRT_ROOT=") for a in cmd)      # $TENSORRT_ROOT, if any, is CMake's
    rooted = plugin_build.cmake_configure_command(Path("cmake"), tmp_path, tmp_path, headers, Path("nvcc"),
                                                  static_registration=True, tensorrt_root=tmp_path / "trt")
    assert f"-DTENSORRT_ROOT={tmp_path / 'trt'}" in rooted   # where CMake looks for libnvinfer to link
    no_arch = plugin_build.cmake_configure_command(Path("cmake"), tmp_path, tmp_path, headers, Path("nvcc"))
    assert not any(a.startswith("-DCMAKE_CUDA_ARCHITECTURES") for a in no_arch)  # CMakeLists default


# ---- finding and loading the library ---------------------------------------------------------------------

def test_find_plugin_library_from_environment(tmp_path, clean_env):
    library = tmp_path / plugin_build.PLUGIN_LIBRARY_NAME
    library.write_bytes(b"\x7fELF")
    clean_env.setenv(plugin_library.PLUGIN_ENV, str(library))
    assert plugin_library.find_plugin_library() == library.resolve()
    clean_env.setenv(plugin_library.PLUGIN_ENV, str(tmp_path))  # a directory holding the library
    assert plugin_library.find_plugin_library() == library.resolve()
    clean_env.setenv(plugin_library.PLUGIN_ENV, str(tmp_path / "gone.so"))
    with pytest.raises(UserError, match="CORNERNET_DEPLOY_PLUGIN=.*gone.so does not exist"):
        plugin_library.find_plugin_library(required=False)  # an explicit setting that is wrong is always an error


def test_find_plugin_library_default_location(tmp_path, clean_env):
    clean_env.setattr(plugin_library, "default_library_dir", lambda: tmp_path / "lib")
    assert plugin_library.find_plugin_library(required=False) is None
    with pytest.raises(UserError, match="cornernet-deploy plugin build"):
        plugin_library.find_plugin_library()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / plugin_build.PLUGIN_LIBRARY_NAME).write_bytes(b"\x7fELF")
    assert plugin_library.find_plugin_library() == tmp_path / "lib" / plugin_build.PLUGIN_LIBRARY_NAME


def test_find_plugin_library_picks_the_running_tensorrt_major(tmp_path, clean_env):
    clean_env.setattr(plugin_library, "default_library_dir", lambda: tmp_path / "lib")
    for major in (10, 11):
        (tmp_path / "lib" / f"tensorrt-{major}").mkdir(parents=True)
        (tmp_path / "lib" / f"tensorrt-{major}" / plugin_build.PLUGIN_LIBRARY_NAME).write_bytes(b"\x7fELF")
    assert plugin_library.find_plugin_library(tensorrt_major=10).parent.name == "tensorrt-10"
    assert plugin_library.find_plugin_library(tensorrt_major=11).parent.name == "tensorrt-11"
    with pytest.raises(UserError, match=r"tensorrt-12.*TensorRT 12 headers"):
        plugin_library.find_plugin_library(tensorrt_major=12)
    assert [p.parent.name for p in plugin_library.built_plugin_libraries()] == ["tensorrt-11", "tensorrt-10"]
    # $CORNERNET_DEPLOY_PLUGIN may name a folder of per-major folders too
    clean_env.setenv(plugin_library.PLUGIN_ENV, str(tmp_path / "lib"))
    assert plugin_library.find_plugin_library(tensorrt_major=10) == (tmp_path / "lib" / "tensorrt-10" /
                                                                   plugin_build.PLUGIN_LIBRARY_NAME).resolve()
    with pytest.raises(UserError, match="no libcornernet_deploy_plugins.so in .*lib nor in .*tensorrt-12"):
        plugin_library.find_plugin_library(tensorrt_major=12)


def test_library_version_is_read_from_the_file_without_loading_it(tmp_path):
    assert plugin_library.plugin_library_tensorrt_version(tagged_library(tmp_path / "a.so", "10.3.0")) == "10.3.0"
    (tmp_path / "b.so").write_bytes(b"\x7fELF no tag")
    assert plugin_library.plugin_library_tensorrt_version(tmp_path / "b.so") is None
    assert plugin_library.plugin_library_tensorrt_version(tmp_path / "missing.so") is None


@pytest.mark.parametrize("library, runtime, outcome", [
    ("10.3.0", "10.16.1.11", None),            # older minor of the same major: supported
    ("10.16.0", "10.16.1.11", None),
    ("11.1.0", "11.4.0.106", None),
    ("10.16.0", "10.3.0.26", "warning"),       # newer headers than the runtime: allowed, with a warning
    ("11.1.0", "10.16.1.11", "refused"),       # another major: vtables differ (crash / lost messages)
    ("10.16.0", "11.4.0.106", "refused"),
    (None, "10.16.1.11", "refused"),           # no tag: cannot know, so never risk it
])
def test_library_and_runtime_versions_decide_the_load(library, runtime, outcome):
    if outcome == "refused":
        with pytest.raises(UserError) as info:
            plugin_library.check_library_matches("lib.so", library, runtime)
        assert "\n" not in str(info.value) and f"TensorRT {runtime.split('.')[0]} headers" in str(info.value)
    else:
        note = plugin_library.check_library_matches("lib.so", library, runtime)
        assert (note is not None) == (outcome == "warning")


class FakeRegistry:
    """Records what load_plugin_library asks of a registry (the real registries of TensorRT 10 and 11
    are exercised in test_plugin_compile.py)."""

    def __init__(self, handle="handle", creators_after_load=(("CornerPool", "1", "cornernet_deploy"),),
                 registered=()):
        self.handle, self.after_load, self.creators, self.loaded = handle, set(creators_after_load), set(registered), []

    def load_library(self, path):
        self.loaded.append(path)
        self.creators |= self.after_load
        return self.handle

    def get_creator(self, name, version, namespace):
        return object() if (name, version, namespace) in self.creators else None


def fake_trt(registry, version="10.16.1.11"):
    return types.SimpleNamespace(get_plugin_registry=lambda: registry, __version__=version)


def test_load_plugin_library_registers_once_and_checks_the_creator(tmp_path):
    library = tagged_library(tmp_path / "lib.so", "10.16.0")
    registry = FakeRegistry()
    trt = fake_trt(registry)
    assert plugin_library.load_plugin_library(trt, library) == "handle"
    assert plugin_library.load_plugin_library(trt, library) == "handle"
    assert registry.loaded == [str(library)]

    with pytest.raises(UserError, match="could not load"):
        plugin_library.load_plugin_library(fake_trt(FakeRegistry(handle=None, creators_after_load=())), library)
    with pytest.raises(UserError, match="registers no cornernet_deploy::CornerPool version 1"):
        plugin_library.load_plugin_library(fake_trt(FakeRegistry(creators_after_load=())), library)


def test_load_plugin_library_refuses_another_major_before_touching_the_registry(tmp_path):
    library = tagged_library(tmp_path / "lib11.so", "11.1.0")
    registry = FakeRegistry()
    with pytest.raises(UserError, match="built with TensorRT 11.1.0 headers but this is TensorRT 10.16.1.11"):
        plugin_library.load_plugin_library(fake_trt(registry, "10.16.1.11"), library)
    assert registry.loaded == []


def test_load_plugin_library_skips_the_load_when_cornerpool_is_registered(tmp_path):
    # e.g. a second copy of the library, or a statically registering build already loaded
    registry = FakeRegistry(registered=[("CornerPool", "1", "cornernet_deploy")])
    assert plugin_library.load_plugin_library(fake_trt(registry), tmp_path / "not-even-there.so") is None
    assert registry.loaded == []


def test_load_plugin_library_warns_about_newer_headers(tmp_path):
    library = tagged_library(tmp_path / "lib.so", "10.16.0")
    notes = []
    plugin_library.load_plugin_library(fake_trt(FakeRegistry(), "10.3.0.26"), library, echo=notes.append)
    assert len(notes) == 1 and "newer than this TensorRT 10.3.0.26" in notes[0]


def _readelf_needed(path) -> list:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not on PATH")
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def test_needed_libraries_are_those_readelf_lists(tmp_path):
    import onnxruntime

    linked = linked_library(tmp_path / "lib.so", "10.16.0", "libnvinfer.so.10")
    extension = next(Path(onnxruntime.__file__).parent.glob("capi/onnxruntime_pybind11_state*.so"))
    for path in (linked, extension):
        expected = _readelf_needed(path)
        assert expected and plugin_library.needed_libraries(path) == expected, path
    assert plugin_library.needed_libraries(tagged_library(tmp_path / "tagged.so", "10.16.0")) == []  # no sections
    assert plugin_library.needed_libraries(tmp_path / "missing.so") == []
    # a --static-registration build links the TensorRT library its creator registers with; the default none
    assert plugin_library.registers_on_load(linked) == "libnvinfer.so.10"
    assert plugin_library.registers_on_load(extension) is None


def test_a_self_registering_library_is_dlopened_not_given_to_load_library(tmp_path):
    # Its libnvinfer.so.10 cannot be found here: the dlopen fails with one line, and TensorRT's
    # loadLibrary (which would register the creator a second time) is never called.
    library = linked_library(tmp_path / "lib.so", "10.16.0", "libnvinfer.so.10")
    registry = FakeRegistry()
    with pytest.raises(UserError, match=r"could not load the plugin library .*libnvinfer\.so\.10"):
        plugin_library.load_plugin_library(fake_trt(registry), library)
    assert registry.loaded == []


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


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("option", ["--build-dir", "--output"])
def test_cli_build_refuses_a_file_as_folder_before_any_work(tmp_path, clean_env, capsys, option):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    headers = fake_headers(tmp_path / "inc")
    assert main(["plugin", "build", "--tensorrt-root", str(headers), option, str(a_file)]) == 2
    assert f"{option} {a_file}: is a file; give a folder" in _one_line_error(capsys)
    assert main(["plugin", "build", "--tensorrt-root", str(headers), option, str(a_file / "sub")]) == 2
    assert f"{a_file} is a file, not a folder" in _one_line_error(capsys)


HEADER_8_6 = "#define NV_TENSORRT_MAJOR 8\n#define NV_TENSORRT_MINOR 6\n#define NV_TENSORRT_PATCH 1\n"


def test_cli_build_refuses_tensorrt_8_headers_before_cmake(tmp_path, clean_env, capsys):
    headers = fake_headers(tmp_path / "trt8" / "include", HEADER_8_6)
    build_dir = tmp_path / "build"
    assert main(["plugin", "build", "--tensorrt-root", str(tmp_path / "trt8"), "--build-dir", str(build_dir)]) == 2
    err = _one_line_error(capsys)
    assert f"TensorRT 8.6.1 headers found in {headers.resolve()}" in err and "needs TensorRT 10.0 or newer" in err
    assert not build_dir.exists()  # CMake never ran


def _fake_tool(directory: Path, name: str, script: str) -> Path:
    """A stand-in for a build tool (not for TensorRT): a shell script on PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)
    return tool


def test_cli_build_refuses_named_archs_that_the_cmake_is_too_old_for(tmp_path, clean_env, capsys):
    # JetPack 6 ships CMake 3.22: 'native' (3.24) and 'all-major' (3.23) would fail inside CMake.
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "cmake", 'if [ "$1" = "--version" ]; then echo "cmake version 3.22.1"; exit 0; fi\n'
                                 'echo "configure ran" > "$CMAKE_RAN"; exit 1\n')
    clean_env.setenv("CUDACXX", str(_fake_tool(bin_dir, "nvcc", "exit 0\n")))
    clean_env.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    clean_env.setenv("CMAKE_RAN", str(tmp_path / "cmake_ran"))
    headers = fake_headers(tmp_path / "inc")
    for arch, version in (("native", "3.24"), ("all-major", "3.23")):
        assert main(["plugin", "build", "--tensorrt-root", str(headers), "--cuda-arch", arch,
                     "--build-dir", str(tmp_path / "build")]) == 2
        assert f"--cuda-arch {arch} needs CMake {version} or newer" in _one_line_error(capsys)
    assert not (tmp_path / "cmake_ran").exists()


def test_cli_build_warns_when_headers_and_importable_tensorrt_differ(tmp_path, clean_env, capsys):
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "cmake", 'if [ "$1" = "--version" ]; then echo "cmake version 3.25.1"; exit 0; fi\nexit 1\n')
    clean_env.setenv("CUDACXX", str(_fake_tool(bin_dir, "nvcc", "exit 0\n")))
    clean_env.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    clean_env.setattr(plugin_build, "importable_tensorrt_version", lambda: "11.4.0.106")
    headers = fake_headers(tmp_path / "inc", HEADER_10_3)
    assert main(["plugin", "build", "--tensorrt-root", str(headers), "--build-dir", str(tmp_path / "build")]) == 2
    err = capsys.readouterr().err
    assert ("warning: building for TensorRT 10.3.0 headers, but the importable tensorrt is 11.4.0.106: this library "
            "will only load into a TensorRT 10.x process") in err
    assert "CMake configure failed" in err  # the stand-in cmake stops it there


def test_default_output_is_one_folder_per_tensorrt_major(tmp_path, clean_env, capsys):
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "cmake", 'if [ "$1" = "--version" ]; then echo "cmake version 3.25.1"; exit 0; fi\nexit 1\n')
    clean_env.setenv("CUDACXX", str(_fake_tool(bin_dir, "nvcc", "exit 0\n")))
    clean_env.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    clean_env.setattr(plugin_build, "default_build_dir", lambda: tmp_path / "build")
    clean_env.setattr(plugin_build, "importable_tensorrt_version", lambda: None)
    assert main(["plugin", "build", "--tensorrt-root", str(fake_headers(tmp_path / "inc", HEADER_11_1))]) == 2
    assert f"build directory:  {tmp_path / 'build' / 'tensorrt-11'}" in capsys.readouterr().out


def test_cli_path_prints_the_library(tmp_path, clean_env, capsys):
    library = tmp_path / plugin_build.PLUGIN_LIBRARY_NAME
    library.write_bytes(b"")
    clean_env.setenv(plugin_library.PLUGIN_ENV, str(library))
    assert main(["plugin", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(library.resolve())


def test_cli_path_lists_every_major_without_a_tensorrt(tmp_path, clean_env, capsys):
    clean_env.setattr(plugin_library, "default_library_dir", lambda: tmp_path / "lib")
    clean_env.setattr(plugin_library, "importable_tensorrt_version", lambda: None)
    for major in (10, 11):
        (tmp_path / "lib" / f"tensorrt-{major}").mkdir(parents=True)
        (tmp_path / "lib" / f"tensorrt-{major}" / plugin_build.PLUGIN_LIBRARY_NAME).write_bytes(b"")
    assert main(["plugin", "path"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "lib" / f"tensorrt-{m}" / plugin_build.PLUGIN_LIBRARY_NAME)
                                               for m in (11, 10)]
    assert main(["plugin", "path", "--tensorrt-major", "10"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"tensorrt-10/{plugin_build.PLUGIN_LIBRARY_NAME}")
