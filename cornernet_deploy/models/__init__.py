"""PyTorch reference models (export and training side; the runtime never imports this)."""
from __future__ import annotations

from ..contract.arch import ARCHS, ArchSpec, get_arch
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .corner_pool import (CornerPool, bottom_pool, corner_pool, left_pool, right_pool,
                          top_pool)
from .cornernet import HEAD_NAMES, CornerNet, count_parameters, count_test_parameters


def build_spec(arch: str | ArchSpec, num_classes: int | None = None, width: float | None = None,
               **overrides) -> ArchSpec:
    """The ArchSpec of ``arch`` with optional changes.

    ``width`` scales every channel count; ``overrides`` are ArchSpec fields (``stacks``,
    ``levels``, ``dims``, ``modules``, ``input_size`` ...), e.g. a tiny test variant:
    ``build_spec("cornernet-squeeze", num_classes=3, width=0.125, levels=2, stacks=1)``.
    """
    spec = arch if isinstance(arch, ArchSpec) else get_arch(arch)
    if num_classes is not None and num_classes != spec.num_classes:
        overrides["num_classes"] = num_classes
    if overrides:
        spec = spec.replace(**overrides)
    if width is not None and width != 1.0:
        spec = spec.scaled(width)
    return spec


def build_model(arch: str | ArchSpec, num_classes: int | None = None, width: float | None = None,
                **overrides) -> CornerNet:
    """Build ``cornernet``, ``cornernet-squeeze`` or ``cornernet-saccade`` (or a variant)."""
    return CornerNet(build_spec(arch, num_classes, width, **overrides))


__all__ = ["ARCHS", "ArchSpec", "CheckpointError", "CornerNet", "CornerPool", "HEAD_NAMES",
           "bottom_pool", "build_model", "build_spec", "corner_pool", "count_parameters",
           "count_test_parameters", "get_arch", "left_pool", "load_checkpoint", "right_pool",
           "save_checkpoint", "top_pool"]
