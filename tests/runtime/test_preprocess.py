"""Pre-processing: the official padding/placement/normalisation rules, worked out by hand."""
import warnings

import cv2
import numpy as np
import pytest

from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime.preprocess import (ImageConversionWarning, check_image, flip_tensor,
                                                 load_image, normalize, padded_size, preprocess)
from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR, get_arch

CORNERNET = get_arch("cornernet")
SQUEEZE = get_arch("cornernet-squeeze")
M32 = np.array(COCO_MEAN_BGR, np.float32)
S32 = np.array(COCO_STD_BGR, np.float32)
PAD = (-M32) / S32          # (0 - mean) / std in float32


def _img(h, w, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


@pytest.mark.parametrize("side,expected", [(300, 383), (400, 511), (383, 383), (384, 511),
                                           (0, 127), (1, 127), (127, 127), (128, 255), (511, 511)])
def test_padded_size_is_bitwise_or_127_for_m128(side, expected):
    assert padded_size(side, 128) == expected == (side | 127)


def test_padded_size_generalises_to_other_multiples():
    assert padded_size(20, 16) == 31
    assert padded_size(31, 16) == 31
    assert padded_size(32, 16) == 47
    assert padded_size(5, 48) == 47          # not a power of two: next k*48-1


def test_300x400_geometry_by_hand():
    tensor, meta = preprocess(_img(300, 400), CORNERNET)
    assert tensor.shape == (3, 383, 511) and tensor.dtype == np.float32
    assert meta.input_hw == (383, 511)
    assert meta.output_hw == (96, 128)                   # (383+1)//4, (511+1)//4
    # top = 383//2 - 300//2 = 191 - 150; left = 511//2 - 400//2 = 255 - 200
    assert meta.borders == (41.0, 341.0, 55.0, 455.0)
    assert meta.ratios == (float(np.float32(96 / 383)), float(np.float32(128 / 511)))
    assert meta.scaled_hw == (300, 400) and meta.scale == 1.0


def test_pixels_padding_and_bgr_order():
    img = _img(300, 400, seed=1)
    img[0, 0] = (255, 0, 0)                              # pure blue in BGR
    tensor, _ = preprocess(img, CORNERNET)
    # padding = -mean/std in BGR channel order
    np.testing.assert_array_equal(tensor[:, 0, 0], PAD)
    np.testing.assert_array_equal(tensor[:, 382, 510], PAD)
    np.testing.assert_array_equal(tensor[:, 40, 55], PAD)   # the row above the image
    # blue pixel: channel 0 (B) is (1 - m_B)/s_B, the others (0 - m)/s
    np.testing.assert_array_equal(tensor[:, 41, 55], (np.float32([1, 0, 0]) - M32) / S32)
    # every image pixel: (float32(v / 255.) - mean) / std in float32, placed at (41, 55)
    expect = ((img / 255.).astype(np.float32) - M32) / S32
    np.testing.assert_array_equal(tensor[:, 41:341, 55:455], expect.transpose(2, 0, 1))


def test_normalize_lut_equals_direct_float32_arithmetic():
    img = _img(37, 53, seed=2)
    direct = (((img / 255.).astype(np.float32) - M32) / S32).transpose(2, 0, 1)
    np.testing.assert_array_equal(normalize(img), direct)


def test_image_already_k128_minus_1_loses_its_last_row_and_column():
    # official crop_image: window [c - inp//2, c + inp//2) is one short when h' == inp (odd)
    img = _img(383, 511, seed=3)
    tensor, meta = preprocess(img, CORNERNET)
    assert meta.input_hw == (383, 511)
    assert meta.borders == (0.0, 382.0, 0.0, 510.0)
    expect = (((img / 255.).astype(np.float32) - M32) / S32).transpose(2, 0, 1)
    np.testing.assert_array_equal(tensor[:, :382, :510], expect[:, :382, :510])
    assert (tensor[:, 382, :] == PAD[:, None]).all()
    assert (tensor[:, :, 510] == PAD[:, None]).all()


def test_test_scale_resizes_with_inter_linear():
    img = _img(300, 400, seed=4)
    tensor, meta = preprocess(img, CORNERNET, scale=0.5)
    assert meta.scaled_hw == (150, 200) and meta.input_hw == (255, 255)
    # top = 127 - 75 = 52, left = 127 - 100 = 27
    assert meta.borders == (52.0, 202.0, 27.0, 227.0)
    small = cv2.resize(img, (200, 150), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(tensor[:, 52:202, 27:227], normalize(small))


def test_squeeze_output_stride_8():
    _, meta = preprocess(_img(300, 400), SQUEEZE)
    assert meta.input_hw == (383, 511) and meta.output_hw == (48, 64)
    assert meta.ratios == (float(np.float32(48 / 383)), float(np.float32(64 / 511)))


def test_fixed_input_small_image_is_centred_in_the_model_canvas():
    _, meta = preprocess(_img(300, 400), CORNERNET, input_hw=(511, 511))
    assert meta.input_hw == (511, 511) and meta.scale == 1.0
    assert meta.borders == (105.0, 405.0, 55.0, 455.0)       # 255-150, 255-200


def test_fixed_input_large_image_shrinks_just_enough():
    _, meta = preprocess(_img(800, 600), CORNERNET, input_hw=(511, 511))
    s = 511 / 800
    assert meta.scale == pytest.approx(s) and meta.requested_scale == 1.0
    assert meta.scaled_hw == (int(800 * s), int(600 * s)) == (511, 383)
    # h' = 511 = inp: the official window drops the last row
    assert meta.borders == (0.0, 510.0, 64.0, 447.0)       # 255 - 191 = 64


def test_fixed_input_equal_to_padded_size_is_identical_to_dynamic():
    img = _img(300, 400, seed=5)
    t1, m1 = preprocess(img, CORNERNET)
    t2, m2 = preprocess(img, CORNERNET, input_hw=(383, 511))
    np.testing.assert_array_equal(t1, t2)
    assert m1 == m2


def test_flip_tensor_mirrors_whole_canvas():
    t, _ = preprocess(_img(30, 50), CORNERNET)
    f = flip_tensor(t)
    np.testing.assert_array_equal(f[:, :, 0], t[:, :, -1])
    np.testing.assert_array_equal(f[:, 3, :], t[:, 3, ::-1])
    assert f.flags.c_contiguous


# --- input validation ------------------------------------------------------------------------

@pytest.mark.parametrize("bad,msg", [
    (np.zeros((10, 10, 3), np.uint16), "8-bit"),
    (np.zeros((10, 10, 3), np.float32), "8-bit"),
    (np.zeros((10, 10, 4), np.uint8), "4-channel"),
    (np.zeros((10, 10, 2), np.uint8), "3 channels"),
    (np.zeros((0, 10, 3), np.uint8), "shape"),
    (np.zeros((2, 10, 10, 3), np.uint8), "shape"),
    ([[1, 2], [3, 4]], "numpy array"),
])
def test_bad_arrays_give_one_line_user_errors(bad, msg):
    with pytest.raises(UserError) as err:
        preprocess(bad, CORNERNET)
    assert msg in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1)])
def test_grayscale_array_is_converted_with_a_warning(shape):
    gray = (np.arange(600) % 256).astype(np.uint8).reshape(shape)
    with pytest.warns(ImageConversionWarning, match="grayscale"):
        out = check_image(gray)
    assert out.shape == (20, 30, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray.reshape(20, 30))


def _no_warning(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args)


def test_load_image_color_png_and_jpeg(tmp_path):
    img = _img(40, 60, seed=6)
    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    cv2.imwrite(str(png), img)
    cv2.imwrite(str(jpg), img)
    np.testing.assert_array_equal(_no_warning(load_image, png), img)
    np.testing.assert_array_equal(_no_warning(load_image, jpg), cv2.imread(str(jpg)))


@pytest.mark.parametrize("kind", ["gray", "rgba", "16bit", "16bit-gray"])
def test_load_image_converts_like_cv2_imread(tmp_path, kind):
    rng = np.random.RandomState(7)
    data = {
        "gray": (rng.rand(40, 60) * 255).astype(np.uint8),
        "rgba": (rng.rand(40, 60, 4) * 255).astype(np.uint8),
        "16bit": (rng.rand(40, 60, 3) * 65535).astype(np.uint16),
        "16bit-gray": (rng.rand(40, 60) * 65535).astype(np.uint16),
    }[kind]
    path = tmp_path / f"{kind}.png"
    cv2.imwrite(str(path), data)
    with pytest.warns(ImageConversionWarning):
        out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, cv2.imread(str(path)))     # what the official code sees


@pytest.mark.parametrize("content,msg", [(b"", "empty"), (b"not an image at all" * 10, "decode"),
                                         ("truncated", "decode")])
def test_load_image_unreadable_files(tmp_path, content, msg):
    path = tmp_path / "bad.png"
    if content == "truncated":
        ok, buf = cv2.imencode(".png", _img(50, 50))
        content = buf.tobytes()[:60]
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_image(path)
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_load_image_truncated_jpeg_and_missing_paths(tmp_path):
    ok, buf = cv2.imencode(".jpg", _img(50, 50))
    path = tmp_path / "bad.jpg"
    path.write_bytes(buf.tobytes()[:20])
    with pytest.raises(UserError):
        load_image(path)
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="directory"):
        load_image(tmp_path)
