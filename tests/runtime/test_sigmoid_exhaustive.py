"""Opt-in (about 19 minutes on one loaded core): ``runtime.decode.sigmoid`` equals torch's float32 CPU
sigmoid on every one of the 2^32 float32 bit patterns, and torch's sigmoid is monotone
non-decreasing (which the decode's peak suppression and top-K on the logits rely on).
Run with ``CORNERNET_EXHAUSTIVE=1 python -m pytest -q tests/runtime/test_sigmoid_exhaustive.py``."""
import os

import numpy as np
import pytest
import torch

from cornernet_deploy.runtime.decode import sigmoid

pytestmark = pytest.mark.skipif(not os.environ.get("CORNERNET_EXHAUSTIVE"),
                                reason="exhaustive sweep of all float32 inputs (~19 min): set "
                                       "CORNERNET_EXHAUSTIVE=1")
CHUNK = 1 << 24


def test_every_float32_input_equals_torch_and_torch_is_monotone():
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("torch without SIMD kernels uses libm expf; the runtime reproduces its SIMD sigmoid")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # one chunk: every element on torch's SIMD path (2^24 % 64 == 0)
    try:
        for c in range((1 << 32) // CHUNK):
            x = np.arange(c * CHUNK, (c + 1) * CHUNK, dtype=np.uint64).astype(np.uint32).view(np.float32)
            ref = torch.sigmoid(torch.from_numpy(x)).numpy()
            mine = sigmoid(x)
            same = (mine.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(mine) & np.isnan(ref))
            assert same.all(), f"chunk {c}: {x[~same][:5]}"
        # monotone: +0 .. +inf ascending bit patterns, and -0 .. -inf descending values
        for sign in (0, 1):
            prev = None
            for c in range(128):
                bits = np.arange(c * CHUNK, (c + 1) * CHUNK, dtype=np.uint64).astype(np.uint32)
                x = (bits | np.uint32(sign << 31)).view(np.float32)
                s = torch.sigmoid(torch.from_numpy(x[~np.isnan(x)])).numpy().astype(np.float64)
                if sign:
                    s = -s                    # values descend as the bits ascend
                assert (np.diff(s) >= 0).all() and (prev is None or not s.size or s[0] >= prev)
                prev = s[-1] if s.size else prev
    finally:
        torch.set_num_threads(threads)
