"""Soft-NMS: hand-computed cases (IoU with +1 pixels, Gaussian decay, the stale-row quirk) and
the literal per-row loops of nms.pyx (tests/helpers/reference_official.py) on random boxes."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cornernet_deploy.runtime.postprocess import (max_per_image, per_class_nms, soft_nms,
                                                  soft_nms_merge)
from cornernet_deploy.contract.arch import TestConfig as Cfg
from reference_official import ref_soft_nms
from support import random_boxes


def use_path(path):
    """Run soft-NMS on its numpy path or through the numba-compiled loops (same bits expected)."""
    import contextlib
    import os

    from cornernet_deploy.runtime import soft_nms_compiled

    @contextlib.contextmanager
    def chosen():
        before = os.environ.get("CORNERNET_DEPLOY_NUMBA")
        os.environ["CORNERNET_DEPLOY_NUMBA"] = "1" if path == "compiled" else "0"
        try:
            if path == "compiled" and not soft_nms_compiled.available():
                pytest.skip("numba is not installed (pip install 'cornernet-deploy[fast]')")
            yield
        finally:
            if before is None:
                os.environ.pop("CORNERNET_DEPLOY_NUMBA", None)
            else:
                os.environ["CORNERNET_DEPLOY_NUMBA"] = before
    return chosen()


PATHS = pytest.mark.parametrize("path", ["numpy", "compiled"])


def boxes(*rows):
    return np.array(rows, dtype=np.float32)


A = [0, 0, 9, 9]            # 10 x 10 with the +1 convention


def test_gaussian_decay_of_two_boxes_with_iou_one_third():
    # B = [5, 0, 14, 9]: iw = 9 - 5 + 1 = 5, ih = 10, inter 50, union 100 + 100 - 50 = 150
    b = boxes(A + [0.9], [5, 0, 14, 9, 0.8])
    keep = soft_nms(b, sigma=0.5, Nt=0.5, method=2)
    assert list(keep) == [0, 1]
    assert b[0, 4] == np.float32(0.9)
    assert b[1, 4] == pytest.approx(0.8 * math.exp(-(1 / 3) ** 2 / 0.5), rel=1e-6)   # 0.64059
    np.testing.assert_array_equal(b[:, :4], boxes(A, [5, 0, 14, 9]))


def test_linear_and_hard_methods():
    b = boxes(A + [0.9], [5, 0, 14, 9, 0.8])
    soft_nms(b, Nt=0.3, method=1)                       # IoU 1/3 > 0.3: score * (1 - 1/3)
    assert b[1, 4] == pytest.approx(0.8 * 2 / 3, rel=1e-6)
    b = boxes(A + [0.9], [5, 0, 14, 9, 0.8])
    soft_nms(b, Nt=0.5, method=1)                       # IoU below Nt: unchanged
    assert b[1, 4] == np.float32(0.8)
    b = boxes(A + [0.9], [5, 0, 14, 9, 0.8])
    keep = soft_nms(b, Nt=0.3, method=0)                # hard: weight 0 -> removed
    assert list(keep) == [0]
    # the removed row was the last one: "moved onto itself", its decayed score stays in the array
    np.testing.assert_array_equal(b, boxes(A + [0.9], [5, 0, 14, 9, 0]))


def test_plus_one_pixel_convention():
    touching = boxes(A + [0.9], [10, 0, 19, 9, 0.8])    # iw = 9 - 10 + 1 = 0: no overlap
    soft_nms(touching, method=2)
    assert touching[1, 4] == np.float32(0.8)
    sharing = boxes(A + [0.9], [9, 0, 18, 9, 0.8])      # iw = 1: IoU = 10 / 190
    soft_nms(sharing, method=2)
    assert sharing[1, 4] == pytest.approx(0.8 * math.exp(-(10 / 190) ** 2 / 0.5), rel=1e-6)


def test_stale_row_quirk_three_boxes():
    # rows: A 0.9; B = A with 0.005; C far away 0.7.
    # i = 0: A is the max. pos 1: B has IoU 1 -> 0.005 * e^-2 = 0.00068 < 0.001 -> row 1 is
    # overwritten by row N-1 = C (score 0.7), N = 2; pos 1 again: C does not overlap A.
    # i = 1: C alone. keep = [0, 1], and row 2 still holds C as it was when copied.
    b = boxes(A + [0.9], A + [0.005], [20, 20, 29, 29, 0.7])
    keep = soft_nms(b, method=2)
    assert list(keep) == [0, 1]
    np.testing.assert_array_equal(b, boxes(A + [0.9], [20, 20, 29, 29, 0.7], [20, 20, 29, 29, 0.7]))
    # CornerNet/Squeeze keep every row (C twice); Saccade uses the keep list
    dets = boxes(A + [0.9, 0, 0, 0], A + [0.005, 0, 0, 0], [20, 20, 29, 29, 0.7, 0, 0, 0])
    stale = per_class_nms(dets, 1, Cfg(top_k=1, num_dets=1, ae_threshold=1))
    kept = per_class_nms(dets, 1, Cfg(top_k=1, num_dets=1, ae_threshold=1, keep_stale_rows=False))
    assert len(stale[0]) == 3 and len(kept[0]) == 2
    np.testing.assert_array_equal(stale[0][1], stale[0][2])


def test_stale_row_of_a_moved_row_keeps_its_pre_move_score():
    # rows A 0.9, B = A 0.005, C overlapping A 0.6, D far 0.7: B is replaced by D (N-1),
    # C decays in place; row 3 keeps D as copied
    c = [3, 0, 12, 9]      # IoU with A = 70 / 130
    b = boxes(A + [0.9], A + [0.005], c + [0.6], [40, 40, 49, 49, 0.7])
    keep = soft_nms(b, method=2)
    assert list(keep) == [0, 1, 2]
    np.testing.assert_array_equal(b[[0, 1, 3], :], boxes(A + [0.9], [40, 40, 49, 49, 0.7],
                                                         [40, 40, 49, 49, 0.7]))
    assert b[2, 4] == pytest.approx(0.6 * math.exp(-(70 / 130) ** 2 / 0.5), rel=1e-6)


def test_max_is_first_occurrence_and_only_columns_0_to_4_move():
    b = boxes([0, 0, 9, 9, 0.5, 1, 2], [50, 50, 59, 59, 0.5, 3, 4])
    soft_nms(b, method=2)
    np.testing.assert_array_equal(b[:, :5], boxes([0, 0, 9, 9, 0.5], [50, 50, 59, 59, 0.5]))
    b = boxes([0, 0, 9, 9, 0.3, 1, 2], [50, 50, 59, 59, 0.8, 3, 4])
    soft_nms(b, method=2)
    np.testing.assert_array_equal(b, boxes([50, 50, 59, 59, 0.8, 1, 2], [0, 0, 9, 9, 0.3, 3, 4]))


def test_merge_two_boxes_by_hand():
    # hard NMS (IoU 81/161 > 0.3): weight 0 -> merge weight (1-0)^exp = 1
    # x1 = (0*0.5 + 2*0.5) / (0.5 + 0.5) = 1, x2 = (10*0.5 + 12*0.5) / 1 = 11
    b = boxes([0, 0, 10, 10, 0.9, 0.5, 0.5], [2, 2, 12, 12, 0.8, 0.5, 0.5])
    keep = soft_nms_merge(b, Nt=0.3, method=0, weight_exp=10)
    assert list(keep) == [0]
    np.testing.assert_array_equal(b[:, :5], boxes([1, 1, 11, 11, 0.9], [2, 2, 12, 12, 0]))


def test_soft_nms_needs_float32_in_place():
    with pytest.raises(TypeError):
        soft_nms(np.zeros((2, 5), np.float64))
    assert list(soft_nms(np.zeros((0, 5), np.float32))) == []


def test_max_per_image_ties_can_keep_more():
    per_class = [boxes([0, 0, 1, 1, 0.9], [0, 0, 1, 1, 0.5]), boxes([0, 0, 1, 1, 0.5], [0, 0, 1, 1, 0.1])]
    out = max_per_image(per_class, 2)            # 2nd largest score is 0.5: three rows >= 0.5
    assert [len(c) for c in out] == [2, 1]
    out = max_per_image(per_class, 10)
    assert [len(c) for c in out] == [2, 2]


# --- against the literal Cython loops ---------------------------------------------------------

params = dict(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(0, 40), quantized=st.booleans(),
              method=st.sampled_from([0, 1, 2]), sigma=st.sampled_from([0.5, 0.7]),
              threshold=st.sampled_from([0.001, 0.05, 0.3]))


@PATHS
@settings(max_examples=120, deadline=None)
@given(**params)
def test_soft_nms_equals_the_cython_loops(path, seed, n, quantized, method, sigma, threshold):
    b = random_boxes(seed, n, quantized)
    mine, ref = b.copy(), b.copy()
    with use_path(path):
        keep = soft_nms(mine, sigma=sigma, Nt=0.5, threshold=threshold, method=method)
    ref_keep = ref_soft_nms(ref, sigma=sigma, Nt=0.5, threshold=threshold, method=method)
    assert list(keep) == ref_keep
    np.testing.assert_array_equal(mine, ref)          # stale rows included, bit for bit


@settings(max_examples=80, deadline=None)
@given(**params)
def test_soft_nms_merge_equals_the_cython_loops(seed, n, quantized, method, sigma, threshold):
    b = random_boxes(seed, n, quantized)
    mine, ref = b.copy(), b.copy()
    keep = soft_nms_merge(mine, sigma=sigma, Nt=0.5, threshold=threshold, method=method,
                          weight_exp=10)
    ref_keep = ref_soft_nms(ref, sigma=sigma, Nt=0.5, threshold=threshold, method=method,
                            merge=True, weight_exp=10)
    assert list(keep) == ref_keep
    np.testing.assert_array_equal(mine, ref)


def test_large_class_is_fast():
    import time
    b = random_boxes(3, 1500, False)
    b[:, :4] *= 20                      # spread out: few removals, ~1500 sequential steps
    t0 = time.perf_counter()
    soft_nms(b, method=2)
    assert time.perf_counter() - t0 < 5.0


# --- many classes, large ones (the numpy pass path), against the Cython loops -------------------

@PATHS
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), quantized=st.booleans(), keep_stale=st.booleans(),
       threshold=st.sampled_from([0.001, 0.05]), method=st.sampled_from([0, 1, 2]))
def test_per_class_nms_large_classes_equal_the_cython_loops(path, seed, quantized, keep_stale,
                                                            threshold, method):
    rng = np.random.RandomState(seed)
    sizes = [int(rng.randint(0, 3)), int(rng.randint(65, 110)), int(rng.randint(0, 70)),
             int(rng.randint(65, 90))]                 # small and large classes side by side
    parts = []
    for cls, n in enumerate(sizes):
        b = random_boxes(int(rng.randint(2 ** 31)), n, quantized)
        parts.append(np.concatenate([b, np.full((n, 1), cls, np.float32)], axis=1))
    dets = np.concatenate(parts)[rng.permutation(sum(sizes))]
    cfg = Cfg(top_k=1, num_dets=1, ae_threshold=1, keep_stale_rows=keep_stale,
              soft_nms_threshold=threshold, soft_nms_method=method)
    with use_path(path):
        mine = per_class_nms(dets, 4, cfg)
    for cls in range(4):
        ref = np.ascontiguousarray(dets[dets[:, 7] == cls][:, 0:7])
        keep = ref_soft_nms(ref, sigma=cfg.soft_nms_sigma, Nt=cfg.soft_nms_nt,
                            threshold=threshold, method=cfg.soft_nms_method)
        np.testing.assert_array_equal(mine[cls], ref[:, 0:5] if keep_stale else ref[keep, 0:5])


def test_compiled_loops_are_loaded_from_numba_cache_in_a_new_process(tmp_path):
    """cache=True must hold across processes: a loop that closed over another jitted function got a
    new cache key in every process (numba keys a closure on its variables' pickles), so every
    `infer` start recompiled it (~3 s) and added one more file to the cache."""
    pytest.importorskip("numba", reason="numba is not installed (pip install 'cornernet-deploy[fast]')")
    import subprocess
    import sys
    code = ("import numpy as np\n"
            "from cornernet_deploy.runtime import soft_nms_compiled\n"
            "from cornernet_deploy.runtime.postprocess import soft_nms\n"
            "assert soft_nms_compiled.available()\n"
            "rng = np.random.default_rng(0)\n"
            "xy = rng.uniform(0, 50, (40, 2)).astype(np.float32)\n"
            "b = np.concatenate([xy, xy + 30, rng.uniform(0.01, 1, (40, 1)).astype(np.float32)], 1)\n"
            "soft_nms(b, method=2)\n")   # overlapping boxes: rows decay below the threshold and drop
    env = {"PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_DEBUG_CACHE": "1",
           "CORNERNET_DEPLOY_NUMBA": "1"}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            for _ in range(3)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    first, *later = [[line for line in run.stdout.splitlines() if line.startswith("[cache]")] for run in runs]
    assert any("soft_nms_loops" in line and "data saved" in line for line in first)
    for lines in later:
        assert not [line for line in lines if "saved" in line], lines
        assert any("soft_nms_loops" in line and "data loaded" in line for line in lines), lines
