"""The OpenVINO backend against ONNX Runtime (an independent implementation of the same files) for
every export kind, its IR, its options and one-line errors, and BF16 within the measured profile."""
import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.contract.agreement import TOLERANCES, choose_tolerance
from cornernet_deploy.errors import UserError
from cornernet_deploy.onnx_function import DOMAIN, OP_TYPE, expand_corner_pool_nodes
from cornernet_deploy.runtime.backends import open_backend, registry

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'cornernet-deploy[openvino]')")
torch = pytest.importorskip("torch", reason="the exports are made from PyTorch models")

from cornernet_deploy.commands.demo import DEMO_CHECKPOINT  # noqa: E402
from cornernet_deploy.profiling.compare import compare_backends  # noqa: E402
from cornernet_deploy.profiling.profile import cpu_flags  # noqa: E402
from cornernet_deploy.runtime.backends.openvino import save_ir, signal_stack_kept  # noqa: E402

with signal_stack_kept():     # a bare Core leaves the test process a dangling signal stack
    CPU_CAPABILITIES = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def scenes(n=3):
    from cornernet_deploy.data.shapes import render_scene
    return [render_scene(9000 + i, image_size=((160, 256),), num_objects=(1, 5))[0] for i in range(n)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Every kind of file `export` and `quantize` write, of the trained demo model (real
    detections to compare), plus a tiny random CornerNet-Saccade (attention outputs)."""
    import cv2

    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.quantize import quantize_onnx
    from support import random_tiny

    d = tmp_path_factory.mktemp("openvino")
    kinds = {
        "plugin-none": dict(corner_pool="plugin", decode="none"),
        "plugin-graph": dict(corner_pool="plugin", decode="graph"),
        "onnx-none": dict(corner_pool="onnx", decode="none"),
        "onnx-graph": dict(corner_pool="onnx", decode="graph"),
        "fixed-dynamic-batch": dict(input_size=(255, 255), dynamic_size=False, dynamic_batch=True),
        "fp16": dict(precision="fp16"),
        "uint8": dict(input_dtype="uint8"),    # the network normalises raw pixels in its graph
    }
    for name, options in kinds.items():
        export_onnx(checkpoint=DEMO_CHECKPOINT, output=d / f"{name}.onnx", verify=False, progress=None,
                    **options)
    (d / "calib").mkdir()
    for i, image in enumerate(scenes(6)):
        cv2.imwrite(str(d / "calib" / f"{i}.png"), image)
    quantize_onnx(d / "plugin-none.onnx", [str(d / "calib")], d / "int8.onnx", progress=None,
                  show_bar=False, verify=False)
    export_onnx(model=random_tiny("cornernet-saccade", num_classes=2), output=d / "saccade.onnx",
                verify=False, progress=None)
    return d


KINDS = ["plugin-none", "plugin-graph", "onnx-none", "onnx-graph", "fixed-dynamic-batch", "fp16",
         "uint8", "int8", "saccade"]
# two implementations of one file agree to summation order in float; an fp16 network to fp16
# rounding; OpenVINO runs the Q/DQ convolutions in int8 where ONNX Runtime's CPU runs them in
# float between the quantize/dequantize steps, so they agree as an INT8 model agrees with float
PROFILE = {"fp16": "fp16", "int8": "int8"}


@pytest.mark.parametrize("kind", KINDS)
def test_openvino_computes_what_onnxruntime_computes(exports, kind, tmp_path):
    path = exports / f"{kind}.onnx"
    with open_backend(path) as a, open_backend(path, "openvino", cache_dir=tmp_path) as b:
        assert (b.name, b.device, b.precision) == ("openvino", "cpu", a.precision)
        assert (b.input_hw, b.max_batch, b.decode) == (a.input_hw, a.max_batch, a.decode)
        assert b.input_dtype == a.input_dtype == ("uint8" if kind == "uint8" else "float32")
        images = scenes() if a.spec.num_classes == 3 else \
            [np.random.default_rng(i).integers(0, 255, (200, 260, 3), dtype=np.uint8) for i in range(2)]
        report = compare_backends(a, b, images, TOLERANCES[PROFILE.get(kind, "fp32")])
    assert report["passed"], report["failures"]
    if report["heads"] is None:          # a graph decode: the detections are what was compared
        assert report["detections"]["matched"] >= 5
    else:
        assert set(report["heads"]) == set(a.output_names)


def test_the_expanded_model_computes_exactly_what_the_function_does(exports):
    """The body put in place of each node is the function's own: ONNX Runtime gives the same bits."""
    model = onnx.load(str(exports / "plugin-none.onnx"))
    assert expand_corner_pool_nodes(model) == 2
    assert not any(n.op_type == OP_TYPE for n in model.graph.node) and not model.functions
    assert {o.domain for o in model.opset_import} == {""}          # ours and ai.onnx.ml are gone
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).normal(size=(1, 3, 127, 191)).astype(np.float32)
    original = ort.InferenceSession(str(exports / "plugin-none.onnx"), providers=["CPUExecutionProvider"])
    expanded = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for got, want in zip(expanded.run(None, {"image": x}), original.run(None, {"image": x})):
        np.testing.assert_array_equal(got, want)
    assert expand_corner_pool_nodes(model) == 0                    # nothing left to do


def test_a_custom_node_without_its_body_is_refused_in_one_line(exports, tmp_path):
    model = onnx.load(str(exports / "plugin-none.onnx"))
    del model.functions[:]
    onnx.save(model, str(tmp_path / "bodiless.onnx"))
    with pytest.raises(UserError, match=f"uses {DOMAIN}.{OP_TYPE} but carries no function body") as err:
        open_backend(tmp_path / "bodiless.onnx", "openvino", cache_dir=tmp_path)
    assert "\n" not in str(err.value)


def test_ir_written_from_an_export_opens_with_its_metadata(exports, tmp_path, capsys):
    xml = save_ir(exports / "plugin-none.onnx", tmp_path / "ir" / "demo.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    assert sorted(p.name for p in xml.parent.iterdir()) == ["demo.bin", "demo.xml"]   # nothing half-written
    assert xml.with_suffix(".bin").stat().st_size > 3e6        # FP32 weights, not compressed to FP16
    with open_backend(exports / "plugin-none.onnx") as a, open_backend(xml, cache_dir=tmp_path) as b:
        assert b.name == "openvino" and b.metadata == a.metadata
        report = compare_backends(a, b, scenes(2), TOLERANCES["fp32"])
    assert report["passed"], report["failures"]
    assert main(["info", str(xml)]) == 0          # info reads the IR's metadata without compiling it
    shown = capsys.readouterr().out
    assert "OpenVINO IR" in shown and "rectangle, ellipse, triangle" in shown
    assert main(["infer", str(xml), "--output", str(tmp_path / "dets"), "--no-progress"] +
                [str(p) for p in sorted((exports / "calib").iterdir())[:2]]) == 0
    assert json.loads((tmp_path / "dets" / "images.json").read_text())[0]["detections"] > 0


def test_ir_errors_are_one_line(exports, tmp_path):
    xml = save_ir(exports / "onnx-none.onnx", tmp_path / "m.xml")
    xml.with_suffix(".bin").unlink()
    with pytest.raises(UserError, match=r"its weights m.bin are missing"):
        open_backend(xml)
    image = ov.opset13.parameter([1, 3, 8, 8], name="image")
    plain = ov.Model([ov.opset13.relu(image)], [image], "plain")
    ov.save_model(plain, str(tmp_path / "plain.xml"))
    with pytest.raises(UserError, match="was not exported by cornernet-deploy") as err:
        open_backend(tmp_path / "plain.xml")
    assert "\n" not in str(err.value)
    (tmp_path / "junk.xml").write_text("<not an IR/>")
    (tmp_path / "junk.bin").write_bytes(b"")
    with pytest.raises(UserError, match="is not an OpenVINO IR") as err:
        open_backend(tmp_path / "junk.xml")
    assert "\n" not in str(err.value)


def _absent(device):
    with signal_stack_kept():
        return device.upper() not in {d.split(".")[0] for d in ov.Core().available_devices}


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="cuda"), "the openvino backend runs on cpu or gpu or npu or auto"),
    (dict(precision="int8"), "unknown precision 'int8'"),
    (dict(threads=0), "threads must be at least 1"),
])
def test_openvino_refuses_with_one_line(exports, kwargs, message):
    with pytest.raises(UserError) as err:
        open_backend(exports / "plugin-none.onnx", "openvino", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("device", ["gpu", "npu"])
def test_a_device_that_is_not_there_is_named(exports, device):
    if not _absent(device):
        pytest.skip(f"this machine has an OpenVINO {device}")
    with pytest.raises(UserError, match=f"OpenVINO sees no {device.upper()} on this machine"):
        open_backend(exports / "plugin-none.onnx", "openvino", device=device)
    assert registry.unusable_device(device).startswith("openvino: OpenVINO sees no")


def test_precisions_follow_the_file_and_the_device(exports, tmp_path):
    with pytest.raises(UserError, match="is an int8 model; OpenVINO's --precision"):
        open_backend(exports / "int8.onnx", "openvino", precision="bf16")
    for precision, capability in (("bf16", "BF16"), ("fp16", "FP16")):
        if capability in CPU_CAPABILITIES:
            with open_backend(exports / "plugin-none.onnx", "openvino", precision=precision,
                              cache_dir=tmp_path) as b:
                assert b.precision == precision
                assert b.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == \
                    {"bf16": "bf16", "fp16": "f16"}[precision]
        else:
            with pytest.raises(UserError, match=f"has no {precision} arithmetic"):
                open_backend(exports / "plugin-none.onnx", "openvino", precision=precision)
    # fp32 is asked for explicitly: OpenVINO's CPU default is bf16 where the CPU has it
    with open_backend(exports / "plugin-none.onnx", "openvino", cache_dir=tmp_path) as b:
        assert b.precision == "fp32"
        assert b.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"


def test_a_default_cache_that_cannot_be_made_warns_and_compiles_without_one(exports, tmp_path, monkeypatch,
                                                                              capsys):
    """A read-only home or container: the default cache is only a speed-up, so the model still
    runs (and computes what ONNX Runtime does); a cache asked for by name is an error."""
    (tmp_path / "home-is-a-file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-is-a-file"))
    capsys.readouterr()
    with open_backend(exports / "onnx-none.onnx") as a, open_backend(exports / "onnx-none.onnx", "openvino") as b:
        err = capsys.readouterr().err.strip().splitlines()
        assert b.cache_dir is None
        report = compare_backends(a, b, scenes(), TOLERANCES["fp32"])
    assert report["passed"], report["failures"]
    assert len(err) == 1 and err[0].startswith("warning: OpenVINO's model cache ") and "without a cache" in err[0]
    with pytest.raises(UserError, match="OpenVINO's model cache .*: Not a directory"):
        open_backend(exports / "onnx-none.onnx", "openvino", cache_dir=tmp_path / "home-is-a-file" / "c")


def test_threads_and_the_compiled_model_cache(exports, tmp_path):
    cache = tmp_path / "cache"
    with open_backend(exports / "onnx-none.onnx", "openvino", threads=1, cache_dir=cache) as b:
        assert b.threads == 1 and b.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert b.label == "onnx-none.onnx [openvino/cpu/fp32, 1 thr]"
    blobs = sorted(p.name for p in cache.iterdir())
    assert any(name.endswith(".blob") for name in blobs), blobs
    with open_backend(exports / "onnx-none.onnx", "openvino", threads=2, cache_dir=cache) as b:
        assert b.compiled.get_property("INFERENCE_NUM_THREADS") == 2  # a run-time setting, kept
    assert sorted(p.name for p in cache.iterdir()) == blobs          # the same model: read back
    if "BF16" in CPU_CAPABILITIES:
        # OpenVINO's CPU keys its blob without the precision hint and applies the hint when it
        # reads the blob back: a bf16 model from a cache that fp32 filled is the bf16 model
        x = np.random.default_rng(0).normal(size=(1, 3, 127, 191)).astype(np.float32)
        with open_backend(exports / "onnx-none.onnx", "openvino", precision="bf16", cache_dir=cache) as b, \
                open_backend(exports / "onnx-none.onnx", "openvino", precision="bf16",
                             cache_dir=tmp_path / "fresh") as fresh, \
                open_backend(exports / "onnx-none.onnx", "openvino", cache_dir=cache) as fp32:
            got, want, full = b.run(x), fresh.run(x), fp32.run(x)
        for name in got:
            np.testing.assert_array_equal(got[name], want[name])
        assert any(not np.array_equal(got[name], full[name]) for name in got)


def test_onnx_files_still_open_in_onnxruntime_unless_asked(exports):
    with open_backend(exports / "plugin-none.onnx") as b:
        assert b.name == "onnxruntime"
    with pytest.raises(UserError, match="the tensorrt backend runs a TensorRT .engine"):
        open_backend(exports / "plugin-none.onnx", "tensorrt")
    with pytest.raises(UserError, match="the openvino backend runs an OpenVINO IR"):
        open_backend(DEMO_CHECKPOINT, "openvino")


CTRL_C_AFTER_OPENVINO = """
import ctypes, os, signal, sys, time
from cornernet_deploy.cli import main
from cornernet_deploy.runtime.backends.openvino import _SignalStack
libc = ctypes.CDLL(None)
def stack():
    s = _SignalStack()
    assert libc.sigaltstack(None, ctypes.byref(s)) == 0
    return (s.ss_sp, s.ss_flags, s.ss_size)
before = stack()
assert main(["compare", sys.argv[1], sys.argv[1], "--backend", "openvino", "--quiet"]) == 0
assert stack() == before, (stack(), before)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack is read through Linux's libc")
def test_ctrl_c_after_openvino_is_an_interrupt_not_a_crash(exports):
    """OpenVINO 2026.4.1's CPU plugin pointed the thread's alternate signal stack at memory it
    unmapped with its Core: the next Ctrl-C crashed the process with SIGSEGV (seen in the suite:
    pytest died at the first test that sent itself SIGINT after the OpenVINO tests)."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_AFTER_OPENVINO, str(exports / "plugin-none.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("interrupted"), (done.returncode, done.stderr[-2000:])


def test_commands_take_openvino_through_the_registry(exports, tmp_path, capsys):
    path = str(exports / "plugin-none.onnx")
    assert main(["compare", path, path, "--backend", "onnxruntime,openvino", "--quiet",
                 "--json", str(tmp_path / "c.json")]) == 0
    report = json.loads((tmp_path / "c.json").read_text())
    assert (report["a"]["backend"], report["b"]["backend"], report["tolerance"]["name"]) == \
        ("onnxruntime", "openvino", "fp32")
    assert main(["profile", path, "--backend", "onnxruntime,openvino", "--iters", "2", "--warmup", "1",
                 "--quiet", "--json", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["results"]
    assert [r["backend"] for r in rows] == ["onnxruntime", "openvino"]
    capsys.readouterr()
    assert main(["eval", path, "--backend", "openvino", "--data", "missing.json", "--images", "."]) == 2
    assert capsys.readouterr().err.strip() == "error: missing.json: no such annotation file"
    checkpoint = str(DEMO_CHECKPOINT)
    assert main(["compare", checkpoint, checkpoint, "--backend", "openvino", "--quiet"]) == 2
    assert "the openvino backend runs an OpenVINO IR" in capsys.readouterr().err
    if "BF16" in CPU_CAPABILITIES:      # one file, two precisions: judged by the bf16 profile
        assert main(["compare", path, path, "--backend", "openvino", "--precision", "fp32,bf16",
                     "--quiet", "--json", str(tmp_path / "b.json")]) == 0
        report = json.loads((tmp_path / "b.json").read_text())
        assert (report["a"]["precision"], report["b"]["precision"], report["tolerance"]["name"]) == \
            ("fp32", "bf16", "bf16")


# ----------------------------------------------------------------------------------------------
# BF16 against FP32, within the measured profile (benchmarks/RESULTS.md, "BF16 agreement")
# ----------------------------------------------------------------------------------------------

def test_bf16_is_chosen_by_precision_order():
    assert choose_tolerance(None, ["fp32", "bf16"]).name == "bf16"
    assert choose_tolerance(None, ["bf16", "int8"]).name == "int8"
    assert choose_tolerance(None, ["fp16", "bf16"]).name == "bf16"     # 8 significant bits to 11


@pytest.mark.skipif(not {"avx512_bf16", "amx_bf16"} & set(cpu_flags()),
                    reason="this CPU has no BF16 arithmetic (neither AVX512-BF16 nor AMX-BF16): "
                           "BF16 would be emulated, and OpenVINO refuses the bf16 hint")
@pytest.mark.parametrize("model, backend", [("plugin-none.onnx", "openvino"), ("checkpoint", "torch")])
def test_bf16_agrees_with_fp32_within_the_bf16_profile(exports, model, backend, tmp_path):
    path = DEMO_CHECKPOINT if model == "checkpoint" else exports / model
    extra = {"cache_dir": tmp_path} if backend == "openvino" else {}
    with open_backend(path, backend, precision="fp32", **extra) as a, \
            open_backend(path, backend, precision="bf16", **extra) as b:
        tolerance = choose_tolerance("auto", [a.precision, b.precision])
        report = compare_backends(a, b, scenes(4), tolerance)
        strict = compare_backends(a, b, scenes(1), TOLERANCES["fp32"])
    assert tolerance.name == "bf16" and report["passed"], report["failures"]
    assert not strict["passed"]              # BF16 really ran: it does not pass as FP32
