"""`export`, `info` and checkpoint reading as a new user meets them (issue 14): what a trained model
needs to export, what the default export costs or keeps, and one-line answers to plain mistakes."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.data.shapes import render_scene
from cornernet_deploy.errors import UserError
from cornernet_deploy.exporter import ExportWrapper, export_onnx, verification_batch, verify_against_torch
from cornernet_deploy.contract.metadata import read_metadata
from cornernet_deploy.models import build_model, load_checkpoint
from cornernet_deploy.models.checkpoint import spec_from_checkpoint
from cornernet_deploy.runtime.detector import Detector
from cornernet_deploy.runtime.pipeline import CornerNetPipeline

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]


def demo_model():
    model = build_model(spec_from_checkpoint(DEMO_CHECKPOINT))
    load_checkpoint(model, DEMO_CHECKPOINT)
    return model.eval()


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and expected in err, err
    return err


# --- item 1: FP16 / graph-decode exports of a trained model verify like `compare` ----------

def test_the_trained_demo_model_exports_with_fp16_graph_decode(tmp_path):
    out = tmp_path / "fp16.onnx"
    result = export_onnx(checkpoint=DEMO_CHECKPOINT, output=out, precision="fp16", decode="graph",
                         dynamic_batch=True, progress=None)
    assert out.is_file()
    report = result.verification
    det = report["detections"]
    assert report["tolerance"] == "fp16" and not report["failures"]
    # a non-vacuous check: the scenes give the trained model confident detections to match
    assert det["count_a"] >= 5 and det["matched"] >= 5 and det["agreement"] >= 0.95
    assert set(report["heads"]) == {"tl_scores", "br_scores"}   # indices are not compared


def test_graph_decode_verification_fails_a_graph_that_computes_something_else(tmp_path):
    model = demo_model()
    export_onnx(model=model, output=tmp_path / "g.onnx", decode="graph", verify=False, progress=None)
    onnx_model = onnx.load(str(tmp_path / "g.onnx"))
    other = build_model(model.spec).eval()   # same architecture, fresh random weights
    wrapper = ExportWrapper(other, "graph")
    x = verification_batch(1, model.spec.input_size)
    names = [o.name for o in onnx_model.graph.output]
    report = verify_against_torch(onnx_model, wrapper, x, names, model.spec, "fp32")
    assert any(f.startswith(("tl_scores", "br_scores", "detections")) for f in report["failures"])


def test_the_preset_command_line_of_the_issue_exports(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--preset", "trt-fp16",
                 "--output", str(out)]) == 0
    assert "detections vs PyTorch: agreement" in capsys.readouterr().out
    assert read_metadata(onnx.load(str(out))).raw["precision"] == "fp16"


# --- item 4: the default export keeps the official accuracy; a fixed size says what it costs --

def test_the_default_export_runs_each_image_at_its_own_padded_size_as_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "default.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--output", str(out)]) == 0
    assert "note: fixed input" not in capsys.readouterr().out
    assert read_metadata(onnx.load(str(out))).raw["input_hw"] is None
    model = demo_model()
    detector = Detector.load(out)

    def torch_run(batch):
        with torch.no_grad():
            return {k: v.numpy() for k, v in model(torch.from_numpy(batch)).items()}

    checkpoint = CornerNetPipeline(model.spec, torch_run)   # the official per-image padding
    for seed in range(3):
        image, _, _ = render_scene(100 + seed, image_size=(200 + 20 * seed, 250), num_objects=(2, 4))
        a, b = checkpoint(image), detector(image)
        assert len(a) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)


def test_a_fixed_size_export_prints_its_cost_and_saccade_keeps_its_official_crops(tmp_path, capsys):
    out = tmp_path / "fixed.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--input-size", "127x127",
                 "--output", str(out), "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "note: fixed input 127x127" in printed and "AP 0.675" in printed and "0.787" in printed
    assert read_metadata(onnx.load(str(out))).raw["input_hw"] == [127, 127]
    # --fixed-size without a size: the architecture's own (here the demo model's 127)
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--fixed-size", "--output",
                 str(out), "--no-verify"]) == 0
    assert read_metadata(onnx.load(str(out))).raw["input_hw"] == [127, 127]
    capsys.readouterr()
    sacc = build_model("cornernet-saccade", num_classes=2, width=0.125, levels=2, stacks=1)
    result = export_onnx(model=sacc, output=tmp_path / "s.onnx", verify=False, progress=None)
    assert result.metadata["input_hw"] == [255, 255] and result.note is None


# --- item 3: Saccade variants export and run ---------------------------------------------

@pytest.mark.parametrize("levels,size", [(2, None), (3, "287x287")])
def test_saccade_variants_that_export_also_run(tmp_path, levels, size):
    torch.manual_seed(0)
    model = build_model("cornernet-saccade", num_classes=2, width=0.125, levels=levels, stacks=1).eval()
    out = tmp_path / "s.onnx"
    export_onnx(model=model, output=out, input_size=size, verify=False, progress=None)
    detector = Detector.load(out)
    image, _, _ = render_scene(3, image_size=(300, 260))
    dets = detector(image)
    # the same pipeline with PyTorch: the runtime ran every crop through the export
    def torch_run(batch):
        with torch.no_grad():
            return {k: v.numpy() for k, v in model(torch.from_numpy(batch)).items()}
    ref = CornerNetPipeline(model.spec, torch_run, input_hw=detector.pipeline.input_hw)(image)
    assert len(dets) == len(ref)
    np.testing.assert_allclose(dets.scores, ref.scores, atol=1e-4)


def test_export_refuses_a_saccade_size_the_runtime_cannot_crop(capsys):
    one_line_error(capsys, ["export", "--arch", "cornernet-saccade", "--input-size", "255x383"],
                   "square")


# --- items 5, 6: plain mistakes, one line, before the work ---------------------------------

def test_plain_mistakes_are_one_line_errors_before_any_work(tmp_path, capsys):
    one_line_error(capsys, ["export", "--arch", "cornernet-squeeze", "--opset", "99"], "choose 17..")
    one_line_error(capsys, ["export", "--arch", "cornernet-squeeze", "--opset", "11"], "choose 17..")
    one_line_error(capsys, ["export", "--arch", "cornernet-squeeze", "--input-size", "99999x99999"],
                   "larger than an export supports")
    (tmp_path / "folder").mkdir()
    err = one_line_error(capsys, ["export", "--arch", "cornernet", "--output", str(tmp_path / "folder")],
                         "is a folder")
    assert "building" not in err


def test_a_fixed_size_too_big_for_this_machine_is_refused_before_tracing(monkeypatch):
    import cornernet_deploy.exporter as exporter
    monkeypatch.setattr(exporter, "_available_memory", lambda: 2 * 2**30)
    with pytest.raises(UserError, match="needs about .* GiB and 2.0 GiB are available"):
        export_onnx("cornernet-squeeze", input_size="4095x4095", progress=None)


# --- item 10: a plain state_dict() of a variant exports from the command line --------------

def test_a_plain_state_dict_of_a_variant_exports_with_the_variant_read_from_its_tensors(tmp_path, capsys):
    torch.manual_seed(1)
    model = build_model("cornernet-squeeze", num_classes=3, width=0.125, levels=2, stacks=1).eval()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "plain.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "plain.pt"), "--output", str(out)]) == 0
    assert "1 stack, 2 levels, 3 classes" in capsys.readouterr().out
    spec = read_metadata(onnx.load(str(out))).raw["spec"]
    assert (spec["stacks"], spec["levels"], spec["num_classes"]) == (1, 2, 3)
    assert spec["dims"] == list(model.spec.dims)


def test_a_state_dict_that_fits_no_variant_says_what_to_do(tmp_path, capsys):
    model = build_model("cornernet-squeeze", num_classes=3, width=0.125, levels=2, stacks=1)
    state = model.state_dict()
    state["tl_heats.0.1.weight"] = torch.zeros(5, 8, 1, 1)   # damaged: heads disagree on classes
    torch.save(state, tmp_path / "odd.pt")
    one_line_error(capsys, ["export", "--checkpoint", str(tmp_path / "odd.pt"), "--no-verify"],
                   "fit no width/depth/stack/class variant")
    err = one_line_error(capsys, ["export", "--checkpoint", str(tmp_path / "odd.pt"), "--arch",
                                  "cornernet-squeeze", "--no-verify"], "does not fit")
    assert "is this the right file" in err and len(err) < 600


# --- item 15: checkpoint mistakes ---------------------------------------------------------

def test_checkpoint_mistakes_say_what_the_file_is(tmp_path, capsys):
    onnx_file = tmp_path / "model.onnx"
    export_onnx(model=build_model("cornernet-squeeze", num_classes=2, width=0.125, levels=2, stacks=1),
                output=onnx_file, verify=False, progress=None)
    one_line_error(capsys, ["export", "--checkpoint", str(onnx_file)], "is an ONNX model")
    renamed = tmp_path / "renamed.pt"
    renamed.write_bytes(onnx_file.read_bytes())
    one_line_error(capsys, ["export", "--checkpoint", str(renamed)], "is an ONNX model")
    (tmp_path / "notes.pt").write_text("hello, I am text\n")
    one_line_error(capsys, ["export", "--checkpoint", str(tmp_path / "notes.pt")], "starts with 'hello")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    one_line_error(capsys, ["export", "--checkpoint", str(run)], "is a folder: give the checkpoint "
                                                                  "file inside it; it holds last.pt")
    one_line_error(capsys, ["export", "--checkpoint", str(run / "last.pt")], "is empty")


# --- items 18, 22: help, and what `info` and the metadata say -----------------------------

def test_help_names_opset_range_and_the_size_rule(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--opset N ONNX opset to write: 17..20" in text
    assert "32 for cornernet-saccade" in text and "k*64-1" in text


def test_info_and_metadata_describe_the_variant_not_the_official_model(tmp_path, capsys):
    assert main(["info", str(DEMO_CHECKPOINT)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "1 stack, 3 hourglass levels" in text and "2 stacks" not in text
    # a width variant says so (the demo model is the squeeze family at a quarter of its channels)
    assert "channels 64/64/96/96 (official 256/256/384/384/512)" in text
    from cornernet_deploy.contract.arch import get_arch
    assert "channels 256/256/384/384/384/512 (the official widths)" in get_arch("cornernet").summary
    out = tmp_path / "m.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=out, verify=False, progress=None)
    assert "2 stacks" not in json.dumps(read_metadata(onnx.load(str(out))).raw)
    assert main(["info", str(out)]) == 0
    assert "1 stack" in capsys.readouterr().out


# --- item 8: presets ship in the wheel ----------------------------------------------------

def test_presets_ship_in_the_wheel_and_load_outside_the_repository(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    import shutil
    shutil.copytree(ROOT / "cornernet_deploy", src / "cornernet_deploy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(src), "-w", str(wheels)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next(wheels.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "cornernet_deploy/assets/export_presets.json" in names
    assert "cornernet_deploy/assets/build_profiles.json" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)   # what pip install puts in site-packages
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from cornernet_deploy import presets; "
            "assert presets.__file__.startswith(sys.argv[1]), presets.__file__; "
            "print(sorted(presets.load_presets('export/presets.json')), "
            "sorted(presets.load_presets('engines/profiles.json')))")
    shown = subprocess.run([sys.executable, "-c", code, str(site)], cwd=elsewhere, check=True,
                           capture_output=True, text=True).stdout
    assert "'trt-fp16'" in shown and "'jetson-orin'" in shown


def test_a_project_file_adds_and_overrides_presets(tmp_path, monkeypatch):
    from cornernet_deploy.presets import load_presets
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "presets.json").write_text(json.dumps(
        {"mine": {"decode": "graph"}, "trt-fp16": {"precision": "fp32"}}))
    monkeypatch.chdir(tmp_path)
    presets = load_presets("export/presets.json")
    assert presets["mine"] == {"decode": "graph"} and presets["trt-fp16"] == {"precision": "fp32"}
    assert "jetson-fp16" in presets


def test_commands_that_need_torch_say_so_in_one_line_without_it(tmp_path):
    """A runtime-only install (no torch extra): export/train/demo/info FILE.pt explain, no traceback."""
    blocker = ("import sys\n"
               "class NoTorch:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'torch' or name.startswith('torch.'):\n"
               "            raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
               "sys.meta_path.insert(0, NoTorch())\n"
               "from cornernet_deploy.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    for argv, what in ((["export", "--arch", "cornernet-squeeze"], "exporting"),
                       (["train", "--data", "a.json", "--images", "i"], "training"),
                       (["demo", "--output", str(tmp_path / "d")], "the demo (it exports the bundled checkpoint)"),
                       (["info", str(DEMO_CHECKPOINT)], "reading a checkpoint")):
        res = subprocess.run([sys.executable, "-c", blocker, *argv], capture_output=True, text=True,
                             cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert res.returncode == 2, (argv, res.stderr)
        assert res.stderr.strip() == (f"error: {what} needs PyTorch: pip install "
                                      "'cornernet-deploy[torch]'"), (argv, res.stderr)
