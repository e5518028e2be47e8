"""Issue 21, what every writing command shares (``fileio``): an output that names an input is
refused before any work (item 2); a full disk is one line and leaves nothing half-written (item 6);
drawings of images with very long names (item 10); staging files of killed runs are removed by
the next run (item 15)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.data.shapes import generate_shapes_dataset
from cornernet_deploy.exporter import export_onnx

from support import random_tiny, scene_file

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny random CornerNet-Squeeze, fixed 127x127 (quick to export and to run)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    export_onnx(model=random_tiny("cornernet-squeeze", num_classes=1), output=path, input_size="127x127",
                dynamic_size=False, progress=None, verify=False)
    return path


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=path, dynamic_size=True, progress=None, verify=False)
    return path


def cli(capsys, *args):
    """rc and stderr lines of one command (argparse's exit 2 included)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err.strip().splitlines()


def refused(capsys, args, *words):
    rc, err = cli(capsys, *args)
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), (rc, err)
    assert "Traceback" not in err[0] and all(w in err[0] for w in words), err
    return err[0]


# --- item 2: no output replaces an input -------------------------------------------------------

def test_export_refuses_an_output_that_is_its_checkpoint_by_path_link_or_inode(tmp_path, capsys):
    """The refusal comes before the checkpoint is read: the file is not a checkpoint at all, so
    any work would have failed with another message."""
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"not a checkpoint: an error about it would mean the work had started")
    (tmp_path / "soft.pt").symlink_to(ck)
    os.link(ck, tmp_path / "hard.pt")
    for output in (ck, tmp_path / "soft.pt", tmp_path / "hard.pt", tmp_path / "." / "ck.pt"):
        err = refused(capsys, ["export", "--checkpoint", ck, "--output", output], "--output",
                      "is --checkpoint", "would replace the input")
        assert str(output) in err
    assert ck.read_bytes().startswith(b"not a checkpoint")


def test_eval_profile_compare_refuse_json_over_an_input(tiny_onnx, tmp_path, capsys):
    data = tmp_path / "ann.json"
    data.write_text('{"images": [], "annotations": [], "categories": []}')
    images = tmp_path / "images"
    images.mkdir()
    photo = scene_file(images / "photo.png")
    other = tmp_path / "b.onnx"
    shutil.copy(tiny_onnx, other)
    before = {p: p.read_bytes() for p in (data, photo, tiny_onnx, other)}
    refused(capsys, ["eval", tiny_onnx, "--data", data, "--images", images, "--json", data],
            "--json", "is --data")
    refused(capsys, ["eval", tiny_onnx, "--data", data, "--images", images, "--json", tiny_onnx],
            "--json", "is the model")
    refused(capsys, ["eval", tiny_onnx, "--data", data, "--images", images, "--json", photo],
            "--json", "is an image of --images")
    refused(capsys, ["profile", tiny_onnx, "--json", tiny_onnx], "--json", "is the model")
    refused(capsys, ["profile", tiny_onnx, "--images", images, "--plot", photo], "--plot",
            "is an image of --images")
    refused(capsys, ["compare", tiny_onnx, other, "--json", other], "--json", "is the model")
    manifest = tmp_path / "b.manifest.json"          # an engine's manifest beside MODEL
    manifest.write_text("{}")
    refused(capsys, ["compare", tiny_onnx, tmp_path / "b.engine", "--json", manifest], "--json",
            "is the model's manifest")
    assert {p: p.read_bytes() for p in before} == before
    # a --json beside the images that is not one of them is fine
    assert cli(capsys, "profile", tiny_onnx, "--images", images, "--iters", "1", "--warmup", "0",
               "--num-images", "1", "--json", images / "times.json", "--quiet")[0] == 0


def test_build_refuses_outputs_over_its_inputs(demo_onnx, tmp_path, capsys):
    """`build X.trt.onnx --trtexec --output X.engine` wrote the ONNX for TensorRT over X.trt.onnx,
    its own input. No TensorRT is needed to get there (the refusal comes first)."""
    x = tmp_path / "X.trt.onnx"
    shutil.copy(demo_onnx, x)
    before = x.read_bytes()
    refused(capsys, ["build", x, "--trtexec", "10", "--output", tmp_path / "X.engine"],
            "--output", "X.trt.onnx", "is the ONNX model", "would replace the input")
    refused(capsys, ["build", x, "--output", x], "--output", "is the ONNX model")
    refused(capsys, ["build", x, "--output", tmp_path / "e.engine", "--timing-cache", x],
            "--timing-cache", "is the ONNX model")
    assert x.read_bytes() == before


def test_plugin_build_refuses_a_build_folder_that_holds_the_sources(capsys):
    """Checked before the headers, nvcc and CMake are looked for (none is needed to get there)."""
    for build_dir in (ROOT / "plugins", ROOT):
        refused(capsys, ["plugin", "build", "--build-dir", build_dir], "--build-dir", "holds the plugin sources",
                "CMake would write its files among them")


def test_quantize_uses_the_shared_check_and_refuses_a_hard_link_of_its_model(demo_onnx, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(demo_onnx, model)
    os.link(model, tmp_path / "same.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    scene_file(calib / "a.png")
    for output in (model, tmp_path / "same.onnx"):
        refused(capsys, ["quantize", model, "--calib", calib, "--output", output, "--no-progress"],
                "--output", "is the input model")
    refused(capsys, ["quantize", model, "--calib", calib, "--output", calib / "a.png", "--no-progress"],
            "--output", "is the calibration image")


def test_infer_triton_demo_refuse_an_output_folder_holding_an_input(tiny_onnx, tmp_path, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    model = folder / "model.onnx"
    shutil.copy(tiny_onnx, model)
    image = scene_file(tmp_path / "a.png")
    for args in (["infer", model, image, "--output", folder, "--overwrite", "--no-progress"],
                 ["infer", model, image, "--output", tmp_path, "--overwrite", "--no-progress"],
                 ["triton", model, "--repo", folder, "--overwrite"]):
        refused(capsys, args, "holds the model", "would delete")
    refused(capsys, ["infer", tiny_onnx, folder / ".." / "a.png", "--output", tmp_path, "--overwrite"],
            "holds the input image")
    assert model.is_file() and image.is_file()


def test_train_init_from_the_run_it_replaces_is_refused_and_keeps_last_pt(tmp_path, capsys):
    """`train --init RUN/last.pt --output RUN --overwrite` deleted last.pt, then failed."""
    root = tmp_path / "shapes"
    generate_shapes_dataset(root, 2, seed=5, image_size=((60, 90),), num_objects=(1, 2))
    common = ["train", "--arch", "cornernet-squeeze", "--width", "0.125", "--levels", "2", "--stacks", "1",
              "--input-size", "63x63", "--data", root / "annotations.json", "--images", root / "images",
              "--batch-size", "1", "--no-progress"]
    run = tmp_path / "run"
    assert main([str(a) for a in common + ["--output", run, "--iterations", "1"]]) == 0
    capsys.readouterr()
    before = (run / "last.pt").read_bytes()
    err = refused(capsys, common + ["--output", run, "--iterations", "1", "--overwrite", "--init",
                                    run / "last.pt"], "--output", "last.pt", "is --init")
    assert "give another --output" in err
    refused(capsys, common[:-5] + ["--data", run / "config.json", "--images", root / "images",
                                   "--batch-size", "1", "--output", run, "--iterations", "1",
                                   "--overwrite"], "config.json", "is --data")
    assert (run / "last.pt").read_bytes() == before


# --- item 10: long file names ------------------------------------------------------------------

def test_drawings_of_images_with_names_at_the_limit_are_shortened_unique_and_recognisable(tiny_onnx, tmp_path, capsys):
    stems = ["a" * 251, "a" * 250 + "b", "é" * 125]          # 255, 255 and 254 bytes with ".png"
    images = [scene_file(tmp_path / f"{stem}.png", i) for i, stem in enumerate(stems)]
    out = tmp_path / ("o" * 250)                               # its staging name is longer still
    rc, err = cli(capsys, "infer", tiny_onnx, *images, "--output", out, "--save-vis", "--no-progress")
    assert rc == 0, err
    records = json.loads((out / "images.json").read_text())
    drawings = [r["drawing"] for r in records]
    assert len(set(drawings)) == 3 and sorted(os.listdir(out)) == sorted(drawings + ["detections.json", "images.json"])
    for k, (name, stem) in enumerate(zip(drawings, stems)):
        assert len(os.fsencode(name)) <= 255 and name.startswith(f"{k + 1:06d}_{stem[:20]}") and name.endswith(".png")
        assert cv2.imread(str(out / name)) is not None
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_an_output_name_too_long_for_the_filesystem_is_refused_before_the_work(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"not a checkpoint")
    refused(capsys, ["export", "--checkpoint", ck, "--output", tmp_path / ("x" * 300 + ".onnx")],
            "--output", "file name too long (305 bytes", "takes 255")


# --- item 15: staging files of killed runs -------------------------------------------------------

def _staging(folder):
    return sorted(n for n in os.listdir(folder) if re.match(r"^\..*\.cdp-\w+-\d+-\w{8}\.\w+$", n))


def _killed_in_save(args, cwd):
    """Run ``cornernet-deploy ARGS`` in a process that SIGKILLs itself right after ``onnx.save``
    wrote the output's staging file (as `kill -9` at that moment would); returns its pid and
    what it printed on stderr."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        import onnx
        def save_then_killed(model, path, *a, **k):
            onnx.save_model(model, path, *a, **k)
            if str(path).endswith(".part"):         # the output's staging file, not a temporary one
                os.kill(os.getpid(), signal.SIGKILL)
        onnx.save = save_then_killed
        from cornernet_deploy.cli import main
        sys.exit(main({[str(a) for a in args]!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    return proc.pid, err


def test_staging_files_of_killed_export_and_quantize_are_removed_by_the_next_run(demo_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    pid, _ = _killed_in_save(["export", "--checkpoint", DEMO_CHECKPOINT, "--no-verify",
                              "--output", out / "m.onnx"], tmp_path)
    left = _staging(out)
    assert len(left) == 1 and f"-{pid}-" in left[0] and not (out / "m.onnx").exists(), left
    calib = tmp_path / "calib"
    calib.mkdir()
    scene_file(calib / "a.png")
    qpid, err = _killed_in_save(["quantize", demo_onnx, "--calib", calib, "--no-verify", "--no-progress",
                                 "--output", out / "q.onnx"], tmp_path)
    assert f"warning: removed 1 partial file(s) left in {out} by runs that were killed ({left[0]})" in err
    left = _staging(out)
    assert len(left) == 1 and f"-{qpid}-" in left[0] and not (out / "q.onnx").exists(), left
    # a live writer's staging file is left alone
    live = out / f".x.onnx.cdp-{_host()}-{os.getpid()}-abcdefgh.part"
    live.write_text("in progress")
    rc, err = cli(capsys, "export", "--checkpoint", DEMO_CHECKPOINT, "--no-verify", "--output", out / "m.onnx")
    assert rc == 0
    assert any(line.startswith("warning: removed 1 partial file(s) left in") for line in err), err
    assert _staging(out) == [live.name] and (out / "m.onnx").is_file()


def _host():
    import socket
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"


def test_a_staging_folder_of_a_killed_infer_run_is_removed_by_the_next_run(tiny_onnx, tmp_path, capsys):
    """A real `kill -9` while infer works: its hidden staging folder stays behind; the next run
    into the same place removes it and says so."""
    images = [scene_file(tmp_path / f"{i}.png", i) for i in range(200)]
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cornernet_deploy.cli", "infer", str(tiny_onnx),
                             *map(str, images), "--output", str(out), "--save-vis", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    deadline = time.monotonic() + 120
    while not any(Path(folder, f).suffix == ".png" for folder in _staging_dirs(tmp_path)
                  for f in os.listdir(folder)):
        assert proc.poll() is None and time.monotonic() < deadline, "infer ended before it was killed"
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=60)
    assert len(_staging(tmp_path)) == 1 and not out.exists()
    rc, err = cli(capsys, "infer", tiny_onnx, images[0], "--output", out, "--no-progress")
    assert rc == 0 and _staging(tmp_path) == []
    assert any("removed 1 partial file(s)" in line and "killed" in line for line in err), err


def _staging_dirs(folder):
    return [Path(folder, n) for n in _staging(folder) if Path(folder, n).is_dir()]


def test_staging_files_of_an_earlier_version_are_mentioned_not_removed(tmp_path, capsys):
    old = tmp_path / ".m.onnx.k2x9_abc.part"          # unknown owner: maybe a live run
    old.write_text("?")
    from cornernet_deploy.fileio import write_text_atomic
    write_text_atomic(tmp_path / "m.json", "{}")
    err = capsys.readouterr().err
    assert old.exists() and "1 partial file(s) of an interrupted run of an earlier version" in err


# --- item 6: a full disk -----------------------------------------------------------------------

def _on_a_full_disk(tmp_path, size_kb, argv, filled=False):
    """Run ``cornernet-deploy ARGV`` (``{disk}`` in an argument: a folder on a ``size_kb`` tmpfs,
    mounted in a private mount namespace; ``filled``: full before the command starts) and list
    what the tmpfs holds afterwards."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to mount a small filesystem privately")
    disk = tmp_path / "disk"
    disk.mkdir()
    argv = [str(a).replace("{disk}", str(disk)) for a in argv]
    code = textwrap.dedent(f"""
        import os, subprocess, sys
        if {filled!r}:
            fd = os.open(os.path.join({str(disk)!r}, ".fill"), os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, bytes(4096))
            except OSError:
                os.close(fd)
        proc = subprocess.run([sys.executable, "-m", "cornernet_deploy.cli", *{argv!r}],
                              capture_output=True, text=True)
        print(proc.returncode)
        print(sorted(os.path.relpath(os.path.join(d, n), {str(disk)!r})
                     for d, dirs, files in os.walk({str(disk)!r}) for n in dirs + files if n != ".fill"))
        sys.stderr.write(proc.stderr)
    """)
    mount = f"mount -t tmpfs -o size={size_kb}k tmpfs {disk}"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()[-200:]}")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", f"{mount} && exec {sys.executable} -c \"$0\"", code],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    rc, listing = out.stdout.strip().splitlines()[-2:]
    return int(rc), eval(listing), out.stderr.strip().splitlines(), disk


@pytest.mark.parametrize("command", ["infer", "export", "triton", "quantize", "train", "train-on-a-full-disk",
                                     "demo"])
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing_half_written(command, tiny_onnx, demo_onnx,
                                                                                   tmp_path):
    image = scene_file(tmp_path / "a.png")
    root = tmp_path / "shapes"
    if command.startswith("train"):
        generate_shapes_dataset(root, 2, seed=5, image_size=((60, 90),), num_objects=(1, 2))
    size_kb, argv, kept = {
        "infer": (64, ["infer", tiny_onnx, image, "--output", "{disk}/out", "--save-vis", "--no-progress"], []),
        "export": (1024, ["export", "--checkpoint", DEMO_CHECKPOINT, "--output", "{disk}/m.onnx"], []),
        "triton": (1024, ["triton", demo_onnx, "--repo", "{disk}/repo"], []),
        "quantize": (1024, ["quantize", demo_onnx, "--calib", image, "--output", "{disk}/q.onnx",
                            "--no-progress"], []),
        # the logs are appended as the run goes; last.pt is whole or absent
        "train": (64, ["train", "--arch", "cornernet-squeeze", "--width", "0.25", "--levels", "2",
                       "--stacks", "1", "--input-size", "63x63", "--data", root / "annotations.json",
                       "--images", root / "images", "--batch-size", "1", "--iterations", "2",
                       "--output", "{disk}/run", "--no-progress"],
                  ["run", "run/.train.lock", "run/config.json", "run/train.log", "run/train_log.jsonl"]),
        "demo": (1024, ["demo", "--output", "{disk}/demo", "--runs", "1"], []),
    }[command.replace("-on-a-full-disk", "")]
    rc, listing, err, disk = _on_a_full_disk(tmp_path, size_kb, argv, filled=command.endswith("full-disk"))
    if command == "train-on-a-full-disk":              # the run never started: no folder left
        kept = []
    assert rc == 2, err
    assert len([line for line in err if line.startswith("error:")]) == 1 and "Traceback" not in "\n".join(err), err
    assert re.match(rf"error: {re.escape(str(disk))}/\S+: no space left on device", err[-1]), err
    assert set(listing) <= set(kept), listing
