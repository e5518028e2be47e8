"""The corner-pool CUDA kernel source, run on the CPU through plugins/tests/simtHostEmulation.h.

No GPU is needed: the exact kernel source (cornerPoolKernel.cu) is compiled by the host C++ compiler with
CUDA's built-ins emulated (block barriers, warp shuffles, shared memory, launch), every CUDA thread a
fiber. Results are compared bit-for-bit with an independent NumPy reference (reversed cumulative max,
checked against torch.cummax and hand-computed values below). Several fiber schedules are run because a
missing __syncthreads shows up as a schedule-dependent result.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
SOURCES = [PLUGINS / "cornerPoolPlugin" / "cornerPoolKernel.cu", PLUGINS / "cornerPoolPlugin" / "cornerPoolKernel.h",
           PLUGINS / "tests" / "simtHostEmulation.h", PLUGINS / "tests" / "kernelEmulationMain.cpp"]
DTYPES = {"float32": np.float32, "float16": np.float16}


# ---- independent reference ------------------------------------------------------------------------------

def top_pool(x):     # out[y] = max over rows y..H-1
    return np.flip(np.maximum.accumulate(np.flip(x, 2), axis=2), 2)


def bottom_pool(x):  # out[y] = max over rows 0..y
    return np.maximum.accumulate(x, axis=2)


def left_pool(x):    # out[x] = max over columns x..W-1
    return np.flip(np.maximum.accumulate(np.flip(x, 3), axis=3), 3)


def right_pool(x):   # out[x] = max over columns 0..x
    return np.maximum.accumulate(x, axis=3)


SINGLE = {"top": top_pool, "bottom": bottom_pool, "left": left_pool, "right": right_pool}


def reference(op, a, b=None):
    if op in SINGLE:
        return SINGLE[op](a)
    vertical, horizontal = (top_pool(a), left_pool(b)) if op == "top_left" else (bottom_pool(a), right_pool(b))
    # Sum in float32, rounded once to the tensor dtype: what torch's half add does. inf + -inf = NaN
    # and half overflow to inf are intended here.
    with np.errstate(invalid="ignore", over="ignore"):
        return (vertical.astype(np.float32) + horizontal.astype(np.float32)).astype(a.dtype)


def test_reference_matches_hand_values():
    a = np.array([[1, 5, 2], [4, 0, 3], [2, 2, 9]], np.float32)[None, None]
    b = np.array([[3, 1, 2], [0, 7, 1], [6, 5, 4]], np.float32)[None, None]
    assert top_pool(a)[0, 0].tolist() == [[4, 5, 9], [4, 2, 9], [2, 2, 9]]
    assert bottom_pool(a)[0, 0].tolist() == [[1, 5, 2], [4, 5, 3], [4, 5, 9]]
    assert left_pool(b)[0, 0].tolist() == [[3, 2, 2], [7, 7, 1], [6, 5, 4]]
    assert right_pool(b)[0, 0].tolist() == [[3, 3, 3], [0, 7, 7], [6, 6, 6]]
    assert reference("top_left", a, b)[0, 0].tolist() == [[7, 7, 11], [11, 9, 10], [8, 7, 13]]
    assert reference("bottom_right", a, b)[0, 0].tolist() == [[4, 8, 5], [4, 12, 10], [10, 11, 15]]


def test_reference_matches_torch_cummax_including_nan():
    torch = pytest.importorskip("torch", reason="torch not installed; the hand-value test still checks the reference")
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 3, (2, 3, 9, 11)).astype(np.float32)
    x[0, 1, 4, 5] = np.nan
    x[1, 2, 0, 0] = -np.inf
    t = torch.from_numpy(x)
    flipcum = lambda t, d: torch.flip(torch.cummax(torch.flip(t, [d]), d)[0], [d])  # noqa: E731
    for ours, theirs in [(top_pool(x), flipcum(t, 2)), (left_pool(x), flipcum(t, 3)),
                         (bottom_pool(x), torch.cummax(t, 2)[0]), (right_pool(x), torch.cummax(t, 3)[0])]:
        np.testing.assert_array_equal(ours, theirs.numpy())  # NaN == NaN for assert_array_equal
    h = torch.from_numpy(x).half()
    half_sum = (flipcum(h, 2) + flipcum(h, 3)).numpy()
    np.testing.assert_array_equal(reference("top_left", x.astype(np.float16), x.astype(np.float16)), half_sum)


# ---- the emulated kernel ---------------------------------------------------------------------------------

def _cuda_include_dir():
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    candidates.append("/usr/local/cuda")
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_fp16.h").is_file():
            return Path(c) / "include"
    return None


@pytest.fixture(scope="module")
def emulated_kernel():
    """Path of the emulation driver, built once per source version into a temp cache directory."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    include = _cuda_include_dir()
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to build the kernel emulation")
    if include is None:
        pytest.skip("CUDA headers (cuda_fp16.h) not found: set CUDA_HOME to the CUDA toolkit")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES) + cxx.encode() + str(include).encode())
    exe = Path(tempfile.gettempdir()) / "cornernet_deploy_tests" / f"kernel-emulation-{digest.hexdigest()[:16]}"
    if not exe.is_file():
        exe.parent.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
               "-DCORNERPOOL_HOST_EMULATION", f"-I{PLUGINS / 'cornerPoolPlugin'}", f"-I{PLUGINS / 'tests'}",
               "-isystem", str(include), "-x", "c++", str(SOURCES[0]), "-x", "none", str(SOURCES[3]), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"emulation build failed:\n{' '.join(cmd)}\n{proc.stderr}"
        os.replace(tmp, exe)
    return exe


def run_kernel(exe, op, *inputs, schedule="forward", expect_status=None, shape=None, dtype=None):
    """Run one op through the emulated kernel; returns the output array (or the status line)."""
    shape = shape or inputs[0].shape
    dtype = dtype or inputs[0].dtype
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, x in enumerate(inputs):
            files.append(os.path.join(d, f"in{i}.bin"))
            np.ascontiguousarray(x).tofile(files[-1])
        out = os.path.join(d, "out.bin")
        proc = subprocess.run([str(exe), op, np.dtype(dtype).name, *map(str, shape), out, *files],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CORNERPOOL_EMULATION_SCHEDULE": schedule})
        if expect_status is not None:
            assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
            return proc.stdout
        assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
        return np.fromfile(out, dtype).reshape(shape)


def make_inputs(shape, dtype, seed):
    """a: small integers (many ties along both axes), b: continuous values; both contain +-inf."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-6, 6, shape).astype(dtype)
    b = (rng.standard_normal(shape) * 100).astype(dtype)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    if flat_a.size > 4:
        flat_a[rng.integers(0, flat_a.size, max(1, flat_a.size // 50))] = -np.inf
        flat_b[rng.integers(0, flat_b.size, max(1, flat_b.size // 50))] = -np.inf
        flat_b[rng.integers(0, flat_b.size, 1)] = np.inf
    return a, b


SHAPES = [(1, 1, 1, 1), (1, 1, 3, 517), (1, 1, 517, 3), (2, 3, 37, 70), (1, 2, 130, 257)]
OPS = ["top_left", "bottom_right", "top", "bottom", "left", "right"]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_all_ops_match_reference(emulated_kernel, shape, dtype):
    a, b = make_inputs(shape, DTYPES[dtype], seed=sum(shape))
    for op in OPS:
        inputs = (a, b) if op in ("top_left", "bottom_right") else ((a,) if op in ("top", "bottom") else (b,))
        got = run_kernel(emulated_kernel, op, *inputs)
        want = reference(op, *inputs)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {dtype} {shape}")


def test_many_planes(emulated_kernel):
    a, b = make_inputs((2, 33, 5, 9), np.float16, seed=11)  # 66 planes, each its own block
    np.testing.assert_array_equal(run_kernel(emulated_kernel, "bottom_right", a, b), reference("bottom_right", a, b))


@pytest.mark.parametrize("schedule", ["reverse", "random:7", "random:12345"])
def test_result_does_not_depend_on_thread_schedule(emulated_kernel, schedule):
    # Several 32-row chunks and 128-column segments, so every carry path and barrier is exercised.
    a, b = make_inputs((1, 2, 70, 300), np.float32, seed=5)
    for op in ("top_left", "bottom_right"):
        np.testing.assert_array_equal(run_kernel(emulated_kernel, op, a, b, schedule=schedule), reference(op, a, b))


def test_nan_propagates_like_torch_cummax(emulated_kernel):
    a = np.arange(4 * 6, dtype=np.float32).reshape(1, 1, 4, 6)
    b = -np.arange(4 * 6, dtype=np.float32).reshape(1, 1, 4, 6)
    a[0, 0, 2, 1] = np.nan
    b[0, 0, 1, 3] = np.nan
    top_left = run_kernel(emulated_kernel, "top_left", a, b)
    bottom_right = run_kernel(emulated_kernel, "bottom_right", a, b)
    np.testing.assert_array_equal(top_left, reference("top_left", a, b))
    np.testing.assert_array_equal(bottom_right, reference("bottom_right", a, b))
    # By hand: TopPool(a) is NaN in column 1 for rows 0..2, LeftPool(b) is NaN in row 1 for columns 0..3.
    expected_nan = np.zeros((4, 6), bool)
    expected_nan[0:3, 1] = True
    expected_nan[1, 0:4] = True
    assert (np.isnan(top_left[0, 0]) == expected_nan).all()
    expected_nan_br = np.zeros((4, 6), bool)
    expected_nan_br[2:, 1] = True   # BottomPool: rows 2..3
    expected_nan_br[1, 3:] = True   # RightPool: columns 3..5
    assert (np.isnan(bottom_right[0, 0]) == expected_nan_br).all()


def test_half_sum_is_rounded_once_and_overflows_like_torch(emulated_kernel):
    # 1024 + 1025 = 2049 lies halfway between the halves 2048 and 2050: ties-to-even gives 2048.
    # 60000 + 60000 overflows half to inf. torch.half gives the same for both.
    a = np.array([[[[1024.0, 60000.0], [0.5, -60000.0]]]], np.float16)
    b = np.array([[[[1025.0, 60000.0], [2048.0, -60000.0]]]], np.float16)
    got = run_kernel(emulated_kernel, "bottom_right", a, b)
    np.testing.assert_array_equal(got, reference("bottom_right", a, b))
    assert got[0, 0, 0, 1] == np.inf
    assert got[0, 0, 0, 0] == 2048.0


def test_width_limit_is_reported_for_vertical_pools_only(emulated_kernel):
    # The emulation grants the default 48 KiB of shared memory: (49152 - 4096) / 4 = 11264 columns.
    wide = np.random.default_rng(0).standard_normal((1, 1, 2, 11265)).astype(np.float32)
    status = run_kernel(emulated_kernel, "top", wide, expect_status=True)
    assert "status -5" in status and "width too large" in status
    np.testing.assert_array_equal(run_kernel(emulated_kernel, "left", wide), left_pool(wide))
    ok = wide[..., :11264].copy()
    np.testing.assert_array_equal(run_kernel(emulated_kernel, "top", ok), top_pool(ok))


def test_invalid_arguments_return_status(emulated_kernel):
    x = np.zeros((1, 1, 2, 2), np.float32)
    assert "status -1" in run_kernel(emulated_kernel, "invalid", x, expect_status=True)
    assert "status -3" in run_kernel(emulated_kernel, "top", x, expect_status=True, shape=(1, 1, -2, 2))


def test_empty_tensor_is_a_no_op(emulated_kernel):
    x = np.zeros((0, 3, 4, 5), np.float32)
    assert run_kernel(emulated_kernel, "top_left", x, x).shape == (0, 3, 4, 5)


@pytest.mark.parametrize("barrier", ["(A)", "(B)"])
def test_emulation_catches_a_missing_barrier(emulated_kernel, barrier, tmp_path):
    """The emulation must have teeth: the kernel with one __syncthreads removed has to fail here."""
    source = SOURCES[0].read_text()
    marker = f"__syncthreads(); // {barrier}"
    assert marker in source, f"kernel no longer has the barrier marked {barrier}; update this test"
    mutant = tmp_path / "cornerPoolKernel.cu"
    mutant.write_text(source.replace(marker, "// barrier removed by the test"))
    exe = tmp_path / "mutant"
    cmd = [shutil.which(os.environ.get("CXX", "g++")), "-std=c++17", "-O1", "-w", "-DCORNERPOOL_HOST_EMULATION",
           f"-I{PLUGINS / 'cornerPoolPlugin'}", f"-I{PLUGINS / 'tests'}", "-isystem", str(_cuda_include_dir()),
           "-x", "c++", str(mutant), "-x", "none", str(SOURCES[3]), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True)
    a, b = make_inputs((1, 1, 70, 130), np.float32, seed=9)
    outcomes = []
    for schedule in ("forward", "reverse", "random:3"):
        got = run_kernel(exe, "top_left", a, b, schedule=schedule)
        outcomes.append(np.array_equal(got, reference("top_left", a, b), equal_nan=True))
    assert not all(outcomes), "removing a barrier went unnoticed"
