"""Opt-in: our post-processing against the REAL official code, not our re-statement of it.

Runs the official torch ``_decode`` (``core/models/py_utils/utils.py``) and the compiled Cython
``soft_nms`` / ``soft_nms_merge`` (``core/external/nms.pyx``) of a CornerNet-Lite checkout and
requires bit-identical results. Skipped unless ``CORNERNET_LITE`` names such a checkout with the
extension built for this Python::

    git clone https://github.com/princeton-vl/CornerNet-Lite && cd CornerNet-Lite/core/external
    # numpy >= 2 dropped np.int_t, used only by the unused nms(); soft_nms is untouched:
    sed -i 's/np\\.int_t/np.intp_t/; s/dtype=np\\.int)/dtype=np.intp)/' nms.pyx
    pip install "cython<3" setuptools && python setup.py build_ext --inplace
    CORNERNET_LITE=$PWD/../.. python -m pytest -q tests/runtime/test_official_compiled.py

torch runs on one thread (every sigmoid element then takes torch's SIMD path; see
``reference_official.torch_sigmoid``). torch.topk leaves equal scores in an unspecified order,
so decoded rows are compared where the order is defined: the valid rows (score > -1), which
these continuous random heads never tie.
"""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cornernet_deploy.runtime.decode import decode
from cornernet_deploy.runtime.postprocess import per_class_nms, soft_nms, soft_nms_merge
from cornernet_deploy.contract.arch import get_arch
from official_code import load_official
from support import HEADS, random_boxes, random_heads

ROOT = os.environ.get("CORNERNET_LITE")


def _load_official():
    if not ROOT:
        pytest.skip("set CORNERNET_LITE to a CornerNet-Lite checkout with core/external/nms built "
                    "(see this file's docstring) to compare with the real official code")
    try:
        return load_official(ROOT)
    except FileNotFoundError as e:
        pytest.skip(f"{e} (build it: see this file's docstring)")
    except ImportError as e:
        pytest.skip(f"the official nms extension does not import here ({e}); rebuild it for this "
                    f"Python and numpy")


@pytest.fixture(scope="module")
def official():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _load_official()
    torch.set_num_threads(threads)


def bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("arch,classes,side,flip,seed", [
    ("cornernet", 80, 128, True, 0), ("cornernet", 80, 128, False, 1),
    ("cornernet-squeeze", 80, 64, True, 2), ("cornernet-saccade", 4, 64, False, 3)])
def test_decode_and_soft_nms_equal_the_compiled_official_code(official, arch, classes, side, flip,
                                                              seed):
    nms, utils = official
    cfg = get_arch(arch).test
    # planted objects fewer than K, so that most of them pair up within the top-K corners
    heads = random_heads(np.random.RandomState(seed), 2 if flip else 1, classes, side, side,
                         peaks=cfg.top_k // 2)
    heads["tl_tag"][:] = 0                      # the embedding rule passes: pairs are decided
    heads["br_tag"][:] = 0                      # by class, geometry and border
    h = [heads[k] for k in HEADS]
    ref = utils._decode(*(torch.from_numpy(a) for a in h), K=cfg.top_k, kernel=cfg.nms_kernel,
                        ae_threshold=cfg.ae_threshold, num_dets=cfg.num_dets,
                        no_border=cfg.no_border).numpy()
    mine = decode(*h, k=cfg.top_k, ae_threshold=cfg.ae_threshold, num_dets=cfg.num_dets,
                  kernel=cfg.nms_kernel, no_border=cfg.no_border)
    for b in range(len(ref)):
        valid = int((ref[b, :, 4] > -1).sum())
        assert valid >= 3 and (mine[b, :, 4] > -1).sum() == valid
        np.testing.assert_array_equal(bits(mine[b, :valid]), bits(ref[b, :valid]))
    # soft-NMS on the valid rows in image-like pixels, class by class as cornernet_inference
    rows = mine.reshape(-1, 8)
    rows = rows[rows[:, 4] > -1].copy()
    rows[:, 0:4] *= 4
    ours = per_class_nms(rows, 80, cfg)
    for j in range(80):
        theirs = rows[rows[:, 7] == j][:, 0:7].astype(np.float32)
        keep = nms.soft_nms(theirs, sigma=cfg.soft_nms_sigma, Nt=cfg.soft_nms_nt,
                            method=cfg.soft_nms_method)
        theirs = theirs[:, 0:5] if cfg.keep_stale_rows else theirs[keep, 0:5]
        np.testing.assert_array_equal(bits(ours[j]), bits(theirs))


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(0, 120), quantized=st.booleans(),
       method=st.sampled_from([0, 1, 2]), sigma=st.sampled_from([0.5, 0.7]),
       threshold=st.sampled_from([0.001, 0.05, 0.3]))
def test_soft_nms_equals_the_compiled_cython(official, seed, n, quantized, method, sigma, threshold):
    nms, _ = official
    b = random_boxes(seed, n, quantized)
    mine, theirs = b.copy(), b.copy()
    keep = soft_nms(mine, sigma=sigma, Nt=0.5, threshold=threshold, method=method)
    their_keep = nms.soft_nms(theirs, sigma=sigma, Nt=0.5, threshold=threshold, method=method)
    assert list(keep) == list(their_keep)
    np.testing.assert_array_equal(bits(mine), bits(theirs))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n=st.integers(0, 40), quantized=st.booleans(),
       method=st.sampled_from([0, 1, 2]), threshold=st.sampled_from([0.001, 0.05]))
def test_soft_nms_merge_equals_the_compiled_cython(official, seed, n, quantized, method, threshold):
    nms, _ = official
    b = random_boxes(seed, n, quantized)
    mine, theirs = b.copy(), b.copy()
    keep = soft_nms_merge(mine, sigma=0.5, Nt=0.5, threshold=threshold, method=method,
                          weight_exp=10)
    their_keep = nms.soft_nms_merge(theirs, sigma=0.5, Nt=0.5, threshold=threshold, method=method,
                                    weight_exp=10)
    assert list(keep) == list(their_keep)
    np.testing.assert_array_equal(bits(mine), bits(theirs))
