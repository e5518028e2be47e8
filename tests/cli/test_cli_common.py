"""What every command shares: output-path checks before the work, SIGTERM handled like Ctrl-C,
argument value types, the console width when piped."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cornernet_deploy.commands import common
from cornernet_deploy.errors import UserError
from cornernet_deploy.fileio import check_output_dir, check_output_file

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "cornernet_deploy" / "assets" / "demo_squeeze_shapes.pt"


def test_output_file_checks(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    assert check_output_file(tmp_path / "new.onnx") == tmp_path / "new.onnx"
    assert check_output_file(tmp_path / "deeper" / "still" / "new.onnx")   # folders get made
    assert check_output_file(tmp_path / "a_file")                          # replaced atomically
    with pytest.raises(UserError, match="is a folder"):
        check_output_file(tmp_path / "a_dir", "--output")
    with pytest.raises(UserError, match=r"a_file is a file, not a folder"):
        check_output_file(tmp_path / "a_file" / "x.json", "--json")
    with pytest.raises(UserError, match=r"a_file is a file, not a folder"):
        check_output_file(tmp_path / "a_file" / "sub" / "x.json", "--json")


def test_output_dir_checks(tmp_path):
    (tmp_path / "a_file").write_text("x")
    assert check_output_dir(tmp_path / "new" / "folder")
    assert check_output_dir(tmp_path)
    with pytest.raises(UserError, match="is a file; give a folder"):
        check_output_dir(tmp_path / "a_file", "--output")
    with pytest.raises(UserError, match="a_file is a file, not a folder"):
        check_output_dir(tmp_path / "a_file" / "sub", "--output")


def test_read_only_filesystem_is_refused(tmp_path):
    """A folder the user cannot write to. Root may write into any mode-0555 folder, so the check
    is run against a read-only filesystem, mounted in a private mount namespace (``unshare``)."""
    import shutil
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to mount a read-only filesystem privately")
    ro = tmp_path / "ro"
    ro.mkdir()
    code = textwrap.dedent(f"""
        from cornernet_deploy.errors import UserError
        from cornernet_deploy.fileio import check_output_dir, check_output_file
        for check, path in ((check_output_dir, {str(ro / 'out')!r}), (check_output_file, {str(ro / 'x.json')!r}),
                            (check_output_dir, {str(ro)!r}), (check_output_file, {str(tmp_path / 'ok.json')!r})):
            try:
                check(path, "--output")
            except UserError as exc:
                print("refused:", exc)
            else:
                print("accepted:", path)
    """)
    script = f"mount -t tmpfs -o ro,size=1m tmpfs {ro} && exec {sys.executable} -c \"$0\""
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script, code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    if out.returncode != 0 and not out.stdout:
        pytest.skip(f"cannot mount a private read-only filesystem here: {out.stderr.strip()[-200:]}")
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4, (lines, out.stderr)
    assert all(line.startswith("refused:") and "not writable" in line for line in lines[:3]), lines
    assert lines[3].startswith("accepted:"), lines


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    with pytest.raises(UserError, match="not writable"):
        check_output_dir(ro / "out")
    with pytest.raises(UserError, match="not writable"):
        check_output_file(ro / "x.json")


def test_sigterm_during_a_write_removes_the_partial_file(tmp_path):
    """SIGTERM arriving while the ONNX file is being written: exit 143, nothing left behind (the
    default action of SIGTERM kills the process before the temporary file is removed)."""
    out_dir = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os, signal, sys
        import onnx
        real_save = onnx.save
        def save_then_terminated(model, path, *a, **k):
            real_save(model, path, *a, **k)          # the partial file exists now
            os.kill(os.getpid(), signal.SIGTERM)
        onnx.save = save_then_terminated
        from cornernet_deploy.cli import main
        sys.exit(main(["export", "--checkpoint", {str(DEMO_CHECKPOINT)!r}, "--no-verify",
                       "--output", {str(out_dir / 'model.onnx')!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "terminated"
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("kind, text, message", [
    (common.positive_int, "0", "at least 1"), (common.positive_int, "-3", "at least 1"),
    (common.positive_int, "2.5", "whole number"), (common.nonnegative_int, "-1", "0 or more"),
    (common.positive_float, "0", "greater than 0"), (common.positive_float, "nan", "finite"),
    (common.score, "2", r"\[0, 1\]"), (common.score, "-1", r"\[0, 1\]"), (common.score, "nan", "finite"),
    (common.score, "inf", "finite"),
    (common.seed, "18446744073709551616", r"0 \.\. 2\*\*64 - 1"), (common.seed, "-1", "0 or more"),
])
def test_argument_types_refuse(kind, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        kind(text)


def test_argument_types_accept():
    assert common.positive_int("3") == 3
    assert common.nonnegative_int("0") == 0
    assert common.positive_float("1e-3") == 1e-3
    assert common.score("0") == 0.0 and common.score("1") == 1.0 and common.score("0.25") == 0.25
    assert common.seed("18446744073709551615") == 2 ** 64 - 1


def test_bad_value_is_a_one_line_usage_error(capsys):
    from cornernet_deploy.cli import main
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--n", type=common.positive_int)
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--n", "0"])
    assert exc.value.code == 2
    assert "argument --n: must be at least 1, got 0" in capsys.readouterr().err
    assert main([]) == 0 and "export checkpoints to ONNX" in capsys.readouterr().out


def test_unknown_flag_is_reported_with_the_commands_own_usage(capsys):
    from cornernet_deploy.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["profile", "model.onnx", "--runs", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "cornernet-deploy profile: error: unrecognized arguments: --runs 3" in err
    assert "usage: cornernet-deploy profile" in err  # its flags, so the right one can be seen
    with pytest.raises(SystemExit) as exc:
        main(["--bogus"])
    assert exc.value.code == 2 and "cornernet-deploy: error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_piped_console_does_not_wrap_at_80_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    console = common.console()        # pytest captures stdout: not a terminal
    long_path = "/data/" + "x" * 150 + "/detections.json"
    with console.capture() as cap:
        console.print(f"wrote {long_path}")
    assert cap.get().strip() == f"wrote {long_path}"


@pytest.mark.parametrize("metadata, message", [
    (None, " was not exported by cornernet-deploy (no 'cornernet_deploy' metadata); "
           "export it with `cornernet-deploy export`"),
    ("{not json", ": its 'cornernet_deploy' metadata is not a JSON object"),
    ("[1, 2]", ": its 'cornernet_deploy' metadata is not a JSON object"),
])
def test_every_command_reading_an_export_refuses_a_foreign_onnx_alike(tmp_path, capsys, metadata, message):
    """info, infer, quantize and triton read an export's metadata through one reader: a model made
    elsewhere, or with broken metadata, is the same one-line error from each, before any work."""
    import cv2
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from cornernet_deploy.cli import main
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["heat"])], "foreign",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("heat", TensorProto.FLOAT, [1, 3, 8, 8])])
    # IR 8, as our exports: the older ONNX Runtime of Python 3.9/3.10 cannot load onnx's newest IR
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if metadata is not None:
        helper.set_model_props(model, {"cornernet_deploy": metadata})
    path = tmp_path / "foreign.onnx"
    onnx.save(model, str(path))
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "0.png"), np.zeros((16, 16, 3), np.uint8))
    for argv in (["info", str(path)],
                 ["infer", str(path), str(images), "--output", str(tmp_path / "out"), "--no-progress"],
                 ["quantize", str(path), "--calib", str(images), "--output", str(tmp_path / "q.onnx")],
                 ["triton", str(path), "--repo", str(tmp_path / "repo")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: {path}{message}"], argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.onnx", "images"]
