"""Thin helpers over cuda-python's runtime bindings (``cuda.bindings.runtime`` or the older
``cuda.cudart``), used by the engine builder (device name) and the TensorRT backend (buffers,
streams, events). No torch, no pycuda."""
from __future__ import annotations

import shutil
import subprocess

from ..errors import UserError


def cudart():
    """The CUDA runtime bindings module, or UserError saying what to install."""
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # older cuda-python
        return runtime
    except ImportError:
        raise UserError("the TensorRT backend needs cuda-python of your CUDA major: pip install 'cuda-python>=12.6,<13' "
                        "(CUDA 12, JetPack 6) or 'cuda-python>=13,<14' (CUDA 13)") from None


def check(result):
    """cuda-python calls return (err, *values): raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    rt = cudart()
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        _, name = rt.cudaGetErrorName(err)
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_info(device: int = 0) -> dict:
    """Name and compute capability of a GPU (cuda-python, else nvidia-smi)."""
    try:
        rt = cudart()
        prop = check(rt.cudaGetDeviceProperties(device))
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name, "compute_capability": f"{prop.major}.{prop.minor}"}
    except (UserError, RuntimeError):
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", f"--id={device}", "--query-gpu=name,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            name, cc = (s.strip() for s in out.stdout.strip().splitlines()[0].rsplit(",", 1))
            return {"name": name, "compute_capability": cc}
    return {"name": "unknown", "compute_capability": "unknown"}


def gpu_status() -> tuple:
    """(True, "N CUDA device(s)") when the CUDA runtime (cuda-python) sees a GPU, else (False, why).
    What TensorRT itself needs: a CPU-only torch says nothing about it."""
    try:
        rt = cudart()
    except UserError as exc:
        return False, str(exc)
    err, count = rt.cudaGetDeviceCount()
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        _, name = rt.cudaGetErrorName(err)
        return False, f"cudaGetDeviceCount failed: {name.decode() if isinstance(name, bytes) else name}"
    if count < 1:
        return False, "no CUDA device"
    return True, f"{count} CUDA device(s)"
