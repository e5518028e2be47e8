"""Augmentation: exact geometry rules, hand-computed photometric steps, and box invariants."""
import numpy as np
import pytest

from cornernet_deploy.train import augment as A
from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR


class FixedRng:
    """A stand-in Generator returning scripted draws (to check the arithmetic by hand)."""

    def __init__(self, uniforms=(), perm=(0, 1, 2), normal=(0.0, 0.0, 0.0)):
        self.uniforms = list(uniforms)
        self.perm = np.array(perm)
        self.normal_values = np.array(normal)

    def permutation(self, n):
        return self.perm

    def uniform(self, low=0.0, high=1.0):
        return self.uniforms.pop(0)

    def normal(self, scale=1.0, size=None):
        return self.normal_values


def test_scale_lists():
    assert len(A.CORNERNET_RAND_SCALES) == 8
    assert A.CORNERNET_RAND_SCALES[0] == pytest.approx(0.6)
    assert A.CORNERNET_RAND_SCALES[-1] == pytest.approx(1.3)
    assert len(A.SACCADE_RAND_SCALES) == 7 and A.SACCADE_RAND_SCALES[-1] == pytest.approx(1.1)


def test_get_border_halves_until_the_centre_range_exists():
    assert A.get_border(128, 511) == 128   # 511 - 128 > 128
    assert A.get_border(128, 200) == 64    # 200 - 128 <= 128; 200 - 64 > 64
    assert A.get_border(128, 100) == 32    # 100-128, 100-64 <= 64; 100 - 32 > 32
    assert A.get_border(128, 256) == 64    # 256 - 128 == 128 is not enough


def test_flip_rule_is_w_minus_x_minus_1():
    image = np.zeros((4, 10, 3), np.uint8)
    image[:, 2] = 255
    flipped, boxes = A.flip_horizontal(image, [[2, 1, 5, 3]])
    # x1' = 10 - 5 - 1 = 4, x2' = 10 - 2 - 1 = 7
    assert boxes.tolist() == [[4, 1, 7, 3]]
    assert flipped[:, 7].min() == 255 and flipped.sum() == 255 * 4 * 3   # column 2 -> 10 - 2 - 1


def test_clip_drops_empty_boxes_and_filters_labels():
    boxes, labels = A.clip_boxes([[-5, -5, 20, 8], [30, 0, 40, 5], [3, 9, 3, 12]], (10, 25),
                                 np.array([7, 8, 9]))
    # clip to x in [0, 24], y in [0, 9]: box 1 becomes (24, 0, 24, 5) -> zero width, dropped;
    # box 2 has zero width already
    assert boxes.tolist() == [[0, 0, 20, 8]] and labels.tolist() == [7]


def test_random_crop_moves_boxes_with_the_pixels():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (150, 210, 3), dtype=np.uint8)
    box = np.array([[50.0, 40.0, 90.0, 100.0]], np.float32)
    for seed in range(20):
        cropped, moved = A.random_crop(image, box, np.random.default_rng(seed),
                                       A.CORNERNET_RAND_SCALES, (127, 127), border=64)
        dx, dy = moved[0, 0] - box[0, 0], moved[0, 1] - box[0, 1]
        assert dx == int(dx) and dy == int(dy)
        assert moved[0, 2] - moved[0, 0] == 40 and moved[0, 3] - moved[0, 1] == 60
        h, w = cropped.shape[:2]
        assert h == w and h in {int(127 * s) for s in A.CORNERNET_RAND_SCALES}
        # every original pixel that landed inside the crop carries its value along
        ys, xs = np.mgrid[0:150, 0:210]
        ty, tx = ys + int(dy), xs + int(dx)
        inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        copied = cropped[ty[inside], tx[inside]]
        src = image[ys[inside], xs[inside]]
        # the crop window keeps a ctx +- width//2 part of the image; what it keeps matches
        nonzero = copied.any(axis=1)
        assert np.array_equal(copied[nonzero], src[nonzero])


def _rectangle_scene(h=160, w=220, box=(60, 50, 140, 110)):
    image = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255  # pixels x1..x2-1: continuous box (x1, y1, x2, y2)
    return image, np.array([box], np.float32)


def _bright_extent(image_norm):
    """Extent of the white rectangle in a normalised image, continuous coordinates."""
    raw = image_norm * np.asarray(COCO_STD_BGR, np.float32) + np.asarray(COCO_MEAN_BGR, np.float32)
    ys, xs = np.nonzero(raw.mean(axis=2) > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_box_stays_on_the_object_after_crop_resize_flip(seed):
    image, boxes = _rectangle_scene()
    cfg = A.AugmentConfig(input_size=(127, 127), border=32, color=False)
    out, moved, labels = A.augment_cornernet(image, boxes, [2], np.random.default_rng(seed), cfg)
    assert out.shape == (127, 127, 3) and out.dtype == np.float32
    if len(moved) == 0:  # cropped away entirely
        return
    assert labels.tolist() == [2]
    extent = _bright_extent(out)
    # resize blurs edges by about a pixel; the official flip rule W - x - 1 shifts a
    # continuous box by one pixel; clipping to W - 1 trims one more
    np.testing.assert_allclose(moved[0], extent, atol=2.5)


def test_no_augmentation_path_only_resizes():
    image, boxes = _rectangle_scene(h=127 * 2, w=127 * 2, box=(20, 40, 100, 200))
    out, moved, _ = A.augment_cornernet(image, boxes, [0], np.random.default_rng(0),
                                        A.AugmentConfig(input_size=(127, 127)), train=False)
    np.testing.assert_allclose(moved[0], [10, 20, 50, 100], atol=1e-5)
    np.testing.assert_allclose(_bright_extent(out), [10, 20, 50, 100], atol=1)


def test_color_jitter_by_hand():
    # one pixel BGR (0.2, 0.4, 0.6); grey = 0.114 B + 0.587 G + 0.299 R = 0.437
    # order brightness, contrast, saturation with alphas 1.1, 0.8, 1.3:
    #   brightness:  (0.22, 0.44, 0.66)
    #   contrast  :  x * 0.8 + 0.437 * 0.2   -> (0.2634, 0.4394, 0.6154)
    #   saturation:  x * 1.3 + 0.437 * -0.3  -> (0.21132, 0.44012, 0.66892)
    image = np.array([[[0.2, 0.4, 0.6]]], np.float32)
    A.color_jitter_(image, FixedRng(uniforms=[0.1, -0.2, 0.3], perm=[0, 1, 2]))
    np.testing.assert_allclose(image[0, 0], [0.21132, 0.44012, 0.66892], atol=2e-5)
    # order saturation, brightness, contrast with alphas 1.3, 1.1, 0.8 (grey from the original):
    #   saturation: x * 1.3 - 0.1311   -> (0.1289, 0.3889, 0.6489)
    #   brightness: * 1.1              -> (0.14179, 0.42779, 0.71379)
    #   contrast  : x * 0.8 + 0.0874   -> (0.200832, 0.429632, 0.658432)
    image = np.array([[[0.2, 0.4, 0.6]]], np.float32)
    A.color_jitter_(image, FixedRng(uniforms=[0.3, 0.1, -0.2], perm=[2, 0, 1]))
    np.testing.assert_allclose(image[0, 0], [0.200832, 0.429632, 0.658432], atol=2e-5)


def test_lighting_by_hand():
    # alpha (0.1, -0.1, 0.05): eigval * alpha = (0.02141788, -0.001817699, 0.0001707855)
    # B += -0.012583608 + 0.001264455 + 0.000070603 = -0.011248550
    #      (-0.58752847*0.02141788, -0.69563484*-0.001817699, 0.41340352*0.0001707855)
    # G += -0.012492505 - 0.000018078 - 0.000138714 = -0.012649297
    #      (-0.5832747*0.02141788, 0.00994535*-0.001817699, -0.81221408*0.0001707855)
    # R += -0.012013140 - 0.001305702 + 0.000070294 = -0.013248548
    #      (-0.56089297*0.02141788, 0.71832671*-0.001817699, 0.41158938*0.0001707855)
    image = np.zeros((2, 2, 3), np.float32)
    A.lighting_(image, FixedRng(normal=[0.1, -0.1, 0.05]))
    np.testing.assert_allclose(image[1, 1], [-0.011248550, -0.012649297, -0.013248548], atol=1e-7)
    assert np.all(image == image[0, 0])


def test_normalize_uses_bgr_coco_statistics():
    image = np.full((1, 1, 3), 255, np.uint8)
    out = A.normalize(image)
    expected = [(1 - m) / s for m, s in zip(COCO_MEAN_BGR, COCO_STD_BGR)]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)


def test_augment_is_a_function_of_the_seed():
    image, boxes = _rectangle_scene()
    a = A.augment_cornernet(image, boxes, [0], np.random.default_rng(11), A.AugmentConfig((127, 127)))
    b = A.augment_cornernet(image, boxes, [0], np.random.default_rng(11), A.AugmentConfig((127, 127)))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("seed", range(8))
def test_saccade_zoom_keeps_the_box_on_the_object(seed):
    image, boxes = _rectangle_scene(h=300, w=400, box=(100, 80, 180, 200))
    cfg = A.AugmentConfig(input_size=(255, 255), color=False)
    out, moved, labels, kept = A.augment_saccade(image, boxes, [1], np.random.default_rng(seed), cfg)
    assert out.shape == (255, 255, 3)
    assert len(moved) == 1 and labels.tolist() == [1]
    # the official zoom makes this (the only) object's longer side an integer 96..254 px
    longer = max(moved[0, 2] - moved[0, 0], moved[0, 3] - moved[0, 1])
    if kept[0]:
        assert 90 <= longer <= 255
    np.testing.assert_allclose(moved[0], _bright_extent(out), atol=2.5)
