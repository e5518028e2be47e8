"""Decode: hand-built heat maps with known boxes, and the loop-based oracle on random heads."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cornernet_deploy.runtime.decode import (Corners, decode, decode_outputs, max_pool,
                                             pair_corners, peak_suppress, topk_corners, topk_desc)
from cornernet_deploy.contract.arch import TestConfig as Cfg
from reference_official import ref_decode
from support import HEADS, plant, random_heads

torch.set_num_threads(1)



def sig(x):
    """torch's float32 sigmoid (the official one), on its SIMD path (a 64-element call)."""
    return float(torch.sigmoid(torch.full((64,), x, dtype=torch.float32))[0])


def empty_heads(n=1, c=3, h=16, w=16, low=-20.0):
    """Flat, very low heat everywhere (ties broken by index), zero tags/offsets."""
    return dict(tl_heat=np.full((n, c, h, w), low, np.float32),
                br_heat=np.full((n, c, h, w), low, np.float32),
                tl_tag=np.zeros((n, 1, h, w), np.float32), br_tag=np.zeros((n, 1, h, w), np.float32),
                tl_off=np.zeros((n, 2, h, w), np.float32), br_off=np.zeros((n, 2, h, w), np.float32))


def run_decode(h, **kw):
    return decode(*(h[k] for k in HEADS), **kw)


# --- hand-built ------------------------------------------------------------------------------

def test_one_planted_pair_gives_the_hand_computed_row():
    h = empty_heads()
    plant(h, 0, "tl", 1, 2, 3, 2.0, tag=0.3, off=(0.25, 0.5))
    plant(h, 0, "br", 1, 10, 12, 1.0, tag=0.1, off=(0.75, 0.125))
    dets = run_decode(h, k=4, ae_threshold=0.5, num_dets=16)
    assert dets.shape == (1, 16, 8) and dets.dtype == np.float32
    s = (np.float32(sig(2.0)) + np.float32(sig(1.0))) / np.float32(2)
    np.testing.assert_array_equal(dets[0, 0], np.float32(
        [3.25, 2.5, 12.75, 10.125, s, sig(2.0), sig(1.0), 1]))
    # the other pairs involve the flat background corners (ties: lowest flat index first):
    # rejected, or valid with a negligible score
    assert (dets[0, 1:, 4] < 1e-6).all()


@pytest.mark.parametrize("case", ["tag", "class", "width", "height"])
def test_rejection_rules(case):
    h = empty_heads()
    plant(h, 0, "tl", 1, 5, 5, 2.0, tag=0.0, off=(0.5, 0.5))
    br = dict(c=1, y=9, x=9, tag=0.4, off=(0.0, 0.0))
    if case == "tag":
        br["tag"] = 0.51                    # |0 - 0.51| > 0.5
    elif case == "class":
        br["c"] = 2
    elif case == "width":                   # same integer column, offsets make br_x < tl_x
        br.update(x=5, off=(0.25, 0.0))
    elif case == "height":
        br.update(y=5, off=(0.0, 0.25))
    plant(h, 0, "br", br["c"], br["y"], br["x"], 2.0, br["tag"], br["off"])
    dets = run_decode(h, k=2, ae_threshold=0.5, num_dets=4)
    assert dets[0, :, 4].max() < 1e-6        # the planted pair is gone


def test_equal_after_offsets_is_not_rejected():
    h = empty_heads()
    plant(h, 0, "tl", 0, 5, 5, 2.0, off=(0.5, 0.5))
    plant(h, 0, "br", 0, 5, 5, 2.0, off=(0.5, 0.5))       # zero-size box: br_x == tl_x
    dets = run_decode(h, k=2, ae_threshold=0.5, num_dets=4)
    assert dets[0, 0, 4] == np.float32(sig(2.0))


@pytest.mark.parametrize("where", ["tl_y0", "tl_x0", "br_ylast", "br_xlast"])
def test_no_border_rejects_corners_on_the_map_border(where):
    h = empty_heads(h=16, w=20)
    tl, br = [4, 4], [10, 12]
    if where == "tl_y0":
        tl[0] = 0
    elif where == "tl_x0":
        tl[1] = 0
    elif where == "br_ylast":
        br[0] = 15
    else:
        br[1] = 19
    plant(h, 0, "tl", 0, tl[0], tl[1], 2.0, off=(0.5, 0.5))
    plant(h, 0, "br", 0, br[0], br[1], 2.0)
    assert run_decode(h, k=2, ae_threshold=0.5, num_dets=4)[0, 0, 4] > 0
    assert (run_decode(h, k=2, ae_threshold=0.5, num_dets=4, no_border=True)[0, :, 4] == -1).all()


def test_peak_suppression_plateaus_and_borders():
    heat = np.zeros((1, 1, 5, 5), np.float32)
    heat[0, 0, 0, 0] = 0.9               # corner of the map: the -inf padding keeps it
    heat[0, 0, 0, 1] = 0.5               # next to a larger value: suppressed
    heat[0, 0, 3, 3] = heat[0, 0, 3, 4] = 0.7     # a plateau keeps both
    out = peak_suppress(heat)
    assert out[0, 0, 0, 0] == np.float32(0.9) and out[0, 0, 0, 1] == 0
    assert out[0, 0, 3, 3] == out[0, 0, 3, 4] == np.float32(0.7)
    assert out[0, 0, 2, 2] == 0          # 0 next to the 0.7 plateau


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_max_pool_equals_torch(kernel):
    x = np.random.RandomState(0).randn(2, 3, 9, 11).astype(np.float32)
    x[0, 0, 4, 4] = np.nan
    ref = F.max_pool2d(torch.from_numpy(x), kernel, stride=1, padding=(kernel - 1) // 2).numpy()
    np.testing.assert_array_equal(max_pool(x, kernel), ref)


def test_even_kernel_is_refused():
    with pytest.raises(ValueError):
        max_pool(np.zeros((1, 1, 4, 4), np.float32), 2)


# --- top-k ------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 60), st.integers(0, 70), st.integers(0, 2 ** 31 - 1),
       st.integers(1, 6))
def test_topk_desc_is_the_stable_descending_order(n, m, k, seed, levels):
    v = np.random.RandomState(seed).randint(0, levels, size=(n, m)).astype(np.float32)
    vals, inds = topk_desc(v, k)
    expect = np.argsort(-v, axis=1, kind="stable")[:, :min(k, m)]
    np.testing.assert_array_equal(inds, expect)
    np.testing.assert_array_equal(vals, np.take_along_axis(v, expect, 1))


# --- against the oracle -----------------------------------------------------------------------

@pytest.mark.parametrize("no_border", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_equals_the_official_loops(no_border, seed):
    rng = np.random.RandomState(seed)
    h = random_heads(rng, 2, 4, 20, 24)
    mine = run_decode(h, k=25, ae_threshold=0.5, num_dets=300, no_border=no_border)
    ref = ref_decode(*(h[k] for k in HEADS), K=25, ae_threshold=0.5, num_dets=300,
                     no_border=no_border)
    assert (mine[..., 4] > 0.05).sum() >= 10      # the case exercises real pairs
    np.testing.assert_array_equal(mine, ref)


def test_batch_elements_are_independent():
    h = random_heads(np.random.RandomState(5), 3, 3, 12, 12)
    both = run_decode(h, k=10, ae_threshold=0.5, num_dets=50)
    for b in range(3):
        one = run_decode({k: v[b:b + 1] for k, v in h.items()}, k=10, ae_threshold=0.5,
                         num_dets=50)
        np.testing.assert_array_equal(both[b:b + 1], one)


def test_graph_decode_outputs_feed_pair_corners():
    h = random_heads(np.random.RandomState(6), 2, 3, 12, 16)
    test = Cfg(top_k=10, num_dets=60, ae_threshold=0.5)
    raw = decode_outputs(h, test)
    tl = topk_corners(h["tl_heat"], h["tl_tag"], h["tl_off"], 10)
    br = topk_corners(h["br_heat"], h["br_tag"], h["br_off"], 10)
    assert tl.inds.dtype == np.int64 and tl.offs.shape == (2, 10, 2)
    graph = {f"{p}_{name}": getattr(c, field) for p, c in (("tl", tl), ("br", br))
             for name, field in (("scores", "scores"), ("inds", "inds"), ("tags", "tags"),
                                 ("offs", "offs"))}
    np.testing.assert_array_equal(decode_outputs(graph, test, out_hw=(12, 16)), raw)
    with pytest.raises(ValueError, match="out_hw"):
        decode_outputs(graph, test)


def test_pair_corners_accepts_plain_tuples_and_caps_num_dets():
    c = Corners(np.float32([[0.9, 0.8]]), np.int64([[0, 5]]), np.float32([[0, 0]]),
                np.zeros((1, 2, 2), np.float32))
    dets = pair_corners(tuple(c), c, (4, 4), 0.5, num_dets=100)
    assert dets.shape == (1, 4, 8)


def test_missing_outputs_are_named():
    with pytest.raises(ValueError, match="tl_heat"):
        decode_outputs({"foo": np.zeros(1)}, Cfg(top_k=1, num_dets=1, ae_threshold=0.5))


def test_same_input_twice_gives_identical_output():
    h = random_heads(np.random.RandomState(7), 1, 3, 12, 12)
    a = run_decode(h, k=12, ae_threshold=0.5, num_dets=100)
    b = run_decode({k: v.copy() for k, v in h.items()}, k=12, ae_threshold=0.5, num_dets=100)
    np.testing.assert_array_equal(a, b)


# --- torch's float32 sigmoid, bit for bit -----------------------------------------------------

def torch_simd_sigmoid(x):
    from reference_official import torch_sigmoid
    return torch_sigmoid(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


needs_simd_torch = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() == "DEFAULT",
    reason="torch runs without SIMD kernels here (libm expf sigmoid); the runtime reproduces "
           "torch's SIMD (SLEEF) sigmoid, the one of x86 AVX2/AVX-512 and aarch64 builds")


@needs_simd_torch
def test_sigmoid_equals_torch_bit_for_bit():
    from cornernet_deploy.runtime.decode import SIGMOID_ONE_FROM, SIGMOID_ZERO_UP_TO, sigmoid
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.normal(-4, 3, 200_000), rng.uniform(-120, 120, 200_000),
        np.linspace(10, 20, 100_000), np.linspace(-95, -80, 50_000),       # saturating
        rng.normal(0, 1e-3, 10_000), [0.0, -0.0, np.inf, -np.inf, 1e30, -1e30],
    ]).astype(np.float32)
    for edge in (SIGMOID_ONE_FROM, SIGMOID_ZERO_UP_TO):
        x = np.concatenate([x, [np.nextafter(edge, np.float32(-np.inf)), edge,
                                np.nextafter(edge, np.float32(np.inf))]]).astype(np.float32)
    mine, ref = sigmoid(x), torch_simd_sigmoid(x)
    assert mine.dtype == np.float32
    np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32))
    assert np.isnan(sigmoid(np.float32([np.nan]))).all()


heat_kinds = st.sampled_from(["noise", "saturated", "plateaus", "flat", "few_peaks"])


@needs_simd_torch
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), kind=heat_kinds, n=st.integers(1, 2),
       c=st.integers(1, 4), h=st.integers(3, 24), w=st.integers(3, 24), k=st.integers(1, 40),
       kernel=st.sampled_from([1, 3, 5]))
def test_decode_equals_the_official_loops_on_hard_maps(seed, kind, n, c, h, w, k, kernel):
    rng = np.random.RandomState(seed)
    d = random_heads(rng, n, c, h, w, peaks=4)
    for name in ("tl_heat", "br_heat"):
        shape = d[name].shape
        if kind == "saturated":      # many logits with the same float32 sigmoid (1.0 and below)
            d[name] = rng.uniform(12, 30, shape).astype(np.float32)
        elif kind == "plateaus":     # exact ties and equal neighbours
            d[name] = np.round(rng.randn(*shape)).astype(np.float32) * 4
        elif kind == "flat":         # one plateau: every pixel a peak, ties everywhere
            d[name] = np.full(shape, rng.choice([-95.0, -20.0, 0.0, 25.0]), np.float32)
        elif kind == "few_peaks":    # fewer than k non-zero peaks: zeros fill the top-k
            d[name] = np.full(shape, -100.0, np.float32)
            d[name].reshape(-1)[rng.randint(0, d[name].size, 2)] = rng.uniform(-5, 5, 2)
    mine = decode(*(d[key] for key in HEADS), k=k, ae_threshold=0.5, num_dets=60, kernel=kernel)
    ref = ref_decode(*(d[key] for key in HEADS), K=min(k, c * h * w), kernel=kernel,
                     ae_threshold=0.5, num_dets=min(60, min(k, c * h * w) ** 2))
    np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32))


@needs_simd_torch
def test_decode_of_official_size_maps_equals_the_official_loops():
    # one CornerNet-Squeeze-size map (80 x 64 x 64): the fast path with its sampled cut
    rng = np.random.RandomState(11)
    d = random_heads(rng, 1, 80, 64, 64, peaks=60)
    mine = run_decode(d, k=20, ae_threshold=0.5, num_dets=100)
    ref = ref_decode(*(d[key] for key in HEADS), K=20, ae_threshold=0.5, num_dets=100)
    np.testing.assert_array_equal(mine.view(np.uint32), ref.view(np.uint32))
