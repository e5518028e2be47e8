"""Training targets against values worked out by hand (official CornerNet sampler semantics)."""
import math

import numpy as np
import pytest

from cornernet_deploy.train.targets import (attention_targets, cornernet_targets, corner_radius,
                                            draw_gaussian, gaussian_2d, gaussian_radius,
                                            saccade_targets)


# --------------------------------------------------------------------------- gaussian_radius
def test_gaussian_radius_square_box_iou_03():
    # h = w = 10, overlap 0.3. The official three quadratics a r^2 - b r + c (third: + root):
    # 1) r^2 - 20 r + 100*0.7/1.3 = 0: disc = 400 - 4*53.846154 = 184.615385, sqrt = 13.587324,
    #    r1 = (20 - 13.587324) / 2 = 3.206338
    # 2) 4 r^2 - 40 r + 70 = 0: disc = 1600 - 1120 = 480, sqrt = 21.908902, r2 = 18.091098 / 8 = 2.261387
    # 3) 1.2 r^2 + 6 r - 70 = 0 (b3 = -6): disc = 36 + 336 = 372, sqrt = 19.287302,
    #    r3 = (-6 + 19.287302) / 2.4 = 5.536376
    assert gaussian_radius((10, 10), 0.3) == pytest.approx(2.261387, abs=1e-6)
    assert corner_radius(10, 10, 0.3) == 2


def test_gaussian_radius_is_min_of_three_roots_each_solving_its_quadratic():
    # h = 11, w = 10, overlap 0.7: every root must satisfy its own equation; the min is returned.
    h, w, o = 11, 10, 0.7
    quads = [(1, h + w, w * h * (1 - o) / (1 + o), -1),
             (4, 2 * (h + w), (1 - o) * w * h, -1),
             (4 * o, -2 * o * (h + w), (o - 1) * w * h, +1)]
    roots = []
    for a, b, c, sign in quads:
        r = (b + sign * math.sqrt(b * b - 4 * a * c)) / (2 * a)
        assert a * r * r - b * r + c == pytest.approx(0, abs=1e-9)
        roots.append(r)
    # by hand: r1 = (21 - sqrt(441 - 4*19.411765)) / 2 = (21 - 19.061819) / 2 = 0.969091
    #          r2 = (42 - sqrt(1764 - 16*33)) / 8 = (42 - 35.156792) / 8 = 0.855401
    assert roots[0] == pytest.approx(0.969091, abs=1e-6)
    assert roots[1] == pytest.approx(0.855401, abs=1e-6)
    assert gaussian_radius((h, w), o) == pytest.approx(min(roots), abs=1e-12)
    assert corner_radius(10, 11, o) == 0


def test_corner_radius_rounds_sizes_up_first():
    # w = 9.2 -> ceil 10, h = 10.25 -> ceil 11: radius of (11, 10) at 0.3 is 2.366939 -> 2
    # (q2: 4r^2 - 42 r + 77, disc 1764 - 1232 = 532, r = (42 - 23.065125) / 8)
    assert gaussian_radius((11, 10), 0.3) == pytest.approx((42 - math.sqrt(532)) / 8)
    assert corner_radius(9.2, 10.25, 0.3) == 2
    assert corner_radius(0.5, 0.5, 0.3) == 0  # tiny box: max(0, int(r)) with r < 1


# --------------------------------------------------------------------------- gaussian drawing
def test_gaussian_2d_radius_2():
    g = gaussian_2d(5, sigma=5 / 6)
    assert g.shape == (5, 5) and g[2, 2] == 1.0
    # exp(-d^2 / (2 sigma^2)) with 2 sigma^2 = 50/36 -> exp(-0.72 d^2)
    assert g[2, 3] == pytest.approx(math.exp(-0.72))
    assert g[0, 0] == pytest.approx(math.exp(-0.72 * 8))
    assert np.array_equal(g, g.T) and np.array_equal(g, g[::-1, ::-1])


def test_draw_gaussian_clips_at_the_border_and_combines_by_max():
    heat = np.zeros((6, 6), np.float32)
    draw_gaussian(heat, (0, 0), 2)
    assert heat[0, 0] == 1 and heat[0, 2] == pytest.approx(math.exp(-0.72 * 4))
    assert heat[3:, :].sum() == 0 and heat[:, 3:].sum() == 0
    draw_gaussian(heat, (1, 0), 2)  # neighbour: max, not sum
    assert heat.max() == 1 and heat[0, 1] == 1 and heat[0, 0] == 1


# --------------------------------------------------------------------------- one known box
def test_cornernet_targets_for_a_known_box():
    # input 128 -> output 32 (ratio 0.25); box (10, 20) - (50, 61), class 1 of 2
    t = cornernet_targets([[10, 20, 50, 61]], [1], num_classes=2, input_size=(128, 128),
                          output_size=(32, 32), gaussian_iou=0.3)
    # tl: fx = 2.5 -> cell 2, offset 0.5; fy = 5.0 -> cell 5, offset 0
    # br: fx = 12.5 -> 12, 0.5; fy = 15.25 -> 15, 0.25
    assert t["tl_ind"][0] == 5 * 32 + 2 and t["br_ind"][0] == 15 * 32 + 12
    np.testing.assert_allclose(t["tl_off"][0], [0.5, 0.0])
    np.testing.assert_allclose(t["br_off"][0], [0.5, 0.25])
    assert t["mask"].tolist() == [1] + [0] * 127
    assert t["tl_off"].shape == (128, 2) and t["tl_ind"].dtype == np.int64
    # size in cells: w = 40 * 0.25 = 10, h = 41 * 0.25 = 10.25 -> ceil 11 -> radius 2 (see above)
    tl = t["tl_heat"][1]
    assert tl[5, 2] == 1 and tl[5, 3] == pytest.approx(math.exp(-0.72), rel=1e-6)
    assert tl[6, 4] == pytest.approx(math.exp(-0.72 * 5), rel=1e-6)
    assert tl[5, 5] == 0 and tl[8, 2] == 0            # 3 cells away: outside the 5x5 bump
    assert np.count_nonzero(tl) == 25 and (tl == 1).sum() == 1
    assert t["br_heat"][1, 15, 12] == 1 and np.count_nonzero(t["br_heat"][1]) == 25
    assert not t["tl_heat"][0].any() and not t["br_heat"][0].any()
    assert t["tl_heat"].dtype == np.float32 and t["tl_heat"].shape == (2, 32, 32)


def test_no_objects_and_label_checks():
    t = cornernet_targets(np.zeros((0, 4)), [], 3, (64, 64), (16, 16))
    assert not t["tl_heat"].any() and not t["mask"].any()
    with pytest.raises(ValueError):
        cornernet_targets([[0, 0, 4, 4]], [3], 3, (64, 64), (16, 16))
    with pytest.raises(ValueError):
        cornernet_targets([[0, 0, 4, 4]], [0, 1], 3, (64, 64), (16, 16))


def test_more_than_128_objects_keeps_bumps_and_fills_128_slots():
    boxes = [[(i % 20) * 6, (i // 20) * 6, (i % 20) * 6 + 5, (i // 20) * 6 + 5] for i in range(140)]
    t = cornernet_targets(boxes, [0] * 140, 1, (127, 127), (128, 128))
    assert t["mask"].sum() == 128
    assert (t["tl_heat"][0] == 1).sum() == 140


def test_non_square_ratios():
    # input (H 64, W 128) -> output (16, 64): width ratio 0.5, height ratio 0.25
    t = cornernet_targets([[3, 5, 9, 13]], [0], 1, (64, 128), (16, 64))
    # tl: x 1.5 -> 1, .5 ; y 1.25 -> 1, .25 ; br: x 4.5 -> 4, .5 ; y 3.25 -> 3, .25
    assert t["tl_ind"][0] == 1 * 64 + 1 and t["br_ind"][0] == 3 * 64 + 4
    np.testing.assert_allclose(t["tl_off"][0], [0.5, 0.25])
    np.testing.assert_allclose(t["br_off"][0], [0.5, 0.25])


# --------------------------------------------------------------------------- Saccade
def test_saccade_targets_valid_masks_and_attention():
    # 255 input -> 64 output (ratio 64/255). Object A (class 0) 100 px: positive.
    # Object B (class 1) 10 px: smaller than min_scale 16 -> ignore region, no tag.
    # Object C (class 0) lost half its area (kept=False): ignore region too.
    boxes = [[20, 30, 120, 110], [200, 200, 210, 208], [150, 10, 190, 60]]
    t = saccade_targets(boxes, [0, 1, 0], [True, True, False], num_classes=2,
                        input_size=(255, 255), output_size=(64, 64), gaussian_iou=0.5)
    assert t["mask"].tolist()[:2] == [1, 0]
    # A: tl x = 20 * 64/255 = 5.0196 -> 5 ; y = 30 * 64/255 = 7.529 -> 7
    assert t["tl_ind"][0] == 7 * 64 + 5
    assert t["tl_off"][0] == pytest.approx([20 * 64 / 255 - 5, 30 * 64 / 255 - 7], abs=1e-6)
    assert t["tl_heat"][0, 7, 5] == 1
    # B: cell x = 200*64/255 = 50.19 -> 50, y 50: not in the heat map, valid = 0 there
    assert t["tl_heat"][1].sum() == 0 and t["tl_valid"][1, 50, 50] == 0
    assert t["tl_valid"][0, 7, 5] == 1 and t["tl_valid"][1, 7, 5] == 1
    # C: tl x = 150*64/255 = 37.6 -> 37, y 2.5 -> 2
    assert t["tl_valid"][0, 2, 37] == 0 and t["tl_heat"][0, 2, 37] == 0
    assert set(np.unique(t["tl_valid"])) <= {0.0, 1.0}
    # attention: longer sides A 100 -> map 0 (96..256, 1/16), B 10 -> map 2 (0..32, 1/4),
    # C 50 -> map 1 (32..96, 1/8), at the box centres; every box counts, valid or not
    a0, a1, a2 = t["atts"]
    assert a0.shape == (1, 16, 16) and a1.shape == (1, 32, 32) and a2.shape == (1, 64, 64)
    assert a0[0, 70 // 16, 70 // 16] == 1 and a0.sum() == 1        # centre (70, 70)
    assert a2[0, 204 // 4, 205 // 4] == 1 and a2.sum() == 1        # centre (205, 204)
    assert a1[0, 35 // 8, 170 // 8] == 1 and a1.sum() == 1         # centre (170, 35)


def test_attention_range_bounds_are_inclusive():
    # a 32 px object is in both [32, 96] and [0, 32]; a 96 px one in [96, 256] and [32, 96]
    maps = attention_targets([[0, 0, 32, 10], [100, 100, 196, 120]], (255, 255))
    assert [m.sum() for m in maps] == [1, 2, 1]
