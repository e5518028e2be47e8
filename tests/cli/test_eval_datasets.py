"""`eval` on every COCO file pycocotools loads (issue #21 item 8): text or float image ids are
scored as their integer twins score; a missing `area` is filled from the box; a missing or
malformed `bbox`, duplicate image ids, a category the file does not list, and a dataset with
nothing to score are one line naming what is wrong, exit 2."""
import json

import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.data.shapes import generate_shapes_dataset

pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("evalsets")
    model = work / "demo.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--dynamic-size", "--output", str(model)]) == 0
    generate_shapes_dataset(work / "data", 4, seed=5, image_size=((128, 160),), num_objects=(2, 3))
    data = json.loads((work / "data" / "annotations.json").read_text())
    return {"model": model, "images": work / "data" / "images", "data": data, "work": work}


def run_eval(setup, capsys, change, name):
    data = json.loads(json.dumps(setup["data"]))
    change(data)
    path = setup["work"] / f"{name}.json"
    path.write_text(json.dumps(data))
    out = setup["work"] / f"{name}.metrics.json"
    code = main(["eval", str(setup["model"]), "--data", str(path), "--images", str(setup["images"]),
                 "--no-progress", "--json", str(out)])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.strip().splitlines() if not line.startswith("note:")]
    notes = [line for line in captured.err.strip().splitlines() if line.startswith("note:")]
    return code, errors, notes, json.loads(out.read_text()) if out.exists() else None, path


def ids_as(kind):
    def change(data):
        for image in data["images"]:
            image["id"] = kind(image["id"])
        for ann in data["annotations"]:
            ann["image_id"] = kind(ann["image_id"])
    return change


def test_text_and_float_image_ids_score_as_their_integer_twins(setup, capsys):
    code, errors, _, reference, _ = run_eval(setup, capsys, lambda d: None, "plain")
    assert code == 0 and errors == [] and reference["AP"] > 0.5
    for kind, name in ((lambda i: f"img-{i:03d}", "text"), (float, "float")):
        code, errors, _, metrics, _ = run_eval(setup, capsys, ids_as(kind), name)
        assert code == 0 and errors == [], errors
        assert metrics == reference, name           # the same images in the same order: the same scores


def test_a_missing_area_is_the_boxs_area_with_a_note(setup, capsys):
    def drop_area(data):
        for ann in data["annotations"]:
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    code, _, _, reference, _ = run_eval(setup, capsys, drop_area, "box_area")
    code, errors, notes, metrics, _ = run_eval(
        setup, capsys, lambda d: [a.pop("area") for a in d["annotations"]], "no_area")
    assert code == 0 and errors == [] and metrics == reference
    assert any(f"{len(setup['data']['annotations'])} annotation(s) without 'area'" in n for n in notes), notes


@pytest.mark.parametrize("name, change, words", [
    ("no_bbox", lambda d: d["annotations"][1].pop("bbox"), ["annotation #1 (id 2) has bbox None"]),
    ("bbox_of_3", lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ["annotation #0 (id 1) has bbox [1, 2, 3]"]),
    ("bbox_text", lambda d: d["annotations"][0].update(bbox=["1", 2, 3, 4]), ["annotation #0 (id 1)", "4 finite numbers"]),
    ("negative_width", lambda d: d["annotations"][0].update(bbox=[1, 2, -3, 4]), ["annotation #0 (id 1)", ">= 0"]),
    ("duplicate_ids", lambda d: d["images"][2].update(id=d["images"][0]["id"]), ["image id 1 appears 2 times"]),
    ("unknown_category", lambda d: d["annotations"][0].update(category_id=99),
     ["annotation #0 (id 1) has category_id 99", "not among the file's categories [1, 2, 3]"]),
    ("no_annotations", lambda d: d.update(annotations=[]), ["nothing to score", "no annotations", "-1"]),
    ("only_crowd", lambda d: [a.update(iscrowd=1) for a in d["annotations"]], ["nothing to score", "only crowd"]),
])
def test_malformed_datasets_are_one_line_naming_what_is_wrong(setup, capsys, name, change, words):
    code, errors, _, metrics, path = run_eval(setup, capsys, change, name)
    assert code == 2 and len(errors) == 1 and metrics is None, errors
    assert errors[0].startswith(f"error: {path}: ") and all(w in errors[0] for w in words), errors


def test_a_size_range_without_ground_truth_is_null_not_minus_one(setup, capsys):
    code, _, _, metrics, _ = run_eval(setup, capsys, lambda d: None, "sizes")
    # the 128-160 px scenes hold no object of more than 96x96 pixels: COCO's "large" is undefined
    assert code == 0 and metrics["APl"] is None and metrics["ARl"] is None
    assert metrics["AP"] is not None and metrics["AP"] >= 0
