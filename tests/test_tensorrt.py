"""TensorRT: engine building and the TensorRT backend.

The end-to-end test (export a tiny model -> build the plugin -> FP32 and FP16 engines -> compare
with ONNX Runtime -> detections agree) runs wherever TensorRT and a GPU are present and skips
elsewhere with the reason. The input checks of `build` and of the backend run everywhere: they
happen before TensorRT is imported.
"""
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from cornernet_deploy.errors import UserError
from cornernet_deploy.exporter import export_onnx
from cornernet_deploy.models import build_model
from cornernet_deploy.tensorrt.builder import build_engine, check_plugin_layers, manifest_path

torch.set_num_threads(2)

# Documented tolerances of engine heads against ONNX Runtime FP32 (README "TensorRT"): FP32 engines
# may use TF32/other tactics -> 1e-3; FP16 networks -> 5e-2 on logits of a tiny model.
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
    # The decision is plain Python over the count of plugin layers the parser produced (counted
    # from the real network in build_engine; the real parse is covered by the end-to-end test).
    nodes = [onnx.helper.make_node("CornerPool", ["a", "b"], ["c"], name=f"pool{i}", domain="cornernet_deploy")
             for i in range(2)]
    check_plugin_layers(nodes, 2)
    with pytest.raises(UserError, match=r"2 CornerPool nodes \(pool0, pool1\) but 1 plugin layers"):
        check_plugin_layers(nodes, 1)


def _tensorrt_or_skip():
    try:
        import tensorrt as trt
    except ImportError:
        pytest.skip("TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU)")
    if not hasattr(trt, "Builder"):
        pytest.skip("the installed tensorrt package has no builder (lean/dispatch runtime only)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return trt


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_end_to_end_engines_agree_with_onnxruntime(tiny_exports, tmp_path):
    _tensorrt_or_skip()
    from cornernet_deploy.runtime.backends import open_backend
    from cornernet_deploy.runtime.detector import Detector
    from cornernet_deploy.tensorrt.plugin_build import build_plugin, find_plugin_library

    library = find_plugin_library(required=False) or build_plugin(output_dir=tmp_path / "plugin")
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
        build_engine(onnx_paths[precision], engine, precision=precision, max_batch=2, opt_batch=2,
                     plugin_library=library, progress=None)
        manifest = json.loads(manifest_path(engine).read_text())
        assert manifest["precision"] == precision and manifest["input"]["max"][0] == 2
        backend = open_backend(engine)
        got = backend.run(batch)
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, atol=HEAD_ATOL[precision], err_msg=f"{precision} {name}")
        outputs, stages = backend.run_timed(batch[:1])
        assert set(stages) == {"h2d", "inference", "d2h"} and all(v >= 0 for v in stages.values())
        trt_dets = Detector(backend, test=test)(image)
        top = 10
        np.testing.assert_allclose(trt_dets.scores[:top], ort_dets.scores[:top], atol=HEAD_ATOL[precision])
        np.testing.assert_allclose(trt_dets.boxes[:top], ort_dets.boxes[:top], atol=1.0 if precision == "fp16" else 0.05)
