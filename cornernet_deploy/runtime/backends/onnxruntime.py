"""ONNX Runtime backend (CPU by default; CUDA/TensorRT execution providers when installed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..pipeline import METADATA_KEY


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, path, providers=None, threads: int | None = None):
        import onnxruntime as ort
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for every bad file
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path} is not a loadable ONNX model: {first}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise UserError(f"{path} was not exported by cornernet-deploy (no '{METADATA_KEY}' metadata); "
                            "export it with `cornernet-deploy export`")
        self.metadata = json.loads(raw)
        self.path = path
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = self.session.get_inputs()[0].shape
        self.input_hw = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        self.max_batch = shape[0] if isinstance(shape[0], int) else None
        self.precision = self.metadata.get("precision", "fp32")

    def run(self, batch: np.ndarray) -> dict:
        outputs = self.session.run(self.output_names, {self.metadata["input_name"]: np.ascontiguousarray(batch, np.float32)})
        return dict(zip(self.output_names, outputs))
