"""The precision vocabulary, defined once.

A precision names the number format a network *runs* in. Files carry theirs in the export
metadata (``precision``) and engine manifests; a backend declares which it can run
(``runtime.backends.registry``), and each producer which it can write.
"""
from __future__ import annotations

from ..errors import UserError

__all__ = ["PRECISIONS", "EXPORT_PRECISIONS", "ENGINE_PRECISIONS", "FILE_PRECISIONS",
           "COMPUTE_PRECISIONS", "check_precision"]

# Every name the toolkit knows, most precise first (`compare` judges two models by the profile of
# the less precise): bf16 keeps 8 significant bits to fp16's 11 (with fp32's exponent range).
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# What `export --precision` writes (FP16: half network, float32 input and outputs); also what a
# backend that runs float files may be asked for (`--precision`, ``runtime.backends.registry``).
EXPORT_PRECISIONS = ("fp32", "fp16")
# What an export file may record (`quantize` writes int8 Q/DQ models).
FILE_PRECISIONS = ("fp32", "fp16", "int8")
# What a backend that chooses its own arithmetic may run a float file in (`--precision`): the torch
# backend (BF16: CPU autocast), OpenVINO's inference precision hint (where the device has it).
COMPUTE_PRECISIONS = ("fp32", "fp16", "bf16")
# What `build` makes TensorRT engines in.
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


def check_precision(value, allowed=PRECISIONS, what: str = "precision") -> str:
    """``value`` if it is one of ``allowed``; else a one-line UserError naming the choices."""
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r} (choose {', '.join(allowed)})")
    return value
