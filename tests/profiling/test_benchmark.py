"""`benchmark` on the demo model with a small generated dataset: every CPU row runs and its AP is
what `eval` gives for that file; the rows that cannot run say why; artifacts are reused while
their inputs are unchanged; bad input is one line and exit 2."""
import filecmp
import json
import re
import shutil
from pathlib import Path

import cv2
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.profiling.benchmark import FORMATS, Artifacts, validate_benchmark

pytest.importorskip("torch", reason="benchmark prepares the exports from the checkpoint")
pytest.importorskip("openvino", reason="the OpenVINO rows need OpenVINO (pip install 'cornernet-deploy[openvino]')")

from cornernet_deploy.commands.demo import DEMO_CHECKPOINT  # noqa: E402
from cornernet_deploy.data.shapes import generate_shapes_dataset  # noqa: E402
from cornernet_deploy.profiling.profile import cpu_flags  # noqa: E402

CPU_ROWS = [f.name for f in FORMATS if f.device == "cpu"]
HAS_BF16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    # the demo model's kind of scenes; calibration and evaluation sets disjoint (other seeds)
    generate_shapes_dataset(d / "val", 6, seed=2025, image_size=((128, 256),), num_objects=(1, 5))
    generate_shapes_dataset(d / "calib", 4, seed=2024, image_size=((128, 256),), num_objects=(1, 5))
    return d


@pytest.fixture(scope="module")
def benchmarked(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out")
    argv = ["benchmark", str(DEMO_CHECKPOINT), "--data", str(data / "val" / "annotations.json"),
            "--images", str(data / "val" / "images"), "--calib", str(data / "calib" / "images"),
            "--artifacts", str(out / "artifacts"), "--threads", "1", "--iters", "2", "--warmup", "1",
            "--timing-images", "2", "--json", str(out / "b.json"), "--plot", str(out / "b.png"),
            "--quiet"]
    assert main(argv) == 0
    return argv, out, json.loads((out / "b.json").read_text())


def _rows(report):
    return {r["format"]: r for r in report["rows"]}


def test_every_cpu_row_runs_and_the_others_say_why(benchmarked):
    _, out, report = benchmarked
    validate_benchmark(report)
    rows = _rows(report)
    assert list(rows) == [f.name for f in FORMATS]
    expected = CPU_ROWS if HAS_BF16 else [n for n in CPU_ROWS if n != "openvino-bf16"]
    assert set(expected) <= {n for n, r in rows.items() if r["status"] == "ok"}
    for name, row in rows.items():
        if row["status"] != "ok":
            assert row["reason"] and "\n" not in row["reason"], name
            continue
        assert row["metrics"]["AP50"] > 0.5, name                   # the trained model finds the shapes
        assert row["stages"]["end_to_end"]["median"] >= row["stages"]["inference"]["median"] > 0
        assert row["peak_rss_mib"] > report["memory"]["baseline_mib"] > 0
        assert row["file_bytes"] > 1e6 and row["describe"]["threads"] == 1
    ref = rows["onnxruntime-fp32"]
    assert report["settings"]["reference"] == "onnxruntime-fp32" and ref["speedup"] == 1.0
    assert ref["delta"] == {"AP": 0.0, "AP50": 0.0}
    for row in rows.values():
        if row["status"] == "ok":
            assert row["delta"]["AP"] == pytest.approx(100 * (row["metrics"]["AP"] - ref["metrics"]["AP"]))
            assert row["speedup"] == pytest.approx(ref["stages"]["end_to_end"]["median"]
                                                   / row["stages"]["end_to_end"]["median"])
    # a torch process carries PyTorch: more resident memory than ONNX Runtime's
    assert rows["torch-fp32"]["peak_rss_mib"] > ref["peak_rss_mib"] + 50
    assert set(report["machine"]["cpu_flags"]) <= {"avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                   "avx512_bf16", "avx512_fp16", "amx_tile",
                                                   "amx_bf16", "amx_int8", "amx_fp16"}
    plot = cv2.imread(str(out / "b.png"))
    assert plot is not None and plot.shape[:2] == (560, 900)


def test_each_ap_is_what_eval_gives_for_that_file(benchmarked, data, tmp_path):
    _, _, report = benchmarked
    for row in report["rows"]:
        if row["status"] != "ok":
            continue
        options = ["--backend", row["backend"], "--threads", "1"]
        if row["precision"]:
            options += ["--precision", row["precision"]]
        out = tmp_path / f"{row['format']}.json"
        assert main(["eval", row["file"], "--data", str(data / "val" / "annotations.json"),
                     "--images", str(data / "val" / "images"), "--json", str(out), "--no-progress",
                     *options]) == 0
        metrics = json.loads(out.read_text())
        for name in ("AP", "AP50", "APs", "APm", "APl"):
            assert row["metrics"][name] == metrics[name], (row["format"], name)


def test_artifacts_are_reused_while_their_inputs_are_unchanged(benchmarked, data, tmp_path):
    _, out, _ = benchmarked
    folder = out / "artifacts"
    said = []
    artifacts = Artifacts(DEMO_CHECKPOINT, folder, calib=[str(data / "calib" / "images")],
                          progress=said.append)
    onnx_file, int8_file = folder / "demo_squeeze_shapes.onnx", folder / "demo_squeeze_shapes_int8.onnx"
    stamps = {p: p.stat().st_mtime_ns for p in (onnx_file, int8_file)}
    assert artifacts.get("onnx-int8") == int8_file
    assert [p.stat().st_mtime_ns for p in stamps] == list(stamps.values())
    assert sum(m.startswith("reusing") for m in said) == 2
    # other calibration images: the INT8 model is made again, the export is kept
    said.clear()
    other = Artifacts(DEMO_CHECKPOINT, folder, calib=[str(data / "val" / "images")], progress=said.append)
    other.get("onnx-int8")
    assert any(m.startswith(f"reusing {onnx_file}") for m in said)
    assert any(m.startswith(f"making {int8_file}") for m in said)
    # a damaged artifact is made again
    with open(onnx_file, "ab") as f:
        f.write(b"\0")
    said.clear()
    assert Artifacts(DEMO_CHECKPOINT, folder, progress=said.append).get("onnx") == onnx_file
    assert any(m.startswith(f"making {onnx_file}") for m in said)
    # no calibration images: the INT8 rows are not run, and say why
    with pytest.raises(Exception, match="no calibration images: give --calib"):
        Artifacts(DEMO_CHECKPOINT, tmp_path / "fresh").get("onnx-int8")


def test_a_size_range_without_objects_is_null_as_eval_writes_it(benchmarked, data, tmp_path, capsys):
    """A dataset without small objects: pycocotools gives APs -1 (no such ground truth); eval
    writes null, and the benchmark's JSON and table must take that (it was a traceback)."""
    _, out, _ = benchmarked
    ann = json.loads((data / "val" / "annotations.json").read_text())
    ann["annotations"] = [a for a in ann["annotations"] if a["area"] >= 32 ** 2]
    assert ann["annotations"]
    (tmp_path / "no_small.json").write_text(json.dumps(ann))
    export = out / "artifacts" / "demo_squeeze_shapes.onnx"
    capsys.readouterr()
    assert main(["benchmark", str(export), "--data", str(tmp_path / "no_small.json"), "--images",
                 str(data / "val" / "images"), "--formats", "onnxruntime-fp32", "--artifacts",
                 str(tmp_path / "a"), "--threads", "1", "--iters", "1", "--warmup", "0", "--timing-images",
                 "1", "--json", str(tmp_path / "b.json"), "--quiet"]) == 0
    table = capsys.readouterr().out
    row = json.loads((tmp_path / "b.json").read_text())["rows"][0]
    assert row["metrics"]["APs"] is None and 0 < row["metrics"]["AP"] <= 1
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(str(tmp_path / "no_small.json"))
    # the independent truth of "no objects of that size": pycocotools' own -1
    evaluator = COCOeval(gt, gt.loadRes([dict(a, score=1.0) for a in gt.dataset["annotations"]]), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[3] == -1
    line = next(x for x in table.splitlines() if x.startswith("│ onnxruntime-fp32"))
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells[4] == "-" and float(cells[5]) == pytest.approx(row["metrics"]["APm"], abs=1e-4)


@pytest.mark.parametrize("case", ["own export", "own int8", "own record"])
def test_a_file_the_benchmark_did_not_make_is_never_replaced(case, benchmarked, data, tmp_path, capsys):
    _, out, _ = benchmarked
    folder = tmp_path / "models"
    folder.mkdir()
    model, formats = DEMO_CHECKPOINT, "onnxruntime-fp32"
    if case == "own export":                 # the export benchmark would make of the checkpoint
        mine = folder / "demo_squeeze_shapes.onnx"
    elif case == "own int8":                 # an FP32 export kept beside the user's own INT8 model
        model = shutil.copy(out / "artifacts" / "demo_squeeze_shapes.onnx", folder / "net.onnx")
        mine, formats = folder / "net_int8.onnx", "onnxruntime-int8"
    else:
        mine = folder / "artifacts.json"
    mine.write_text("the user's own file\n")
    rc, err = _one_line_error(capsys, ["benchmark", str(model), "--data", str(data / "val" / "annotations.json"),
                                       "--images", str(data / "val" / "images"), "--calib",
                                       str(data / "calib" / "images"), "--formats", formats,
                                       "--artifacts", str(folder), "--quiet"])
    assert rc == 2 and err.startswith(f"error: --artifacts {folder}: ") and mine.name in err, err
    assert "\n" not in err and mine.read_text() == "the user's own file\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted({mine.name, Path(model).name} - {DEMO_CHECKPOINT.name})


def _one_line_error(capsys, argv):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("case", ["no dataset", "other classes", "unknown format", "absent device",
                                  "unknown reference", "not a model", "json is the annotations",
                                  "plot is the json"])
def test_bad_input_is_one_line_and_exit_2(case, data, tmp_path, capsys):
    ann, images = str(data / "val" / "annotations.json"), str(data / "val" / "images")
    model = str(DEMO_CHECKPOINT)
    extra = []
    if case == "no dataset":
        ann = str(tmp_path / "missing.json")
        message = "no such annotation file"
    elif case == "other classes":
        ann = str(generate_shapes_dataset(tmp_path / "crosses", 2, classes=("cross",)))
        images = str(tmp_path / "crosses" / "images")
        message = "class names differ"
    elif case == "unknown format":
        extra = ["--formats", "onnxruntime-fp32,tflite-int4"]
        message = "unknown format 'tflite-int4'"
    elif case == "absent device":
        from cornernet_deploy.runtime.backends import registry
        device = next((d for d in ("npu", "gpu", "cuda") if registry.unusable_device(d)), None)
        if device is None:
            pytest.skip("this machine has every device")
        extra = ["--device", device]
        message = f"--device {device}: not on this machine"
    elif case == "unknown reference":
        extra = ["--reference", "fastest"]
        message = "unknown format 'fastest' for --reference"
    elif case == "json is the annotations":
        ann = str(tmp_path / "ann.json")
        shutil.copy(data / "val" / "annotations.json", ann)
        extra = ["--json", ann]
        message = "--json"
    elif case == "plot is the json":
        extra = ["--json", str(tmp_path / "r.png"), "--plot", str(tmp_path / "r.png")]
        message = "the plot would replace the report"
    else:
        model = str(tmp_path / "x.engine")
        (tmp_path / "x.engine").write_bytes(b"x")
        message = "benchmark prepares the formats from a checkpoint"
    rc, err = _one_line_error(capsys, ["benchmark", model, "--data", ann, "--images", images,
                                       "--artifacts", str(tmp_path / "a"), "--quiet", *extra])
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "a").exists()                    # refused before any work
    if case == "json is the annotations":
        assert "--data" in err and filecmp.cmp(ann, data / "val" / "annotations.json", shallow=False)


def test_a_missing_data_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["benchmark", str(DEMO_CHECKPOINT), "--images", "x"])
    assert stop.value.code == 2 and re.search(r"--data", capsys.readouterr().err)
