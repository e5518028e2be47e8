"""TensorRT per-layer times (``TensorRTBackend.layer_profile``) turned into the report's ``layers``
entry: the top layers, the share of the corner-pool plugin, and separately the reformat layers
TensorRT puts around it."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

__all__ = ["summarize_layers", "CORNER_POOL_MARKER", "REFORMAT_MARKER"]

# Layer names come from the ONNX node names, and TensorRT keeps a plugin layer's name. The engine
# manifest lists the corner-pool node names (``corner_pool_layers``); for manifests without that list
# a name containing this marker counts (the exporter names the nodes ".../CornerPool").
CORNER_POOL_MARKER = "cornerpool"
# TensorRT's name for the copies it inserts to convert a tensor's format/type for the next layer:
# "Reformatting CopyNode for Input Tensor 0 to <layer>" (and "... Output Tensor ...").
REFORMAT_MARKER = "reformat"


def summarize_layers(layers: Sequence[Tuple[str, float]], top: int = 15, runs: int | None = None,
                     corner_pool_names: Optional[Sequence[str]] = None) -> dict:
    """Per-layer mean times ``[(name, ms)]`` -> ``{"total_ms", "runs", "num_layers", "top": [{"name",
    "ms", "share"}], "corner_pool_layers", "corner_pool_ms", "corner_pool_share",
    "corner_pool_reformat_layers", "corner_pool_reformat_ms", "corner_pool_reformat_share"}`` (shares
    of the summed layer time).

    Corner-pool layers are the layers named exactly like a corner-pool node (``corner_pool_names``,
    from the engine manifest), or, without names, those whose name contains "CornerPool". Reformat
    layers that feed or follow one of them (TensorRT names them after the layer they serve) are
    reported separately: they are a cost of the plugin's layout, not of its kernel."""
    items: List[Tuple[str, float]] = sorted(((str(n), float(ms)) for n, ms in layers),
                                            key=lambda kv: -kv[1])
    total = sum(ms for _, ms in items)
    names = set(corner_pool_names or ())

    def is_reformat(name: str) -> bool:
        return REFORMAT_MARKER in name.lower()

    def mentions_pool(name: str) -> bool:
        if names:
            return any(pool in name for pool in names)
        return CORNER_POOL_MARKER in name.lower().replace("_", "")

    pool = [(n, ms) for n, ms in items if not is_reformat(n) and (n in names if names else mentions_pool(n))]
    reformats = [(n, ms) for n, ms in items if is_reformat(n) and mentions_pool(n)]
    pool_ms = sum(ms for _, ms in pool)
    reformat_ms = sum(ms for _, ms in reformats)
    share = (lambda ms: ms / total if total > 0 else None)
    return {
        "runs": runs,
        "num_layers": len(items),
        "total_ms": total,
        "top": [{"name": n, "ms": ms, "share": share(ms)} for n, ms in items[:top]],
        "corner_pool_layers": len(pool),
        "corner_pool_ms": pool_ms,
        "corner_pool_share": share(pool_ms),
        "corner_pool_reformat_layers": len(reformats),
        "corner_pool_reformat_ms": reformat_ms,
        "corner_pool_reformat_share": share(reformat_ms),
    }
