"""TensorRT per-layer times (``TensorRTBackend.layer_profile``) turned into the report's ``layers``
entry: the top layers and the share of the corner-pool plugin."""
from __future__ import annotations

from typing import List, Sequence, Tuple

__all__ = ["summarize_layers", "CORNER_POOL_MARKER"]

# Layer names come from the ONNX node names; the exporter names every corner-pool node
# ".../CornerPool" (op_type CornerPool, docs/CONTRACTS.md). TensorRT keeps a plugin layer's name.
CORNER_POOL_MARKER = "cornerpool"


def summarize_layers(layers: Sequence[Tuple[str, float]], top: int = 15, runs: int | None = None) -> dict:
    """Per-layer mean times ``[(name, ms)]`` -> ``{"total_ms", "runs", "top": [{"name", "ms",
    "share"}], "corner_pool_ms", "corner_pool_share", "corner_pool_layers"}`` (shares of the
    summed layer time; corner-pool layers are those whose name contains "CornerPool")."""
    items: List[Tuple[str, float]] = sorted(((str(n), float(ms)) for n, ms in layers),
                                            key=lambda kv: -kv[1])
    total = sum(ms for _, ms in items)
    pool = [(n, ms) for n, ms in items if CORNER_POOL_MARKER in n.lower().replace("_", "")]
    pool_ms = sum(ms for _, ms in pool)
    share = (lambda ms: ms / total if total > 0 else None)
    return {
        "runs": runs,
        "num_layers": len(items),
        "total_ms": total,
        "top": [{"name": n, "ms": ms, "share": share(ms)} for n, ms in items[:top]],
        "corner_pool_layers": len(pool),
        "corner_pool_ms": pool_ms,
        "corner_pool_share": share(pool_ms),
    }
