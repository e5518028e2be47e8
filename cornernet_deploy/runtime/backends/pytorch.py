"""PyTorch backend: a checkpoint, or an architecture name with random weights (seeded: the same
name and seed always give the same weights), through the same pipeline as the exported files.

For comparisons and profiling only; importing this module imports torch, so the runtime imports
it lazily (``open_backend`` of a ``.pt``/``.pkl``/``.pth`` file, or an architecture name).
CPU: ``run_timed`` is the host clock around the network (torch's own threads, or ``threads``
applied around each call: torch's setting is process-wide); ``precision="bf16"``: CPU autocast to
BF16 with channels-last weights and input (fast where the CPU has AVX512-BF16 or AMX; elsewhere
oneDNN emulates it, slowly). CUDA: everything on the backend's
own stream, input copied from pinned host memory, outputs copied back into pinned buffers, the
three stages timed by CUDA events on that stream.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ...contract.arch import ARCHS
from ...contract.precision import COMPUTE_PRECISIONS
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
        if precision == "bf16" and str(device).startswith("cuda"):
            raise UserError("bf16 with the torch backend runs on the CPU (autocast); on a GPU use "
                            "--precision fp16")
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
        # BF16 on the CPU: weights stay FP32, autocast runs convolutions and matmuls in BF16
        # (oneDNN's AVX512-BF16 / AMX kernels), channels-last is the layout those kernels take
        self.autocast = precision == "bf16"
        if self.autocast:
            self.net = self.net.to(memory_format=torch.channels_last)
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
        x = torch.from_numpy(self.network_batch(batch)).to(self.dtype)
        autocast = contextlib.nullcontext()
        if self.autocast:
            x = x.contiguous(memory_format=torch.channels_last)
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        with self._threads(), torch.inference_mode(), autocast:
            heads = self.net(x)
            return {k: v.float().contiguous().numpy() for k, v in heads.items()}

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


def device_problem(device: str):
    """Why the torch backend cannot run on ``device`` here, or None."""
    try:
        import torch
    except ModuleNotFoundError:
        return "PyTorch is not installed (pip install 'cornernet-deploy[torch]')"
    if device == "cuda" and not torch.cuda.is_available():
        return f"PyTorch {torch.__version__} sees no CUDA GPU"
    return None


def _open(model, *, device=None, precision=None, threads=None, arch=None, input_hw=None, seed=0,
          **_ignored):
    is_arch = not Path(model).suffix and str(model).lower() in ARCHS
    return PyTorchBackend(None if is_arch else model, arch=model if is_arch else arch,
                          device=device or "cpu", precision=precision or "fp32",
                          input_hw=input_hw, seed=seed, threads=threads)


def _describe(path):
    """A checkpoint's recorded architecture, iteration and stored validation metrics (needs torch)."""
    from ...contract.metadata import printable
    from ...models.checkpoint import read_checkpoint, spec_from_checkpoint
    spec = spec_from_checkpoint(path)
    raw = read_checkpoint(path)
    names = [printable(n) for n in spec.class_names]
    rows = [("file", "cornernet-deploy checkpoint" if raw.get("format") else "checkpoint (no recorded format)"),
            ("iteration", str(raw["iteration"]) if "iteration" in raw else "not recorded"),
            ("validation", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                     for k, v in raw["val_metrics"].items())
             if isinstance(raw.get("val_metrics"), dict) else "none stored"),
            ("classes", f"{len(names)}: " + ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)"
                                                                     if len(names) > 12 else ""))]
    recipe = raw.get("recipe")
    if isinstance(recipe, dict):
        keys = ("iterations", "batch_size", "lr", "input_size")
        rows.append(("recipe", ", ".join(f"{k} {recipe[k]}" for k in keys if k in recipe)))
    return spec, rows


registry.register(registry.BackendInfo(
    name="torch", opener=_open, describer=_describe, suffixes=(".pt", ".pth", ".pkl"),
    runs="a checkpoint (.pt/.pth/.pkl) or an architecture name", aliases=("pytorch",),
    devices=("cpu", "cuda"), default_device="cpu", precisions=COMPUTE_PRECISIONS,
    capabilities=frozenset({"arch_names", "timed_copies"}), device_check=device_problem))
