"""profile: statistics on hand-computed samples, ratios, the report schema, the table, the plot,
the CLI on tiny models, clear errors, and the torch-free path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.profiling.layers import summarize_layers
from cornernet_deploy.profiling.profile import STAGES, RowResult, build_report, profile_backends
from cornernet_deploy.profiling.report import profile_table, render_plot, validate_report, write_json
from cornernet_deploy.profiling.stats import percentile, ratio, ratios_to_baseline, summarize
from cornernet_deploy.runtime.backends.tensorrt import tensorrt_available
from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR, get_arch

TINY = dict(num_classes=3, width=0.125)


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------

def test_summary_of_one_to_ten_by_hand():
    # sorted x = 1..10, n = 10; position h = 9 * p / 100
    # median: h = 4.5 -> 5 + 0.5 * (6 - 5) = 5.5; p90: h = 8.1 -> 9 + 0.1 = 9.1;
    # p99: h = 8.91 -> 9 + 0.91 = 9.91; mean = 55 / 10 = 5.5
    s = summarize([7, 3, 10, 1, 2, 9, 4, 8, 6, 5])        # order must not matter
    assert s == pytest.approx({"mean": 5.5, "median": 5.5, "p90": 9.1, "p99": 9.91,
                               "min": 1.0, "max": 10.0, "n": 10})


def test_percentile_rule_edges():
    assert percentile([4.0], 0) == percentile([4.0], 99) == 4.0
    assert percentile([1.0, 3.0], 50) == 2.0                 # h = 0.5
    assert percentile([1.0, 2.0, 4.0], 75) == 3.0            # h = 1.5 -> 2 + 0.5 * 2
    assert percentile([5.0, 1.0, 3.0], 0) == 1.0 and percentile([5.0, 1.0, 3.0], 100) == 5.0
    # same rule as numpy's default
    xs = np.random.default_rng(0).exponential(size=37)
    for p in (50, 90, 99):
        assert percentile(xs, p) == pytest.approx(np.percentile(xs, p))
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_ratios():
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(None, 1.0) is None and ratio(1.0, None) is None and ratio(1.0, 0.0) is None
    base = {"inference": summarize([2, 4, 6]), "h2d": None}
    row = {"inference": summarize([1, 2, 3]), "h2d": None}
    assert ratios_to_baseline(row, base) == {"inference": 0.5, "h2d": None}


# ----------------------------------------------------------------------------------------------
# report, table, schema (no model needed)
# ----------------------------------------------------------------------------------------------

class FakeBackend:
    """What the profiler uses of a backend (runtime.backends), with synthetic raw heads (tiny
    Squeeze layout)."""

    name, device, precision, timing, decode = "fake", "cpu", "fp32", "perf_counter_ns", "none"
    max_batch = None
    static_batch = False
    threads = None

    def __init__(self, name="fake", input_hw=(127, 127)):
        self.model = self.label = name
        self.spec = get_arch("cornernet-squeeze").replace(num_classes=3)
        self.mean, self.std, self.class_names = COCO_MEAN_BGR, COCO_STD_BGR, self.spec.class_names
        self.input_hw = input_hw
        self.calls = 0

    def run_timed(self, batch):
        self.calls += 1
        n, _, h, w = batch.shape
        oh, ow = self.spec.output_size((h, w))
        rng = np.random.default_rng(self.calls)
        out = {"tl_heat": rng.normal(-2, 1, (n, 3, oh, ow)), "br_heat": rng.normal(-2, 1, (n, 3, oh, ow)),
               "tl_tag": rng.normal(0, .1, (n, 1, oh, ow)), "br_tag": rng.normal(0, .1, (n, 1, oh, ow)),
               "tl_off": rng.random((n, 2, oh, ow)), "br_off": rng.random((n, 2, oh, ow))}
        return {k: v.astype(np.float32) for k, v in out.items()}, {"h2d": None, "inference": 1.0, "d2h": None}

    def run(self, batch):
        return self.run_timed(batch)[0]

    def describe(self):
        return {"label": self.label, "model": self.model, "backend": self.name, "device": self.device,
                "precision": self.precision, "arch": self.spec.name, "decode": self.decode,
                "timing": self.timing, "threads": None,
                "input_hw": list(self.input_hw) if self.input_hw else None}


SETTINGS = {"batch": 1, "warmup": 0, "iters": 10, "images": "test", "num_images": 1, "flip": False}


def _row(name, inference, e2e, batch=1):
    samples = {s: None for s in STAGES}
    samples.update(preprocess=[0.5] * len(e2e), inference=list(inference), postprocess=[0.5] * len(e2e),
                   end_to_end=list(e2e))
    return RowResult(FakeBackend(name), batch, batch, samples)


def test_report_ratios_against_first_row_and_schema():
    a = _row("A", range(1, 11), [10.0] * 10)                   # inference median 5.5
    b = _row("B", range(2, 21, 2), [20.0, 30.0] * 5, batch=2)   # inference median 11
    report = build_report([a, b], SETTINGS)
    validate_report(report)
    ra, rb = report["results"]
    assert ra["ratios"]["inference"] == 1.0 and ra["ratios"]["h2d"] is None
    assert rb["ratios"]["inference"] == pytest.approx(2.0)
    assert rb["ratios"]["end_to_end"] == pytest.approx(25.0 / 10.0)      # medians 25 and 10
    assert ra["throughput_ips"] == pytest.approx(100.0)                  # 1 image / 10 ms
    assert rb["throughput_ips"] == pytest.approx(80.0)                   # 2 images / 25 ms mean
    assert rb["ratios"]["throughput"] == pytest.approx(0.8)
    assert rb["stages"]["inference"]["p90"] == pytest.approx(18.2)
    assert rb["stages"]["h2d"] is None
    for key in ("machine", "versions", "settings", "created"):
        assert report[key]
    assert report["machine"]["logical_cpus"] >= 1 and "cpu" in report["machine"]
    json.dumps(report)                                                   # JSON-ready


def test_schema_check_names_the_problems():
    report = build_report([_row("A", [1.0], [2.0])], SETTINGS)
    validate_report(report)
    broken = json.loads(json.dumps(report))
    del broken["results"][0]["stages"]["inference"]
    broken["results"][0]["throughput_ips"] = "fast"
    broken["settings"]["iters"] = 2.5
    with pytest.raises(ValueError) as err:
        validate_report(broken)
    msg = str(err.value)
    assert "results[0].stages.inference: missing" in msg
    assert "results[0].throughput_ips" in msg and "settings.iters" in msg
    bad = json.loads(json.dumps(report))
    bad["results"][0]["stages"]["end_to_end"]["min"] = 99.0
    with pytest.raises(ValueError, match="out of order"):
        validate_report(bad)
    with pytest.raises(ValueError, match="missing"):
        validate_report({"schema": "cornernet_deploy.profile"})


def test_json_written_atomically_and_only_when_valid(tmp_path):
    report = build_report([_row("A", [1.0, 2.0], [2.0, 3.0])], SETTINGS)
    out = tmp_path / "r.json"
    write_json(out, report)
    assert json.loads(out.read_text())["results"][0]["label"] == "A"
    bad = dict(report, results=[])
    with pytest.raises(ValueError):
        write_json(tmp_path / "bad.json", bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]     # no partial/temp files


def test_table_is_side_by_side_with_ratios():
    from rich.console import Console
    report = build_report([_row("A [x/cpu]", [1.0] * 3, [2.0] * 3), _row("B", [3.0] * 3, [4.0] * 3)],
                          SETTINGS)
    console = Console(record=True, width=200)
    console.print(profile_table(report))
    text = console.export_text()
    assert "A [x/cpu]" in text                      # labels are not taken for markup
    assert "3.00x" in text and "2.00x" in text       # inference and end-to-end ratios of B
    assert "host to device" not in text              # stages nobody has are left out
    assert "500.0 (1.00x)" in text and "250.0 (0.50x)" in text   # throughput and its ratio


def test_plot_renders():
    report = build_report([_row("A", [1.0] * 3, [2.0] * 3), _row("B", [3.0] * 3, [4.0] * 3)], SETTINGS)
    img = render_plot(report)
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.min() < 255


def test_profile_loop_with_synthetic_heads():
    from cornernet_deploy.data.shapes import render_scene
    runners = [FakeBackend("a"), FakeBackend("b", input_hw=None)]
    images = [render_scene(i, image_size=(100, 120))[0] for i in range(3)]
    rows = profile_backends(runners, images, batch=2, warmup=1, iters=3, flip=True)
    assert [r.network_batch for r in rows] == [4, 4]
    assert rows[1].canvas == (127, 127)             # the dynamic backend gets the fixed one's canvas
    for row in rows:
        assert row.samples["h2d"] is None and len(row.samples["inference"]) == 3
        assert all(e >= p for e, p in zip(row.samples["end_to_end"], row.samples["postprocess"]))
    assert runners[0].calls == 4                     # warm-up + timed, interleaved
    validate_report(build_report(rows, SETTINGS))


def test_static_batch_mismatch_is_a_clear_error():
    runner = FakeBackend()
    runner.max_batch, runner.static_batch = 1, True
    with pytest.raises(UserError, match="exactly 1 image"):
        profile_backends([runner], [np.zeros((50, 50, 3), np.uint8)], batch=2, warmup=0, iters=1)


def test_layer_summary_and_corner_pool_share():
    layers = [("/model/tl_modules.1/pool/CornerPool", 2.0), ("conv1 + relu", 5.0),
              ("/model/br_modules.1/pool/CornerPool", 1.0), ("head", 2.0)]
    s = summarize_layers(layers, top=2, runs=10)
    assert s["total_ms"] == 10.0 and s["num_layers"] == 4 and s["runs"] == 10
    assert [t["name"] for t in s["top"]] == ["conv1 + relu", "/model/tl_modules.1/pool/CornerPool"]
    assert s["top"][0]["share"] == 0.5
    assert s["corner_pool_layers"] == 2 and s["corner_pool_ms"] == 3.0
    assert s["corner_pool_share"] == pytest.approx(0.3)
    assert summarize_layers([])["corner_pool_share"] is None


# ----------------------------------------------------------------------------------------------
# the command on tiny models
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    torch = pytest.importorskip("torch")
    previous_threads = torch.get_num_threads()      # restored below: other modules' results
    torch.set_num_threads(1)                        # must not depend on this one
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.models import build_model, save_checkpoint
    d = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    model = build_model("cornernet-squeeze", **TINY).eval()
    save_checkpoint(model, d / "tiny.pt")
    export_onnx(model=model, output=d / "tiny.onnx", input_size=(127, 127), progress=None, verify=False)
    yield d
    torch.set_num_threads(previous_threads)


def test_profile_cli_onnx_and_torch_side_by_side(tiny_files, tmp_path, capsys):
    out, plot = tmp_path / "p.json", tmp_path / "p.png"
    rc = main(["profile", str(tiny_files / "tiny.onnx"), str(tiny_files / "tiny.pt"), "--iters", "2",
               "--warmup", "1", "--num-images", "2", "--threads", "1", "--json", str(out),
               "--plot", str(plot), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    validate_report(report)
    assert [r["backend"] for r in report["results"]] == ["onnxruntime", "torch"]
    assert [r["canvas_hw"] for r in report["results"]] == [[127, 127], [127, 127]]
    assert report["results"][1]["stages"]["h2d"] is None
    assert report["results"][0]["ratios"]["end_to_end"] == 1.0
    assert report["settings"]["threads"] == [1] and report["versions"]["onnxruntime"]
    import cv2
    assert cv2.imread(str(plot)) is not None
    assert "end to end" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["profile", "missing.onnx"], "missing.onnx: no such file"),
    (["profile", "not-a-model"], "not an architecture name"),
    (["profile", "cornernet-squeeze", "--backend", "cuda-magic"], "unknown backend 'cuda-magic'"),
    (["profile", "cornernet-squeeze", "--device", "tpu"], "unknown device 'tpu'"),
    (["profile", "cornernet-squeeze", "--precision", "int8"], "unknown precision 'int8'"),
    (["profile", "cornernet-squeeze", "--threads", "x"], "--threads takes whole numbers"),
    (["profile", "cornernet-squeeze", "--threads", "0"], "must be at least 1, got 0"),
    (["profile", "cornernet-squeeze", "--threads", "2,-1"], "must be at least 1, got -1"),
    (["profile", "cornernet-squeeze", "--provider", "npu"], "unknown provider 'npu'"),
    (["profile", "cornernet-squeeze", "--plot", "x.jpg"], "ending in .png"),
    (["profile", "cornernet-squeeze", "--json", "r.png", "--plot", "./r.png"],
     "--json and --plot both name ./r.png"),
])
def test_profile_cli_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()      # progress lines may come first
    assert [ln for ln in lines if ln.startswith("error")] == [lines[-1]]
    assert lines[-1].startswith("error: ") and message in lines[-1]


def test_profile_cli_backend_mismatch_and_layers(tiny_files, capsys):
    onnx = str(tiny_files / "tiny.onnx")
    assert main(["profile", onnx, "--backend", "torch", "--quiet"]) == 2
    assert "the torch backend runs a checkpoint" in capsys.readouterr().err
    assert main(["profile", onnx, "--layers", "--quiet"]) == 2
    assert "--layers needs a TensorRT engine" in capsys.readouterr().err
    assert main(["profile", onnx, "--precision", "fp16", "--quiet"]) == 2
    assert "is an fp32 model" in capsys.readouterr().err
    assert main(["profile", str(tiny_files / "tiny.pt"), "--precision", "fp16", "--quiet"]) == 2
    assert "needs --device cuda" in capsys.readouterr().err


def test_onnx_profile_never_imports_torch(tiny_files, tmp_path):
    code = ("import sys; from cornernet_deploy.cli import main; "
            f"rc = main(['profile', {str(tiny_files / 'tiny.onnx')!r}, '--iters', '1', '--warmup', '0', "
            "'--num-images', '1', '--quiet']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# ----------------------------------------------------------------------------------------------
# GPU / TensorRT paths (skipped here with a reason)
# ----------------------------------------------------------------------------------------------

TRT_OK, TRT_WHY = tensorrt_available()


@pytest.mark.skipif(TRT_OK, reason="tensorrt is importable here; this checks the message without it")
def test_engine_without_tensorrt_is_a_clear_error(tmp_path, capsys):
    # with a manifest, so that the file passes the checks made before TensorRT is imported
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    (tmp_path / "m.manifest.json").write_text(json.dumps({
        "metadata": {"arch": "cornernet-squeeze"},
        "input": {"name": "image", "min": [1, 3, 511, 511], "max": [1, 3, 511, 511]},
        "outputs": ["tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off"]}))
    assert main(["profile", str(engine), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "TensorRT" in err and "pip install tensorrt" in err and "\n" not in err


@pytest.mark.tensorrt
@pytest.mark.skipif(not TRT_OK, reason=f"TensorRT not available: {TRT_WHY}")
def test_tensorrt_engine_profile_with_layers(tiny_files, tmp_path):
    from cornernet_deploy.tensorrt.builder import build_engine
    engine = tmp_path / "tiny.engine"
    build_engine(tiny_files / "tiny.onnx", engine)
    out = tmp_path / "trt.json"
    assert main(["profile", str(engine), str(tiny_files / "tiny.onnx"), "--iters", "5", "--layers",
                 "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    trt = report["results"][0]
    assert trt["timing"] == "cuda-events" and trt["stages"]["h2d"] and trt["stages"]["d2h"]
    assert trt["layers"]["corner_pool_layers"] >= 2 and 0 < trt["layers"]["corner_pool_share"] < 1


@pytest.mark.gpu
def test_torch_cuda_fp32_fp16_profile(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to PyTorch")
    out = tmp_path / "gpu.json"
    assert main(["profile", "cornernet-squeeze", "--device", "cuda", "--precision", "fp32,fp16",
                 "--iters", "5", "--json", str(out), "--quiet"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["precision"] for r in rows] == ["fp32", "fp16"]
    assert all(r["timing"] == "cuda-events" and r["stages"]["h2d"] for r in rows)


def test_profile_cli_images_folder(tiny_files, tmp_path, capsys):
    import cv2
    from cornernet_deploy.data.shapes import render_scene
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), render_scene(i, image_size=(90, 140))[0])
    (folder / "notes.txt").write_text("not an image")
    (folder / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")    # skipped as infer skips it
    out = tmp_path / "p.json"
    assert main(["profile", str(tiny_files / "tiny.onnx"), "--images", str(folder), "--iters", "2",
                 "--warmup", "0", "--json", str(out), "--quiet"]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["images"] == str(folder) and settings["num_images"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["profile", str(tiny_files / "tiny.onnx"), "--images", str(empty), "--quiet"]) == 2
    assert "folder holds no images" in capsys.readouterr().err


def test_profile_image_notes_respect_quiet(tiny_files, tmp_path):
    import subprocess
    import sys

    import cv2
    from cornernet_deploy.data.shapes import render_scene
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "gray.png"), render_scene(0, image_size=(90, 140))[0][:, :, 0])
    argv = ["profile", str(tiny_files / "tiny.onnx"), "--images", str(folder), "--iters", "1", "--warmup", "0"]
    code = "import sys; from cornernet_deploy.cli import main; sys.exit(main(sys.argv[1:]))"
    loud = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert any(ln.startswith("note: ") and "grayscale" in ln for ln in loud.stderr.splitlines())
    assert "Warning" not in loud.stderr
    quiet = subprocess.run([sys.executable, "-c", code, *argv, "--quiet"], capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.parametrize("option, name", [("--json", "p.json"), ("--plot", "p.png")])
def test_output_paths_are_checked_before_loading_anything(option, name, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / "a_file" / name
    assert main(["profile", "missing.onnx", option, str(target)]) == 2      # not "missing.onnx: ..."
    err = capsys.readouterr().err.strip()
    assert err == f"error: {option} {target}: {tmp_path / 'a_file'} is a file, not a folder"


def test_images_option_is_checked_before_loading_anything(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    # the model does not exist: the --images error must come first
    assert main(["profile", "missing.onnx", "--images", str(empty)]) == 2
    captured = capsys.readouterr()
    assert "folder holds no images" in captured.err and "missing.onnx" not in captured.err
    assert "loading" not in captured.err + captured.out
