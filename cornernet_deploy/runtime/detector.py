"""``Detector.load(path)``: the model file decides the backend; the pipeline is shared.

    from cornernet_deploy.runtime import Detector
    detector = Detector.load("export/cornernet-squeeze.onnx")   # device="cuda" / provider="tensorrt"
    detections = detector(cv2.imread("street.jpg"))      # boxes in image pixels, xyxy

``.onnx`` runs in ONNX Runtime (CPU unless ``device``/``provider`` say otherwise); ``.engine``/
``.plan`` in TensorRT (``runtime.backends.open_backend``). Pre- and post-processing are the same
code for every backend (``pipeline.py``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np

from .backends import open_backend
from .detections import Detections
from .pipeline import CornerNetPipeline


class Detector:
    """A loaded model plus the official test-time pipeline."""

    def __init__(self, backend, **pipeline_options):
        self.backend = backend
        self.metadata = backend.metadata
        self.pipeline = CornerNetPipeline.for_backend(backend, **pipeline_options)

    @classmethod
    def load(cls, path, device: Optional[str] = None, provider: Optional[str] = None,
             precision: Optional[str] = None, threads: Optional[int] = None,
             backend_options: Optional[dict] = None, *, backend: Optional[str] = None,
             **pipeline_options) -> "Detector":
        """``backend``: a registered backend other than the one the file kind calls for (e.g.
        ``openvino`` for an .onnx file); ``backend_options``: further keywords of
        ``open_backend`` (``plugin_library`` ...); ``pipeline_options``: those of
        ``CornerNetPipeline`` (``test``, ``scales`` ...)."""
        backend = open_backend(path, backend, device=device, provider=provider, precision=precision,
                               threads=threads, **(backend_options or {}))
        return cls(backend, **pipeline_options)

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

    def batch_groups(self, groups: Sequence[Sequence[np.ndarray]], flip: Optional[bool] = None
                     ) -> List[Union[List[Detections], Exception]]:
        """Detections of independent groups of images (a server's requests, a run's files), run
        as one batch. When that batch fails, every group is run again on its own, so that a
        failure (an image the model cannot take, memory) is only its own group's and the other
        groups get exactly the detections they get alone. Per group: its list of ``Detections``,
        or the exception it raised when run alone."""
        images = [image for group in groups for image in group]
        try:
            found = self.batch(images, flip=flip)
        except Exception as exc:  # noqa: BLE001 -- handed to the group it belongs to
            if len(groups) == 1:
                return [exc]
            return [self._group_alone(group, flip) for group in groups]
        out, start = [], 0
        for group in groups:
            out.append(found[start:start + len(group)])
            start += len(group)
        return out

    def _group_alone(self, group, flip):
        try:
            return self.batch(group, flip=flip)
        except Exception as exc:  # noqa: BLE001
            return exc

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"Detector({self.metadata.get('arch')}, {self.backend.label})"
