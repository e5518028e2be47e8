"""`build --polygraphy`: the two polygraphy commands that compare the engine `build` would make with
ONNX Runtime on the same inputs.

Checked against polygraphy itself (pure Python; the test extra installs it): the expected command
lines are written out by hand below, every printed line is parsed by the parser `polygraphy` builds
(tools/_main.py) and its argument groups must read back the profile, precision, TF32, workspace,
plugin, data files and tolerances meant; the ONNX Runtime half runs here on the demo model and must
write the files the TensorRT half loads. The TensorRT half cannot run here (no TensorRT, no GPU).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.runtime import plugin_library
from support import demo_exports, linked_library, tagged_library

POLYGRAPHY = Path(sys.executable).with_name("polygraphy")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The demo exports of test_build_trtexec.py, plus an INT8 (Q/DQ) model quantized from the dynamic one."""
    from cornernet_deploy.data import generate_shapes_dataset
    from cornernet_deploy.quantize import quantize_onnx

    root = tmp_path_factory.mktemp("exports")
    made = demo_exports(root)
    generate_shapes_dataset(root / "calib", 2, seed=2024, image_size=((128, 160),), num_objects=(1, 2))
    made["int8"] = quantize_onnx(made["dynamic"], [str(root / "calib" / "images")], root / "int8.onnx",
                                 num_images=2, verify=False, progress=None, show_bar=False).path
    return made


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Self-registering builds (`plugin build --static-registration` links libnvinfer.so.N) per major."""
    monkeypatch.delenv(plugin_library.PLUGIN_ENV, raising=False)
    return {10: linked_library(tmp_path / "p10" / "lib.so", "10.16.0", "libnvinfer.so.10"),
            11: linked_library(tmp_path / "p11" / "lib.so", "11.1.0", "libnvinfer.so.11")}


def polygraphy_lines(capsys, *argv):
    rc = main(["build", *map(str, argv)])
    out, err = capsys.readouterr()
    commands = [shlex.split(line) for line in out.splitlines() if line.startswith("polygraphy run ")]
    return rc, commands, err


def test_dynamic_fp32_commands(exports, plugins, tmp_path, capsys):
    engine = tmp_path / "e" / "m.engine"
    rc, commands, _ = polygraphy_lines(capsys, exports["dynamic"], "--polygraphy", "10", "--plugin", plugins[10],
                                       "--output", engine, "--max-batch", 8, "--opt-batch", 4,
                                       "--input-size", "255x383", "--workspace", 2048)
    assert rc == 0
    inputs, outputs = tmp_path / "e" / "m.polygraphy-inputs.json", tmp_path / "e" / "m.onnxruntime-outputs.json"
    assert commands == [
        ["polygraphy", "run", str(exports["dynamic"]), "--onnxrt", "--providers", "cpu",
         "--input-shapes", "image:[4,3,255,383]", "--save-inputs", str(inputs), "--save-outputs", str(outputs)],
        ["polygraphy", "run", str(tmp_path / "e" / "m.trt.onnx"), "--trt", "--plugins", str(plugins[10]),
         "--trt-min-shapes", "image:[1,3,255,383]", "--trt-opt-shapes", "image:[4,3,255,383]",
         "--trt-max-shapes", "image:[8,3,255,383]", "--tf32", "--pool-limit", "workspace:2048M",
         "--load-inputs", str(inputs), "--load-outputs", str(outputs), "--atol", "0.0001", "--rtol", "0.0001"]]
    stripped = onnx.load(str(tmp_path / "e" / "m.trt.onnx"))
    assert not any(f.domain == "cornernet_deploy" for f in stripped.functions)
    assert not engine.exists() and not inputs.exists()         # nothing is built or run


@pytest.mark.parametrize("export, precision, major, flags, tolerance", [
    ("dynamic", "fp32", 10, ["--tf32"], ("0.0001", "0.0001")),           # TensorRT's TF32 default, kept
    ("dynamic", "fp16", 10, ["--fp16", "--tf32"], ("0.05", "0.05")),      # weakly typed 10.x: the FP16 flag
    ("fp16", "fp16", 10, ["--strongly-typed", "--tf32"], ("0.05", "0.05")),
    ("fp16", "fp16", 11, ["--tf32"], ("0.05", "0.05")),                  # 11.x: strongly typed, its only mode
    ("dynamic", "fp32", 11, ["--tf32"], ("0.0001", "0.0001")),
    ("int8", "int8", 10, ["--int8", "--fp16", "--tf32"], ("1.0", "0.25")),  # Q/DQ on 10.x: INT8 + FP16 flags
    ("int8", "int8", 11, ["--tf32"], ("1.0", "0.25")),
])
def test_precision_flags_and_tolerances_follow_the_builder_and_the_contract(exports, plugins, tmp_path, capsys, export,
                                                                            precision, major, flags, tolerance):
    rc, (onnxruntime, tensorrt), _ = polygraphy_lines(capsys, exports[export], "--polygraphy", major, "--plugin",
                                                      plugins[major], "--precision", precision,
                                                      "--output", tmp_path / "m.engine")
    assert rc == 0
    assert onnxruntime[2] == str(exports[export])        # ONNX Runtime runs the export as it is
    assert [c for c in tensorrt if c in ("--fp16", "--int8", "--strongly-typed", "--tf32", "--bf16")] == flags
    assert (tensorrt[tensorrt.index("--atol") + 1], tensorrt[tensorrt.index("--rtol") + 1]) == tolerance
    groups = parse_with_polygraphy(tensorrt)        # and polygraphy reads them as those builder settings
    config = groups["TrtConfigArgs"]
    assert [bool(config.fp16), bool(config.int8), bool(groups["TrtLoadNetworkArgs"].strongly_typed)] == \
        ["--fp16" in flags, "--int8" in flags, "--strongly-typed" in flags]
    simple = groups["CompareFuncSimpleArgs"]
    assert (simple.atol[""], simple.rtol[""]) == tuple(map(float, tolerance))


def test_static_export_gets_no_shapes_and_no_tf32_when_asked(exports, plugins, tmp_path, capsys):
    rc, commands, _ = polygraphy_lines(capsys, exports["static"], "--polygraphy", "11", "--plugin", plugins[11],
                                       "--no-tf32", "--output", tmp_path / "s.engine")
    assert rc == 0
    assert commands == [
        ["polygraphy", "run", str(exports["static"]), "--onnxrt", "--providers", "cpu",
         "--save-inputs", str(tmp_path / "s.polygraphy-inputs.json"),
         "--save-outputs", str(tmp_path / "s.onnxruntime-outputs.json")],
        ["polygraphy", "run", str(tmp_path / "s.trt.onnx"), "--trt", "--plugins", str(plugins[11]),
         "--pool-limit", "workspace:1024M", "--load-inputs", str(tmp_path / "s.polygraphy-inputs.json"),
         "--load-outputs", str(tmp_path / "s.onnxruntime-outputs.json"), "--atol", "0.0001", "--rtol", "0.0001"]]
    ort, trt = (parse_with_polygraphy(c) for c in commands)
    assert not ort["ModelArgs"].input_shapes and not trt["TrtConfigArgs"].profile_dicts
    assert not trt["TrtConfigArgs"].tf32          # polygraphy then clears TensorRT's TF32 flag, as --no-tf32 does


def test_with_trtexec_too_both_read_one_onnx(exports, plugins, tmp_path, capsys):
    rc = main(["build", str(exports["dynamic"]), "--trtexec", "10", "--polygraphy", "10", "--plugin", str(plugins[10]),
               "--output", str(tmp_path / "m.engine")])
    out = capsys.readouterr().out
    assert rc == 0
    # a self-registering library is for trtexec's --staticPlugins (a dlopen), not --dynamicPlugins
    assert f"trtexec --onnx={tmp_path / 'm.trt.onnx'} --saveEngine={tmp_path / 'm.engine'} " \
           f"--staticPlugins={plugins[10]} " in out
    assert f"polygraphy run {tmp_path / 'm.trt.onnx'} --trt --plugins {plugins[10]} " in out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["m.trt.onnx"]


def test_a_library_polygraphy_cannot_register_is_refused_before_anything_is_written(exports, tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.delenv(plugin_library.PLUGIN_ENV, raising=False)
    default_build = tagged_library(tmp_path / "default.so", "10.16.0")     # registers only through getCreators
    rc, commands, err = polygraphy_lines(capsys, exports["dynamic"], "--polygraphy", "10", "--plugin", default_build,
                                         "--output", tmp_path / "a.engine")
    assert rc == 2 and commands == []
    assert "polygraphy loads plugin libraries with a plain dlopen (--plugins)" in err
    assert "--static-registration" in err
    lean = linked_library(tmp_path / "lean" / "lib.so", "10.16.0", "libnvinfer_lean.so.10")
    rc, commands, err = polygraphy_lines(capsys, exports["dynamic"], "--polygraphy", "10", "--plugin", lean,
                                         "--output", tmp_path / "b.engine")
    assert rc == 2 and f"registers itself with libnvinfer_lean.so.10, not with the libnvinfer.so.10" in err
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".onnx"]


# ---- polygraphy's own parser ------------------------------------------------------------------------------

def parse_with_polygraphy(command: list) -> dict:
    """The argument groups of `polygraphy run` after polygraphy's parser (built as tools/_main.py builds
    it) and the tool's own parse step read ``command``, by group class name."""
    pytest.importorskip("polygraphy")
    from polygraphy.tools.registry import TOOL_REGISTRY

    assert command[:2] == ["polygraphy", "run"]
    parser = argparse.ArgumentParser()
    tools = parser.add_subparsers(title="Tools", dest="tools")
    tools.required = True
    for tool in TOOL_REGISTRY:
        tool.setup_parser(tools)
    args, unknown = parser.parse_known_args(command[1:])
    assert unknown == []                                       # polygraphy's main fails on any unknown option
    args.subcommand.parse(args)
    return {type(group).__name__: group for group in args.subcommand.arg_groups.values()}


def test_polygraphy_reads_the_commands_as_meant(exports, plugins, tmp_path, capsys):
    rc, (onnxruntime, tensorrt), _ = polygraphy_lines(capsys, exports["dynamic"], "--polygraphy", "10", "--plugin",
                                                      plugins[10], "--precision", "fp16", "--max-batch", 8,
                                                      "--opt-batch", 2, "--input-size", "255x383",
                                                      "--output", tmp_path / "m.engine")
    assert rc == 0
    inputs, outputs = str(tmp_path / "m.polygraphy-inputs.json"), str(tmp_path / "m.onnxruntime-outputs.json")

    ort = parse_with_polygraphy(onnxruntime)
    assert list(ort["RunnerSelectArgs"].runners) == [("onnxrt", "ONNX-Runtime")]
    assert ort["ModelArgs"].path == str(exports["dynamic"]) and ort["ModelArgs"].model_type == "onnx"
    assert ort["OnnxrtSessionArgs"].providers == ["cpu"]
    assert {n: list(m.shape) for n, m in ort["ModelArgs"].input_shapes.items()} == {"image": [2, 3, 255, 383]}
    assert (ort["ComparatorRunArgs"].save_inputs_path, ort["ComparatorRunArgs"].save_outputs_path) == (inputs, outputs)

    trt = parse_with_polygraphy(tensorrt)
    assert list(trt["RunnerSelectArgs"].runners) == [("trt", "TensorRT")]
    assert trt["ModelArgs"].path == str(tmp_path / "m.trt.onnx") and trt["ModelArgs"].model_type == "onnx"
    assert trt["TrtLoadPluginsArgs"].plugins == [str(plugins[10])]
    config = trt["TrtConfigArgs"]
    assert config.profile_dicts == [{"image": ([1, 3, 255, 383], [2, 3, 255, 383], [8, 3, 255, 383])}]
    assert (config.fp16, bool(config.int8), config.tf32) == (True, False, True)
    assert list(config.memory_pool_limits.values()) == [1024 << 20]
    assert not trt["TrtLoadNetworkArgs"].strongly_typed
    assert trt["DataLoaderArgs"].load_inputs_paths == [inputs]
    assert trt["ComparatorCompareArgs"].load_outputs_paths == [outputs]
    assert trt["ComparatorCompareArgs"].compare_funcs == ["simple"]
    simple = trt["CompareFuncSimpleArgs"]
    assert (simple.atol, simple.rtol) == ({"": 0.05}, {"": 0.05})
    assert simple.check_error_stat is None                     # polygraphy's default: elementwise


# ---- the ONNX Runtime half, run ---------------------------------------------------------------------------

def _polygraphy(*args) -> subprocess.CompletedProcess:
    if not POLYGRAPHY.is_file():
        pytest.skip(f"no polygraphy command next to {sys.executable} (pip install polygraphy)")
    return subprocess.run([str(POLYGRAPHY), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_onnxruntime_half_writes_what_the_tensorrt_half_loads(exports, plugins, tmp_path, capsys):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json
    import onnxruntime as ort

    rc, (onnxruntime, tensorrt), _ = polygraphy_lines(capsys, exports["dynamic"], "--polygraphy", "10", "--plugin",
                                                      plugins[10], "--max-batch", 4, "--opt-batch", 2,
                                                      "--input-size", "127x191", "--output", tmp_path / "m.engine")
    assert rc == 0
    proc = _polygraphy(*onnxruntime[1:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # the inputs, as the TensorRT half's --load-inputs reads them: one batch within the engine's profile
    feeds = load_json(onnxruntime[onnxruntime.index("--save-inputs") + 1])
    assert len(feeds) == 1 and list(feeds[0]) == ["image"]
    image = feeds[0]["image"]
    assert image.dtype == np.float32 and image.shape == (2, 3, 127, 191)
    # the outputs, as its --load-outputs reads them: ONNX Runtime's, named as the ONNX for TensorRT's outputs
    results = RunResults.load(onnxruntime[onnxruntime.index("--save-outputs") + 1])
    assert len(results) == 1
    (_runner, iterations), = results.items()
    assert len(iterations) == 1
    saved = dict(iterations[0].items())
    stripped = onnx.load(tensorrt[2])
    assert list(saved) == [o.name for o in stripped.graph.output]
    session = ort.InferenceSession(str(exports["dynamic"]), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"image": image})))
    for name, value in expected.items():
        np.testing.assert_array_equal(np.asarray(saved[name]), value, err_msg=name)

    # The TensorRT half's data and comparison options, with ONNX Runtime standing in for TensorRT: the
    # same inputs agree with the saved outputs, and an output moved past the tolerance fails the run.
    compare = tensorrt[tensorrt.index("--load-inputs"):]
    stand_in = [*onnxruntime[1:onnxruntime.index("--input-shapes")], *compare]
    proc = _polygraphy(*stand_in)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASSED" in proc.stdout + proc.stderr
    outputs_file = Path(compare[compare.index("--load-outputs") + 1])
    moved = json.loads(outputs_file.read_text())
    results = RunResults.load(str(outputs_file))
    (_runner, iterations), = results.items()
    heat = np.array(iterations[0]["tl_heat"])
    heat.flat[0] += 10 * (1e-4 + 1e-4 * abs(heat.flat[0]))       # ten times the fp32 allowance
    iterations[0]["tl_heat"] = heat
    results.save(str(outputs_file))
    assert json.loads(outputs_file.read_text()) != moved
    proc = _polygraphy(*stand_in)
    assert proc.returncode != 0 and "tl_heat" in proc.stdout + proc.stderr
