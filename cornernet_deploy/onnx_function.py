"""The standard-op body of the ``cornernet_deploy::CornerPool`` custom op, as an ONNX FunctionProto.

One exported file serves several runtimes: TensorRT maps the custom node to our plugin (the engine
builder removes this function before parsing so that the plugin always wins), ONNX Runtime, which
knows no such op, inlines this function instead, and for OpenVINO, which uses no model-local
function, ``expand_corner_pool_nodes`` puts the body in place of every node.

Body: the ``mode`` attribute picks a branch of an ``If``; each branch computes the two directional
cumulative maxima by log-step doubling (``cur = Max(cur, shift(cur, s))`` for s = 1, 2, 4, ...,
filling with -inf), which is exact and correct for any size up to 2**steps. The string attribute is
turned into a boolean with ``ai.onnx.ml.LabelEncoder`` because ``Equal`` on strings needs opset 19
and we keep opset 17 for older TensorRT parsers. Torch-free (needs only ``onnx``).
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from .contract.op import BOTTOM_RIGHT, CORNER_POOL, TOP_LEFT

DOMAIN = CORNER_POOL.domain
OP_TYPE = CORNER_POOL.op_type
ML_DOMAIN = "ai.onnx.ml"
INT64_MAX = 2**63 - 1


class _Body:
    """Accumulates nodes with unique names; ``prefix`` keeps subgraph names distinct."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.count = prefix, [], 0

    def add(self, op: str, inputs, **attrs) -> str:
        self.count += 1
        out = f"{self.prefix}{op.lower()}{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def const_ints(self, values) -> str:
        return self.add("Constant", [], value=helper.make_tensor(f"{self.prefix}c{self.count}",
                                                                  TensorProto.INT64, [len(values)], values))


def _cummax(body: _Body, x: str, axis: int, reverse: bool, steps: int, neg_inf: str) -> str:
    axes = body.const_ints([axis])
    cur = x
    for i in range(steps):
        s = 1 << i
        zero, s_c = body.const_ints([0]), body.const_ints([s])
        head = body.add("Slice", [cur, zero, s_c, axes])  # first s elements (fewer if shorter)
        fill = body.add("Expand", [neg_inf, body.add("Shape", [head])])
        if reverse:  # out[y] = max(out[y], out[y + s])
            rest = body.add("Slice", [cur, s_c, body.const_ints([INT64_MAX]), axes])
            shifted = body.add("Concat", [rest, fill], axis=axis)
        else:  # out[y] = max(out[y], out[y - s])
            rest = body.add("Slice", [cur, zero, body.const_ints([-s]), axes])
            shifted = body.add("Concat", [fill, rest], axis=axis)
        cur = body.add("Max", [cur, shifted])
    return cur


def _branch(mode: str, steps: int) -> onnx.GraphProto:
    body = _Body(f"{mode}_")
    neg_inf_f32 = body.add("Constant", [], value=helper.make_tensor("ninf", TensorProto.FLOAT, [], [float("-inf")]))
    neg_inf = body.add("CastLike", [neg_inf_f32, "a"])  # same dtype as the input (fp32 or fp16)
    reverse = mode == TOP_LEFT  # Top/Left look towards higher indices
    vertical = _cummax(body, "a", 2, reverse, steps, neg_inf)
    horizontal = _cummax(body, "b", 3, reverse, steps, neg_inf)
    body.nodes.append(helper.make_node("Add", [vertical, horizontal], [f"{mode}_out"]))
    untyped_output = onnx.ValueInfoProto(name=f"{mode}_out")  # fp32 or fp16: follows the input
    return helper.make_graph(body.nodes, mode, [], [untyped_output])


def corner_pool_function(steps: int, opset: int) -> onnx.FunctionProto:
    """FunctionProto ``cornernet_deploy.CornerPool(a, b; mode)`` exact for sides up to 2**steps."""
    mode_ref = onnx.AttributeProto()
    mode_ref.name, mode_ref.ref_attr_name, mode_ref.type = "value_string", "mode", onnx.AttributeProto.STRING
    read_mode = helper.make_node("Constant", [], ["mode"])
    read_mode.attribute.append(mode_ref)
    nodes = [
        read_mode,
        helper.make_node("LabelEncoder", ["mode"], ["mode_code"], domain=ML_DOMAIN,
                         keys_strings=list(CORNER_POOL.modes), values_int64s=[1, 0], default_int64=1),
        helper.make_node("Cast", ["mode_code"], ["is_top_left"], to=TensorProto.BOOL),
        helper.make_node("If", ["is_top_left"], ["out"], then_branch=_branch(TOP_LEFT, steps),
                         else_branch=_branch(BOTTOM_RIGHT, steps)),
    ]
    return helper.make_function(DOMAIN, OP_TYPE, ["a", "b"], ["out"], nodes,
                                [helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, 2)],
                                attributes=[CORNER_POOL.mode_attribute], doc_string=__doc__.splitlines()[0])


def attach_corner_pool_function(model: onnx.ModelProto, steps: int) -> None:
    """Declare our domain and add the function body to a model that uses the custom node."""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for domain, version in ((DOMAIN, CORNER_POOL.opset_version), (ML_DOMAIN, 2)):
        if not any(o.domain == domain for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(domain, version))
    del model.functions[:]
    model.functions.append(corner_pool_function(steps, opset))


def _drop_unused_domain(model: onnx.ModelProto, domain: str) -> None:
    if not any(n.domain == domain for n in model.graph.node):
        for o in list(model.opset_import):
            if o.domain == domain:
                model.opset_import.remove(o)


def expand_corner_pool_nodes(model: onnx.ModelProto) -> int:
    """Replace every CornerPool node by the standard-op body its ``mode`` selects, taken from the
    model's own function (the ``If`` branch named after the mode, with every inner tensor renamed
    per node), then drop the function. For runtimes that neither know the custom op nor use
    model-local functions (OpenVINO): ONNX's own inliner is no help there, since the inlined
    function picks its branch at run time through a string attribute (``LabelEncoder``, string
    constants), which such runtimes cannot read either. The result computes exactly what the
    function computes. Returns how many nodes were replaced; ValueError for a custom node without
    its body."""
    ours = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == OP_TYPE]
    if not ours:
        return 0
    function = next((f for f in model.functions if f.domain == DOMAIN and f.name == OP_TYPE), None)
    if function is None:
        raise ValueError(f"the model uses {DOMAIN}.{OP_TYPE} but carries no function body for it")
    branches = {attr.g.name: attr.g for node in function.node if node.op_type == "If"
                for attr in node.attribute if attr.type == onnx.AttributeProto.GRAPH}
    a, b = function.input
    replaced = {id(n) for n in ours}
    nodes = []
    for k, node in enumerate(model.graph.node):
        if id(node) not in replaced:
            nodes.append(node)
            continue
        mode = next((attr.s.decode() for attr in node.attribute
                     if attr.name == CORNER_POOL.mode_attribute), None)
        if mode not in branches:
            raise ValueError(f"CornerPool node {node.name!r}: mode {mode!r} is none of {sorted(branches)}")
        branch = branches[mode]
        prefix = f"{node.name or k}/"
        rename = {a: node.input[0], b: node.input[1], branch.output[0].name: node.output[0]}
        for inner in branch.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            copy.input[:] = [rename.get(t, prefix + t) if t else t for t in inner.input]
            copy.output[:] = [rename.get(t, prefix + t) for t in inner.output]
            copy.name = prefix + (inner.name or inner.output[0])
            nodes.append(copy)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    strip_corner_pool_function(model)
    _drop_unused_domain(model, DOMAIN)
    return len(ours)


def strip_corner_pool_function(model: onnx.ModelProto) -> int:
    """Remove our function bodies (for TensorRT, so the parser maps every node to the plugin on all
    10.x/11.x versions: up to 10.6 a same-named local function always wins). Returns how many."""
    ours = [f for f in model.functions if f.domain == DOMAIN]
    for f in ours:
        model.functions.remove(f)
    _drop_unused_domain(model, ML_DOMAIN)
    return len(ours)


# ONNX Runtime's TensorRT execution provider registers every creator in TensorRT's plugin registry
# (ours once ``trt_extra_plugin_lib_paths`` has loaded the library) as a custom op of this domain.
TENSORRT_EP_PLUGIN_DOMAIN = "trt.plugins"


def retarget_corner_pool_to_tensorrt_ep(model: onnx.ModelProto) -> int:
    """Make ``model`` one that ONNX Runtime's TensorRT provider runs with our plugin: the function
    bodies go (as for ``build``: TensorRT's parser would inline a same-named local function) and
    the CornerPool nodes move to the ``trt.plugins`` domain, the only custom-op domain that
    provider declares to ONNX Runtime (its parser still finds the creator by op type,
    ``plugin_version`` and ``plugin_namespace``). Such a model runs on that provider only. Returns
    how many nodes were moved."""
    strip_corner_pool_function(model)
    moved = 0
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            node.domain = TENSORRT_EP_PLUGIN_DOMAIN
            moved += 1
    _drop_unused_domain(model, DOMAIN)
    if moved and not any(o.domain == TENSORRT_EP_PLUGIN_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(TENSORRT_EP_PLUGIN_DOMAIN, 1))
    return moved
