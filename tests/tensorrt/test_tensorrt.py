"""TensorRT: engine building and the TensorRT backend.

The end-to-end test (export a tiny model -> build the plugin -> FP32 and FP16 engines -> compare
with ONNX Runtime -> detections agree) runs wherever TensorRT, cuda-python and a GPU are present
(the GPU is detected through CUDA itself, not torch) and skips elsewhere with the reason. The input
checks of `build` and of the backend run everywhere: they happen before TensorRT is imported.
"""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.exporter import export_onnx
from cornernet_deploy.models import build_model
from cornernet_deploy.profiling.layers import summarize_layers
from cornernet_deploy.tensorrt.builder import build_engine, check_plugin_layers, manifest_path

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]

# Tolerances of engine heads against ONNX Runtime FP32: FP32 engines
# are built with --no-tf32 here (TensorRT would otherwise use TF32 on Ampere+) -> 1e-3; FP16
# networks -> 5e-2 on logits of a tiny model.
HEAD_ATOL = {"fp32": 1e-3, "fp16": 5e-2}


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    _tensorrt_or_skip()  # before the (slow) FP16 export
    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    model = build_model("cornernet-squeeze", num_classes=1, width=0.125).eval()
    with torch.no_grad():
        for heads in (model.tl_heats, model.br_heats):
            heads[-1][1].bias.fill_(2.0)
    paths = {}
    for precision in ("fp32", "fp16"):
        paths[precision] = root / f"tiny_{precision}.onnx"
        export_onnx(model=model,
                    output=paths[precision], precision=precision, dynamic_batch=True, progress=None, verify=False)
    return root, paths


def test_build_refuses_files_that_are_not_our_exports(tmp_path):
    (tmp_path / "junk.onnx").write_text("nope")
    with pytest.raises(UserError, match="not an ONNX model"):
        build_engine(tmp_path / "junk.onnx", tmp_path / "x.engine", progress=None)
    node = onnx.helper.make_node("Relu", ["image"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("image", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "foreign.onnx"))
    with pytest.raises(UserError, match="not exported by cornernet-deploy"):
        build_engine(tmp_path / "foreign.onnx", tmp_path / "x.engine", progress=None)
    with pytest.raises(UserError, match="no such ONNX file"):
        build_engine(tmp_path / "missing.onnx", progress=None)
    assert not (tmp_path / "x.engine").exists()


def test_build_checks_batch_and_size_against_the_export(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "static.onnx"
    export_onnx(model=build_model("cornernet-squeeze", num_classes=1, width=0.125), output=path,
                batch=1, dynamic_size=False, progress=None, verify=False)
    with pytest.raises(UserError, match="static batch of 1"):
        build_engine(path, tmp_path / "x.engine", max_batch=4, progress=None)
    with pytest.raises(UserError, match="takes 511x511 inputs"):
        build_engine(path, tmp_path / "x.engine", input_size="255x255", progress=None)


def test_backend_refuses_engines_without_manifest(tmp_path):
    from cornernet_deploy.runtime.detector import Detector
    (tmp_path / "x.engine").write_bytes(b"\x00" * 16)
    with pytest.raises(UserError, match="has no manifest"):
        Detector.load(tmp_path / "x.engine")
    with pytest.raises(UserError, match="engine not found"):
        Detector.load(tmp_path / "missing.engine")


def test_unmapped_corner_pools_are_reported():
    # The decision is plain Python over the names of the plugin layers the parser produced (read from the
    # real network in build_engine; the real parse is covered by the end-to-end test).
    nodes = [onnx.helper.make_node("CornerPool", ["a", "b"], ["c"], name=f"pool{i}", domain="cornernet_deploy")
             for i in range(2)]
    check_plugin_layers(nodes, ["pool0", "pool1"])
    check_plugin_layers(nodes, ["pool0", "pool1_1"])  # the parser's unique-name suffix
    with pytest.raises(UserError, match=r"1 of 2 CornerPool nodes did not become plugin layers .*\(pool1\)"):
        check_plugin_layers(nodes, ["pool0"])
    # A plugin the parser inserted for another op does not stand in for a missing corner pool.
    with pytest.raises(UserError, match=r"\(pool1\)"):
        check_plugin_layers(nodes, ["pool0", "/head/TopK_plugin"])


def test_layer_summary_matches_corner_pools_by_name_and_reports_their_reformats():
    pools = ["/tl_modules.0/CornerPool", "/br_modules.0/CornerPool"]
    layers = [("/tl_modules.0/CornerPool", 2.0), ("/br_modules.0/CornerPool", 1.0), ("conv + relu", 4.0),
              ("Reformatting CopyNode for Input Tensor 0 to /tl_modules.0/CornerPool", 0.5),
              ("Reformatting CopyNode for Input Tensor 0 to conv + relu", 0.25),
              ("/tl_modules.0/CornerPoolish_conv", 0.25),  # not one of ours, despite the name
              ("head", 2.0)]
    s = summarize_layers(layers, corner_pool_names=pools)
    assert s["total_ms"] == 10.0
    assert (s["corner_pool_layers"], s["corner_pool_ms"], s["corner_pool_share"]) == (2, 3.0, pytest.approx(0.3))
    assert (s["corner_pool_reformat_layers"], s["corner_pool_reformat_ms"]) == (1, 0.5)
    assert s["corner_pool_reformat_share"] == pytest.approx(0.05)
    # Without names (an older manifest) the name marker decides, and reformats are still kept apart.
    legacy = summarize_layers(layers[:5])
    assert (legacy["corner_pool_layers"], legacy["corner_pool_ms"], legacy["corner_pool_reformat_ms"]) == (2, 3.0, 0.5)


# ---- every argument is checked before TensorRT is imported (issue: all mistakes said "not installed") ----

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    model = build_model("cornernet-squeeze", num_classes=1, width=0.125)
    paths = {"static": root / "static.onnx", "dynamic": root / "dynamic.onnx"}
    export_onnx(model=model, output=paths["static"], batch=1, dynamic_size=False, progress=None,
                verify=False)
    export_onnx(model=model, output=paths["dynamic"], dynamic_batch=True, dynamic_size=True, progress=None,
                verify=False)
    return paths


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_build_rejects_zero_batch_and_workspace_as_usage_errors(exports, capsys):
    onnx_path = str(exports["dynamic"])
    assert "--max-batch: must be at least 1, got 0" in _usage_error(capsys, ["build", onnx_path, "--max-batch", "0"])
    assert "--min-batch: must be at least 1, got -1" in _usage_error(capsys, ["build", onnx_path, "--min-batch", "-1"])
    assert "--workspace: must be at least 1, got 0" in _usage_error(capsys, ["build", onnx_path, "--workspace", "0"])
    with pytest.raises(UserError, match="--max-batch must be at least 1, got 0"):  # no silent 0 -> 1
        build_engine(exports["dynamic"], max_batch=0, progress=None)


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "TensorRT is not installed" not in err
    return err


def test_build_checks_paths_and_sizes_before_tensorrt(exports, tmp_path, capsys):
    onnx_path = str(exports["dynamic"])
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "folder").mkdir()
    assert "--output" in _one_line_error(capsys, ["build", onnx_path, "--output", str(tmp_path / "folder")])
    assert f"{a_file} is a file, not a folder" in _one_line_error(
        capsys, ["build", onnx_path, "--output", str(a_file / "x.engine")])
    assert "--timing-cache" in _one_line_error(
        capsys, ["build", onnx_path, "--timing-cache", str(tmp_path / "folder"), "--output", str(tmp_path / "a.engine")])
    assert f"--plugin {tmp_path / 'no.so'}: no such file" in _one_line_error(
        capsys, ["build", onnx_path, "--plugin", str(tmp_path / "no.so"), "--output", str(tmp_path / "a.engine")])
    assert "input size must look like HxW" in _one_line_error(
        capsys, ["build", onnx_path, "--input-size", "big", "--output", str(tmp_path / "a.engine")])
    assert "takes 511x511 inputs" in _one_line_error(
        capsys, ["build", str(exports["static"]), "--input-size", "255x255", "--output", str(tmp_path / "a.engine")])
    assert not list(tmp_path.glob("a.*"))


def test_tensorrt_backend_imports_no_onnx(tmp_path):
    """The runtime backend takes what it needs from runtime.tensorrt_common, never through the engine builder
    (which imports onnx): a Jetson runtime has numpy, OpenCV and TensorRT only."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    manifest_path(engine).write_text(json.dumps({"metadata": {}, "input": {"name": "image", "min": [1, 3, 8, 8],
                                                                            "max": [1, 3, 8, 8]}}))
    code = ("import sys\nfrom cornernet_deploy.errors import UserError\n"
            "from cornernet_deploy.runtime.backends.tensorrt import TensorRTBackend\n"
            f"try:\n    TensorRTBackend({str(engine)!r})\nexcept (UserError, RuntimeError) as exc:\n    print('stopped:', exc)\n"
            "print('onnx imported:', 'onnx' in sys.modules, 'torch imported:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300).stdout
    assert "onnx imported: False torch imported: False" in out, out


def _tensorrt_or_skip():
    try:
        import tensorrt as trt
    except ImportError:
        pytest.skip("TensorRT is not installed (pip install 'cornernet-deploy[gpu-cu12]' or '[gpu-cu13]' on a "
                    "machine with an NVIDIA GPU)")
    if not hasattr(trt, "Builder"):
        pytest.skip("the installed tensorrt package has no builder (lean/dispatch runtime only)")
    from cornernet_deploy.runtime.cuda import gpu_status
    ok, why = gpu_status()  # CUDA itself: the README's CPU torch knows nothing of the GPU
    if not ok:
        pytest.skip(f"no usable CUDA GPU for TensorRT: {why}")
    return trt


def _box_iou(a, b):
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return inter / union if union > 0 else 0.0


def _match_by_iou(reference, candidate, top, iou=0.5):
    """For each of the top reference detections, the best same-class candidate by IoU (ranks may swap
    after FP16 when scores are close); returns [(ref index, candidate index or None)]."""
    pairs = []
    for i in range(min(top, len(reference.scores))):
        best, best_iou = None, iou
        for j in range(len(candidate.scores)):
            if candidate.class_ids[j] != reference.class_ids[i]:
                continue
            value = _box_iou(reference.boxes[i], candidate.boxes[j])
            if value >= best_iou:
                best, best_iou = j, value
        pairs.append((i, best))
    return pairs


@pytest.fixture(scope="module")
def trt_plugin(tmp_path_factory):
    """(tensorrt module, the plugin library for its major: built one, else a fresh build)."""
    trt = _tensorrt_or_skip()
    from cornernet_deploy.runtime.plugin_library import find_plugin_library
    from cornernet_deploy.tensorrt.plugin_build import build_plugin
    major = int(trt.__version__.split(".")[0])
    library = (find_plugin_library(required=False, tensorrt_major=major)
               or build_plugin(output_dir=tmp_path_factory.mktemp("plugin")))
    return trt, library


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_end_to_end_engines_agree_with_onnxruntime(tiny_exports, trt_plugin, tmp_path):
    from cornernet_deploy.runtime.backends import open_backend
    from cornernet_deploy.runtime.detector import Detector

    trt, library = trt_plugin
    root, onnx_paths = tiny_exports
    reference = open_backend(onnx_paths["fp32"])
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(2, 3, 511, 511)).astype(np.float32)
    expected = reference.run(batch)
    image = (rng.random((300, 420, 3)) * 255).astype(np.uint8)
    test = dataclasses.replace(build_model("cornernet-squeeze", num_classes=1).spec.test, ae_threshold=100.0)
    ort_dets = Detector(reference, test=test)(image)
    for precision in ("fp32", "fp16"):
        engine = tmp_path / f"tiny_{precision}.engine"
        cache = tmp_path / "timing.cache"
        cache.write_bytes(b"not a timing cache")  # must cost a warning, never the engine
        build_engine(onnx_paths[precision], engine, precision=precision, max_batch=2, opt_batch=2,
                     plugin_library=library, tf32=False, timing_cache=cache, progress=None)
        assert engine.is_file() and cache.read_bytes() != b"not a timing cache"
        manifest = json.loads(manifest_path(engine).read_text())
        assert manifest["precision"] == precision and manifest["input"]["max"][0] == 2
        assert manifest["plugin_tensorrt_version"].split(".")[0] == trt.__version__.split(".")[0]
        assert len(manifest["corner_pool_layers"]) == 2 and manifest["tf32"] is False
        backend = open_backend(engine)
        got = backend.run(batch)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=HEAD_ATOL[precision], err_msg=f"{precision} {name}")
        outputs, stages = backend.run_timed(batch[:1])
        assert set(stages) == {"h2d", "inference", "d2h"} and all(v >= 0 for v in stages.values())
        layers = backend.layer_profile(batch[:1], iterations=2)
        assert {name for name, _ in layers} >= set(manifest["corner_pool_layers"])  # plugin layers keep node names
        trt_dets = Detector(backend, test=test)(image)
        pairs = _match_by_iou(ort_dets, trt_dets, top=10)
        assert all(j is not None for _, j in pairs), pairs
        for i, j in pairs:
            assert abs(trt_dets.scores[j] - ort_dets.scores[i]) <= HEAD_ATOL[precision]
            np.testing.assert_allclose(trt_dets.boxes[j], ort_dets.boxes[i], atol=1.0 if precision == "fp16" else 0.05)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_engine_enforces_its_minimum_batch(tiny_exports, trt_plugin, tmp_path):
    from cornernet_deploy.runtime.backends import open_backend

    _, library = trt_plugin
    engine = tmp_path / "min2.engine"
    build_engine(tiny_exports[1]["fp32"], engine, min_batch=2, max_batch=2, plugin_library=library, progress=None)
    backend = open_backend(engine)
    with pytest.raises(UserError, match="below the engine's minimum of 2"):
        backend.run(np.zeros((1, 3, 511, 511), np.float32))
