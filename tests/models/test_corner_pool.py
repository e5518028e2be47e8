"""Corner pooling against a brute-force loop (the definition), plus gradients and export forms."""
import numpy as np
import pytest
import torch

from cornernet_deploy.models.corner_pool import (CornerPool, bottom_pool, corner_pool,
                                                 corner_pool_standard_ops, doubling_steps,
                                                 left_pool, right_pool, top_pool)

torch.set_num_threads(1)


def brute(x: np.ndarray, direction: str) -> np.ndarray:
    """out[n, c, y, x] = max of the window, written as explicit loops over every position."""
    n_, c_, h, w = x.shape
    out = np.empty_like(x)
    for n in range(n_):
        for c in range(c_):
            for y in range(h):
                for xx in range(w):
                    if direction == "top":
                        win = x[n, c, y:, xx]
                    elif direction == "bottom":
                        win = x[n, c, : y + 1, xx]
                    elif direction == "left":
                        win = x[n, c, y, xx:]
                    else:
                        win = x[n, c, y, : xx + 1]
                    out[n, c, y, xx] = np.nan if np.isnan(win).any() else win.max()
    return out


POOLS = {"top": top_pool, "bottom": bottom_pool, "left": left_pool, "right": right_pool}
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 2, 7, 5), (1, 1, 1, 9), (1, 1, 9, 1), (2, 1, 3, 17)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("direction", list(POOLS))
def test_directional_pools_match_brute_force(direction, shape):
    rng = np.random.default_rng(hash((direction, shape)) % 2**32)
    x = rng.normal(size=shape).astype(np.float32) - 0.5  # mostly negative values too
    got = POOLS[direction](torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, brute(x, direction))


@pytest.mark.parametrize("direction", list(POOLS))
def test_ties_and_infinities(direction):
    rng = np.random.default_rng(1)
    x = rng.integers(-2, 3, size=(2, 2, 6, 5)).astype(np.float32)  # many ties
    x[0, 0, 2, 3] = -np.inf
    x[1, 1, :, :] = -np.inf  # an all -inf plane stays -inf
    got = POOLS[direction](torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, brute(x, direction))
    assert np.isneginf(got[1, 1]).all()


@pytest.mark.parametrize("direction", list(POOLS))
def test_nan_propagates_to_every_window_that_contains_it(direction):
    x = np.arange(20, dtype=np.float32).reshape(1, 1, 4, 5)
    x[0, 0, 2, 1] = np.nan
    got = POOLS[direction](torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(brute(x, direction)))


def test_hand_computed_top_left():
    a = torch.tensor([[1.0, 5.0], [3.0, 2.0], [0.0, 4.0]]).view(1, 1, 3, 2)
    b = torch.tensor([[2.0, 1.0], [0.0, 6.0], [7.0, -1.0]]).view(1, 1, 3, 2)
    # TopPool(a): column maxima looking down; LeftPool(b): row maxima looking right
    top = [[3, 5], [3, 4], [0, 4]]
    left = [[2, 1], [6, 6], [7, -1]]
    expected = torch.tensor(top, dtype=torch.float32) + torch.tensor(left, dtype=torch.float32)
    assert torch.equal(corner_pool(a, b, "top_left")[0, 0], expected)
    bottom = [[1, 5], [3, 5], [3, 5]]
    right = [[2, 2], [0, 6], [7, 7]]
    expected = torch.tensor(bottom, dtype=torch.float32) + torch.tensor(right, dtype=torch.float32)
    assert torch.equal(corner_pool(a, b, "bottom_right")[0, 0], expected)


@pytest.mark.parametrize("mode", ["top_left", "bottom_right"])
def test_fused_module_is_sum_of_directional_pools(mode):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(2, 3, 6, 9)).astype(np.float32)
    b = rng.normal(size=(2, 3, 6, 9)).astype(np.float32)
    first, second = ("top", "left") if mode == "top_left" else ("bottom", "right")
    expected = brute(a, first) + brute(b, second)
    got = CornerPool(mode)(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(got, expected)


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mode"):
        CornerPool("top_right")
    with pytest.raises(ValueError, match="equal shapes"):
        corner_pool(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), "top_left")


@pytest.mark.parametrize("direction", list(POOLS))
def test_gradcheck_without_ties(direction):
    # distinct values: the cumulative max is differentiable and gradcheck is meaningful
    x = torch.randperm(3 * 4 * 5, generator=torch.Generator().manual_seed(3)).double().view(1, 3, 4, 5) / 7
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(POOLS[direction], (x,))


def test_gradient_goes_to_the_window_maximum():
    # TopPool on one column [1, 3, 2]: outputs [3, 3, 2] -> d(sum)/dx = [0, 2, 1]
    x = torch.tensor([1.0, 3.0, 2.0]).view(1, 1, 3, 1).requires_grad_(True)
    top_pool(x).sum().backward()
    assert x.grad.view(-1).tolist() == [0.0, 2.0, 1.0]
    # ties: the documented rule routes to the nearest maximal element: [2, 2] -> [1, 1]
    y = torch.tensor([2.0, 2.0]).view(1, 1, 2, 1).requires_grad_(True)
    top_pool(y).sum().backward()
    assert y.grad.view(-1).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("mode", ["top_left", "bottom_right"])
@pytest.mark.parametrize("hw", [(1, 1), (5, 3), (8, 8), (9, 17)])
def test_standard_op_form_is_exact(mode, hw):
    rng = np.random.default_rng(11)
    a = torch.from_numpy(rng.normal(size=(1, 2) + hw).astype(np.float32))
    b = torch.from_numpy(rng.normal(size=(1, 2) + hw).astype(np.float32))
    steps = doubling_steps(max(hw))
    assert torch.equal(corner_pool_standard_ops(a, b, mode, steps), corner_pool(a, b, mode))
    # more steps than needed change nothing (dynamic-size exports use a fixed upper bound)
    assert torch.equal(corner_pool_standard_ops(a, b, mode, steps + 3), corner_pool(a, b, mode))


def test_doubling_steps():
    assert [doubling_steps(n) for n in (1, 2, 3, 4, 5, 128, 129)] == [0, 1, 2, 2, 3, 7, 8]
