"""`infer` on images too large for the limit or for the memory (issue #21 item 12): one line naming
the image and the memory its pixels need, exit 2, nothing written; never a traceback."""
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "demo.onnx"
    assert main(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--dynamic-size", "--output", str(path)]) == 0
    return path


def run_infer(capsys, *args):
    try:
        code = main(["infer", *map(str, args), "--no-progress"])
    except SystemExit as exc:
        code = exc.code
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note:")]
    return code, err


def test_a_bomb_is_refused_before_decoding_by_default(demo_onnx, tmp_path, capsys):
    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)   # a 12000x12000 PNG header, no pixels
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                     + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0" * 64)
    code, err = run_infer(capsys, demo_onnx, bomb, "--output", tmp_path / "out")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {bomb}: 12000x12000 = 144,000,000 pixels, more than the limit of 50,000,000")
    assert "412.0 MiB" in err[0] and "--max-pixels raises the limit" in err[0]
    assert not (tmp_path / "out").exists()


def test_max_pixels_sets_the_limit_and_skip_unreadable_goes_on(demo_onnx, tmp_path, capsys):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    assert cv2.imwrite(str(small), np.zeros((100, 100, 3), np.uint8))
    assert cv2.imwrite(str(large), np.zeros((101, 100, 3), np.uint8))
    code, err = run_infer(capsys, demo_onnx, small, large, "--output", tmp_path / "a", "--max-pixels", "10000")
    assert code == 2 and len(err) == 1 and f"{large}: 100x101 = 10,100 pixels" in err[0], err
    code, _ = run_infer(capsys, demo_onnx, small, large, "--output", tmp_path / "b", "--max-pixels", "10000",
                        "--skip-unreadable")
    assert code == 0 and "large.png" in (tmp_path / "b" / "skipped.json").read_text()
    assert run_infer(capsys, demo_onnx, large, "--output", tmp_path / "c", "--max-pixels", "0")[0] == 0
    code, err = run_infer(capsys, demo_onnx, small, "--output", tmp_path / "d", "--max-pixels", "-1")
    assert code == 2 and "must be 0 or more" in err[-1]


def test_running_out_of_memory_on_a_valid_image_is_one_line(demo_onnx, tmp_path):
    """A 6000x6000 PNG with no pixel limit, in a process allowed 2 GiB of address space: the
    dynamic-size network needs more (ONNX Runtime fails to allocate); one line naming the image."""
    image = tmp_path / "wide.png"
    pixels = np.zeros((6000, 6000, 3), np.uint8)
    pixels[1000:2000, 1000:3000] = 255
    assert cv2.imwrite(str(image), pixels)
    del pixels
    limit = 2 * 2**30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "cornernet_deploy.cli", "infer", str(demo_onnx), str(image),
                           "--output", str(tmp_path / "out"), "--no-progress", "--max-pixels", "0"],
                          preexec_fn=cap, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-3000:]
    assert err[0].startswith(f"error: {image}: not enough memory for a 6000x6000 image"), err
    assert "103.0 MiB" in err[0]                  # 6000 * 6000 * 3 bytes
    assert not (tmp_path / "out").exists()
