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
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def _build_emulation(*defines):
    """Path of the emulation driver, built once per source version and defines into a temp cache directory."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    include = _cuda_include_dir()
    if cxx is None:
        pytest.skip("no host C++ compiler (g++) to build the kernel emulation")
    if include is None:
        pytest.skip("CUDA headers (cuda_fp16.h) not found: set CUDA_HOME to the CUDA toolkit")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in SOURCES) + cxx.encode() + str(include).encode()
                            + " ".join(defines).encode())
    exe = Path(tempfile.gettempdir()) / "cornernet_deploy_tests" / f"kernel-emulation-{digest.hexdigest()[:16]}"
    if not exe.is_file():
        exe.parent.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_suffix(f".{os.getpid()}.tmp")
        cmd = [cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
               "-DCORNERPOOL_HOST_EMULATION", *(f"-D{d}" for d in defines), f"-I{PLUGINS / 'cornerPoolPlugin'}",
               f"-I{PLUGINS / 'tests'}", "-isystem", str(include), "-x", "c++", str(SOURCES[0]), "-x", "none",
               str(SOURCES[3]), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"emulation build failed:\n{' '.join(cmd)}\n{proc.stderr}"
        os.replace(tmp, exe)
    return exe


@pytest.fixture(scope="module")
def emulated_kernel():
    """The kernel as built for sm_80+ (max = PTX max.NaN.f32, modelled by simt::maxNaN)."""
    return _build_emulation()


@pytest.fixture(scope="module")
def emulated_kernel_sm75():
    """The kernel as built for sm_75 (no NaN-aware max instruction: compares and a select)."""
    return _build_emulation("CORNERPOOL_EMULATE_PRE_SM80")


def run_kernel(exe, op, *inputs, schedule="forward", expect_status=None, shape=None, dtype=None, env=None,
               stats=None):
    """Run one op through the emulated kernel; returns the output array (or the status line). ``env``: extra
    environment (SM count, shared-memory opt-in, pointer offset, repeats); ``stats``: a dict that receives the
    driver's counters (device_queries, attribute_sets, launches)."""
    shape = shape or inputs[0].shape
    dtype = dtype or inputs[0].dtype
    with tempfile.TemporaryDirectory() as d:
        files = []
        for i, x in enumerate(inputs):
            files.append(os.path.join(d, f"in{i}.bin"))
            np.ascontiguousarray(x).tofile(files[-1])
        out = os.path.join(d, "out.bin") if inputs else "-"
        proc = subprocess.run([str(exe), op, np.dtype(dtype).name, *map(str, shape), out, *files],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CORNERPOOL_EMULATION_SCHEDULE": schedule, **(env or {})})
        if stats is not None:
            m = re.search(r"stats: device_queries=(\d+) attribute_sets=(\d+) launches=(\d+)", proc.stdout)
            assert m, proc.stdout
            stats.update(device_queries=int(m.group(1)), attribute_sets=int(m.group(2)), launches=int(m.group(3)))
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


# Odd widths take the scalar path, widths divisible by 4 the vector path (float4 / 4 halves per lane).
# W <= 32 puts 4 rows side by side in a warp (8 lanes per row), W <= 64 two rows (16 lanes), wider rows
# one row per warp and several 128-column segments; H > rows per block gives several chunks.
SHAPES = [(1, 1, 1, 1), (1, 1, 3, 517), (1, 1, 517, 3), (2, 3, 37, 70), (1, 2, 130, 257),
          (1, 1, 3, 516), (2, 3, 37, 72), (1, 2, 130, 256), (2, 3, 41, 64), (1, 2, 19, 62), (3, 2, 70, 32),
          (1, 1, 45, 30), (1, 1, 600, 4)]
OPS = ["top_left", "bottom_right", "top", "bottom", "left", "right"]


def _inputs_for(op, a, b):
    return (a, b) if op in ("top_left", "bottom_right") else ((a,) if op in ("top", "bottom") else (b,))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_all_ops_match_reference(emulated_kernel, shape, dtype):
    a, b = make_inputs(shape, DTYPES[dtype], seed=sum(shape))
    for op in OPS:
        inputs = _inputs_for(op, a, b)
        got = run_kernel(emulated_kernel, op, *inputs)
        want = reference(op, *inputs)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {dtype} {shape}")


@pytest.mark.parametrize("sm_count", [132, 2])
def test_many_planes(emulated_kernel, sm_count):
    # 66 planes: each its own block with 132 SMs; 32 blocks walking about two planes each with 2 SMs.
    a, b = make_inputs((2, 33, 5, 9), np.float16, seed=11)
    env = {"CORNERPOOL_EMULATION_SM_COUNT": str(sm_count)}
    for op in ("bottom_right", "top_left"):
        np.testing.assert_array_equal(run_kernel(emulated_kernel, op, a, b, env=env), reference(op, a, b))


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


@pytest.mark.parametrize("sm_count", [1, 3, 132])
@pytest.mark.parametrize("width", [136, 134], ids=["vector", "scalar"])
def test_block_sizes_chosen_from_the_gpu_give_the_same_result(emulated_kernel, sm_count, width):
    # 6 planes: 1 SM -> 4-warp blocks (5 chunks of 16 rows), 3 SMs -> 8 warps, 132 SMs -> 16 warps (2 chunks).
    a, b = make_inputs((2, 3, 70, width), np.float32, seed=width + sm_count)
    env = {"CORNERPOOL_EMULATION_SM_COUNT": str(sm_count)}
    for op in OPS:
        inputs = _inputs_for(op, a, b)
        np.testing.assert_array_equal(run_kernel(emulated_kernel, op, *inputs, env=env), reference(op, *inputs),
                                      err_msg=f"{op} sm_count={sm_count}")


def make_nan_inputs(shape, dtype, seed):
    """make_inputs plus NaNs sprinkled through both tensors (about 1 in 40 elements)."""
    a, b = make_inputs(shape, dtype, seed)
    rng = np.random.default_rng(seed + 1)
    for x in (a, b):
        flat = x.reshape(-1)
        flat[rng.integers(0, flat.size, max(1, flat.size // 40))] = np.nan
    return a, b


@pytest.mark.parametrize("variant", ["sm80", "sm75"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", [(2, 2, 37, 72), (2, 2, 37, 70), (2, 2, 9, 64), (1, 3, 33, 32)],
                         ids=lambda s: "x".join(map(str, s)))
def test_nan_inf_and_ties_in_every_path_and_both_max_forms(request, variant, shape, dtype):
    """NaN must win over everything (also -inf and +inf) in the max.NaN form (sm_80+) and the compare form
    (sm_75), in the vector and scalar paths and with rows side by side in a warp."""
    exe = request.getfixturevalue("emulated_kernel" if variant == "sm80" else "emulated_kernel_sm75")
    a, b = make_nan_inputs(shape, DTYPES[dtype], seed=sum(shape))
    assert np.isnan(a).any() and np.isnan(b).any() and np.isinf(b).any()
    for op in OPS:
        inputs = _inputs_for(op, a, b)
        np.testing.assert_array_equal(run_kernel(exe, op, *inputs), reference(op, *inputs), err_msg=f"{op} {variant}")


@pytest.mark.parametrize("dtype,offset", [("float32", 4), ("float32", 8), ("float16", 2), ("float16", 4)])
def test_misaligned_tensors_take_the_scalar_path(emulated_kernel, dtype, offset):
    # W % 4 == 0, but the tensors start `offset` bytes past an aligned address: a vector access there would
    # fault on the GPU (the emulation aborts on it), so the launch must pick the element-wise path.
    a, b = make_inputs((1, 2, 37, 72), DTYPES[dtype], seed=offset)
    env = {"CORNERPOOL_TEST_OFFSET_BYTES": str(offset)}
    for op in ("top_left", "bottom_right", "left"):
        inputs = _inputs_for(op, a, b)
        np.testing.assert_array_equal(run_kernel(emulated_kernel, op, *inputs, env=env), reference(op, *inputs))


@pytest.mark.parametrize("width", [2 ** 30, 2 ** 31 - 129])
@pytest.mark.parametrize("op", ["top_left", "bottom_right", "top", "bottom"])
def test_huge_widths_are_refused_before_any_launch(emulated_kernel, op, width):
    # 4 KiB + 4 * W bytes of shared memory: at W = 2^30 this wrapped to 4 KiB in an int, passed the 48 KiB
    # check and the kernel wrote 4 GiB past its shared memory. No buffers are given ("-"): a launch would
    # touch memory that is not there.
    for dtype in ("float32", "float16"):
        stats = {}
        status = run_kernel(emulated_kernel, op, shape=(1, 1, 1, width), dtype=dtype, expect_status=True, stats=stats)
        assert "status -5" in status and "width too large" in status
        assert stats["launches"] == 0


def test_shared_memory_opt_in_is_set_once_per_device_not_at_every_launch(emulated_kernel):
    # 12200 columns need 4 KiB + 48.8 KB > 48 KiB: the kernel's limit must be raised before the launch (the
    # emulated launch fails otherwise, like CUDA's), and the device queried and the attribute set only once
    # for three calls.
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 12200)).astype(np.float32)
    stats = {}
    env = {"CORNERPOOL_EMULATION_SHARED_OPTIN": str(99 * 1024), "CORNERPOOL_TEST_REPEAT": "3"}
    np.testing.assert_array_equal(run_kernel(emulated_kernel, "bottom", x, env=env, stats=stats), bottom_pool(x))
    assert stats == {"device_queries": 2, "attribute_sets": 1, "launches": 3}  # SM count + opt-in limit, once
    # Without the opt-in the same width is refused with the documented status, nothing launched.
    stats = {}
    status = run_kernel(emulated_kernel, "bottom", x, expect_status=True, stats=stats)
    assert "status -5" in status and stats["launches"] == 0


def test_narrow_rows_share_a_warp_without_mixing(emulated_kernel):
    # By hand: W = 2 (four rows side by side in a warp, 8 lanes each). A row's pool must not see its
    # neighbours', and the column pool must cross the rows held by different lane groups.
    a = np.array([[[[1, 9], [5, 2], [0, 0], [7, 1], [3, 3]]]], np.float32)  # H = 5 rows
    b = np.array([[[[4, 1], [0, 8], [6, 2], [-1, -5], [2, 9]]]], np.float32)
    got = run_kernel(emulated_kernel, "top_left", a, b)
    # TopPool(a): column maxima from y down: col0 [7,7,7,7,3], col1 [9,3,3,3,3]; LeftPool(b): max(b[y, x:]).
    want = np.array([[7 + 4, 9 + 1], [7 + 8, 3 + 8], [7 + 6, 3 + 2], [7 - 1, 3 - 5], [3 + 9, 3 + 9]], np.float32)
    np.testing.assert_array_equal(got[0, 0], want)


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
    outcomes = []
    for shape, sm_count in (((1, 1, 70, 130), 132), ((1, 1, 70, 132), 1)):  # scalar / vector path, 16 / 4 warps
        a, b = make_inputs(shape, np.float32, seed=9)
        for schedule in ("forward", "reverse", "random:3"):
            proc_env = {"CORNERPOOL_EMULATION_SM_COUNT": str(sm_count)}
            got = run_kernel(exe, "top_left", a, b, schedule=schedule, env=proc_env)
            outcomes.append(np.array_equal(got, reference("top_left", a, b), equal_nan=True))
    assert not all(outcomes), "removing a barrier went unnoticed"
