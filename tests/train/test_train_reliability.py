"""Issue 21, `train`: one run at a time in a run folder (item 3, real processes), what a run
that saved no checkpoint can do next (item 14), running means that survive a resume (item 20)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cornernet_deploy.cli import main
from cornernet_deploy.train.trainer import LOCK_FILE

from support import shapes_data, tiny_train_argv

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_data(tmp_path_factory.mktemp("shapes"))


args = tiny_train_argv


def start(argv):
    return subprocess.Popen([sys.executable, "-m", "cornernet_deploy.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def finish(procs, timeout=600):
    return [(p.wait(timeout=timeout), p.stdout.read(), p.stderr.read(), p.pid) for p in procs]


# --- item 3: two runs into one folder ---------------------------------------------------------------

def test_concurrent_runs_into_one_folder_one_runs_the_others_are_refused_naming_it(shapes, tmp_path):
    """Real processes, started together, in two rounds: three new runs, then three resumes of the
    same last.pt. Exactly one runs each round; the others fail at once with one line naming the
    live run's pid; the logs hold that one run only."""
    ann, images = shapes
    out = tmp_path / "run"
    for round_, argv in enumerate([args(ann, images, out, "--iterations", "30"),
                                   ["train", "--resume", str(out / "last.pt"), "--iterations", "60",
                                    "--no-progress"]]):
        runs = finish([start(argv) for _ in range(3)])
        winners = [r for r in runs if r[0] == 0]
        assert len(winners) == 1, [(rc, err[-300:]) for rc, _, err, _ in runs]
        for rc, _, err, _ in runs:
            if rc:
                lines = err.strip().splitlines()
                assert rc == 2 and len(lines) == 1, err
                assert "another training run is using this folder now" in lines[0]
                assert f"(pid {winners[0][3]})" in lines[0], (lines[0], winners[0][3])
        log = (out / "train.log").read_text()
        assert log.count("training CornerNet-Squeeze") == 1 and log.count("resumed from") == round_
        jsonl = [json.loads(x)["iteration"] for x in (out / "train_log.jsonl").read_text().splitlines()]
        assert jsonl == list(range(10, 30 * (round_ + 1) + 1, 10))     # one run's lines, in order
        assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 30 * (round_ + 1)


def test_the_folder_lock_excludes_under_stress_and_a_dead_holder_blocks_no_one(tmp_path):
    """Six processes take and release the lock of one folder 40 times each: the holders, as they
    record themselves, never overlap; then a holder killed with SIGKILL leaves a lock file that
    the next run takes over."""
    folder = tmp_path / "run"
    record = tmp_path / "record"
    code = textwrap.dedent(f"""
        import os, sys, time
        from cornernet_deploy.errors import UserError
        from cornernet_deploy.fileio import exclusive_folder
        taken = refused = 0
        while taken < 40:
            try:
                with exclusive_folder({str(folder)!r}, ".lock", "--output", "run"):
                    fd = os.open({str(record)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                    os.write(fd, f"in {{os.getpid()}}\\n".encode())
                    time.sleep(0.002)
                    os.write(fd, f"out {{os.getpid()}}\\n".encode())
                    os.close(fd)
                taken += 1
            except UserError as exc:
                assert "another run is using this folder now (pid " in str(exc), exc
                refused += 1
        print(refused)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for _ in range(6)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), results
    lines = record.read_text().split("\n")[:-1]
    assert len(lines) == 6 * 40 * 2
    for enter, leave in zip(lines[::2], lines[1::2]):          # strictly in, out, in, out ...
        assert enter.startswith("in ") and leave == "out " + enter[3:], (enter, leave)
    assert sum(int(out) for _, out, _ in results) > 0          # they did contend

    dead = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from cornernet_deploy.fileio import exclusive_folder
        with exclusive_folder({str(folder)!r}, ".lock"):
            os.kill(os.getpid(), signal.SIGKILL)
    """)], env=ENV)
    assert dead.wait(timeout=60) == -signal.SIGKILL
    assert (folder / ".lock").read_text().split()[0] == str(dead.pid)
    from cornernet_deploy.fileio import exclusive_folder
    with exclusive_folder(folder, ".lock"):
        assert (folder / ".lock").read_text().split()[0] == str(os.getpid())


def test_a_failed_new_run_leaves_no_folder_behind(shapes, tmp_path, capsys):
    ann, images = shapes
    out = tmp_path / "new" / "run"
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(args(bad, images, out, "--iterations", "2")) == 2
    assert "error:" in capsys.readouterr().err and not out.exists()
    assert main(args(ann, images, out, "--iterations", "2")) == 0
    assert (out / LOCK_FILE).is_file()      # kept: removing it could let two runs in at once


# --- item 14: a run that saved no checkpoint ---------------------------------------------------------

def test_a_run_killed_before_its_first_checkpoint_is_not_sent_to_resume_a_missing_file(shapes, tmp_path, capsys):
    ann, images = shapes
    out = tmp_path / "run"
    proc = start(args(ann, images, out, "--iterations", "100000", "--snapshot", "0"))
    deadline = time.monotonic() + 180
    while not (out / "train_log.jsonl").exists():          # it is training: kill it
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=60)
    assert not (out / "last.pt").exists()
    assert main(args(ann, images, out, "--iterations", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "saved no checkpoint" in err and "--overwrite" in err, err
    assert "--resume" not in err
    assert main(args(ann, images, out, "--iterations", "2", "--overwrite")) == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 2


# --- item 20: running means across a resume ----------------------------------------------------------

def test_a_resumed_run_reports_the_same_running_mean_as_the_uninterrupted_one(shapes, tmp_path, capsys):
    """The running mean (what the progress bar and the final line show) goes on across a resume:
    a finished 3-iteration run resumed to 4 reports what a 4-iteration run reports, not the 4th
    iteration's raw loss."""
    ann, images = shapes
    assert main(args(ann, images, tmp_path / "full", "--iterations", "4")) == 0
    full = capsys.readouterr().out
    assert main(args(ann, images, tmp_path / "part", "--iterations", "3")) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "part" / "last.pt"), "--iterations", "4",
                 "--no-progress"]) == 0
    resumed = capsys.readouterr().out
    done = [next(x for x in text.splitlines() if x.startswith("done:")) for text in (full, resumed)]
    assert done[0] == done[1], done
    last = json.loads((tmp_path / "part" / "train_log.jsonl").read_text().splitlines()[-1])
    assert last["iteration"] == 4 and abs(last["smoothed_loss"] - last["loss"]) > 1e-6
    # asked for no more iterations: the saved running means, not the last raw losses
    assert main(["train", "--resume", str(tmp_path / "part" / "last.pt"), "--iterations", "4",
                 "--no-progress"]) == 0
    assert next(x for x in capsys.readouterr().out.splitlines() if x.startswith("done:")) == done[0]


def test_the_demo_training_script_says_the_learning_rate_the_bundled_model_was_trained_with():
    import importlib.util

    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.models.checkpoint import read_checkpoint

    spec = importlib.util.spec_from_file_location("train_demo_model", ROOT / "scripts" / "train_demo_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    recipe = read_checkpoint(DEMO_CHECKPOINT)["recipe"]
    default = script.parse_args([]).lr
    assert default == recipe["lr"] == 1e-3
    assert "Adam at 1e-3" in script.__doc__ and "Adam 2.5e-4" not in script.__doc__


def test_git_ignores_the_onnx_that_build_trtexec_writes_beside_the_engines():
    import shutil
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("engines/demo_fp16.trt.onnx", "engines/demo_fp16.engine"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0, path
