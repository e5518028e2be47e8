"""Torch-free runtime: pre-processing, decode, soft-NMS and the detection pipeline.

Needs numpy and OpenCV only; importing this package never imports torch (nor a backend).
The submodules ``preprocess``, ``decode`` and ``postprocess`` are not shadowed by functions of
the same name: use ``from cornernet_deploy.runtime.preprocess import preprocess`` etc.
Backends (ONNX Runtime, TensorRT) and ``Detector`` live in ``detector.py`` / ``backends`` and are
imported on first use.
"""
from .decode import decode_outputs, pair_corners, topk_corners
from .detections import Detections
from .pipeline import CornerNetPipeline, OFFICIAL_MULTI_SCALE, StageClock
from .postprocess import flip_merge, max_per_image, rescale_dets, soft_nms, soft_nms_merge
from .preprocess import ImageConversionWarning, ImageMeta, load_image

__all__ = [
    "CornerNetPipeline", "Detections", "ImageMeta", "ImageConversionWarning", "OFFICIAL_MULTI_SCALE",
    "decode_outputs", "flip_merge", "load_image", "max_per_image", "pair_corners",
    "rescale_dets", "soft_nms", "soft_nms_merge",
    "StageClock", "topk_corners", "Detector",
]


def __getattr__(name):
    # Lazy: the Detector (and its backends) are only imported when asked for.
    if name == "Detector":
        from .detector import Detector
        return Detector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
