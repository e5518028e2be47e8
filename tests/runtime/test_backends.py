"""The backend interface: open_backend and its model-kind table, provider selection and its errors,
the TensorRT-provider copy of a model, what run / run_timed / describe return; GPU paths where
onnxruntime-gpu and a GPU exist (skipped here with the reason)."""
import json

import numpy as np
import onnx
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.onnx_function import DOMAIN, OP_TYPE, retarget_corner_pool_to_tensorrt_ep
from cornernet_deploy.runtime.backends import MODEL_KINDS, backend_for, open_backend
from cornernet_deploy.runtime.backends.onnxruntime import EXECUTION_PROVIDERS, check_tensorrt_provider, provider_chain

torch = pytest.importorskip("torch")

ALL_EPS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.models import build_model, save_checkpoint
    d = tmp_path_factory.mktemp("backends")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("cornernet-squeeze", num_classes=3, width=0.125).eval()
    save_checkpoint(model, d / "tiny.pt")
    export_onnx(model=model, output=d / "fixed.onnx", input_size=(127, 127), batch=2, progress=None,
                verify=False)
    export_onnx(model=model, output=d / "dynamic.onnx", dynamic_size=True, dynamic_batch=True,
                progress=None, verify=False)
    return d


# ----------------------------------------------------------------------------------------------
# which backend, and the errors before anything is loaded
# ----------------------------------------------------------------------------------------------

def test_model_kinds(tmp_path):
    assert {s: MODEL_KINDS[s] for s in (".onnx", ".engine", ".plan", ".trt", ".pt", ".pth", ".pkl")} == {
        ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
        ".pt": "torch", ".pth": "torch", ".pkl": "torch"}
    assert backend_for("x/Model.ONNX") == "onnxruntime"           # suffixes are case-blind
    assert backend_for("CornerNet-Saccade") == "torch"             # an architecture name
    with pytest.raises(UserError, match="unknown model type '.tflite'"):
        backend_for(tmp_path / "m.tflite")
    with pytest.raises(UserError, match="no such file, and not an architecture name"):
        backend_for("cornernet-huge")
    (tmp_path / "README").write_text("x")
    with pytest.raises(UserError, match="unknown model type 'README'"):
        backend_for(tmp_path / "README")


@pytest.mark.parametrize("kwargs, message", [
    (dict(backend="tensorrt"), "the tensorrt backend runs a TensorRT .engine; this is an .onnx file"),
    (dict(backend="magic"), "unknown backend 'magic'"),
    (dict(device="tpu"), "unknown device 'tpu'"),
    (dict(provider="openvino"), "unknown provider 'openvino'"),
    (dict(device="cpu", provider="cuda"), "--device cpu contradicts --provider cuda"),
    (dict(threads=0), "threads must be at least 1"),
    (dict(precision="fp16"), "is an fp32 model"),
])
def test_open_backend_refuses_with_one_line(tiny, kwargs, message):
    with pytest.raises(UserError) as err:
        open_backend(tiny / "fixed.onnx", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_provider_is_for_onnx_models_only(tiny):
    with pytest.raises(UserError, match="applies to .onnx models only"):
        open_backend(tiny / "tiny.pt", provider="cuda")


def test_missing_files_name_the_path(tmp_path):
    with pytest.raises(UserError, match=r"missing.onnx: no such file \(model not found\)"):
        open_backend(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match=r"missing.engine: no such file \(engine not found\)"):
        open_backend(tmp_path / "missing.engine")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(UserError, match="folder.onnx: is not a file"):
        open_backend(tmp_path / "folder.onnx")


# ----------------------------------------------------------------------------------------------
# provider selection
# ----------------------------------------------------------------------------------------------

def test_provider_chains_fall_back_gpu_to_gpu_to_cpu():
    assert provider_chain("cpu", ALL_EPS) == ["CPUExecutionProvider"]
    assert provider_chain("cuda", ALL_EPS, device_id=1) == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    chain = provider_chain("tensorrt", ALL_EPS, tensorrt_options={"trt_fp16_enable": True})
    assert chain == [("TensorrtExecutionProvider", {"trt_fp16_enable": True, "device_id": 0}),
                     ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]


@pytest.mark.parametrize("provider, available, package", [
    ("cuda", ["CPUExecutionProvider"], "pip install onnxruntime-gpu"),
    ("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"], "pip install 'onnxruntime-gpu>=1.22' and the tensorrt"),
    ("tensorrt", ["CPUExecutionProvider"], "pip install 'onnxruntime-gpu>=1.22' and the tensorrt"),
])
def test_a_missing_provider_names_the_package(provider, available, package):
    with pytest.raises(UserError) as err:
        provider_chain(provider, available)
    text = str(err.value)
    assert package in text and EXECUTION_PROVIDERS[provider] in text and "\n" not in text


# DT_NEEDED of libonnxruntime_providers_tensorrt.so in the onnxruntime-gpu wheels (readelf -d), in part
PROVIDER_1_21_1 = ["libcublas.so.12", "libnvinfer.so.10", "libnvinfer_plugin.so.10", "libnvonnxparser.so.10",
                   "libcudart.so.12"]
PROVIDER_1_31_1 = ["libnvinfer.so.10", "libnvonnxparser.so.10", "libcudart.so.13", "libcudnn.so.9"]


@pytest.mark.parametrize("ort_version, needs, tensorrt_version, problem", [
    ("1.21.1", PROVIDER_1_21_1, "10.8.0.43", "1.21.1's TensorRT provider lists only IPluginV2 creators"),
    ("1.19.2", [], "10.2.0", "listed from ONNX Runtime 1.22 on: pip install 'onnxruntime-gpu>=1.22'"),
    ("1.22.0", PROVIDER_1_21_1, "11.4.0.106", "1.22.0's TensorRT provider is built for TensorRT 10 (it links "
                                              "libnvinfer.so.10) but the importable tensorrt is 11.4.0.106"),
    ("1.22.0", PROVIDER_1_21_1, "10.9.0.34", None),
    ("1.31.1", PROVIDER_1_31_1, "10.16.1.11", None),
    ("1.26.0", [], "11.4.0", None),     # no provider library where the wheel puts it: not judged
])
def test_tensorrt_provider_versions_that_cannot_find_the_plugin(ort_version, needs, tensorrt_version, problem):
    if problem is None:
        check_tensorrt_provider(ort_version, needs, tensorrt_version)
        return
    with pytest.raises(UserError) as err:
        check_tensorrt_provider(ort_version, needs, tensorrt_version)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_gpu_provider_on_this_installation(tiny, tmp_path, capsys):
    """The real installed ONNX Runtime: a provider it lacks is a one-line usage error, from the
    Python API and from the CLI."""
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider (see the GPU tests below)")
    with pytest.raises(UserError, match="onnxruntime-gpu"):
        open_backend(tiny / "fixed.onnx", device="cuda")
    import cv2
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((60, 80, 3), np.uint8))
    assert main(["infer", str(tiny / "fixed.onnx"), str(tmp_path / "x.png"), "--provider", "tensorrt",
                 "--no-progress", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "onnxruntime-gpu" in err[-1]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# the TensorRT provider's copy of a model
# ----------------------------------------------------------------------------------------------

def test_tensorrt_provider_copy_routes_corner_pools_to_the_plugin(tiny):
    model = onnx.load(str(tiny / "fixed.onnx"))
    pools = [n for n in model.graph.node if n.op_type == OP_TYPE]
    assert pools and model.functions                           # as exported: node + function body
    attrs = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in pools}
    assert retarget_corner_pool_to_tensorrt_ep(model) == len(pools)
    assert len(model.functions) == 0
    moved = [n for n in model.graph.node if n.op_type == OP_TYPE]
    assert all(n.domain == "trt.plugins" for n in moved)
    # the TensorRT parser finds the creator by op type, plugin_version and plugin_namespace
    for n in moved:
        got = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        assert got == attrs[n.name] and got["plugin_namespace"] == b"cornernet_deploy"
        assert got["plugin_version"] == b"1" and got["mode"] in (b"top_left", b"bottom_right")
    domains = {o.domain: o.version for o in model.opset_import}
    assert domains.get("trt.plugins") == 1 and DOMAIN not in domains
    # nothing but the TensorRT provider declares that domain: plain ONNX Runtime refuses the copy
    import onnxruntime as ort
    with pytest.raises(Exception, match="CornerPool"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------------
# what a backend tells and returns (ONNX Runtime CPU and PyTorch here)
# ----------------------------------------------------------------------------------------------

def test_describe_and_shapes_follow_the_export(tiny):
    fixed, dynamic = open_backend(tiny / "fixed.onnx", threads=1), open_backend(tiny / "dynamic.onnx")
    assert (fixed.input_hw, fixed.max_batch, fixed.static_batch) == ((127, 127), 2, True)
    assert (dynamic.input_hw, dynamic.max_batch, dynamic.static_batch) == (None, None, False)
    d = fixed.describe()
    assert d == {"label": "fixed.onnx [onnxruntime/cpu/fp32, 1 thr]", "model": str(tiny / "fixed.onnx"),
                 "backend": "onnxruntime", "provider": "cpu", "device": "cpu", "precision": "fp32",
                 "arch": "cornernet-squeeze", "num_classes": 3, "decode": "none", "input_dtype": "float32",
                 "input_hw": [127, 127],
                 "static_batch": 2, "threads": 1, "timing": "perf_counter_ns"}
    json.dumps(d)
    ref = open_backend("cornernet-squeeze")
    assert ref.describe()["model"] == "cornernet-squeeze" and ref.label == "cornernet-squeeze [torch/cpu/fp32]"
    assert ref.spec.num_classes == 80 and ref.describe()["provider"] is None


def test_run_timed_returns_the_outputs_of_run_and_host_stages(tiny):
    backend = open_backend(tiny / "fixed.onnx")
    x = np.random.default_rng(0).normal(size=(2, 3, 127, 127)).astype(np.float32)
    plain = backend.run(x)
    outputs, stages = backend.run_timed(x)
    assert set(outputs) == set(backend.output_names) == {"tl_heat", "br_heat", "tl_tag", "br_tag",
                                                         "tl_off", "br_off"}
    for name in plain:
        np.testing.assert_array_equal(outputs[name], plain[name])
    assert stages["h2d"] is None and stages["d2h"] is None and stages["inference"] > 0


def test_checkpoint_and_export_compute_the_same_heads(tiny):
    """The torch backend of the checkpoint and the ONNX Runtime backend of its export (two
    frameworks: an independent check of both)."""
    x = np.random.default_rng(1).normal(size=(2, 3, 127, 127)).astype(np.float32)
    with open_backend(tiny / "tiny.pt", threads=1) as ref, open_backend(tiny / "fixed.onnx") as ort_backend:
        a, b = ref.run(x), ort_backend.run(x)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-4, rtol=1e-4, err_msg=name)


def test_torch_threads_apply_around_each_call_only(tiny):
    previous = torch.get_num_threads()
    seen = []
    backend = open_backend(tiny / "tiny.pt", threads=1)
    hook = backend.net.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    backend.run(np.zeros((1, 3, 127, 127), np.float32))
    hook.remove()
    assert seen == [1] and torch.get_num_threads() == previous


# ----------------------------------------------------------------------------------------------
# GPU paths (onnxruntime-gpu and a GPU; TensorRT and the plugin for the TensorRT provider)
# ----------------------------------------------------------------------------------------------

def _gpu_provider_or_skip(provider):
    import onnxruntime as ort
    ep = EXECUTION_PROVIDERS[provider]
    if ep not in ort.get_available_providers():
        pytest.skip(f"this ONNX Runtime ({ort.__version__}) has no {ep} (pip install onnxruntime-gpu)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")


@pytest.mark.gpu
def test_onnxruntime_cuda_equals_cpu_and_times_the_copies(tiny):
    _gpu_provider_or_skip("cuda")
    x = np.random.default_rng(2).normal(size=(2, 3, 127, 127)).astype(np.float32)
    cpu = open_backend(tiny / "fixed.onnx").run(x)
    gpu = open_backend(tiny / "fixed.onnx", device="cuda")
    assert gpu.describe()["provider"] == "cuda" and gpu.device == "cuda"
    outputs, stages = gpu.run_timed(x)
    for name in cpu:
        np.testing.assert_allclose(outputs[name], cpu[name], atol=1e-3, err_msg=name)
    assert all(stages[s] is not None and stages[s] >= 0 for s in ("h2d", "inference", "d2h"))


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_onnxruntime_tensorrt_provider_with_the_plugin(tiny, tmp_path):
    _gpu_provider_or_skip("tensorrt")
    from cornernet_deploy.runtime.plugin_library import find_plugin_library, importable_tensorrt_version
    from cornernet_deploy.tensorrt.plugin_build import build_plugin
    version = importable_tensorrt_version()
    if version is None:
        pytest.skip("no importable tensorrt (the TensorRT provider's route registers the plugin with it)")
    library = (find_plugin_library(required=False, tensorrt_major=int(version.split(".")[0]))
               or build_plugin(output_dir=tmp_path / "plugin"))
    x = np.random.default_rng(3).normal(size=(2, 3, 127, 127)).astype(np.float32)
    cpu = open_backend(tiny / "fixed.onnx").run(x)
    trt = open_backend(tiny / "fixed.onnx", provider="tensorrt", plugin_library=library,
                       cache_dir=tmp_path / "cache")
    got = trt.run(x)
    for name in cpu:
        np.testing.assert_allclose(got[name], cpu[name], atol=1e-3, err_msg=name)
    assert any(p.suffix == ".engine" for p in trt.cache_dir.iterdir())     # the engine was cached


@pytest.mark.gpu
def test_profile_has_an_onnxruntime_cuda_row(tiny, tmp_path):
    _gpu_provider_or_skip("cuda")
    out = tmp_path / "p.json"
    assert main(["profile", str(tiny / "fixed.onnx"), "--provider", "cpu,cuda", "--batch", "2",
                 "--iters", "3", "--json", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["provider"], r["device"]) for r in rows] == [("cpu", "cpu"), ("cuda", "cuda")]
    assert rows[0]["stages"]["h2d"] is None and rows[1]["stages"]["h2d"]["n"] == 3
