"""The export metadata: the one description of a model outside its weights (docs/CONTRACTS.md).

An export carries it as JSON under ``metadata_props[METADATA_KEY]``; an engine manifest embeds it;
the torch backend describes its model with the same dict. ``build_metadata`` writes it,
``parse_metadata`` is the one reader: it checks every field once, at load, and returns a
``ModelMetadata`` (typed fields plus the dict as read, ``raw``, for writers that pass it on).
A crafted or damaged entry is a one-line ``UserError`` naming the file and the field, never a
traceback later.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from ..errors import UserError
from .arch import (ARCHS, COCO_MEAN_BGR, COCO_STD_BGR, ArchSpec, TestConfig,
                   spec_from_dict, spec_to_dict)
from .op import EXPORT_CORNER_POOL
from .precision import PRECISIONS

__all__ = ["METADATA_KEY", "METADATA_FORMAT", "RAW_OUTPUTS", "GRAPH_OUTPUTS", "DECODES",
           "INPUT_NAME", "INPUT_DTYPES", "ModelMetadata", "output_names", "build_metadata",
           "parse_metadata", "read_metadata", "check_class_name", "check_tensor_name", "printable",
           "output_shapes", "check_graph_outputs"]

# The metadata_props key under which an export carries its description.
METADATA_KEY = "cornernet_deploy"
METADATA_FORMAT = 1
INPUT_NAME = "image"
# Output names of an export: raw heads (``decode="none"``), or the in-graph decode's top-K corners
# (``decode="graph"``); Saccade adds ``att0 .. att{levels-1}``.
RAW_OUTPUTS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")
GRAPH_OUTPUTS = ("tl_scores", "tl_inds", "tl_tags", "tl_offs",
                 "br_scores", "br_inds", "br_tags", "br_offs")
DECODES = ("none", "graph")
# What the network's input holds: "float32" normalised pixels ((x/255 - mean)/std, computed by the
# runtime), or "uint8" raw BGR pixels that the graph itself casts and normalises (export --input).
INPUT_DTYPES = ("float32", "uint8")
# how the file computes corner pooling (op.EXPORT_CORNER_POOL), or the eager torch model
CORNER_POOL_FORMS = EXPORT_CORNER_POOL + ("reference",)

# Names that end up in other tools' files (Triton's config.pbtxt, labels.txt): no quotes, no
# control characters, nothing that could start a new line there.
_TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def output_names(spec: ArchSpec, decode: str) -> list:
    names = list(RAW_OUTPUTS if decode == "none" else GRAPH_OUTPUTS)
    if spec.attention:
        names += [f"att{i}" for i in range(spec.levels)]
    return names


def check_class_name(name, where: str = "class name") -> str:
    """A class name must be text without control characters (a newline would split a line of
    Triton's labels.txt and shift every later label)."""
    if not isinstance(name, str):
        raise UserError(f"{where} {name!r} is not text")
    if _CONTROL.search(name):
        raise UserError(f"{where} {name!r} contains a control character (newline, tab, ...); "
                        "rename the class")
    return name


def printable(text) -> str:
    """``text`` with every control character written as its escape (``\\n``, ``\\x1b``), for
    files read line by line (Triton's labels.txt, a README): a value read from a model file never
    starts a line of its own there."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def check_tensor_name(name, where: str = "tensor name") -> str:
    if not isinstance(name, str) or not _TENSOR_NAME.match(name):
        raise UserError(f"{where} {name!r} is not a valid tensor name (letters, digits, '_', '.', "
                        "':', '/', '-', starting with a letter or '_')")
    return name


def build_metadata(spec: ArchSpec, input_hw, batch, decode, corner_pool, precision, dynamic_size,
                   input_dtype: str = "float32") -> dict:
    """The metadata dict of an export (or of the torch backend's model)."""
    from .. import __version__
    for name in spec.class_names:
        check_class_name(name)
    return {
        "format": METADATA_FORMAT, "toolkit_version": __version__, "arch": spec.name,
        "spec": spec_to_dict(spec), "input_name": INPUT_NAME, "input_dtype": input_dtype,
        "input_hw": None if dynamic_size else list(input_hw), "batch": batch,
        "channel_order": "BGR", "mean": list(COCO_MEAN_BGR), "std": list(COCO_STD_BGR),
        "stride": spec.stride, "class_names": list(spec.class_names),
        "category_ids": list(spec.category_ids), "decode": decode,
        "test": dataclasses.asdict(spec.test),
        "saccade": dataclasses.asdict(spec.saccade) if spec.saccade else None,
        "outputs": output_names(spec, decode), "corner_pool": corner_pool, "precision": precision,
    }


@dataclass(frozen=True, eq=False)
class ModelMetadata:
    """The export metadata, parsed and checked (``parse_metadata``). ``raw`` is the dict as read."""

    raw: dict
    spec: ArchSpec
    input_name: str
    input_dtype: str                 # "float32" (normalised) | "uint8" (pixels, normalised in-graph)
    input_hw: Optional[tuple]        # fixed (H, W), or None for a dynamic-size model
    batch: Optional[int]             # fixed batch, or None for a dynamic batch
    mean: tuple
    std: tuple
    class_names: tuple
    category_ids: tuple
    decode: str                      # "none" (raw heads) | "graph" (in-graph top-K)
    outputs: tuple
    corner_pool: str
    precision: str
    quantization: Optional[dict]

    @property
    def arch(self) -> str:
        return self.spec.name

    def get(self, key: str, default=None):
        """A raw entry (for the keys this class does not type, e.g. ``toolkit_version``)."""
        return self.raw.get(key, default)

    def describe(self) -> list:
        """[(field, text)] for people (``info``): what the model takes, computes and answers."""
        t = self.spec.test
        names = [printable(n) for n in self.class_names]
        shown = ", ".join(names[:12]) + (f", ... ({len(names) - 12} more)" if len(names) > 12 else "")
        rows = [
            ("precision", self.precision),
            ("decode", {"none": "none (raw heads; decoded on the CPU)",
                        "graph": f"graph (top-{t.top_k} corners in the graph)"}[self.decode]),
            ("corner pool", {"plugin": "plugin (CornerPool op; TensorRT plugin)",
                             "onnx": "onnx (standard ops)"}.get(self.corner_pool, self.corner_pool)),
            ("input", f"{self.input_name}: "
                      + (f"{self.input_hw[0]}x{self.input_hw[1]} (fixed)" if self.input_hw
                         else "any size (dynamic)") + ", BGR"),
            ("batch", str(self.batch) if self.batch is not None else "dynamic"),
            ("classes", f"{len(names)}: {shown}"),
            ("outputs", ", ".join(self.outputs)),
            ("test", f"top_k {t.top_k}, num_dets {t.num_dets}, ae_threshold {t.ae_threshold:g}, "
                     f"flip {t.flip}, soft-NMS sigma {t.soft_nms_sigma:g}"),
        ]
        q = self.quantization
        if q:
            parts = [f"{q.get('method', '?')}"
                     + (f" (percentile {q['percentile']:g})" if isinstance(q.get("percentile"), (int, float)) else ""),
                     f"{q['images']} calibration images" if "images" in q else None,
                     q.get("scheme") if isinstance(q.get("scheme"), str) else None,
                     f"from {printable(q['from'].get('file'))}" if isinstance(q.get("from"), Mapping) else None]
            rows.append(("quantization", ", ".join(x for x in parts if x)))
        else:
            rows.append(("quantization", "none"))
        if self.get("toolkit_version"):
            rows.append(("made by", f"cornernet-deploy {printable(self.get('toolkit_version'))}"))
        return rows


# ------------------------------------------------------------------------------------------------
# reading

class _Checker:
    """One-line errors that name the file and the field."""

    def __init__(self, source):
        self.source = source

    def fail(self, what: str):
        raise UserError(f"{self.source}: its '{METADATA_KEY}' metadata {what}")

    def integer(self, value, field: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(f"has {field} {value!r}; expected a whole number >= {minimum}")
        return value

    def number(self, value, field: str, minimum: float = -math.inf, above: Optional[float] = None) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(f"has {field} {value!r}; expected a finite number")
        if value < minimum or (above is not None and value <= above):
            bound = f"> {above:g}" if above is not None else f">= {minimum:g}"
            self.fail(f"has {field} {value!r}; expected a number {bound}")
        return float(value)

    def triple(self, value, field: str, default, positive: bool = False) -> tuple:
        if value is None:
            return tuple(default)
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            self.fail(f"has {field} {value!r}; expected 3 numbers (B, G, R)")
        return tuple(self.number(v, field, above=0.0 if positive else None) for v in value)

    def choice(self, value, field: str, allowed) -> str:
        if value not in allowed:
            self.fail(f"has {field} {value!r}; expected one of {', '.join(map(str, allowed))}")
        return value


def _check_test(check: _Checker, test: TestConfig) -> None:
    check.integer(test.top_k, "test.top_k")
    check.integer(test.num_dets, "test.num_dets")
    check.integer(test.nms_kernel, "test.nms_kernel")
    if test.nms_kernel % 2 == 0:
        check.fail(f"has test.nms_kernel {test.nms_kernel}; expected an odd window")
    check.integer(test.max_per_image, "test.max_per_image")
    check.number(test.ae_threshold, "test.ae_threshold", minimum=0.0)
    check.number(test.soft_nms_sigma, "test.soft_nms_sigma", above=0.0)
    check.number(test.soft_nms_threshold, "test.soft_nms_threshold", minimum=0.0)
    check.number(test.soft_nms_nt, "test.soft_nms_nt", minimum=0.0)
    check.choice(test.soft_nms_method, "test.soft_nms_method", (0, 1, 2))
    for field in ("flip", "keep_stale_rows", "no_border", "clip_boxes"):
        if not isinstance(getattr(test, field), bool):
            check.fail(f"has test.{field} {getattr(test, field)!r}; expected true or false")


def _spec(check: _Checker, meta: dict) -> ArchSpec:
    spec_data = meta.get("spec")
    if spec_data:
        if not isinstance(spec_data, Mapping):
            check.fail("has a 'spec' that is not an object")
        data = dict(spec_data)
    elif meta.get("arch"):
        if meta["arch"] not in ARCHS:
            check.fail(f"names architecture {meta['arch']!r}, which this toolkit does not know "
                       f"({', '.join(ARCHS)})")
        data = spec_to_dict(ARCHS[meta["arch"]])
    else:
        check.fail("names no architecture ('spec' or 'arch')")
    for entry in ("test", "saccade"):   # the test settings recorded beside the spec win
        value = meta.get(entry)
        if value is not None and not isinstance(value, Mapping):
            check.fail(f"has a '{entry}' that is not an object")
        if value:
            data[entry] = dict(value)
    if not isinstance(data.get("test"), Mapping):
        check.fail("has no test settings ('test' is not an object)")
    if data.get("saccade") is not None and not isinstance(data["saccade"], Mapping):
        check.fail("has a 'saccade' that is not an object")
    try:
        spec = spec_from_dict(data)
        spec.validate()
        _check_test(check, spec.test)
        check.integer(spec.num_classes, "spec.num_classes")
        for field in ("stacks", "levels", "pre_stride2_residuals"):
            check.integer(getattr(spec, field), f"spec.{field}", minimum=0 if field.startswith("pre") else 1)
        if spec.saccade is not None:
            spec.saccade_config()
    except UserError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        check.fail(f"does not describe a known architecture ({type(exc).__name__}: {exc})")
    return spec


def _hw(check: _Checker, value) -> Optional[tuple]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        check.fail(f"has input_hw {value!r}; expected [height, width] or null")
    return tuple(check.integer(v, "input_hw") for v in value)


def parse_metadata(raw, source="the model") -> ModelMetadata:
    """The export description from its JSON text (or an already decoded dict), checked.

    ``raw`` None (a file without the entry, i.e. not made by cornernet-deploy), text that is not a
    JSON object, or any field that is missing, of the wrong type or out of range: a one-line
    ``UserError`` naming ``source``. Every reader of the entry (onnx's ``metadata_props``, ONNX
    Runtime's ``custom_metadata_map``, an engine manifest) goes through here."""
    if isinstance(raw, ModelMetadata):
        return raw
    if raw is None:
        raise UserError(f"{source} was not exported by cornernet-deploy (no '{METADATA_KEY}' "
                        f"metadata); export it with `cornernet-deploy export`")
    if isinstance(raw, (str, bytes)):
        try:
            meta = json.loads(raw)
        except ValueError:
            meta = None
        if not isinstance(meta, dict):
            raise UserError(f"{source}: its '{METADATA_KEY}' metadata is not a JSON object")
    elif isinstance(raw, Mapping):
        meta = dict(raw)
    else:
        raise UserError(f"{source}: its '{METADATA_KEY}' metadata is not a JSON object")
    if METADATA_KEY in meta and "arch" not in meta and "spec" not in meta:   # {key: {...}} as stored
        return parse_metadata(meta[METADATA_KEY], source)
    check = _Checker(source)
    fmt = meta.get("format", METADATA_FORMAT)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt > METADATA_FORMAT:
        check.fail(f"has format {fmt!r}, newer than this toolkit reads ({METADATA_FORMAT}): "
                   "upgrade cornernet-deploy")
    spec = _spec(check, meta)
    order = meta.get("channel_order", "BGR")
    if order != "BGR":
        raise UserError(f"{source}: the model expects {order} input; this runtime feeds BGR as the "
                        "official code")
    input_name = meta.get("input_name", INPUT_NAME)
    if not isinstance(input_name, str) or not _TENSOR_NAME.match(input_name):
        check.fail(f"has input_name {input_name!r}; expected a plain tensor name")
    input_dtype = check.choice(meta.get("input_dtype", "float32"), "input_dtype", INPUT_DTYPES)
    input_hw = _hw(check, meta.get("input_hw"))
    if input_hw is not None:
        try:
            spec.check_input_size(input_hw)
        except ValueError as exc:
            check.fail(f"has input_hw {list(input_hw)}: {exc}")
    batch = meta.get("batch")
    batch = None if batch is None else check.integer(batch, "batch")
    mean = check.triple(meta.get("mean"), "mean", COCO_MEAN_BGR)
    std = check.triple(meta.get("std"), "std", COCO_STD_BGR, positive=True)
    names = meta.get("class_names")
    names = spec.class_names if names is None else names
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes:
        check.fail(f"lists {len(names) if isinstance(names, (list, tuple)) else 'no'} class names for "
                   f"a model with {spec.num_classes} classes")
    for name in names:
        check_class_name(name, f"{source}: class name")
    ids = meta.get("category_ids")
    ids = spec.category_ids if ids is None else ids
    if not isinstance(ids, (list, tuple)) or len(ids) != spec.num_classes:
        check.fail(f"lists {len(ids) if isinstance(ids, (list, tuple)) else 'no'} category ids for a "
                   f"model with {spec.num_classes} classes")
    ids = tuple(check.integer(i, "category_ids", minimum=0) for i in ids)
    decode = check.choice(meta.get("decode") or "none", "decode", DECODES)
    expected = output_names(spec, decode)
    outputs = meta.get("outputs")
    if outputs is None:
        outputs = expected
    if not isinstance(outputs, (list, tuple)) or list(outputs) != expected:
        check.fail(f"lists outputs {outputs!r}; a {spec.name} model with decode '{decode}' has "
                   f"{expected}")
    corner_pool = check.choice(meta.get("corner_pool", "plugin"), "corner_pool", CORNER_POOL_FORMS)
    precision = check.choice(meta.get("precision", "fp32"), "precision", PRECISIONS)
    quantization = meta.get("quantization")
    if quantization is not None and not isinstance(quantization, Mapping):
        check.fail("has a 'quantization' that is not an object")
    return ModelMetadata(raw=meta, spec=spec, input_name=input_name, input_dtype=input_dtype,
                         input_hw=input_hw, batch=batch,
                         mean=mean, std=std, class_names=tuple(names), category_ids=ids,
                         decode=decode, outputs=tuple(outputs), corner_pool=corner_pool,
                         precision=precision, quantization=dict(quantization) if quantization else None)


def output_shapes(metadata: ModelMetadata, input_hw) -> list:
    """[(name, numpy dtype name, dims without the batch)] of the network's outputs as the metadata
    implies them (docs/CONTRACTS.md) for an input of ``input_hw`` (None: a dynamic size, whose
    spatial dims are then None)."""
    spec = metadata.spec
    oh, ow = spec.output_size(input_hw) if input_hw is not None else (None, None)
    k = spec.test.top_k
    dims = {"tl_heat": [spec.num_classes, oh, ow], "br_heat": [spec.num_classes, oh, ow],
            "tl_tag": [1, oh, ow], "br_tag": [1, oh, ow], "tl_off": [2, oh, ow], "br_off": [2, oh, ow]}
    for side in ("tl", "br"):
        dims.update({f"{side}_scores": [k], f"{side}_inds": [k], f"{side}_tags": [k], f"{side}_offs": [k, 2]})
    for j in range(spec.levels):   # Saccade attention, innermost (coarsest) level first
        shift = spec.levels - 1 - j
        dims[f"att{j}"] = [1, None if oh is None else oh >> shift, None if ow is None else ow >> shift]
    return [(name, "int64" if name.endswith("_inds") else "float32", dims[name]) for name in metadata.outputs]


def check_graph_outputs(graph: Mapping, metadata: ModelMetadata, source="the model") -> None:
    """The graph's outputs must be what its metadata implies: ``graph`` = {name: (numpy dtype name,
    shape with the batch; an int where the graph fixes a size, else a name or None)}, as ONNX
    Runtime or the ONNX file declares them. A one-line UserError naming ``source`` and the output."""
    if sorted(graph) != sorted(metadata.outputs):
        raise UserError(f"{source}: the graph's outputs {sorted(graph)} are not those its metadata "
                        f"lists {sorted(metadata.outputs)}; re-export the model")

    def text(dims):
        return "[" + ", ".join(["batch"] + ["?" if d is None else str(d) for d in dims]) + "]"

    for name, dtype, dims in output_shapes(metadata, metadata.input_hw):
        found_type, shape = graph[name]
        shape = list(shape or [])[1:]
        fits = len(shape) == len(dims) and all(
            not isinstance(s, int) or d is None or s == d for s, d in zip(shape, dims))
        if not fits or found_type != dtype:
            raise UserError(
                f"{source}: output {name} is {found_type} {text(shape)} in the graph, but its metadata "
                f"({metadata.arch}, {metadata.spec.num_classes} classes, test top_k "
                f"{metadata.spec.test.top_k}) implies {dtype} {text(dims)}: the metadata does not "
                f"describe this graph; re-export the model")


def read_metadata(model, source="the model") -> ModelMetadata:
    """``parse_metadata`` of an ONNX ``ModelProto`` (anything with ``metadata_props``); needs
    neither onnx nor torch here."""
    raw = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    return parse_metadata(raw, source)
