"""The corner-pool op's identity, defined once (docs/CONTRACTS.md "Corner-pool custom op").

The same names appear in three languages: the PyTorch model emits the ONNX node
(``models/corner_pool.py``), the ONNX function body and the TensorRT paths read it
(``onnx_function.py``, ``tensorrt/``), and the C++ plugin registers its creator under it
(``plugins/cornerPoolPlugin/cornerPoolPlugin.h``: a test reads the header and checks it against
these values). The semantics of the two modes are in ``models/corner_pool.py`` and the plugin
README.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CornerPoolOp", "CORNER_POOL", "CORNER_POOL_MODES", "TOP_LEFT", "BOTTOM_RIGHT", "PLUGIN_LIBRARY_NAME",
           "PLUGIN_VERSION_TAG", "EXPORT_CORNER_POOL"]


@dataclass(frozen=True)
class CornerPoolOp:
    domain: str            # ONNX node domain (declared in opset_import at ``opset_version``)
    op_type: str           # ONNX node op_type = TensorRT creator name
    opset_version: int     # the domain's version in opset_import
    plugin_name: str       # TensorRT creator name
    plugin_version: str    # TensorRT creator version (also the node's ``plugin_version`` attribute)
    plugin_namespace: str  # TensorRT creator namespace (also the node's ``plugin_namespace`` attribute)
    modes: tuple           # values of the ``mode`` attribute / plugin field
    mode_attribute: str = "mode"


CORNER_POOL = CornerPoolOp(domain="cornernet_deploy", op_type="CornerPool", opset_version=1,
                           plugin_name="CornerPool", plugin_version="1",
                           plugin_namespace="cornernet_deploy", modes=("top_left", "bottom_right"))
CORNER_POOL_MODES = CORNER_POOL.modes
# top_left = TopPool(a) + LeftPool(b); bottom_right = BottomPool(a) + RightPool(b)
TOP_LEFT, BOTTOM_RIGHT = CORNER_POOL.modes

# How an export writes corner pooling: one custom node (with a standard-op function body) or
# standard ops only; "reference" describes the eager PyTorch model (torch backend, no file).
EXPORT_CORNER_POOL = ("plugin", "onnx")

# The plugin library's file name, and the ASCII tag it carries with the TensorRT version of the
# headers it was compiled against (written by plugins/cornernetDeployPlugins.cpp, kHeadersTag).
PLUGIN_LIBRARY_NAME = "libcornernet_deploy_plugins.so"
PLUGIN_VERSION_TAG = rb"cornernet_deploy_tensorrt_headers=(\d+)\.(\d+)\.(\d+)"
