"""Checkpoint -> ONNX, with corner pooling as one custom op (or standard ops) and optional in-graph
decode; the file carries everything the runtime needs in its metadata and is verified on the spot.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from . import __version__
from .errors import UserError
from .fileio import atomic_path
from .models import CornerNet, load_checkpoint
from .models.checkpoint import spec_from_checkpoint, spec_to_dict
from .models.corner_pool import doubling_steps
from .onnx_function import attach_corner_pool_function
from .runtime.pipeline import METADATA_KEY  # the key the runtime reads
from .zoo import COCO_MEAN_BGR, COCO_STD_BGR, ArchSpec

METADATA_FORMAT = 1
RAW_OUTPUTS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")
DECODE_OUTPUTS = ("tl_scores", "tl_inds", "tl_tags", "tl_offs", "br_scores", "br_inds", "br_tags", "br_offs")
# Largest map side a dynamic-size export must pool exactly (8192 px input at stride 4).
DYNAMIC_MAX_MAP_SIDE = 2048


def _topk_corners(heat, tag, off, k: int, kernel: int):
    """In-graph half of the official decode: sigmoid, peak suppression, top-K, gathers."""
    n, c, h, w = heat.shape
    heat = torch.sigmoid(heat)
    peaks = nn.functional.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    heat = heat * (peaks == heat).to(heat.dtype)
    scores, inds = torch.topk(heat.reshape(n, -1), k)
    pos = inds % (h * w)
    tags = torch.gather(tag.reshape(n, -1), 1, pos)
    offs = torch.gather(off.reshape(n, 2, -1), 2, pos.unsqueeze(1).expand(n, 2, k)).transpose(1, 2)
    return scores, inds, tags, offs


class ExportWrapper(nn.Module):
    """Turns the model's dict of heads into the flat, named outputs of the ONNX contract.

    ``half``: the network runs in FP16 between a float32 input and float32 outputs (the form a
    strongly typed TensorRT build needs). The in-graph decode (sigmoid, peak suppression, top-K)
    then runs on float32 heat maps, so the corner ranking is not decided in half precision.
    """

    def __init__(self, model: CornerNet, decode: str, half: bool = False):
        super().__init__()
        self.model, self.decode, self.half = model, decode, half

    def forward(self, image):
        heads = self.model(image.half() if self.half else image)
        heads = {k: v.float() for k, v in heads.items()}
        atts = [heads[f"att{i}"] for i in range(self.model.spec.levels) if f"att{i}" in heads]
        if self.decode == "none":
            return tuple(heads[k] for k in RAW_OUTPUTS) + tuple(atts)
        t = self.model.spec.test
        tl = _topk_corners(heads["tl_heat"], heads["tl_tag"], heads["tl_off"], t.top_k, t.nms_kernel)
        br = _topk_corners(heads["br_heat"], heads["br_tag"], heads["br_off"], t.top_k, t.nms_kernel)
        return tl + br + tuple(atts)


def output_names(spec: ArchSpec, decode: str) -> list:
    names = list(RAW_OUTPUTS if decode == "none" else DECODE_OUTPUTS)
    if spec.attention:
        names += [f"att{i}" for i in range(spec.levels)]
    return names


def parse_hw(text: str) -> tuple:
    """'511x383' or '511' -> (H, W)."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise UserError(f"input size must look like HxW (e.g. 511x511), got {text!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise UserError(f"input size must look like HxW (e.g. 511x511), got {text!r}")
    return tuple(parts)


@dataclass
class ExportResult:
    path: Path
    metadata: dict
    max_abs_error: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def build_metadata(spec: ArchSpec, input_hw, batch, decode, corner_pool, precision, dynamic_size) -> dict:
    return {
        "format": METADATA_FORMAT, "toolkit_version": __version__, "arch": spec.name,
        "spec": spec_to_dict(spec), "input_name": "image",
        "input_hw": None if dynamic_size else list(input_hw), "batch": batch,
        "channel_order": "BGR", "mean": list(COCO_MEAN_BGR), "std": list(COCO_STD_BGR),
        "stride": spec.stride, "class_names": list(spec.class_names),
        "category_ids": list(spec.category_ids), "decode": decode,
        "test": dataclasses.asdict(spec.test),
        "saccade": dataclasses.asdict(spec.saccade) if spec.saccade else None,
        "outputs": output_names(spec, decode), "corner_pool": corner_pool, "precision": precision,
    }


def read_metadata(model: onnx.ModelProto) -> dict | None:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def _log(progress, msg):
    if progress:
        progress(msg)


def export_onnx(arch: str | None = None, checkpoint=None, output=None, *, model: CornerNet | None = None,
                input_size=None, batch: int = 1, dynamic_batch: bool = False, dynamic_size: bool = False,
                opset: int = 17, corner_pool: str = "plugin", decode: str = "none",
                precision: str = "fp32", verify: bool = True, progress=print) -> ExportResult:
    """Export a model to ONNX. ``model`` (already loaded) or ``arch``/``checkpoint`` give the network.

    ``corner_pool``: "plugin" (one ``cornernet_deploy::CornerPool`` node per fused pool, with a
    standard-op function body so plain ONNX Runtime runs the same file) or "onnx" (standard ops).
    ``decode``: "none" (raw heads) or "graph" (sigmoid, peak suppression, top-K and gathers in the
    graph). ``precision`` "fp16" exports a half-precision network with float32 input/outputs.
    """
    start = time.perf_counter()
    if corner_pool not in ("plugin", "onnx"):
        raise UserError(f"--corner-pool must be 'plugin' or 'onnx', not {corner_pool!r}")
    if decode not in ("none", "graph"):
        raise UserError(f"--decode must be 'none' or 'graph', not {decode!r}")
    if precision not in ("fp32", "fp16"):
        raise UserError(f"precision must be 'fp32' or 'fp16', not {precision!r}")
    if opset < 17:
        raise UserError("opset must be >= 17 (the opset the export and its CornerPool function body are written for)")
    if batch < 1:
        raise UserError("batch must be >= 1")
    if model is None:
        if arch is None and checkpoint is None:
            raise UserError("give --arch, --checkpoint, or both")
        spec = spec_from_checkpoint(checkpoint, arch) if checkpoint else build_model_spec(arch)
        if arch and checkpoint and spec.name != arch.lower():
            spec = build_model_spec(arch)
        _log(progress, f"building {spec.name}")
        model = CornerNet(spec)
        if checkpoint:
            load_checkpoint(model, checkpoint)
            _log(progress, f"loaded {checkpoint}")
        else:
            _log(progress, "no checkpoint given: exporting randomly initialised weights")
    spec = model.spec
    input_hw = parse_hw(input_size) if isinstance(input_size, str) else tuple(input_size or spec.input_size)
    try:
        spec.check_input_size(input_hw)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    output = Path(output or f"export/{spec.name}.onnx")
    model = model.eval().float()

    steps = doubling_steps(DYNAMIC_MAX_MAP_SIDE if dynamic_size else max(spec.output_size(input_hw)))
    if precision == "fp16":
        model = copy.deepcopy(model).half()  # the caller's model stays float32
    for pool in model.corner_pools():
        pool.export_mode, pool.export_steps = corner_pool, steps
    wrapper = ExportWrapper(model, decode, half=precision == "fp16").eval()
    names = output_names(spec, decode)
    dummy = torch.randn(batch, 3, *input_hw, generator=torch.Generator().manual_seed(0))
    dynamic_axes = {}
    if dynamic_batch or dynamic_size:
        axes = {0: "batch"} if dynamic_batch else {}
        if dynamic_size:
            axes.update({2: "height", 3: "width"})
        dynamic_axes["image"] = axes
        for n in names:
            dynamic_axes[n] = {0: "batch"} if dynamic_batch else {}
            if dynamic_size and n in RAW_OUTPUTS + tuple(f"att{i}" for i in range(spec.levels)):
                dynamic_axes[n].update({2: "out_height", 3: "out_width"})

    _log(progress, f"tracing {spec.name} at {input_hw[0]}x{input_hw[1]}, batch "
                   f"{'dynamic' if dynamic_batch else batch}, corner pool '{corner_pool}', decode '{decode}'")
    buffer = io.BytesIO()
    try:
        # The TorchScript exporter is the one that honours autograd-Function symbolics (our custom
        # node); it warns that it is deprecated, which is not the user's concern.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (dummy,), buffer, dynamo=False, opset_version=opset,
                              input_names=["image"], output_names=names, dynamic_axes=dynamic_axes or None,
                              do_constant_folding=True)
    finally:
        for pool in model.corner_pools():
            pool.export_mode = None
    onnx_model = onnx.load_from_string(buffer.getvalue())
    if corner_pool == "plugin":
        attach_corner_pool_function(onnx_model, steps)
    metadata = build_metadata(spec, input_hw, None if dynamic_batch else batch, decode, corner_pool,
                              precision, dynamic_size)
    onnx_model.producer_name, onnx_model.producer_version = "cornernet-deploy", __version__
    del onnx_model.metadata_props[:]
    onnx.helper.set_model_props(onnx_model, {METADATA_KEY: json.dumps(metadata)})
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug on our side, not a user error
        raise RuntimeError(f"exported model failed the ONNX checker: {exc}") from exc
    result = ExportResult(output, metadata)
    if verify:
        _log(progress, "verifying with ONNX Runtime (CPU)")
        result.max_abs_error = verify_against_torch(onnx_model, wrapper, dummy, names)
        worst = max(result.max_abs_error.values())
        _log(progress, "max abs error vs PyTorch: " + ", ".join(f"{k} {v:.2e}" for k, v in result.max_abs_error.items()))
        tolerance = 1e-4 if precision == "fp32" else 5e-2
        if worst > tolerance:
            raise RuntimeError(f"ONNX Runtime differs from PyTorch by {worst:.3g} (> {tolerance}); "
                               "nothing was written")
    with atomic_path(output) as tmp:
        onnx.save(onnx_model, str(tmp))
    result.seconds = time.perf_counter() - start
    _log(progress, f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {result.seconds:.1f} s")
    return result


def build_model_spec(arch: str) -> ArchSpec:
    from .zoo import get_arch
    try:
        return get_arch(arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def verify_against_torch(onnx_model, wrapper, dummy, names) -> dict:
    """Max absolute error per output between ONNX Runtime (CPU) and PyTorch on ``dummy``."""
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(names, {"image": dummy.numpy()})
    with torch.no_grad():
        expected = [t.float().numpy() if t.is_floating_point() else t.numpy() for t in wrapper(dummy)]
    errors = {}
    got_by, exp_by = dict(zip(names, got)), dict(zip(names, expected))
    for name, g, e in zip(names, got, expected):
        if name.endswith("_inds"):
            # top-K order among (nearly) tied scores is not defined by the arithmetic: count the
            # index mismatches elsewhere
            scores = exp_by[name.replace("_inds", "_scores")]
            close = np.abs(np.diff(scores, axis=1)) <= 1e-5
            tied = np.zeros_like(scores, dtype=bool)
            tied[:, 1:] |= close
            tied[:, :-1] |= close
            errors[name] = float(np.sum((g != e) & ~tied))
            continue
        if name.endswith(("_tags", "_offs")):  # gathered values: compare where the picks agree
            same = got_by[name[:3] + "inds"] == exp_by[name[:3] + "inds"]
            g, e = g[same], e[same]
        errors[name] = float(np.max(np.abs(g.astype(np.float64) - e))) if g.size else 0.0
    return errors
