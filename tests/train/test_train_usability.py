"""`train` as a new user meets it (issue 14): runs are never overwritten silently, a resumed run
keeps its settings, Ctrl-C/SIGTERM keep the progress, logs exist, and plain mistakes are one line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cornernet_deploy.cli import main

from support import shapes_data, tiny_train_argv

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("shapes"))


args = tiny_train_argv


def iteration_of(path):
    return torch.load(path, weights_only=True)["iteration"]


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and expected in err, err
    return err


def test_a_second_run_into_the_same_folder_is_refused_unless_overwrite(shapes, tmp_path, capsys):
    ann, images = shapes
    out = tmp_path / "run"
    assert main(args(ann, images, out, "--iterations", "3")) == 0
    err = one_line_error(capsys, args(ann, images, out, "--iterations", "2"), "already holds a run")
    assert "iteration 3" in err and "--resume" in err and "--overwrite" in err
    assert iteration_of(out / "last.pt") == 3                      # untouched
    assert main(args(ann, images, out, "--iterations", "2", "--overwrite")) == 0
    assert iteration_of(out / "last.pt") == 2
    lines = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [2]      # the old run's lines are gone


def test_resume_needs_no_flags_and_keeps_the_config_whole(shapes, tmp_path, capsys):
    ann, images = shapes
    out = tmp_path / "run"
    assert main(args(ann, images, out, "--iterations", "2", "--lr", "1e-3")) == 0
    first = json.loads((out / "config.json").read_text())
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "last.pt"), "--iterations", "4", "--no-progress"]) == 0
    again = json.loads((out / "config.json").read_text())
    for key in ("arch", "data", "images", "width", "stacks", "levels", "input_size", "batch_size",
                "lr", "seed"):
        assert again[key] == first[key] and again[key] is not None, key
    assert again["iterations"] == 4 and iteration_of(out / "last.pt") == 4
    # what defines the network or the data order cannot change on resume
    err = one_line_error(capsys, ["train", "--resume", str(out / "last.pt"), "--iterations", "6",
                                  "--width", "0.25"], "started with --width 0.125")
    assert "drop --width 0.25" in err


def test_resumed_with_minimal_flags_equals_the_uninterrupted_run(shapes, tmp_path):
    ann, images = shapes
    assert main(args(ann, images, tmp_path / "full", "--iterations", "4", "--snapshot", "0")) == 0
    assert main(args(ann, images, tmp_path / "half", "--iterations", "2")) == 0
    assert main(["train", "--resume", str(tmp_path / "half" / "last.pt"), "--iterations", "4",
                 "--no-progress"]) == 0
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["state_dict"]
    half = torch.load(tmp_path / "half" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, half[k]) for k, v in full.items())


def test_logs_exist_and_the_final_line_shows_what_the_progress_bar_showed(shapes, tmp_path, capsys):
    ann, images = shapes
    out = tmp_path / "run"
    assert main(args(ann, images, out, "--iterations", "3")) == 0    # fewer than 10 iterations
    printed = capsys.readouterr().out
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["iteration"] == 3
    text = (out / "train.log").read_text()
    assert "training CornerNet-Squeeze" in text and "saved" in text and "(iteration 3)" in text
    done = next(line for line in printed.splitlines() if line.startswith("done:"))
    assert "running mean (as the progress bar)" in done
    assert f"loss {log[-1]['smoothed_loss']:.4f}" in done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_saves_the_last_completed_iteration_and_resumes(shapes, tmp_path, sig):
    ann, images = shapes
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cornernet_deploy.cli", *args(ann, images, out, "--iterations", "100000",
                                                             "--snapshot", "0")[0:]]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 240
        while not (out / "train_log.jsonl").exists():   # 10 iterations done
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 128 + signal.SIGTERM), stderr
    done = iteration_of(out / "last.pt")
    assert done >= 10
    assert f"saved {out / 'last.pt'} at iteration {done}" in stdout + stderr
    assert "Traceback" not in stderr
    assert main(["train", "--resume", str(out / "last.pt"), "--iterations", str(done + 1),
                 "--no-progress"]) == 0
    assert iteration_of(out / "last.pt") == done + 1


def test_a_signal_during_an_optimizer_step_waits_for_the_step(monkeypatch):
    from cornernet_deploy.train.trainer import signals_deferred
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            finished.append(True)            # the block completes before the interrupt
    assert finished == [True]


def test_plain_mistakes_are_one_line_errors(shapes, tmp_path, capsys):
    ann, images = shapes
    afile = tmp_path / "afile"
    afile.write_text("x")
    one_line_error(capsys, args(ann, images, afile, "--iterations", "1"), "is a file; give a folder")
    for flag, value, expected in (("--workers", "-1", "must be 0 or more"),
                                  ("--width", "0", "must be greater than 0"),
                                  ("--width", "-1", "must be greater than 0"),
                                  ("--iterations", "0", "must be at least 1"),
                                  ("--arch", "cornernet-large", "invalid choice")):
        with pytest.raises(SystemExit) as exc:
            main(args(ann, images, tmp_path / "o", flag, value))
        assert exc.value.code == 2
        assert expected in capsys.readouterr().err
    one_line_error(capsys, ["train", "--iterations", "1"], "give --data")
    one_line_error(capsys, args(ann, images, tmp_path / "o", "--iterations", "1", "--arch",
                                "cornernet-saccade", "--input-size", "63x127"), "square")
    assert not (tmp_path / "o").exists()


def test_input_size_takes_hxw_and_the_old_single_number(shapes, tmp_path):
    ann, images = shapes
    argv = args(ann, images, tmp_path / "a", "--iterations", "1")
    argv[argv.index("63x63")] = "63"
    assert main(argv) == 0
    assert main(args(ann, images, tmp_path / "b", "--iterations", "1")) == 0
    for run in ("a", "b"):
        assert json.loads((tmp_path / run / "config.json").read_text())["input_size"] == [63, 63]


def test_help_lists_architectures_and_the_size_rule(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{cornernet,cornernet-squeeze,cornernet-saccade}" in text
    assert "--input-size HxW" in text and "32 for cornernet-saccade" in text
