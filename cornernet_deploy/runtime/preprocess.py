"""Image loading and the official test-time pre-processing (numpy + OpenCV, no torch).

What the official ``cornernet_inference`` (``core/test/cornernet.py``) does per test scale ``s``
to a BGR uint8 image of ``H x W`` (as ``cv2.imread`` returns it):

1. ``h' = int(H*s)``, ``w' = int(W*s)``; ``cv2.resize`` (INTER_LINEAR) unless the size is unchanged.
2. The network input is ``inp_h x inp_w`` with ``inp = h' | 127``: the smallest ``k*128 - 1 >= h'``.
   Generalised here to the architecture's ``size_multiple`` m: the smallest ``k*m - 1 >= h'``
   (identical for the official m = 128).
3. The scaled image is placed in a zero canvas by the official ``crop_image`` rule (centre
   ``(h'//2, w'//2)`` goes to ``(inp_h//2, inp_w//2)``). Quirk kept on purpose: when ``h'`` is
   already of the form ``k*m - 1`` (odd, ``inp_h == h'``) the window ``[c - inp//2, c + inp//2)``
   is one pixel short, so the image's **last row (column) is dropped** and the border is
   ``[0, h'-1]``, exactly as the official code does.
4. ``/255`` (float64, stored as float32), then ``(x - mean) / std`` per channel in float32,
   **BGR order**; the padding becomes ``-mean/std``. CHW float32.
5. The flip test adds the canvas mirrored along the width (``flip_tensor``).

A model exported with ``--input uint8`` computes step 4 inside its graph (cast, ``/255``,
``-mean``, ``/std`` in float32, in that order: bit-identical to the table of ``normalize``, see
``exporter.PixelInput``); its input is the uint8 canvas of step 3 as CHW (``network_input``), so
the padding is 0 and becomes ``-mean/std`` in the graph, as in the official pipeline.

Fixed-size models (static ONNX/TensorRT engines, input ``H0 x W0``): the scale is shrunk just
enough that the scaled image fits (``s' = min(s, H0/H, W0/W)``), and the image is placed in the
``H0 x W0`` canvas by the same centring rule. This is identical to the official pipeline whenever
the image's own padded size equals the model input (e.g. any image whose ``int(H*s)`` and
``int(W*s)`` pad to 511 for a 511x511 engine); otherwise the padding differs (the official code
would have run the network at a different input size) and detections can differ slightly.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from cornernet_deploy.errors import UserError
from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR, ArchSpec
from cornernet_deploy.runtime.image_header import declared_size

__all__ = ["ImageMeta", "ImageConversionWarning", "ImageTooLarge", "DEFAULT_MAX_PIXELS", "load_image",
           "decode_image", "check_image", "check_pixel_count", "out_of_memory", "padded_size", "crop_image",
           "normalize", "network_input", "preprocess", "flip_tensor"]

# The most pixels an image may have unless the caller says otherwise (``infer --max-pixels``, the
# served model's ``max_pixels``; 0 = no limit): 50 megapixels takes a 48 MP camera's photos and
# refuses a decompression bomb (455 KB of PNG that decode to 12000x12000, 432 MB) before decoding.
# A dynamic-size model runs its network at the image's own size, so memory grows with the pixels.
DEFAULT_MAX_PIXELS = 50_000_000


class ImageConversionWarning(UserWarning):
    """An image was converted (grayscale/alpha/16-bit) on its way to 8-bit BGR."""


class ImageTooLarge(UserError):
    """An image has more pixels than the limit (``check_pixel_count``), or not memory enough."""


def _mib(nbytes: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


def check_pixel_count(height: int, width: int, name: str = "image",
                      max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> None:
    """``ImageTooLarge`` (one line naming the image and the memory its pixels need) when
    ``height * width`` exceeds ``max_pixels`` (None or 0: no limit)."""
    pixels = int(height) * int(width)
    if max_pixels and pixels > max_pixels:
        raise ImageTooLarge(
            f"{name}: {width}x{height} = {pixels:,} pixels, more than the limit of {max_pixels:,} "
            f"(max_pixels); its pixels alone would need {_mib(pixels * 3)} as 8-bit BGR")


def out_of_memory(name: str, size: Optional[Sequence[int]]) -> ImageTooLarge:
    """The one-line error for running out of memory on image ``name`` of ``size`` (H, W) or None."""
    if size is None:
        return ImageTooLarge(f"{name}: not enough memory to decode and run the image")
    height, width = int(size[0]), int(size[1])
    return ImageTooLarge(f"{name}: not enough memory for a {width}x{height} image (its pixels alone "
                         f"need {_mib(height * width * 3)} as 8-bit BGR; the network more)")


@dataclass(frozen=True)
class ImageMeta:
    """Geometry of one pre-processed image, everything needed to map detections back.

    ``borders`` = ``[top, bottom, left, right]`` of the image inside the network input (float32
    values like the official ``crop_image``), ``ratios`` = ``(out_h/inp_h, out_w/inp_w)`` stored
    as float32 as the official code does, ``scale`` the scale actually used (can be smaller than
    ``requested_scale`` for a fixed-size model).
    """

    image_hw: Tuple[int, int]
    scale: float
    scaled_hw: Tuple[int, int]
    input_hw: Tuple[int, int]
    output_hw: Tuple[int, int]
    borders: Tuple[float, float, float, float]
    ratios: Tuple[float, float]
    requested_scale: float = 1.0

    @property
    def top(self) -> float:
        return self.borders[0]

    @property
    def left(self) -> float:
        return self.borders[2]


# --------------------------------------------------------------------------------------------
# input validation and loading
# --------------------------------------------------------------------------------------------

def check_image(image, name: str = "image", max_pixels: Optional[int] = None) -> np.ndarray:
    """Validate an in-memory image; return it as an HxWx3 uint8 BGR array.

    Accepted: uint8 ``HxWx3`` (BGR, as ``cv2.imread`` gives). Grayscale (``HxW`` or ``HxWx1``)
    is converted to BGR with an ``ImageConversionWarning`` (exactly what ``cv2.imread`` does to a
    gray file). Refused with a one-line ``UserError``: non-arrays, empty images, any dtype other
    than uint8 (16-bit, float: scale to 8-bit yourself; ``load_image`` does it for 16-bit files),
    and 4-channel arrays (we cannot know whether they are BGRA or RGBA: pass ``img[..., :3]`` of
    a BGRA array); with ``max_pixels``, images of more pixels (``check_pixel_count``).
    """
    if not isinstance(image, np.ndarray):
        raise UserError(f"{name}: expected a numpy array (HxWx3 uint8 BGR), got {type(image).__name__}")
    if image.ndim not in (2, 3) or image.size == 0:
        raise UserError(f"{name}: expected an HxWx3 image, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise UserError(
            f"{name}: expected 8-bit pixels (uint8), got {image.dtype}; convert first, e.g. "
            f"(img >> 8).astype(np.uint8) for 16-bit, or use load_image() on the file")
    if image.ndim == 3 and image.shape[2] == 4:
        raise UserError(
            f"{name}: 4-channel (BGRA/RGBA) array; drop the alpha channel first "
            f"(img[..., :3] for BGRA as cv2 gives it), the model needs 3-channel BGR")
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise UserError(f"{name}: expected 3 channels (BGR), got {image.shape[2]}")
    check_pixel_count(image.shape[0], image.shape[1], name, max_pixels)
    if image.ndim == 2 or image.shape[2] == 1:
        warnings.warn(f"{name}: grayscale image converted to 3-channel BGR", ImageConversionWarning,
                      stacklevel=3)
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image


def _is_jpeg(data: np.ndarray) -> bool:
    return data.size >= 3 and data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF


def load_image(path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as the official code sees it: HxWx3 uint8 BGR (``cv2.imread`` default).

    The file's bytes go through ``decode_image`` (what it converts, and how, is said there; the
    pixel limit too). Every failure is a one-line ``UserError`` naming the file.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise UserError(f"{p}: no such file")
    if os.path.isdir(p):
        raise UserError(f"{p}: is a directory, not an image file")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    return decode_image(data, p, stacklevel=3, max_pixels=max_pixels)


def _imdecode(data: np.ndarray, flags: int, name: str, size) -> Optional[np.ndarray]:
    """``cv2.imdecode``; running out of memory is ``ImageTooLarge`` naming the image."""
    try:
        return cv2.imdecode(data, flags)
    except MemoryError:
        raise out_of_memory(name, size) from None
    except cv2.error as exc:
        if "memory" in str(exc).lower() or "allocate" in str(exc).lower():
            raise out_of_memory(name, size) from None
        raise UserError(f"{name}: cannot decode the image (OpenCV: {str(exc).strip().splitlines()[-1]})") from None


def decode_image(data, name: str = "image", stacklevel: int = 2,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image (bytes or a uint8 array: JPEG, PNG, ...) as ``cv2.imread`` would.

    The data is decoded with ``cv2.IMREAD_UNCHANGED`` to find out what it holds; grayscale,
    alpha (RGBA/BGRA) and 16-bit images are then decoded with ``cv2.IMREAD_COLOR`` -- the exact
    conversion the official ``cv2.imread(path)`` applies (gray replicated to BGR, alpha dropped,
    16-bit reduced to 8-bit) -- and an ``ImageConversionWarning`` says so. JPEG data is decoded
    with ``IMREAD_COLOR`` directly (so EXIF orientation is applied as in the official code).
    Float or other exotic pixel types are refused. An image of more than ``max_pixels`` pixels
    (None or 0: no limit) is refused before it is decoded, from the size its header declares
    (``image_header.declared_size``; after decoding for a format whose header is not read there),
    and running out of memory while decoding is refused the same way (``ImageTooLarge``). Every
    failure is a one-line ``UserError`` starting with ``name``.
    """
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) \
        else np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if data.size == 0:
        raise UserError(f"{name}: empty (0 bytes), not an image")
    declared = declared_size(data)
    if declared is not None:
        check_pixel_count(*declared, name, max_pixels)
    if _is_jpeg(data):
        image = _imdecode(data, cv2.IMREAD_COLOR, name, declared)
        if image is None:
            raise UserError(f"{name}: cannot decode the image (corrupt or truncated JPEG)")
        return image
    raw = _imdecode(data, cv2.IMREAD_UNCHANGED, name, declared)
    if raw is None or raw.size == 0:
        raise UserError(f"{name}: cannot decode the image (corrupt file or unsupported format)")
    if declared is None:
        check_pixel_count(raw.shape[0], raw.shape[1], name, max_pixels)
    notes = []
    if raw.dtype == np.uint16:
        notes.append("16-bit pixels reduced to 8-bit")
    elif raw.dtype != np.uint8:
        raise UserError(f"{name}: unsupported pixel type {raw.dtype}; save the image as 8-bit")
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels == 1:
        notes.append("grayscale converted to BGR")
    elif channels == 4:
        notes.append("alpha channel dropped")
    elif channels != 3:
        raise UserError(f"{name}: unsupported number of channels ({channels})")
    if not notes:
        return raw
    image = _imdecode(data, cv2.IMREAD_COLOR, name, raw.shape[:2])
    if image is None:
        raise UserError(f"{name}: cannot convert the image to 8-bit BGR")
    warnings.warn(f"{name}: " + ", ".join(notes) + " (as cv2.imread does)", ImageConversionWarning,
                  stacklevel=stacklevel)
    return image


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------

def padded_size(side: int, multiple: int) -> int:
    """Smallest ``k * multiple - 1 >= side`` (k >= 1); ``side | 127`` for multiple 128."""
    side = int(side)
    k = max(1, -(-(side + 1) // multiple))
    return k * multiple - 1


def crop_image(image: np.ndarray, center: Sequence[int], size: Sequence[int]):
    """The official ``crop_image`` (``core/sample/utils.py``) with output size == ``size``.

    Places the window ``[cy - h//2, cy + h//2) x [cx - w//2, cx + w//2)`` of ``image`` (clipped to
    the image) in a zero canvas of ``size`` so that ``center`` lands on ``(h//2, w//2)``. Returns
    ``(canvas, border float32 [top, bottom, left, right], offset [cy - h//2, cx - w//2])``.
    """
    cty, ctx = int(center[0]), int(center[1])
    height, width = int(size[0]), int(size[1])
    im_h, im_w = image.shape[:2]
    canvas = np.zeros((height, width) + image.shape[2:], dtype=image.dtype)
    x0, x1 = max(0, ctx - width // 2), min(ctx + width // 2, im_w)
    y0, y1 = max(0, cty - height // 2), min(cty + height // 2, im_h)
    left, right = ctx - x0, x1 - ctx
    top, bottom = cty - y0, y1 - cty
    ccy, ccx = height // 2, width // 2
    canvas[ccy - top:ccy + bottom, ccx - left:ccx + right] = image[y0:y1, x0:x1]
    border = np.array([ccy - top, ccy + bottom, ccx - left, ccx + right], dtype=np.float32)
    offset = np.array([cty - height // 2, ctx - width // 2])
    return canvas, border, offset


def _norm_lut(mean, std) -> np.ndarray:
    """[3, 256] float32 table: ``(float32(v/255.) - float32(mean)) / float32(std)`` per channel."""
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(3, 1)
    v = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32).reshape(1, 256)
    return ((v - mean32) / std32).astype(np.float32)


_LUT_CACHE: dict = {}


def normalize(canvas_u8: np.ndarray, mean=COCO_MEAN_BGR, std=COCO_STD_BGR) -> np.ndarray:
    """HxWx3 uint8 BGR -> 3xHxW float32, bit-identical to the official float32 arithmetic.

    (The official code stores ``u8 / 255.`` as float32, then subtracts and divides by float32
    mean/std tensors; a 256-entry table per channel gives the same numbers.)
    """
    key = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    lut = _LUT_CACHE.get(key)
    if lut is None:
        lut = _LUT_CACHE[key] = _norm_lut(mean, std)
    out = np.empty((3,) + canvas_u8.shape[:2], dtype=np.float32)
    for c in range(3):
        np.take(lut[c], canvas_u8[:, :, c], out=out[c])
    return out


def network_input(canvas_u8: np.ndarray, mean=COCO_MEAN_BGR, std=COCO_STD_BGR,
                  input_dtype: str = "float32") -> np.ndarray:
    """An HxWx3 uint8 BGR canvas as the network takes it: 3xHxW normalised float32
    (``normalize``), or for a model whose graph normalises (``input_dtype`` "uint8") the pixels
    themselves, 3xHxW uint8."""
    if input_dtype == "uint8":
        return np.ascontiguousarray(canvas_u8.transpose(2, 0, 1))
    if input_dtype != "float32":
        raise ValueError(f"unknown network input dtype {input_dtype!r}")
    return normalize(canvas_u8, mean, std)


def normalize_float(chw: np.ndarray, mean=COCO_MEAN_BGR, std=COCO_STD_BGR) -> np.ndarray:
    """3xHxW values in [0, 1] (any float dtype) -> float32 ``(x - mean) / std`` in float32."""
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return ((chw.astype(np.float32) - mean32) / std32).astype(np.float32)


def preprocess(image: np.ndarray, spec: ArchSpec, scale: float = 1.0,
               input_hw: Optional[Sequence[int]] = None, mean=COCO_MEAN_BGR, std=COCO_STD_BGR,
               input_dtype: str = "float32") -> Tuple[np.ndarray, ImageMeta]:
    """One test scale of the official pre-processing: returns ``(tensor 3xHxW, meta)``, the
    tensor float32 normalised, or uint8 pixels for ``input_dtype`` "uint8" (``network_input``).

    ``input_hw=None`` (dynamic-size model): the input is the padded size of the scaled image
    (``padded_size(h', spec.size_multiple)``), as the official code. ``input_hw=(H0, W0)`` (fixed
    model): the scale is shrunk just enough to fit (see the module docstring).
    """
    image = check_image(image)
    height, width = image.shape[:2]
    requested = float(scale)
    if not (requested > 0 and math.isfinite(requested)):
        raise UserError(f"test scale must be a positive number, got {scale!r}")
    s = requested
    if input_hw is not None:
        h0, w0 = int(input_hw[0]), int(input_hw[1])
        if int(height * s) > h0 or int(width * s) > w0:
            s = min(s, h0 / height, w0 / width)
    new_h, new_w = int(height * s), int(width * s)
    if new_h < 1 or new_w < 1:
        if s < requested:
            raise UserError(
                f"image {height}x{width} (HxW) is too elongated for the model's fixed "
                f"{input_hw[0]}x{input_hw[1]} input: shrunk by {s:.3g} to fit, it is less than one "
                f"pixel {'high' if new_h < 1 else 'wide'}; crop it, or use a model exported with "
                f"--dynamic-size")
        raise UserError(f"image {height}x{width} at scale {s:g} is smaller than one pixel")
    if input_hw is None:
        inp_h = padded_size(new_h, spec.size_multiple)
        inp_w = padded_size(new_w, spec.size_multiple)
    else:
        inp_h, inp_w = int(input_hw[0]), int(input_hw[1])
    out_h, out_w = spec.output_size((inp_h, inp_w))

    if (new_h, new_w) != (height, width):
        resized = cv2.resize(image, (new_w, new_h))      # INTER_LINEAR, as the official call
    else:
        resized = image
    canvas, border, _ = crop_image(resized, (new_h // 2, new_w // 2), (inp_h, inp_w))
    tensor = network_input(canvas, mean, std, input_dtype)
    ratios = np.array([out_h / inp_h, out_w / inp_w], dtype=np.float32)
    meta = ImageMeta(
        image_hw=(int(height), int(width)), scale=s, scaled_hw=(new_h, new_w),
        input_hw=(inp_h, inp_w), output_hw=(int(out_h), int(out_w)),
        borders=tuple(float(b) for b in border), ratios=(float(ratios[0]), float(ratios[1])),
        requested_scale=requested)
    return tensor, meta


def flip_tensor(tensor: np.ndarray) -> np.ndarray:
    """The flip-test copy: the whole input (padding included) mirrored along the width."""
    return np.ascontiguousarray(tensor[..., ::-1])
