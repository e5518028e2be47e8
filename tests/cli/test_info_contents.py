"""`info FILE` shows what the file holds (issue #21 item 18), checked against files the real
`export` and `quantize` made, the bundled checkpoint (read here with torch) and a hand-written
engine manifest; every line fits 100 columns."""
import hashlib
import json

import cv2
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from support import fake_plugin_bytes, scene

torch = pytest.importorskip("torch")


def info(capsys, path):
    """({field: value} of the "what the file holds" table, the whole output); a value wrapped
    over several lines is joined with spaces."""
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 100, text
    rows, field = {}, None
    for line in text[text.index("what the file holds"):].splitlines():
        cells = line.split("│")
        if len(cells) != 4:
            continue
        if cells[1].strip():
            field = cells[1].strip()
            rows[field] = cells[2].strip()
        else:
            rows[field] += " " + cells[2].strip()
    return rows, text


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    work = tmp_path_factory.mktemp("info")
    fixed = work / "fixed.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--input-size", "127x127", "--decode", "graph",
                 "--corner-pool", "onnx", "--opset", "18", "--batch", "2", "--output", str(fixed)]) == 0
    dynamic = work / "dynamic.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--dynamic-size", "--dynamic-batch",
                 "--output", str(dynamic)]) == 0
    calib = work / "calib"
    calib.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(calib / f"{i}.png"), scene(i, 120, 140))
    int8 = work / "dynamic_int8.onnx"
    assert main(["quantize", str(dynamic), "--calib", str(calib), "--method", "percentile", "--percentile", "99.9",
                 "--output", str(int8), "--no-progress"]) == 0
    return {"fixed": fixed, "dynamic": dynamic, "int8": int8, "work": work}


def test_an_export_shows_precision_decode_pooling_opset_size_batch_classes(exports, capsys):
    rows, _ = info(capsys, exports["fixed"])
    assert rows["file"] == "ONNX export"
    assert rows["precision"] == "fp32"
    assert rows["decode"].startswith("graph (top-20 corners")          # the demo model's top_k
    assert rows["corner pool"].startswith("onnx (standard ops)")
    assert rows["opset"] == "18"
    assert rows["input"] == "image: 127x127 (fixed), BGR" and rows["batch"] == "2"
    assert rows["classes"] == "3: rectangle, ellipse, triangle"
    assert rows["quantization"] == "none"
    rows, _ = info(capsys, exports["dynamic"])
    assert rows["input"] == "image: any size (dynamic), BGR" and rows["batch"] == "dynamic"
    assert rows["decode"].startswith("none (raw heads") and rows["corner pool"].startswith("plugin")


def test_a_quantized_export_shows_its_calibration(exports, capsys):
    rows, _ = info(capsys, exports["int8"])
    assert rows["precision"] == "int8"
    assert rows["quantization"].startswith("percentile (percentile 99.9), 3 calibration images")
    assert "from dynamic.onnx" in rows["quantization"]


def test_a_checkpoint_shows_its_iteration_and_stored_validation(capsys):
    stored = torch.load(DEMO_CHECKPOINT, weights_only=False)
    rows, text = info(capsys, DEMO_CHECKPOINT)
    assert rows["iteration"] == str(stored["iteration"])
    metrics = stored["val_metrics"]
    assert rows["validation"] == ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in metrics.items())
    assert "AP 0.7873" in rows["validation"]
    assert rows["classes"] == "3: rectangle, ellipse, triangle"
    assert "791,132" in text                 # parameters, as before


def test_an_engine_shows_its_manifest(exports, tmp_path, capsys):
    metadata = None
    import onnx
    model = onnx.load(str(exports["dynamic"]))
    metadata = json.loads(next(p.value for p in model.metadata_props if p.key == "cornernet_deploy"))
    plugin = tmp_path / "libcornernet_deploy_plugins.so"
    plugin.write_bytes(fake_plugin_bytes(b"x"))
    engine = tmp_path / "demo_fp16.engine"
    engine.write_bytes(b"a plan never deserialized here")
    sha = hashlib.sha256(plugin.read_bytes()).hexdigest()
    (tmp_path / "demo_fp16.manifest.json").write_text(json.dumps({
        "format": 1, "tensorrt_version": "10.3.0", "precision": "fp16", "strongly_typed": False, "tf32": True,
        "gpu": {"name": "Orin", "compute_capability": "8.7"}, "built": "2026-12-01T10:00:00",
        "input": {"name": "image", "min": [1, 3, 255, 255], "opt": [2, 3, 255, 255], "max": [4, 3, 255, 255]},
        "outputs": metadata["outputs"], "plugin_library": str(plugin), "plugin_sha256": sha,
        "plugin_tensorrt_version": "10.3.0", "corner_pool_layers": ["p0", "p1", "p2", "p3"],
        "onnx": "dynamic.onnx", "metadata": {**metadata, "input_hw": [255, 255], "batch": None}}))
    rows, _ = info(capsys, engine)
    assert rows["file"] == "TensorRT engine (its manifest)"
    assert rows["TensorRT"] == "10.3.0" and rows["GPU"] == "Orin (compute capability 8.7)"
    assert rows["precision"] == "fp16, tf32 on"
    assert rows["input profile"] == "image: min [1, 3, 255, 255], opt [2, 3, 255, 255], max [4, 3, 255, 255]"
    assert rows["corner pools"] == "4 plugin layers"
    assert sha[:16] in rows["plugin"] and "TensorRT 10.3.0 headers" in rows["plugin"]
    assert rows["classes"] == "3: rectangle, ellipse, triangle"


def test_a_file_no_backend_reads_is_one_line(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert main(["info", str(notes)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "info reads model files" in err and ".onnx" in err


def test_what_a_file_says_is_shown_as_text_never_as_markup(exports, tmp_path, capsys):
    from support import with_metadata
    crafted = with_metadata(exports["fixed"], tmp_path / "markup.onnx",
                            lambda m: dict(m, class_names=["[/bold]", "[red]x", "ellipse"]))
    rows, _ = info(capsys, crafted)            # an unmatched closing tag made rich raise
    assert rows["classes"] == "3: [/bold], [red]x, ellipse"
