"""``Detector.load(path)``: the model file decides the backend; the pipeline is shared.

    from cornernet_deploy.runtime import Detector
    detector = Detector.load("export/cornernet-squeeze.onnx")
    detections = detector(cv2.imread("street.jpg"))      # boxes in image pixels, xyxy

``.onnx`` runs in ONNX Runtime (CPU unless providers are given); ``.engine``/``.plan`` in
TensorRT. Pre- and post-processing are the same code for every backend (``pipeline.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ..errors import UserError
from .detections import Detections
from .pipeline import CornerNetPipeline

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pkl")


def load_backend(path, providers=None, **options):
    """The backend for a model file, chosen from its suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from .backends.onnxruntime import OnnxRuntimeBackend
        return OnnxRuntimeBackend(path, providers=providers, **options)
    if suffix in ENGINE_SUFFIXES:
        from .backends.tensorrt import TensorRTBackend
        return TensorRTBackend(path, **options)
    if suffix in CHECKPOINT_SUFFIXES:  # the PyTorch reference (imports torch: comparisons only)
        from .backends.pytorch import PyTorchBackend
        return PyTorchBackend(path, **options)
    raise UserError(f"{path}: unknown model type '{suffix or path.name}' (expected .onnx, a TensorRT "
                    f".engine built by `cornernet-deploy build`, or a checkpoint .pt/.pkl)")


class Detector:
    """A loaded model plus the official test-time pipeline."""

    def __init__(self, backend, **pipeline_options):
        self.backend = backend
        self.metadata = backend.metadata
        pipeline_options.setdefault("static_batch", getattr(backend, "static_batch", None))
        self.pipeline = CornerNetPipeline(backend.metadata, backend.run, input_hw=backend.input_hw,
                                          max_batch=backend.max_batch, **pipeline_options)

    @classmethod
    def load(cls, path, providers=None, backend_options: Optional[dict] = None, **pipeline_options) -> "Detector":
        return cls(load_backend(path, providers=providers, **(backend_options or {})), **pipeline_options)

    @property
    def class_names(self) -> Sequence[str]:
        return self.pipeline.class_names

    @property
    def category_ids(self) -> Sequence[int]:
        return self.pipeline.category_ids

    def __call__(self, image: np.ndarray, flip: Optional[bool] = None) -> Detections:
        return self.pipeline(image, flip=flip)

    def batch(self, images: Sequence[np.ndarray], flip: Optional[bool] = None) -> List[Detections]:
        return self.pipeline.batch(images, flip=flip)

    def __repr__(self) -> str:
        return (f"Detector({self.metadata.get('arch')}, backend={self.backend.name}, "
                f"input={self.backend.input_hw or 'dynamic'})")
