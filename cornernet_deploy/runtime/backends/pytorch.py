"""PyTorch backend: runs a checkpoint (or random weights) through the same pipeline.

For comparisons and profiling only; importing this module imports torch, so the runtime imports
it lazily (``Detector.load`` of a ``.pt``/``.pkl``/``.pth`` file, or an architecture name).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class PyTorchBackend:
    name = "torch"

    def __init__(self, checkpoint=None, arch: str | None = None, device: str = "cpu",
                 precision: str = "fp32", input_hw=None, max_batch=None, seed: int = 0):
        """``checkpoint`` (its architecture read from the file) or ``arch`` alone: random weights,
        the same for the same ``seed``."""
        import torch

        from ...exporter import build_metadata, output_names
        from ...models import CornerNet, load_checkpoint
        from ...models.checkpoint import spec_from_checkpoint
        from ...zoo import get_arch
        from ...errors import UserError

        if checkpoint is None and arch is None:
            raise UserError("the torch backend needs a checkpoint or an architecture name")
        try:
            spec = spec_from_checkpoint(checkpoint, arch) if checkpoint else get_arch(arch)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CornerNet(spec)
        if checkpoint:
            load_checkpoint(model, checkpoint)
        self.spec = spec
        self.model = model.eval().to(self.device, self.dtype)
        self.path = Path(checkpoint) if checkpoint else None
        self.input_hw = tuple(input_hw) if input_hw else None
        self.max_batch = max_batch
        self.precision = precision
        self.metadata = build_metadata(spec, input_hw or spec.input_size, max_batch, "none", "reference",
                                       precision, dynamic_size=input_hw is None)
        self.output_names = output_names(spec, "none")

    def run(self, batch: np.ndarray) -> dict:
        torch = self.torch
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device, self.dtype)
            heads = self.model(x)
            return {k: v.float().cpu().numpy() for k, v in heads.items()}
