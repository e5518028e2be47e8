"""End to end on the CPU: export -> ONNX Runtime Detector vs the PyTorch model through the same
official pipeline; the infer command; clear errors for bad models and images."""
import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.exporter import export_onnx
from cornernet_deploy.runtime.detector import Detector
from cornernet_deploy.runtime.pipeline import CornerNetPipeline
from support import loose, random_tiny, scene

torch.set_num_threads(2)


def torch_run(model):
    def run(batch):
        with torch.no_grad():
            return {k: v.numpy() for k, v in model(torch.from_numpy(batch)).items()}
    return run


def assert_same_detections(a, b, atol=1e-3, top=None):
    """Equal detections; ``top``: only the best ``top`` (random weights give near-tied scores, 1e-6
    apart, whose order at the max-per-image cut is decided by float rounding; a trained model
    has no such ties and is compared in full in test_demo_model.py)."""
    assert len(a) > 0 and (len(a) == len(b) or top is not None)
    key_a = np.lexsort((a.boxes[:, 0], -a.scores))[:top]
    key_b = np.lexsort((b.boxes[:, 0], -b.scores))[:top]
    np.testing.assert_allclose(a.scores[key_a], b.scores[key_b], atol=atol)
    np.testing.assert_allclose(a.boxes[key_a], b.boxes[key_b], atol=atol)
    assert (a.class_ids[key_a] == b.class_ids[key_b]).all()


@pytest.mark.parametrize("arch,decode,corner_pool", [
    ("cornernet-squeeze", "none", "plugin"), ("cornernet-squeeze", "graph", "onnx"),
    ("cornernet", "graph", "plugin"), ("cornernet-saccade", "none", "plugin"),
])
def test_onnxruntime_detections_equal_pytorch(arch, decode, corner_pool, tmp_path):
    model = random_tiny(arch)
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, decode=decode, corner_pool=corner_pool, dynamic_size=False,
                progress=None, verify=False)
    test = loose(model.spec)
    detector = Detector.load(path, test=test)
    reference = CornerNetPipeline(detector.metadata, torch_run(model), input_hw=model.spec.input_size,
                                  max_batch=1, test=test)
    image = scene(1)
    assert_same_detections(detector(image), reference(image), top=30)


@pytest.mark.parametrize("threads", [1, 3])
def test_saccade_detections_do_not_depend_on_the_thread_count(threads, tmp_path):
    """The flake this file had: the same comparison as above after another test changed torch's
    thread count. Saccade's zoom order follows score ranks, so it must be decided by the model."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        test_onnxruntime_detections_equal_pytorch("cornernet-saccade", "none", "plugin", tmp_path)
    finally:
        torch.set_num_threads(previous)


def test_batch_equals_single_images(tmp_path):
    model = random_tiny("cornernet-squeeze", 3)
    path = tmp_path / "m.onnx"
    export_onnx(model=model, output=path, dynamic_batch=True, progress=None, verify=False)
    detector = Detector.load(path, test=loose(model.spec))
    images = [scene(i, 150 + 20 * i, 200) for i in range(3)]
    for single, batched in zip([detector(im) for im in images], detector.batch(images)):
        assert_same_detections(single, batched, atol=1e-4)


def test_model_files_that_are_not_ours_are_refused(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"definitely not protobuf")
    with pytest.raises(UserError, match="not a loadable ONNX model"):
        Detector.load(tmp_path / "x.onnx")
    node = onnx.helper.make_node("Relu", ["image"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("image", 1, [1, 3, 4, 4])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1, 3, 4, 4])])
    # opset 17 / IR 8, as our exports: the older ONNX Runtime wheels of Python 3.9/3.10 cannot
    # load onnx's newest IR, and would refuse the file before its metadata is read
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(UserError, match="not exported by cornernet-deploy"):
        Detector.load(tmp_path / "foreign.onnx")
    with pytest.raises(UserError, match="unknown model type"):
        Detector.load(tmp_path / "model.tflite")
    with pytest.raises(UserError, match="not found"):
        Detector.load(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    export_onnx(model=random_tiny("cornernet-squeeze", num_classes=3), output=path, progress=None, verify=False)
    return path


def test_infer_writes_coco_json_and_drawings(tiny_onnx, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), scene(i))
    cv2.imwrite(str(images / "gray.png"), scene(5)[:, :, 0])              # grayscale: converted
    cv2.imwrite(str(images / "rgba.png"), np.dstack([scene(6), np.full(scene(6).shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(images / "deep.png"), scene(7).astype(np.uint16) * 257)  # 16-bit: converted
    out = tmp_path / "out"
    rc = main(["infer", str(tiny_onnx), str(images), "--output", str(out), "--save-vis", "--no-progress"])
    assert rc == 0
    per_image = json.loads((out / "images.json").read_text())
    assert len(per_image) == 6 and {p["width"] for p in per_image} == {260}
    dets = json.loads((out / "detections.json").read_text())
    for d in dets:
        assert set(d) >= {"image_id", "category_id", "bbox", "score", "file_name", "category_name"}
        assert d["category_name"] in ("class_0", "class_1", "class_2") and len(d["bbox"]) == 4
    assert len(list(out.glob("*.png"))) == 6


def test_infer_bad_inputs_exit_nonzero_and_leave_nothing(tiny_onnx, tmp_path, capsys):
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), scene(0))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:100])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    out = tmp_path / "out"
    cases = [
        ([str(tiny_onnx), str(good), str(corrupt)], "corrupt.png: cannot decode"),
        ([str(tiny_onnx), str(empty_dir)], "holds no images"),
        ([str(tiny_onnx), str(tmp_path / "*.jpg")], "matches no files"),
        ([str(good), str(good)], "unknown model type"),
    ]
    for args, message in cases:
        rc = main(["infer", *args, "--output", str(out), "--save-vis", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and message in err[-1] and err[-1].startswith("error: ")
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.png", "empty", "good.png"]


def test_runtime_path_imports_no_torch(tiny_onnx):
    code = (
        "import sys, numpy as np\n"
        "from cornernet_deploy.runtime import Detector\n"
        f"d = Detector.load({str(tiny_onnx)!r})\n"
        "d(np.zeros((100, 120, 3), np.uint8))\n"
        "from cornernet_deploy.cli import main\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
