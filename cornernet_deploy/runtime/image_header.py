"""The pixel size an encoded image declares in its header, read without decoding it.

``declared_size(data) -> (height, width)`` or None (a format not read here, or a header too short
or damaged to say). ``preprocess.decode_image`` asks it before decoding, so that a decompression
bomb (a few hundred KB of PNG that decode to gigabytes) is refused before any memory is spent.
The formats are those OpenCV decodes: PNG, JPEG, BMP, GIF, WebP, TIFF, PNM/PAM/PFM, JPEG 2000,
Sun raster, Radiance HDR and AVIF; the decoder allocates what the header says, so the declared
size is the size that matters. numpy only.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

__all__ = ["declared_size"]

Size = Optional[Tuple[int, int]]


def _be(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at:at + n], "big")


def _le(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at:at + n], "little")


def _png(d: bytes) -> Size:
    if d[12:16] != b"IHDR":
        return None
    return _be(d, 20, 4), _be(d, 16, 4)


def _jpeg(d: bytes) -> Size:
    i = 2
    while i + 9 < len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:                      # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
            i += 2
            continue
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return _be(d, i + 5, 2), _be(d, i + 7, 2)
        i += 2 + _be(d, i + 2, 2)
    return None


def _bmp(d: bytes) -> Size:
    if _le(d, 14, 4) == 12:                     # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return _le(d, 20, 2), _le(d, 18, 2)
    height = int.from_bytes(d[22:26], "little", signed=True)
    return abs(height), int.from_bytes(d[18:22], "little", signed=True)


def _gif(d: bytes) -> Size:
    return _le(d, 8, 2), _le(d, 6, 2)


def _webp(d: bytes) -> Size:
    chunk = d[12:16]
    if chunk == b"VP8 " and d[23:26] == b"\x9d\x01\x2a":
        return _le(d, 28, 2) & 0x3FFF, _le(d, 26, 2) & 0x3FFF
    if chunk == b"VP8L" and d[20] == 0x2F:
        bits = _le(d, 21, 4)
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        return _le(d, 27, 3) + 1, _le(d, 24, 3) + 1
    return None


def _tiff(d: bytes) -> Size:
    read = _le if d[:2] == b"II" else _be
    ifd = read(d, 4, 4)
    count = read(d, ifd, 2)
    found = {}
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, kind = read(d, entry, 2), read(d, entry + 2, 2)
        if tag in (256, 257):                    # ImageWidth, ImageLength: SHORT or LONG
            found[tag] = read(d, entry + 8, 2 if kind == 3 else 4)
    return (found[257], found[256]) if len(found) == 2 else None


_PNM = re.compile(rb"^P[1-6Ff]\s+(?:#[^\n]*\n\s*)*(\d+)\s+(?:#[^\n]*\n\s*)*(\d+)")
_PAM = re.compile(rb"(WIDTH|HEIGHT)\s+(\d+)")
_HDR = re.compile(rb"\n\s*([-+])([XY])\s+(\d+)\s+([-+])([XY])\s+(\d+)")


def _pnm(d: bytes) -> Size:
    if d[:2] == b"P7":
        fields = {k: int(v) for k, v in _PAM.findall(d.split(b"ENDHDR", 1)[0])}
        return (fields[b"HEIGHT"], fields[b"WIDTH"]) if len(fields) == 2 else None
    m = _PNM.match(d)
    return (int(m.group(2)), int(m.group(1))) if m else None


def _jpeg2000(d: bytes) -> Size:
    at = d.find(b"ihdr")                         # JP2 file: the image header box
    if at >= 0:
        return _be(d, at + 4, 4), _be(d, at + 8, 4)
    at = d.find(b"\xff\x51")                     # raw codestream: the SIZ marker segment
    if at < 0:
        return None
    x, y, x0, y0 = (_be(d, at + 6 + 4 * k, 4) for k in range(4))
    return y - y0, x - x0


def _sun_raster(d: bytes) -> Size:
    return _be(d, 8, 4), _be(d, 4, 4)


def _hdr(d: bytes) -> Size:
    m = _HDR.search(d)
    if not m:
        return None
    first, second = (m.group(2), int(m.group(3))), (m.group(5), int(m.group(6)))
    sides = dict([first, second])
    return (sides[b"Y"], sides[b"X"]) if len(sides) == 2 else None


def _avif(d: bytes) -> Size:
    # image spatial extents ('ispe'): version/flags, then width and height; the largest one
    # (a grid image lists its tiles' too)
    sizes = [(_be(d, m.end() + 8, 4), _be(d, m.end() + 4, 4)) for m in re.finditer(b"ispe", d)]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


# (is it this format, its reader, the bytes the reader needs)
_READERS = (
    (lambda d: d.startswith(b"\x89PNG\r\n\x1a\n"), _png, 24),
    (lambda d: d.startswith(b"\xff\xd8\xff"), _jpeg, 4),
    (lambda d: d.startswith(b"BM"), _bmp, 26),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), _gif, 10),
    (lambda d: d.startswith(b"RIFF") and d[8:12] == b"WEBP", _webp, 30),
    (lambda d: d[:4] in (b"II*\0", b"MM\0*"), _tiff, 8),
    (lambda d: re.match(rb"P[1-7Ff]\s", d) is not None, _pnm, 3),
    (lambda d: d.startswith(b"\0\0\0\x0cjP  ") or d.startswith(b"\xff\x4f\xff\x51"), _jpeg2000, 12),
    (lambda d: d.startswith(b"\x59\xa6\x6a\x95"), _sun_raster, 12),
    (lambda d: d.startswith(b"#?RADIANCE") or d.startswith(b"#?RGBE"), _hdr, 10),
    (lambda d: d[4:12] in (b"ftypavif", b"ftypavis"), _avif, 12),
)
# where the header of every format above lies (a JPEG's frame header follows its EXIF block,
# which is at most 64 KB; TIFF's first IFD may lie anywhere: it is read from the whole data)
_HEAD = 1 << 18


def declared_size(data) -> Size:
    """(height, width) an encoded image's header declares, or None when it cannot be told
    without decoding. ``data``: bytes or a uint8 array."""
    view = memoryview(data).cast("B")
    head = bytes(view[:_HEAD])
    if head[:4] in (b"II*\0", b"MM\0*"):
        head = bytes(view)
    for matches, reader, needed in _READERS:
        if matches(head):
            if len(head) < needed:
                return None
            try:
                size = reader(head)
            except (IndexError, KeyError, ValueError):
                return None
            if size is None or min(size) < 1:      # nothing declared: the decoder will refuse it
                return None
            return int(size[0]), int(size[1])
    return None
