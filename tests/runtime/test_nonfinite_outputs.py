"""Issue 21 item 5, the runtime: a network that outputs NaN or infinity gives no detections (one
line naming the image, never a NaN in a JSON file, never plausible boxes from a broken head);
`compare` reports it as a failure and writes strict JSON."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.data.shapes import generate_shapes_dataset, render_scene
from cornernet_deploy.exporter import export_onnx
from cornernet_deploy.fileio import json_text
from cornernet_deploy.runtime.detector import Detector
from cornernet_deploy.runtime.pipeline import NonFiniteOutput

torch.set_num_threads(2)


def strict_json(text):
    """json.loads that refuses the NaN/Infinity tokens Python's json writes by default."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The demo model, and the same model whose top-left heat head computes inf - inf: the last
    convolution of the head weighs +3e38 on one input channel and -3e38 on another (finite
    weights, so the export's weight check lets it through; written without verification)."""
    folder = tmp_path_factory.mktemp("models")
    ck = torch.load(DEMO_CHECKPOINT, map_location="cpu", weights_only=True)
    weight = ck["state_dict"]["tl_heats.0.1.weight"]
    weight.zero_()
    weight[:, 0] = 3e38
    weight[:, 1] = -3e38
    torch.save(ck, folder / "broken.pt")
    good, broken = folder / "good.onnx", folder / "broken.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=good, dynamic_size=True, progress=None, verify=False)
    export_onnx(checkpoint=folder / "broken.pt", output=broken, dynamic_size=True, progress=None, verify=False)
    return {"good": good, "broken": broken}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    generate_shapes_dataset(root, 3, seed=11, image_size=((128, 160),), num_objects=(1, 3))
    return root / "annotations.json", root / "images"


def test_a_broken_heat_head_gives_no_detections_and_says_why(models):
    image, _, _ = render_scene(3, image_size=160)
    detector = Detector.load(models["broken"])
    outputs = detector.backend.run(_tensor(detector, image))
    assert not np.isfinite(outputs["tl_heat"]).all()            # the premise: a broken head
    assert np.isfinite(outputs["br_heat"]).all()
    with pytest.raises(NonFiniteOutput, match=r"NaN or infinite values in tl_heat \("):
        detector(image)
    detector.close()
    detector = Detector.load(models["good"])
    assert len(detector(image)) > 0
    detector.close()


def _tensor(detector, image):
    from cornernet_deploy.runtime.preprocess import preprocess
    x, _ = preprocess(image, detector.pipeline.spec, 1.0, None, detector.pipeline.mean, detector.pipeline.std)
    return x[None]


def test_infer_and_eval_stop_with_one_line_naming_the_image(models, scenes, tmp_path, capsys):
    ann, images = scenes
    files = sorted(images.iterdir())
    out = tmp_path / "out"
    assert main(["infer", str(models["broken"]), *map(str, files), "--output", str(out), "--no-progress",
                 "--batch-size", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {files[0]}: the network output NaN or infinite values in tl_heat"), err
    assert not out.exists()
    assert main(["eval", str(models["broken"]), "--data", str(ann), "--images", str(images),
                 "--json", str(tmp_path / "m.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "NaN or infinite values in tl_heat" in err and files[0].name in err
    assert not (tmp_path / "m.json").exists()


def test_compare_fails_a_model_with_nan_outputs_and_writes_strict_json(models, tmp_path, capsys):
    report = tmp_path / "c.json"
    rc = main(["compare", str(models["good"]), str(models["broken"]), "--num-images", "2",
               "--json", str(report), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    fails = [line for line in captured.err.splitlines() if line.startswith("FAIL:")]
    assert any(line.startswith("FAIL: B (") and "on 2 of 2 image(s)" in line and "tl_heat" in line
               for line in fails), fails
    assert any(line.startswith("FAIL: head tl_heat") for line in fails), fails
    data = strict_json(report.read_text())                          # no Infinity / NaN tokens
    assert data["passed"] is False and data["heads"]["tl_heat"]["max_abs"] is None
    assert data["heads"]["br_heat"]["max_abs"] is not None


def test_json_text_writes_null_for_what_json_cannot_hold():
    text = json_text({"a": [1.5, math.nan, math.inf, -math.inf], "b": {"c": np.float64(2.0)}, "d": "NaN"})
    assert strict_json(text) == {"a": [1.5, None, None, None], "b": {"c": 2.0}, "d": "NaN"}


def test_quantize_of_a_model_with_nan_outputs_is_one_line_not_a_traceback(models, scenes, tmp_path, capsys):
    _, images = scenes
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(models["broken"]), "--calib", str(images), "--output", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: the FP32 model's output tl_heat holds NaN or infinite values on the first "
                   "calibration batch: its weights are broken; nothing was written"), err
    assert not out.exists()
