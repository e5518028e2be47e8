"""Every command that reads an export (info, infer, eval, quantize, build, triton, profile,
compare) turns crafted or mismatched metadata into one line and exit status 2, never a traceback
(issue #21 item 7): the metadata is checked once, at load (``contract.metadata.parse_metadata``),
and an ONNX Runtime session's outputs are checked against what the metadata implies."""
import json

import cv2
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from support import fake_plugin_bytes, scene, with_metadata

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model exported twice (fixed 127x127 with the in-graph decode; dynamic size), an
    image and a one-image COCO dataset."""
    work = tmp_path_factory.mktemp("crafted")
    fixed, dynamic = work / "fixed.onnx", work / "dynamic.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--input-size", "127x127", "--decode", "graph",
                 "--output", str(fixed)]) == 0
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--dynamic-size", "--dynamic-batch",
                 "--output", str(dynamic)]) == 0
    images = work / "images"
    images.mkdir()
    assert cv2.imwrite(str(images / "a.png"), scene(0, 120, 130))
    data = work / "ann.json"
    data.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 130, "height": 120}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 50, 110, 110],
                         "area": 12100, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"}, {"id": 3, "name": "triangle"}]}))
    return {"fixed": fixed, "dynamic": dynamic, "images": images, "data": data, "work": work}


def four_classes(meta):
    """Consistent metadata of a 4-class model for a graph whose heat maps have 3 channels."""
    spec = dict(meta["spec"], num_classes=4)
    spec.update(class_names=spec["class_names"] + ["square"], category_ids=spec["category_ids"] + [4])
    return dict(meta, spec=spec, class_names=spec["class_names"], category_ids=spec["category_ids"])


CRAFTED = {
    "input_hw abc": ({"input_hw": "abc"}, "input_hw 'abc'"),
    "mean of 5": ({"mean": [0.1, 0.2, 0.3, 0.4, 0.5]}, "expected 3 numbers"),
    "std 0": ({"std": [0.2, 0.0, 0.2]}, "std 0.0"),
    "batch x": ({"batch": "x"}, "batch 'x'"),
    "test not an object": ({"test": [1, 2]}, "'test' that is not an object"),
    "top_k -5": (lambda m: dict(m, test=dict(m["test"], top_k=-5)), "test.top_k -5"),
    "num_classes vs names": (lambda m: dict(m, spec=dict(m["spec"], num_classes=80)), "num_classes entries"),
    "10000 class names": (lambda m: dict(m, class_names=[f"c{i}" for i in range(10000)]), "10000 class names"),
    "control character": (lambda m: dict(m, class_names=["rect\nangle", "ellipse", "triangle"]), "control character"),
    "not an object": (lambda m: [1, 2, 3], "not a JSON object"),
}


def crafted_model(demo, case, base="fixed"):
    change, _ = CRAFTED[case]
    return with_metadata(demo[base], demo["work"] / f"{case.replace(' ', '_')}_{base}.onnx", change)


def command_line(command, model, demo, tmp_path):
    out = tmp_path / "out"
    return {
        "info": ["info", model],
        "infer": ["infer", model, demo["images"] / "a.png", "--output", out, "--no-progress"],
        "eval": ["eval", model, "--data", demo["data"], "--images", demo["images"], "--no-progress"],
        "quantize": ["quantize", model, "--calib", demo["images"], "--output", tmp_path / "q.onnx", "--no-progress"],
        "build": ["build", model, "--trtexec", "10", "--output", tmp_path / "m.engine"],
        "triton": ["triton", model, "--repo", out],
        "profile": ["profile", model, "--iters", "1", "--warmup", "0", "--quiet"],
        "compare": ["compare", model, demo["fixed"], "--num-images", "1", "--quiet"],
    }[command]


def one_line_exit_2(capsys, args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:          # argparse
        code = exc.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith(("note:", "warning:"))]
    return code, lines


COMMANDS = ["info", "infer", "eval", "quantize", "build", "triton", "profile", "compare"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(CRAFTED))
def test_every_reader_turns_crafted_metadata_into_one_line(demo, tmp_path, capsys, command, case):
    model = crafted_model(demo, case)
    code, lines = one_line_exit_2(capsys, command_line(command, model, demo, tmp_path))
    assert code == 2 and len(lines) == 1, (code, lines)
    assert CRAFTED[case][1] in lines[0] and str(model) in lines[0], lines
    assert "Traceback" not in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("command", ["info", "infer", "eval", "quantize", "build", "triton", "profile", "compare"])
def test_graph_outputs_of_another_size_than_the_metadata_implies(demo, tmp_path, capsys, monkeypatch, command):
    """Consistent metadata of a 4-class model on a 3-class graph (fixed size, in-graph decode of 20
    corners; the metadata also asks for 50). Readers that run the model refuse it in one line;
    readers that only describe it (info, build --trtexec, triton) read the metadata as it is."""
    plugin = tmp_path / "libcornernet_deploy_plugins.so"      # build --trtexec names the library
    plugin.write_bytes(fake_plugin_bytes(b"never loaded"))
    monkeypatch.setenv("CORNERNET_DEPLOY_PLUGIN", str(plugin))
    model = with_metadata(demo["fixed"], tmp_path / "mismatched.onnx",
                          lambda m: dict(four_classes(m), test=dict(m["test"], top_k=50)))
    code, lines = one_line_exit_2(capsys, command_line(command, model, demo, tmp_path))
    if command in ("info", "build", "triton"):
        assert code == 0, lines
        return
    assert code == 2 and len(lines) == 1, (code, lines)
    assert "the metadata does not describe this graph" in lines[0] and str(model) in lines[0], lines
    assert "output tl_scores is float32 [batch, 20] in the graph" in lines[0], lines
    assert "implies float32 [batch, 50]" in lines[0], lines


def test_heat_maps_of_another_class_count_are_refused_by_the_runtime(demo, tmp_path):
    from cornernet_deploy.errors import UserError
    from cornernet_deploy.runtime.detector import Detector
    model = with_metadata(demo["dynamic"], tmp_path / "four.onnx", four_classes)
    with pytest.raises(UserError) as err:
        Detector.load(model)
    assert "output tl_heat is float32 [batch, 3, out_height, out_width]" in str(err.value)
    assert "implies float32 [batch, 4, ?, ?]" in str(err.value)
