"""`build --trtexec`: the trtexec command for the engine `build` would make, and the ONNX it reads.

No TensorRT is needed: the command is checked against the flags trtexec itself parses
(samples/common/sampleOptions.cpp of TensorRT 10.3, 10.16 and 11.1: --fp16/--int8 exist only in
10.x, strongly typed is 11.x's only mode; sampleEngines.cpp refuses shapes for a static input),
written out by hand below, and against the builder's rules for each precision.
"""
from __future__ import annotations

import shlex

import onnx
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.onnx_function import DOMAIN, OP_TYPE
from cornernet_deploy.runtime import plugin_library
from support import demo_exports, tagged_library


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return demo_exports(tmp_path_factory.mktemp("exports"))


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    libs = {10: tagged_library(tmp_path / "lib10.so", "10.16.0"), 11: tagged_library(tmp_path / "lib11.so", "11.1.0")}
    monkeypatch.delenv(plugin_library.PLUGIN_ENV, raising=False)
    return libs


def trtexec(capsys, *argv):
    rc = main(["build", *map(str, argv)])
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    command = next((shlex.split(line) for line in lines if line.startswith("trtexec ")), None)
    return rc, command, err


def test_dynamic_fp32_build_becomes_these_flags(exports, plugins, tmp_path, capsys):
    engine = tmp_path / "e" / "m.engine"
    rc, command, _ = trtexec(capsys, exports["dynamic"], "--trtexec", "10", "--plugin", plugins[10],
                             "--output", engine, "--max-batch", 8, "--opt-batch", 4, "--input-size", "255x383",
                             "--no-tf32", "--workspace", 2048, "--timing-cache", tmp_path / "t.cache")
    assert rc == 0
    assert command == [
        "trtexec", f"--onnx={tmp_path / 'e' / 'm.trt.onnx'}", f"--saveEngine={engine}",
        f"--dynamicPlugins={plugins[10]}",
        "--minShapes=image:1x3x255x383", "--optShapes=image:4x3x255x383", "--maxShapes=image:8x3x255x383",
        "--noTF32", "--memPoolSize=workspace:2048M", f"--timingCacheFile={tmp_path / 't.cache'}"]
    # the ONNX for TensorRT: the same graph, CornerPool nodes kept, their function bodies gone
    original, stripped = onnx.load(str(exports["dynamic"])), onnx.load(str(tmp_path / "e" / "m.trt.onnx"))
    assert [n.op_type for n in stripped.graph.node] == [n.op_type for n in original.graph.node]
    assert sum(n.op_type == OP_TYPE and n.domain == DOMAIN for n in stripped.graph.node) == 2
    assert any(f.domain == DOMAIN for f in original.functions)
    assert not any(f.domain == DOMAIN for f in stripped.functions)
    onnx.checker.check_model(stripped)
    assert not engine.exists()                      # nothing is built


@pytest.mark.parametrize("export, precision, major, expected", [
    ("dynamic", "fp16", 10, ["--fp16"]),             # weakly typed 10.x: the FP16 builder flag
    ("fp16", "fp16", 10, ["--stronglyTyped"]),       # an FP16 export: strongly typed on 10.x ...
    ("fp16", "fp16", 11, []),                        # ... and 11.x, where it is the only mode
    ("dynamic", "fp32", 11, []),
])
def test_precision_flags_follow_the_builder(exports, plugins, tmp_path, capsys, export, precision, major, expected):
    rc, command, _ = trtexec(capsys, exports[export], "--trtexec", major, "--plugin", plugins[major],
                             "--precision", precision, "--output", tmp_path / "m.engine")
    assert rc == 0
    flags = [c for c in command if c in ("--fp16", "--int8", "--stronglyTyped", "--bf16", "--best")]
    assert flags == expected


def test_static_input_gets_no_shapes_and_impossible_builds_are_refused(exports, plugins, tmp_path, capsys):
    rc, command, _ = trtexec(capsys, exports["static"], "--trtexec", "10", "--plugin", plugins[10],
                             "--output", tmp_path / "s.engine")
    assert rc == 0 and not [c for c in command if "Shapes=" in c]
    # TensorRT 11 has no FP16 builder flag: an FP32 export cannot become an FP16 engine there
    rc, command, err = trtexec(capsys, exports["dynamic"], "--trtexec", "11", "--plugin", plugins[11],
                               "--precision", "fp16", "--output", tmp_path / "x.engine")
    assert rc == 2 and command is None and "builds only strongly typed networks" in err
    # a plugin library of the other major
    rc, command, err = trtexec(capsys, exports["dynamic"], "--trtexec", "11", "--plugin", plugins[10],
                               "--output", tmp_path / "y.engine")
    assert rc == 2 and "only runs in the TensorRT major it was built for" in err
    # the builder's own checks come first
    rc, _, err = trtexec(capsys, exports["static"], "--trtexec", "10", "--plugin", plugins[10], "--max-batch", 4,
                         "--output", tmp_path / "z.engine")
    assert rc == 2 and "static batch of 1" in err
    # only the first, accepted call wrote its ONNX; the refused ones wrote nothing
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx") == ["s.trt.onnx"]


def test_without_a_major_the_plugin_library_says(exports, plugins, tmp_path, capsys, monkeypatch):
    running = plugin_library.importable_tensorrt_version()
    monkeypatch.setenv(plugin_library.PLUGIN_ENV, str(plugins[11]))
    rc, command, err = trtexec(capsys, exports["dynamic"], "--trtexec", "--output", tmp_path / "m.engine")
    if running and not running.startswith("11."):
        assert rc == 2 and "only runs in the TensorRT major" in err     # a 10.x TensorRT is importable
    else:
        assert rc == 0 and f"--dynamicPlugins={plugins[11]}" in command and "--stronglyTyped" not in command


def test_a_file_name_taken_for_the_major_says_where_it_goes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "--trtexec", "model.onnx"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "put the ONNX file before --trtexec" in err
    with pytest.raises(SystemExit):
        main(["build", "m.onnx", "--trtexec", "12"])
    assert "give the TensorRT major, 10 or 11, or nothing" in capsys.readouterr().err
