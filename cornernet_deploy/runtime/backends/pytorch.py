"""PyTorch backend: a checkpoint, or an architecture name with random weights (seeded: the same
name and seed always give the same weights), through the same pipeline as the exported files.

For comparisons and profiling only; importing this module imports torch, so the runtime imports
it lazily (``open_backend`` of a ``.pt``/``.pkl``/``.pth`` file, or an architecture name).
CPU: ``run_timed`` is the host clock around the network (torch's own threads, or ``threads``
applied around each call: torch's setting is process-wide). CUDA: everything on the backend's
own stream, input copied from pinned host memory, outputs copied back into pinned buffers, the
three stages timed by CUDA events on that stream.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ...contract.arch import ARCHS
from ...contract.precision import EXPORT_PRECISIONS
from ...errors import UserError
from . import registry
from .base import CUDA_EVENTS, Backend


class PyTorchBackend(Backend):
    name = "torch"

    def __init__(self, checkpoint=None, arch: str | None = None, device: str = "cpu",
                 precision: str = "fp32", input_hw=None, max_batch=None, seed: int = 0,
                 threads: int | None = None):
        try:
            import torch
        except ModuleNotFoundError:
            raise UserError("the torch backend needs PyTorch (pip install 'cornernet-deploy[torch]')") from None

        from ...models import CornerNet, load_checkpoint
        from ...models.checkpoint import spec_from_checkpoint
        from ...contract.metadata import build_metadata, output_names
        from ...contract.arch import get_arch

        if checkpoint is None and arch is None:
            raise UserError("the torch backend needs a checkpoint or an architecture name")
        if precision == "fp16" and not str(device).startswith("cuda"):
            raise UserError("fp16 with the torch backend needs --device cuda (PyTorch has no fast "
                            "half-precision convolutions on the CPU)")
        try:
            spec = spec_from_checkpoint(checkpoint, arch) if checkpoint else get_arch(arch)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but PyTorch sees no CUDA GPU")
        self.torch = torch
        self.torch_device = torch.device(device)
        self.device = "cuda" if self.torch_device.type == "cuda" else "cpu"
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = CornerNet(spec)
        if checkpoint:
            load_checkpoint(net, checkpoint)
        self.net = net.eval().to(self.torch_device, self.dtype)
        self.path = Path(checkpoint) if checkpoint else None
        self.input_hw = tuple(int(s) for s in input_hw) if input_hw else None
        self.max_batch = max_batch
        self.precision = precision
        self.threads = int(threads) if threads else None
        self.metadata = build_metadata(spec, input_hw or spec.input_size, max_batch, "none", "reference",
                                       precision, dynamic_size=input_hw is None)
        self.output_names = output_names(spec, "none")
        if self.device == "cuda":
            self.timing = CUDA_EVENTS
            self.stream = torch.cuda.Stream(self.torch_device)
            self.events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            self._pinned_in = None
            self._pinned_out: dict = {}

    @contextlib.contextmanager
    def _threads(self):
        if self.threads is None:
            yield
            return
        previous = self.torch.get_num_threads()
        self.torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            self.torch.set_num_threads(previous)

    def run(self, batch: np.ndarray) -> dict:
        if self.device == "cuda":
            return self.run_timed(batch)[0]
        torch = self.torch
        with self._threads(), torch.inference_mode():
            heads = self.net(torch.from_numpy(self.network_batch(batch)).to(self.dtype))
            return {k: v.float().numpy() for k, v in heads.items()}

    def run_timed(self, batch: np.ndarray):
        if self.device == "cpu":
            return super().run_timed(batch)
        torch = self.torch
        batch = self.network_batch(batch)
        if self._pinned_in is None or self._pinned_in.shape != batch.shape:
            self._pinned_in = torch.empty(batch.shape, dtype=torch.float32).pin_memory()
        self._pinned_in.numpy()[...] = batch          # host staging copy (not a device stage)
        e0, e1, e2, e3 = self.events
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            e0.record(self.stream)
            x = self._pinned_in.to(self.torch_device, non_blocking=True)
            e1.record(self.stream)
            heads = self.net(x.to(self.dtype))
            heads = {k: v.float() for k, v in heads.items()}
            e2.record(self.stream)
            outs = {}
            for k, v in heads.items():
                buf = self._pinned_out.get(k)
                if buf is None or buf.shape != v.shape:
                    buf = self._pinned_out[k] = torch.empty(v.shape, dtype=torch.float32).pin_memory()
                buf.copy_(v, non_blocking=True)
                outs[k] = buf
            e3.record(self.stream)
        self.stream.synchronize()
        times = {"h2d": e0.elapsed_time(e1), "inference": e1.elapsed_time(e2),
                 "d2h": e2.elapsed_time(e3)}
        return {k: v.numpy().copy() for k, v in outs.items()}, times


def _open(model, *, device=None, precision=None, threads=None, arch=None, input_hw=None, seed=0,
          **_ignored):
    is_arch = not Path(model).suffix and str(model).lower() in ARCHS
    return PyTorchBackend(None if is_arch else model, arch=model if is_arch else arch,
                          device=device or "cpu", precision=precision or "fp32",
                          input_hw=input_hw, seed=seed, threads=threads)


registry.register(registry.BackendInfo(
    name="torch", opener=_open, suffixes=(".pt", ".pth", ".pkl"),
    runs="a checkpoint (.pt/.pth/.pkl) or an architecture name", aliases=("pytorch",),
    devices=("cpu", "cuda"), default_device="cpu", precisions=EXPORT_PRECISIONS,
    capabilities=frozenset({"arch_names", "timed_copies"})))
