"""Export files as ONNX sees them: load one with its checked metadata, or (re)write its metadata.

Needs onnx, not torch (engines are built and models quantized on a Jetson). The metadata's
meaning lives in ``contract.metadata``.
"""
from __future__ import annotations

import json

from .contract.metadata import METADATA_KEY, ModelMetadata, read_metadata
from .errors import UserError

__all__ = ["load_export", "set_metadata", "declared_outputs"]


def load_export(path, load_external_data: bool = True):
    """(ModelProto, ModelMetadata) of an ONNX file made by ``export``; a one-line UserError for a
    file that is not ONNX or was not exported by cornernet-deploy."""
    import onnx
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception:  # protobuf raises its own types for every kind of bad file
        raise UserError(f"{path} is not an ONNX model") from None
    return model, read_metadata(model, path)


def set_metadata(model, metadata) -> None:
    """Make ``metadata`` (a dict or ``ModelMetadata``) the model's only ``metadata_props`` entry."""
    import onnx
    raw = metadata.raw if isinstance(metadata, ModelMetadata) else metadata
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(raw)})


def declared_outputs(model) -> dict:
    """{output name: (numpy dtype name, shape)} as the graph declares them (a size the graph
    fixes is an int, a symbolic one its name), for ``contract.metadata.check_graph_outputs``."""
    import onnx
    out = {}
    for value in model.graph.output:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        out[value.name] = (dtype, shape)
    return out
