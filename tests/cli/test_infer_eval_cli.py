"""`infer` and `eval` as a new user meets them: output paths checked before the work, one run's
output whole (re-runs and concurrent runs), readable drawings, exact scores in the JSON, folders
with hidden files, subfolders and duplicates, odd images, class names that differ, flag values
and spellings."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.data.shapes import SHAPE_CLASSES, generate_shapes_dataset, render_scene
from cornernet_deploy.errors import UserError
from cornernet_deploy.exporter import export_onnx
from cornernet_deploy.runtime.detections import Detections
from cornernet_deploy.runtime.detector import Detector
from cornernet_deploy.runtime.visualize import _colour, draw_detections

from support import loose, random_tiny, scene_file

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(2)


def tiny_model(path, corner_bias):
    """A tiny random CornerNet-Squeeze whose corners all fall in class 0 (so that pairs form)
    with scores set by ``corner_bias``: +2 gives ~50 detections from 0.88 down to 0.001, -1.5
    only scores below 0.5."""
    model = random_tiny("cornernet-squeeze", num_classes=3)
    with torch.no_grad():
        for heads in (model.tl_heats, model.br_heats):
            # undo random_tiny's x100 spread of the heat weights: here the scores are to sit close
            # to sigmoid(corner_bias), and which corner wins a near-tie does not matter
            heads[-1][1].weight.div_(100.0)
            heads[-1][1].bias.copy_(torch.tensor([corner_bias, -6.0, -6.0]))
    model.spec = model.spec.replace(test=loose(model.spec))
    export_onnx(model=model, output=path, dynamic_size=False, progress=None, verify=False)  # fixed 511
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"high": tiny_model(folder / "high.onnx", 2.0), "low": tiny_model(folder / "low.onnx", -1.5)}


def cli(capsys, *args):
    """rc, stdout, stderr lines of one command (argparse's exit 2 included)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip().splitlines()


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# --- item 5: output paths before the work --------------------------------------------------

def test_bad_output_paths_are_refused_before_the_model_is_opened(tmp_path, capsys):
    image = scene_file(tmp_path / "a.png")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    (tmp_path / "a_dir").mkdir()
    never_opened = tmp_path / "missing.onnx"     # an error about it would mean work had started
    cases = [
        (["infer", never_opened, image, "--output", a_file], "--output", "is a file; give a folder"),
        (["infer", never_opened, image, "--output", a_file / "sub"], "--output", "a_file is a file, not a folder"),
        (["eval", never_opened, "--data", image, "--images", tmp_path, "--json", a_file / "m.json"],
         "--json", "a_file is a file, not a folder"),
        (["eval", never_opened, "--data", image, "--images", tmp_path, "--json", tmp_path / "a_dir"],
         "--json", "is a folder"),
    ]
    for args, option, message in cases:
        rc, _, err = cli(capsys, *args)
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: {option} ") and message in err[0], err
    assert a_file.read_text() == "keep me"


def test_read_only_output_folder_is_refused_before_the_work(models, tmp_path):
    """Root may write into a mode-0555 folder, so a read-only filesystem is mounted in a private
    mount namespace (``unshare``), as in test_cli_common.py."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to mount a read-only filesystem privately")
    image = scene_file(tmp_path / "a.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    code = textwrap.dedent(f"""
        import sys
        from cornernet_deploy.cli import main
        for out in ({str(ro)!r}, {str(ro / 'new')!r}):
            print("rc", main(["infer", {str(tmp_path / 'missing.onnx')!r}, {str(image)!r}, "--output", out]))
    """)
    script = f"mount -t tmpfs -o ro,size=1m tmpfs {ro} && exec {sys.executable} -c \"$0\""
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script, code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if out.returncode != 0 and not out.stdout:
        pytest.skip(f"cannot mount a private read-only filesystem here: {out.stderr.strip()[-200:]}")
    assert out.stdout.split() == ["rc", "2", "rc", "2"], (out.stdout, out.stderr)
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: --output") and "not writable" in e for e in errors), errors


# --- item 13: one run's output is one whole ----------------------------------------------------

def test_rerun_is_refused_and_overwrite_leaves_no_stale_drawings(models, tmp_path, capsys):
    images = [scene_file(tmp_path / f"im{i}.png", i) for i in range(3)]
    out = tmp_path / "out"
    rc, _, _ = cli(capsys, "infer", models["high"], *images, "--output", out, "--save-vis", "--no-progress")
    assert rc == 0 and len(list(out.glob("*.png"))) == 3
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    rc, _, err = cli(capsys, "infer", models["high"], images[0], "--output", out, "--save-vis", "--no-progress")
    assert rc == 2 and len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    rc, _, _ = cli(capsys, "infer", models["high"], images[2], "--output", out, "--save-vis",
                   "--overwrite", "--no-progress")
    assert rc == 0
    record, = json.loads((out / "images.json").read_text())
    assert listing(out) == sorted(["detections.json", "images.json", record["drawing"]])
    assert record["file_name"] == str(images[2])
    assert {d["file_name"] for d in json.loads((out / "detections.json").read_text())} <= {str(images[2])}
    assert listing(tmp_path) == sorted(["im0.png", "im1.png", "im2.png", "out"])   # no staging left


def test_overwrite_never_replaces_a_folder_of_other_files(models, tmp_path, capsys):
    image = scene_file(tmp_path / "a.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    scene_file(photos / "holiday.jpg")
    rc, _, err = cli(capsys, "infer", models["high"], image, "--output", photos, "--overwrite", "--no-progress")
    assert rc == 2 and len(err) == 1 and "holiday.jpg" in err[0] and "not an infer run's results" in err[0]
    assert listing(photos) == ["holiday.jpg"]
    results = tmp_path / "results"                # an earlier run's output, plus a picture of mine
    assert cli(capsys, "infer", models["high"], image, "--output", results, "--save-vis", "--no-progress")[0] == 0
    scene_file(results / "mine.png", 3)
    rc, _, err = cli(capsys, "infer", models["high"], image, "--output", results, "--overwrite", "--no-progress")
    assert rc == 2 and "(mine.png)" in err[0] and "mine.png" in listing(results)
    rc, _, err = cli(capsys, "infer", models["high"], image, "--output", ".", "--no-progress")
    assert rc == 2 and "current folder" in err[0]


def _concurrent_infer(model, image_sets, out, *extra):
    procs = [subprocess.Popen([sys.executable, "-m", "cornernet_deploy.cli", "infer", str(model),
                               *map(str, images), "--output", str(out), "--save-vis", "--no-progress",
                               *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
             for images in image_sets]
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


def _assert_one_whole_run(out, image_sets):
    records = json.loads((out / "images.json").read_text())
    names = [r["file_name"] for r in records]
    assert names in [[str(p) for p in images] for images in image_sets], names
    assert listing(out) == sorted(["detections.json", "images.json", *(r["drawing"] for r in records)])
    assert {d["file_name"] for d in json.loads((out / "detections.json").read_text())} <= set(names)
    return names


def test_concurrent_runs_into_one_folder_leave_one_whole_run(models, tmp_path):
    sets = [[scene_file(tmp_path / f"{tag}{i}.png", 10 * k + i) for i in range(n)]
            for k, (tag, n) in enumerate((("a", 4), ("b", 3), ("c", 2)))]
    out = tmp_path / "out"
    runs = _concurrent_infer(models["high"], sets, out, "--overwrite")
    assert [rc for rc, _ in runs] == [0, 0, 0], runs
    _assert_one_whole_run(out, sets)

    out = tmp_path / "fresh"
    runs = _concurrent_infer(models["high"], sets, out)
    assert sorted(rc for rc, _ in runs) == [0, 2, 2], runs   # the first to finish wins
    names = _assert_one_whole_run(out, sets)
    assert names == [str(p) for p in sets[[rc for rc, _ in runs].index(0)]]
    for rc, err in runs:
        if rc:
            assert err.strip().splitlines()[-1].startswith("error: --output") and "not empty" in err, err
    leftovers = [n for n in listing(tmp_path) if n.startswith(".")]
    assert leftovers == []


# --- item 12: drawings ----------------------------------------------------------------------

def test_save_vis_draws_from_score_half_by_default_while_the_json_keeps_all(models, tmp_path, capsys):
    image = scene_file(tmp_path / "a.png")
    pixels = cv2.imread(str(image))
    for extra, drawn in (([], False), (["--vis-score-threshold", "0"], True)):
        out = tmp_path / f"out{len(extra)}"
        rc, _, _ = cli(capsys, "infer", models["low"], image, "--output", out, "--save-vis", "--no-progress", *extra)
        dets = json.loads((out / "detections.json").read_text())
        assert rc == 0 and len(dets) > 10 and max(d["score"] for d in dets) < 0.5
        drawing = cv2.imread(str(next(out.glob("*.png"))))
        assert (not np.array_equal(drawing, pixels)) == drawn


def test_labels_stay_inside_the_image():
    image = np.zeros((120, 200, 3), np.uint8)
    colour = np.array(_colour(0), np.uint8)
    for box in ([150, 30, 199, 80], [170, 0, 199, 119]):      # at the right edge; and at the top
        dets = Detections(np.float32([box]), np.float32([0.9]), np.array([0]), ["a long class name"])
        drawn = draw_detections(image, dets)
        fill = np.all(drawn == colour, axis=2)
        cols = np.flatnonzero(fill[max(box[1] - 12, 0):box[1] + 12].any(axis=0))
        assert cols.min() < box[0] - 40, cols          # the label was moved left to fit in
        rows = np.flatnonzero(fill[:, cols.min()])
        assert rows.min() >= 0 and rows.max() < 120


# --- item 20: exact numbers in detections.json ------------------------------------------------

def test_detections_json_keeps_float32_scores_and_boxes(models, tmp_path, capsys):
    image = scene_file(tmp_path / "a.png")
    want = Detector.load(models["high"])(cv2.imread(str(image)))
    rc, _, _ = cli(capsys, "infer", models["high"], image, "--output", tmp_path / "out", "--no-progress")
    got = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert rc == 0 and len(got) == len(want) > 20
    np.testing.assert_array_equal(np.float32([d["score"] for d in got]), want.scores)
    xywh = np.float32([d["bbox"] for d in got])
    np.testing.assert_array_equal(xywh[:, :2], want.boxes[:, :2])
    np.testing.assert_array_equal(xywh[:, 2:], want.boxes[:, 2:] - want.boxes[:, :2])
    assert len({d["score"] for d in got}) == len(set(want.scores.tolist()))


# --- item 23: folders and odd images ----------------------------------------------------------

def test_folders_skip_hidden_files_say_what_else_they_skip(models, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / ".cache").mkdir()
    first = scene_file(photos / "a.png", 1)
    scene_file(photos / "b.jpg", 2)
    scene_file(photos / "sub" / "c.png", 3)
    scene_file(photos / ".cache" / "d.png", 4)
    (photos / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    rc, _, err = cli(capsys, "infer", models["high"], photos, first, "--output", tmp_path / "o1", "--no-progress")
    assert rc == 0, err
    assert [r["file_name"] for r in json.loads((tmp_path / "o1" / "images.json").read_text())] == \
        [str(photos / "a.png"), str(photos / "b.jpg")]
    notes = "\n".join(err)
    assert "skipped hidden files: ._a.png" in notes
    assert "skipped subfolders with images: sub/ (pass --recursive" in notes
    assert f"named more than once, processed once: {first}" in notes

    rc, _, err = cli(capsys, "infer", models["high"], photos, "--recursive", "--output", tmp_path / "o2", "--no-progress")
    assert rc == 0
    assert [Path(r["file_name"]).name for r in json.loads((tmp_path / "o2" / "images.json").read_text())] == \
        ["a.png", "b.jpg", "c.png"]

    rc, _, err = cli(capsys, "infer", models["high"], tmp_path, "--output", tmp_path / "o3", "--no-progress")
    assert rc == 2 and "holds no images" in err[-1] and "--recursive" in err[-1]


def test_an_image_a_fixed_size_model_cannot_take_is_named(models, tmp_path, capsys):
    good = scene_file(tmp_path / "good.png")
    strip = tmp_path / "strip.png"
    cv2.imwrite(str(strip), np.full((3, 10000, 3), 128, np.uint8))
    for batch in ("1", "2"):
        rc, _, err = cli(capsys, "infer", models["high"], good, strip, "--batch-size", batch,
                         "--output", tmp_path / "out", "--no-progress")
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: {strip}: image 3x10000") and "--dynamic-size" in err[0]
        assert not (tmp_path / "out").exists()


def test_odd_but_valid_images_are_converted_with_notes(models, tmp_path, capsys):
    base = render_scene(5, image_size=(150, 180))[0]
    cv2.imwrite(str(tmp_path / "gray.png"), base[:, :, 0])
    cv2.imwrite(str(tmp_path / "rgba.png"), np.dstack([base, np.full(base.shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(tmp_path / "deep.png"), base.astype(np.uint16) * 257)
    rc, out, err = cli(capsys, "infer", models["high"], tmp_path, "--output", tmp_path / "out", "--no-progress")
    assert rc == 0 and out.startswith("3 images, ")
    assert all(line.startswith("note: ") for line in err) and len(err) == 3, err


# --- items 16, 18, 19: values, spellings, wording ------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["infer", "m.onnx", "x.png", "--score-threshold", "2"], "scores lie in [0, 1], got 2"),
    (["infer", "m.onnx", "x.png", "--score-threshold", "-1"], "scores lie in [0, 1], got -1"),
    (["infer", "m.onnx", "x.png", "--min-score", "nan"], "expected a finite number"),
    (["infer", "m.onnx", "x.png", "--vis-score-threshold", "1.5"], "scores lie in [0, 1]"),
    (["infer", "m.onnx", "x.png", "--batch-size", "0"], "must be at least 1"),
    (["eval", "m.onnx", "--data", "d.json", "--images", ".", "--max-images", "-1"], "must be at least 1, got -1"),
    (["eval", "m.onnx", "--data", "d.json", "--images", ".", "--num-images", "0"], "must be at least 1, got 0"),
])
def test_out_of_range_values_are_usage_errors(args, message, capsys):
    rc, _, err = cli(capsys, *args)
    assert rc == 2 and message in err[-1], err


def test_one_spelling_per_concept_with_the_old_ones_kept(models, tmp_path, capsys):
    images = [scene_file(tmp_path / f"{i}.png", i) for i in range(3)]
    rc, out, _ = cli(capsys, "infer", models["high"], *images, "--batch", "2", "--min-score", "0.3",
                     "--output", tmp_path / "out", "--no-progress")
    scores = [d["score"] for d in json.loads((tmp_path / "out" / "detections.json").read_text())]
    assert rc == 0 and scores and min(scores) >= 0.3 and out.startswith("3 images, ")
    helps = {}
    for command in ("infer", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
        assert "checkpoint" in helps[command]
    assert "--batch-size N, --batch N" in helps["infer"]
    assert "--score-threshold SCORE, --min-score SCORE" in helps["infer"]
    assert "--num-images N, --max-images N" in helps["eval"]
    main([])
    assert "checkpoint" in next(line for line in capsys.readouterr().out.splitlines() if "infer" in line)


def test_singular_counts(models, tmp_path, capsys):
    image = scene_file(tmp_path / "a.png")
    rc, out, _ = cli(capsys, "infer", models["low"], image, "--score-threshold", "1", "--output",
                     tmp_path / "out", "--no-progress")
    assert rc == 0 and out.startswith("1 image, 0 detections in ")


# --- items 6, 7: eval's class matching --------------------------------------------------------

class Oracle:
    """A 'model' that returns the ground truth of each image it is shown (score 0.9), plus one
    false detection of ``extra`` classes: AP 1.0 exactly when its classes are paired with the
    right categories."""

    def __init__(self, truth, class_names, category_ids, extra=()):
        self.truth, self.class_names, self.category_ids = truth, list(class_names), list(category_ids)
        self.extra = [self.class_names.index(n) for n in extra]

    def __call__(self, image):
        boxes, labels = self.truth[image.tobytes()]
        boxes = list(boxes) + [[0, 0, 30, 30]] * len(self.extra)
        labels = list(labels) + self.extra
        return Detections(np.float32(boxes), np.full(len(labels), 0.9, np.float32), np.array(labels),
                          [self.class_names[k] for k in labels])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """A shapes dataset (rectangle 1, ellipse 2, triangle 3) and the truth per image's pixels."""
    folder = tmp_path_factory.mktemp("shapes")
    ann = json.loads(generate_shapes_dataset(folder, 6, seed=3).read_text())
    truth = {}
    for img in ann["images"]:
        anns = [a for a in ann["annotations"] if a["image_id"] == img["id"]]
        truth[cv2.imread(str(folder / "images" / img["file_name"])).tobytes()] = (
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            [a["category_id"] - 1 for a in anns])
    return folder, ann, truth


def variant(shapes, tmp_path, names=None, new_id=None, drop_categories=False):
    folder, ann, _ = shapes
    ann = json.loads(json.dumps(ann))
    new_id = new_id or {c["id"]: c["id"] for c in ann["categories"]}
    for c, name in zip(ann["categories"], names or [c["name"] for c in ann["categories"]]):
        c["name"], c["id"] = name, new_id[c["id"]]
    for a in ann["annotations"]:
        a["category_id"] = new_id[a["category_id"]]
    if drop_categories:
        del ann["categories"]
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(ann))
    return path


PERMUTED = {1: 3, 2: 1, 3: 2}


def test_eval_matches_by_name_and_refuses_names_it_cannot_match(shapes, tmp_path):
    from cornernet_deploy.evaluation import evaluate

    folder, _, truth = shapes
    oracle = Oracle(truth, SHAPE_CLASSES, (1, 2, 3))
    ap = lambda data, **kw: evaluate(oracle, data, folder / "images", progress=False, **kw)["AP"]
    assert ap(variant(shapes, tmp_path, new_id=PERMUTED)) == pytest.approx(1.0)    # same names, other ids
    renamed = variant(shapes, tmp_path, names=["Rectangle", "Ellipse", "Triangle"], new_id=PERMUTED)
    with pytest.raises(UserError, match=r"class names differ.*--match-classes id"):
        ap(renamed)          # matching by id here would pair rectangles with ellipses
    renamed = variant(shapes, tmp_path, names=["Rectangle", "Ellipse", "Triangle"])
    assert ap(renamed, match="id") == pytest.approx(1.0)                      # asked for explicitly

    bare = variant(shapes, tmp_path, drop_categories=True)
    with pytest.raises(UserError, match=r"lists no 'categories'.*--match-classes id"):
        ap(bare)
    assert ap(bare, match="id") == pytest.approx(1.0)


def test_eval_notes_the_model_classes_the_dataset_lacks(shapes, tmp_path):
    from cornernet_deploy.evaluation import evaluate

    folder, _, truth = shapes
    oracle = Oracle(truth, SHAPE_CLASSES + ("cross",), (1, 2, 3, 4), extra=["cross"])
    notes = []
    metrics = evaluate(oracle, variant(shapes, tmp_path, new_id=PERMUTED), folder / "images",
                       progress=False, note=notes.append)
    assert metrics["AP"] == pytest.approx(1.0)      # the cross detections are not scored at all
    assert notes == ["the dataset has no category for the model's 'cross': their detections are not scored"]


def test_eval_cli_refuses_differing_names_and_counts_in_words(models, shapes, tmp_path, capsys):
    folder, _, _ = shapes
    data = folder / "annotations.json"
    rc, _, err = cli(capsys, "eval", models["high"], "--data", data, "--images", folder / "images", "--no-progress")
    assert rc == 2 and len(err) == 1 and "class names differ" in err[0] and "'class_0'" in err[0]
    assert "'rectangle'" in err[0] and "--match-classes id" in err[0]
    rc, out, err = cli(capsys, "eval", models["high"], "--data", data, "--images", folder / "images",
                       "--match-classes", "id", "--max-images", "1", "--json", tmp_path / "m.json", "--no-progress")
    assert rc == 0 and "(1 image, " in out.splitlines()[-1]
    assert err and err[0].startswith("note: matching by id: model class -> dataset category: 'class_0' -> 'rectangle'")
    assert json.loads((tmp_path / "m.json").read_text())["images"] == 1


# --- fileio.atomic_dir, which makes infer's output whole ---------------------------------------

def test_atomic_dir_publishes_whole_or_nothing(tmp_path):
    from cornernet_deploy.fileio import atomic_dir

    out = tmp_path / "deep" / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as staging:
            (staging / "half.json").write_text("{")
            raise RuntimeError("the work failed")
    assert not out.exists() and [p.name for p in tmp_path.rglob("*")] == []
    out.mkdir(parents=True)                              # an empty folder is simply replaced
    with atomic_dir(out) as staging:
        (staging / "a.json").write_text("1")
    umask = os.umask(0)
    os.umask(umask)
    assert listing(out) == ["a.json"] and out.stat().st_mode & 0o777 == 0o777 & ~umask   # as mkdir
    with pytest.raises(UserError, match="folder is not empty"):
        with atomic_dir(out) as staging:
            (staging / "b.json").write_text("2")
    refuse = lambda path: (_ for _ in ()).throw(UserError(f"{path}: not mine"))
    with pytest.raises(UserError, match="not mine"):
        with atomic_dir(out, refuse) as staging:
            (staging / "b.json").write_text("2")
    with atomic_dir(out, lambda path: None) as staging:
        (staging / "b.json").write_text("2")
    assert listing(out) == ["b.json"] and listing(out.parent) == ["out"]
    link = tmp_path / "link"
    link.symlink_to(out)
    with atomic_dir(link, lambda path: None) as staging:
        (staging / "c.json").write_text("3")
    assert link.is_symlink() and listing(link) == ["c.json"]
