"""The corner-pool CUDA kernels on a real GPU, through their C API (ctypes), against PyTorch.

Reference: torch.cummax with flips (torch's own CUDA kernels), e.g. TopPool = flip(cummax(flip(x, H)), H).
Max is exact, so pools must match bit for bit; the fused FP16 sum must equal the float sum rounded once
(= torch's half add). Skipped without a CUDA GPU or nvcc.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from cornernet_deploy.errors import UserError
from cornernet_deploy.tensorrt import plugin_build

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch", reason="the GPU kernel tests compare against torch on CUDA")

MODES = {"top_left": 0, "bottom_right": 1}
DIRECTIONS = {"top": 0, "bottom": 1, "left": 2, "right": 3}
DTYPES = {torch.float32: 0, torch.float16: 1}
# W % 4 == 0: vector path (4 elements per lane and instruction), else element-wise; W <= 64 and <= 32 put
# 2 and 4 rows side by side in a warp; (8, 256, 128, 128) has more planes than resident blocks on any GPU.
SHAPES = [(1, 1, 1, 1), (1, 1, 3, 517), (1, 1, 517, 3), (2, 3, 37, 70), (1, 300, 16, 20), (3, 64, 128, 128),
          (1, 2, 200, 400), (2, 8, 64, 64), (1, 3, 70, 32), (1, 2, 37, 62), (8, 256, 128, 128)]
INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver


@pytest.fixture(scope="module")
def kernels():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch (torch.cuda.is_available() is False; the README's test set-up "
                    "pins a CPU torch: on a GPU machine run these with a CUDA torch, e.g. scripts/gpu_check.sh)")
    try:
        cache = Path(tempfile.gettempdir()) / "cornernet_deploy_tests" / "gpu-kernels"
        path = plugin_build.compile_kernel_library(cache, arch="native")
    except UserError as exc:
        pytest.skip(f"cannot build the kernels for this GPU: {exc}")
    lib = plugin_build.load_kernel_library(path)
    probe, probe_out = torch.zeros(1, 1, 1, 1, device="cuda"), torch.zeros(1, 1, 1, 1, device="cuda")
    status = lib.cornerPoolDirectional(0, 0, probe.data_ptr(), probe_out.data_ptr(), 1, 1, 1, 1, None)
    if status == INSUFFICIENT_DRIVER:
        pytest.skip("the GPU driver is older than the nvcc used to build the kernels (cudaErrorInsufficientDriver)")
    assert status == 0, lib.cornerPoolStatusString(status)
    torch.cuda.synchronize()
    return lib


def _stream():
    return torch.cuda.current_stream().cuda_stream


def run_fused(lib, mode, a, b):
    assert a.is_contiguous() and b.is_contiguous() and a.shape == b.shape and a.dtype == b.dtype
    out = torch.full_like(a, float("nan"))  # every element must be written
    status = lib.cornerPoolForward(MODES[mode], DTYPES[a.dtype], a.data_ptr(), b.data_ptr(), out.data_ptr(),
                                   *a.shape, _stream())
    assert status == 0, lib.cornerPoolStatusString(status).decode()
    torch.cuda.synchronize()
    return out


def run_directional(lib, direction, x):
    out = torch.full_like(x, float("nan"))
    status = lib.cornerPoolDirectional(DIRECTIONS[direction], DTYPES[x.dtype], x.data_ptr(), out.data_ptr(),
                                       *x.shape, _stream())
    assert status == 0, lib.cornerPoolStatusString(status).decode()
    torch.cuda.synchronize()
    return out


def _flipped_cummax(x, dim):
    return torch.flip(torch.cummax(torch.flip(x, [dim]), dim)[0], [dim])


def reference_directional(direction, x):
    return {"top": lambda: _flipped_cummax(x, 2), "bottom": lambda: torch.cummax(x, 2)[0],
            "left": lambda: _flipped_cummax(x, 3), "right": lambda: torch.cummax(x, 3)[0]}[direction]()


def reference_fused(mode, a, b):
    if mode == "top_left":
        vertical, horizontal = reference_directional("top", a), reference_directional("left", b)
    else:
        vertical, horizontal = reference_directional("bottom", a), reference_directional("right", b)
    return (vertical.float() + horizontal.float()).to(a.dtype)  # rounded once, like torch's half add


def assert_same(got, want):
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def make_inputs(shape, dtype, seed):
    """a: small integers (ties everywhere), b: continuous; both with some -inf, b with +inf."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randint(-6, 6, shape, generator=g).to(dtype)
    b = (torch.randn(shape, generator=g) * 100).to(dtype)
    if a.numel() > 4:
        a.view(-1)[torch.randint(0, a.numel(), (max(1, a.numel() // 50),), generator=g)] = float("-inf")
        b.view(-1)[torch.randint(0, b.numel(), (max(1, b.numel() // 50),), generator=g)] = float("-inf")
        b.view(-1)[torch.randint(0, b.numel(), (1,), generator=g)] = float("inf")
    return a.cuda(), b.cuda()


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_directional_pools_match_torch(kernels, shape, dtype):
    a, _ = make_inputs(shape, dtype, seed=sum(shape))
    for direction in DIRECTIONS:
        assert_same(run_directional(kernels, direction, a), reference_directional(direction, a))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_modes_match_torch(kernels, shape, dtype):
    a, b = make_inputs(shape, dtype, seed=7 * sum(shape))
    for mode in MODES:
        assert_same(run_fused(kernels, mode, a, b), reference_fused(mode, a, b))


def test_nan_propagates_like_torch_cummax(kernels):
    for dtype in DTYPES:
        a = torch.arange(24, dtype=dtype).reshape(1, 1, 4, 6)
        b = -torch.arange(24, dtype=dtype).reshape(1, 1, 4, 6)
        a[0, 0, 2, 1] = float("nan")
        b[0, 0, 1, 3] = float("nan")
        a, b = a.cuda(), b.cuda()
        top_left = run_fused(kernels, "top_left", a, b)
        expected_nan = torch.zeros(4, 6, dtype=torch.bool)
        expected_nan[0:3, 1] = True   # TopPool(a): rows 0..2 of column 1
        expected_nan[1, 0:4] = True   # LeftPool(b): columns 0..3 of row 1
        assert torch.equal(torch.isnan(top_left[0, 0]).cpu(), expected_nan)
        # Compare the non-NaN values with the reference computed on the CPU (NaN-aware cummax there too).
        assert_same(top_left.cpu(), reference_fused("top_left", a.cpu().float(), b.cpu().float()).to(dtype))
        bottom_right = run_fused(kernels, "bottom_right", a, b)
        assert_same(bottom_right.cpu(), reference_fused("bottom_right", a.cpu().float(), b.cpu().float()).to(dtype))


def test_half_sum_rounds_once_and_overflows_like_torch(kernels):
    a = torch.tensor([[[[1024.0, 60000.0], [0.5, -60000.0]]]], dtype=torch.float16, device="cuda")
    b = torch.tensor([[[[1025.0, 60000.0], [2048.0, -60000.0]]]], dtype=torch.float16, device="cuda")
    got = run_fused(kernels, "bottom_right", a, b)
    assert got[0, 0, 0, 0].item() == 2048.0 and got[0, 0, 0, 1].item() == float("inf")
    assert_same(got, reference_fused("bottom_right", a, b))


def test_wide_rows_use_the_shared_memory_opt_in(kernels):
    limit = kernels.cornerPoolMaxWidth()
    assert limit >= (64 * 1024 - 4096) // 4  # every sm_75+ GPU grants at least 64 KiB per block
    a, b = make_inputs((1, 2, 3, 12000), torch.float32, seed=1)  # 52 KiB of shared memory: above 48 KiB
    assert_same(run_fused(kernels, "top_left", a, b), reference_fused("top_left", a, b))
    too_wide = torch.zeros(1, 1, 1, limit + 1, device="cuda")
    scratch = torch.empty_like(too_wide)
    status = kernels.cornerPoolDirectional(0, 0, too_wide.data_ptr(), scratch.data_ptr(), 1, 1, 1, limit + 1,
                                           _stream())
    assert status == -5  # CORNER_POOL_WIDTH_TOO_LARGE
    assert_same(run_directional(kernels, "left", too_wide), too_wide)  # the row scan has no width limit


def test_runs_on_the_given_stream(kernels):
    a, b = make_inputs((2, 8, 64, 64), torch.float16, seed=3)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = torch.empty_like(a)
        status = kernels.cornerPoolForward(0, 1, a.data_ptr(), b.data_ptr(), out.data_ptr(), *a.shape,
                                           side.cuda_stream)
        assert status == 0
    side.synchronize()
    assert_same(out, reference_fused("top_left", a, b))


def test_misaligned_tensors_are_correct(kernels):
    # W % 4 == 0 but the tensors start one element past an aligned address: vector loads would fault there.
    for dtype in DTYPES:
        a, b = make_inputs((1, 3, 37, 73), dtype, seed=5)
        a, b = a[..., 1:].contiguous(), b[..., 1:].contiguous()  # (1, 3, 37, 72), freshly aligned
        sa, sb = torch.empty(a.numel() + 1, dtype=dtype, device="cuda"), torch.empty(b.numel() + 1, dtype=dtype,
                                                                                   device="cuda")
        ma, mb = sa[1:].view(a.shape), sb[1:].view(b.shape)
        ma.copy_(a)
        mb.copy_(b)
        out_storage = torch.full((a.numel() + 1,), float("nan"), dtype=dtype, device="cuda")
        out = out_storage[1:].view(a.shape)
        for mode in MODES:
            status = kernels.cornerPoolForward(MODES[mode], DTYPES[dtype], ma.data_ptr(), mb.data_ptr(), out.data_ptr(),
                                               *a.shape, _stream())
            assert status == 0, kernels.cornerPoolStatusString(status).decode()
            torch.cuda.synchronize()
            assert_same(out, reference_fused(mode, a, b))


def test_huge_width_is_refused_before_any_launch(kernels):
    # 4 KiB + 4 * 2^30 bytes of shared memory once wrapped in an int and launched out of bounds.
    tiny = torch.zeros(4, device="cuda")
    for width in (2 ** 30, 2 ** 31 - 129):
        status = kernels.cornerPoolForward(0, 0, tiny.data_ptr(), tiny.data_ptr(), tiny.data_ptr(), 1, 1, 1, width,
                                           _stream())
        assert status == -5  # CORNER_POOL_WIDTH_TOO_LARGE
    torch.cuda.synchronize()  # nothing was launched that could have faulted
