"""ONNX export: the custom-op contract, ONNX Runtime vs PyTorch, metadata, errors, atomic output."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cornernet_deploy.errors import UserError
from cornernet_deploy.exporter import export_onnx
from cornernet_deploy.contract.metadata import read_metadata
from cornernet_deploy.models import build_model
from cornernet_deploy.onnx_function import strip_corner_pool_function
from cornernet_deploy.contract.arch import ARCHS

torch.set_num_threads(2)

TINY = dict(num_classes=3, width=0.125)


def tiny_model(arch, seed=0):
    torch.manual_seed(seed)
    model = build_model(arch, **TINY).eval()
    # non-trivial BN statistics so the comparison exercises every layer
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def run_ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"image": x})))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("corner_pool", ["plugin", "onnx"])
def test_raw_heads_match_pytorch(arch, corner_pool, tmp_path):
    model = tiny_model(arch)
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, corner_pool=corner_pool, progress=None, verify=False)
    x = torch.randn(1, 3, *model.spec.input_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    got = run_ort(path, x.numpy())
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("corner_pool", ["plugin", "onnx"])
def test_graph_decode_matches_official_topk(arch, corner_pool, tmp_path):
    """In-graph decode outputs equal the official _decode's first half computed in PyTorch."""
    model = tiny_model(arch, seed=1)
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, corner_pool=corner_pool, decode="graph", progress=None, verify=False)
    x = torch.randn(1, 3, *model.spec.input_size, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        heads = model(x)
    got = run_ort(path, x.numpy())
    k = model.spec.test.top_k
    for side in ("tl", "br"):
        heat = torch.sigmoid(heads[f"{side}_heat"])
        hmax = torch.nn.functional.max_pool2d(heat, 3, stride=1, padding=1)
        heat = heat * (hmax == heat).float()
        n, c, h, w = heat.shape
        scores = torch.sort(heat.view(-1), descending=True).values[:k]
        np.testing.assert_allclose(got[f"{side}_scores"][0], scores.numpy(), atol=1e-6)
        inds = got[f"{side}_inds"][0]
        # every index points at its score, and its tag/offset are gathered from that cell
        np.testing.assert_allclose(heat.view(-1).numpy()[inds], got[f"{side}_scores"][0], atol=1e-6)
        pos = inds % (h * w)
        np.testing.assert_allclose(got[f"{side}_tags"][0], heads[f"{side}_tag"].view(-1).numpy()[pos], atol=1e-5)
        offs = heads[f"{side}_off"].view(2, -1).numpy()[:, pos].T
        np.testing.assert_allclose(got[f"{side}_offs"][0], offs, atol=1e-5)


def test_plugin_mode_has_one_custom_node_per_fused_pool_shaped_for_tensorrt(tmp_path):
    model = tiny_model("cornernet-squeeze")
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, progress=None, verify=False)
    m = onnx.load(str(path))
    nodes = [n for n in m.graph.node if n.domain == "cornernet_deploy"]
    # test time uses the last stack only: one TL and one BR module
    assert [n.op_type for n in nodes] == ["CornerPool", "CornerPool"]
    attrs = [{a.name: (a.type, a.s.decode()) for a in n.attribute} for n in nodes]
    assert sorted(a["mode"][1] for a in attrs) == ["bottom_right", "top_left"]
    for a in attrs:  # the ONNX parser reads these two STRING attributes to find the plugin creator
        assert a["plugin_namespace"] == (onnx.AttributeProto.STRING, "cornernet_deploy")
        assert a["plugin_version"] == (onnx.AttributeProto.STRING, "1")
    assert all(len(n.input) == 2 and len(n.output) == 1 for n in nodes)
    assert {(o.domain, o.version) for o in m.opset_import} >= {("cornernet_deploy", 1)}
    assert [(f.domain, f.name) for f in m.functions] == [("cornernet_deploy", "CornerPool")]
    # no max-scan ops of the standard form leak into the main graph
    assert not any(n.op_type == "Max" for n in m.graph.node)
    # stripped for TensorRT: the custom node stays and nothing else refers to the function
    assert strip_corner_pool_function(m) == 1 and not m.functions
    assert len([n for n in m.graph.node if n.op_type == "CornerPool"]) == 2


def test_standard_op_mode_has_no_custom_domain(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(model=tiny_model("cornernet-squeeze"), output=path, corner_pool="onnx", progress=None, verify=False)
    m = onnx.load(str(path))
    assert not m.functions and all(n.domain in ("", "ai.onnx") for n in m.graph.node)


def test_metadata_records_what_the_runtime_needs(tmp_path):
    model = tiny_model("cornernet-saccade")
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, decode="graph", progress=None, verify=False)
    meta = read_metadata(onnx.load(str(path))).raw
    assert meta["arch"] == "cornernet-saccade" and meta["input_hw"] == [255, 255]
    assert meta["channel_order"] == "BGR" and meta["stride"] == 4 and meta["decode"] == "graph"
    assert meta["mean"] == pytest.approx([0.40789654, 0.44719302, 0.47026115])
    assert meta["test"]["top_k"] == 12 and meta["test"]["no_border"] is True
    assert meta["class_names"] == ["class_0", "class_1", "class_2"]
    assert meta["outputs"][-3:] == ["att0", "att1", "att2"] and meta["saccade"]["att_max_crops"] == 30
    json.dumps(meta)  # plain JSON


def test_dynamic_batch_and_size(tmp_path):
    model = tiny_model("cornernet-squeeze")
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, dynamic_batch=True, dynamic_size=True, progress=None, verify=False)
    x = torch.randn(2, 3, 255, 383, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    got = run_ort(path, x.numpy())
    assert got["tl_heat"].shape == (2, 3, 32, 48)
    np.testing.assert_allclose(got["br_heat"], expected["br_heat"].numpy(), atol=1e-4)


def test_fp16_export_runs_within_half_precision_tolerance(tmp_path):
    model = tiny_model("cornernet-saccade")
    reference = tiny_model("cornernet-saccade")
    path = tmp_path / "h.onnx"
    export_onnx(model=model, output=path, precision="fp16", progress=None, verify=False)
    x = torch.randn(1, 3, 255, 255, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference(x)
    got = run_ort(path, x.numpy())
    assert got["tl_heat"].dtype == np.float32  # float32 I/O around the FP16 network
    m = onnx.load(str(path))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    np.testing.assert_allclose(got["tl_heat"], expected["tl_heat"].numpy(), atol=2e-2)


def test_user_errors_leave_no_file(tmp_path):
    out = tmp_path / "never.onnx"
    with pytest.raises(UserError, match="k\\*128-1"):
        export_onnx("cornernet-squeeze", output=out, input_size="512x512", progress=None)
    with pytest.raises(UserError, match="HxW"):
        export_onnx("cornernet-squeeze", output=out, input_size="big", progress=None)
    with pytest.raises(UserError, match="unknown architecture"):
        export_onnx("cornernet-large", output=out, progress=None)
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    import cornernet_deploy.exporter as exporter
    monkeypatch.setattr(exporter, "verify_against_torch", lambda *a, **k: {
        "tolerance": "fp32", "heads": {"tl_heat": {"max_abs": 1.0}}, "detections": None,
        "failures": ["tl_heat: max |onnx - torch| 1"]})
    with pytest.raises(UserError, match="nothing was written"):
        export_onnx(model=tiny_model("cornernet-squeeze"), output=tmp_path / "m.onnx", progress=None)
    assert list(tmp_path.iterdir()) == []
