"""Image sizes read from headers before decoding (``runtime.image_header``) and the pixel limit of
``decode_image`` / ``check_image`` (issue #21 item 12): the truth is what OpenCV decodes."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime.image_header import declared_size
from cornernet_deploy.runtime.preprocess import (DEFAULT_MAX_PIXELS, ImageTooLarge, check_image,
                                                 decode_image)

FORMATS = [".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm", ".pam", ".pfm", ".jp2", ".ras", ".hdr",
           ".gif", ".avif"]


def encoded(ext, shape, params=()):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    if ext in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255
    try:
        ok, buf = cv2.imencode(ext, image, list(params))
    except cv2.error:
        ok = False
    if not ok:
        pytest.skip(f"this OpenCV cannot write {ext} of shape {shape}")
    return buf.tobytes()


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("shape", [(37, 53, 3), (1, 1, 3), (300, 7, 3), (1025, 517, 3)])
def test_the_declared_size_is_what_opencv_decodes(ext, shape):
    data = encoded(ext, shape)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        pytest.skip(f"this OpenCV cannot read its own {ext}")
    assert declared_size(data) == decoded.shape[:2]


def test_jpeg_sizes_behind_exif_blocks_and_in_progressive_files():
    plain = encoded(".jpg", (61, 83, 3))
    app1 = b"Exif\0\0" + bytes(60000)                   # a large EXIF block before the frame header
    with_exif = plain[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + plain[2:]
    assert cv2.imdecode(np.frombuffer(with_exif, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (61, 83)
    assert declared_size(with_exif) == (61, 83)
    progressive = encoded(".jpg", (61, 83, 3), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert b"\xff\xc2" in progressive and declared_size(progressive) == (61, 83)


def png_bomb(height, width) -> bytes:
    """A PNG header declaring ``height x width`` followed by a few bytes of pixel data only."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + b"\0" * 64)


def test_a_bomb_is_refused_from_its_header_before_decoding():
    with pytest.raises(ImageTooLarge) as err:
        decode_image(png_bomb(12000, 12000), "bomb.png")
    # refused for its size: decoding the truncated data would have said "cannot decode" instead
    assert str(err.value) == ("bomb.png: 12000x12000 = 144,000,000 pixels, more than the limit of "
                              f"{DEFAULT_MAX_PIXELS:,} (max_pixels); its pixels alone would need "
                              "412.0 MiB as 8-bit BGR")       # 432,000,000 bytes
    with pytest.raises(UserError, match="cannot decode"):
        decode_image(png_bomb(12000, 12000), "bomb.png", max_pixels=0)        # 0: no limit


def test_the_limit_counts_pixels_and_applies_to_arrays_too():
    data = encoded(".png", (100, 200, 3))
    assert decode_image(data, "x", max_pixels=20000).shape == (100, 200, 3)    # exactly the limit
    with pytest.raises(ImageTooLarge, match="200x100 = 20,000 pixels, more than the limit of 19,999"):
        decode_image(data, "x", max_pixels=19999)
    with pytest.raises(ImageTooLarge, match="IMAGE\\[0\\]: 200x100 = 20,000 pixels"):
        check_image(np.zeros((100, 200, 3), np.uint8), "IMAGE[0]", max_pixels=19999)
    # a header that declares nothing: OpenCV refuses it, one line
    damaged = data[:16] + b"\0" * 8 + data[24:]          # IHDR size zeroed: OpenCV refuses it anyway
    assert declared_size(damaged) is None
    with pytest.raises(UserError, match="cannot decode"):
        decode_image(damaged, "x")


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\0\xff\xff\xff\xff",
                                  b"RIFF\0\0\0\0WEBPVP8 ", b"P6\n", b"GIF89a"])
def test_short_or_damaged_headers_say_nothing(data):
    assert declared_size(data) is None
