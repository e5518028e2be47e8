"""Checkpoint -> ONNX, with corner pooling as one custom op (or standard ops) and optional in-graph
decode; the file carries everything the runtime needs in its metadata and is verified on the spot.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

from . import __version__
from .contract.arch import COCO_MEAN_BGR, COCO_STD_BGR, ArchSpec, get_arch, parse_hw
from .contract.metadata import (DECODES, INPUT_DTYPES, INPUT_NAME, RAW_OUTPUTS, build_metadata,
                                check_class_name, output_names)
from .contract.op import EXPORT_CORNER_POOL
from .contract.precision import EXPORT_PRECISIONS
from .errors import UserError
from .fileio import atomic_path, check_not_input, check_output_file
from .models import CornerNet, load_checkpoint
from .models.checkpoint import describe_variant, spec_from_checkpoint
from .models.corner_pool import doubling_steps
from .onnx_files import set_metadata
from .onnx_function import attach_corner_pool_function
from .runtime.families import family_of

# Largest map side an export pools exactly (8192 px input at stride 4, 16384 at stride 8): the
# bound of every dynamic-size export, and of fixed sizes too.
DYNAMIC_MAX_MAP_SIDE = 2048
MIN_OPSET = 17  # the opset the export and its CornerPool function body are written for

# What a fixed input size cost, measured (docs/export.md, "Fixed or dynamic size"): the bundled
# demo model on its 200 held-out shapes scenes (128-256 px a side), pycocotools AP@[.5:.95], 2026-12-02.
FIXED_SIZE_COST = "demo model, 200 held-out 128-256 px scenes: AP 0.675 at a fixed 127x127 vs 0.787 official"


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


class PixelInput(nn.Module):
    """The runtime's normalisation inside the graph (``export --input uint8``): uint8 BGR pixels
    -> Cast -> Div 255 -> Sub mean -> Div std, all float32, in that order.

    Bit-identical to the runtime's float path (``runtime.preprocess.normalize``: float32 of
    float64 ``x/255``, then float32 ``-mean``, ``/std``): IEEE division and subtraction are exactly
    rounded, and for the 256 values of a byte the float32 quotient ``x/255`` equals the float64
    one rounded to float32 (checked for all of them in tests/export/test_pixel_input.py)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1))

    def forward(self, pixels):
        return (pixels.to(torch.float32) / 255.0 - self.mean) / self.std


class ExportWrapper(nn.Module):
    """Turns the model's dict of heads into the flat, named outputs of the ONNX contract.

    ``half``: the network runs in FP16 between a float32 input and float32 outputs (the form a
    strongly typed TensorRT build needs). The in-graph decode (sigmoid, peak suppression, top-K)
    then runs on float32 heat maps, so the corner ranking is not decided in half precision.
    ``pixels``: a ``PixelInput`` in front: the graph takes uint8 pixels and normalises them (in
    float32, before any half-precision cast).
    """

    def __init__(self, model: CornerNet, decode: str, half: bool = False, pixels: PixelInput | None = None):
        super().__init__()
        self.model, self.decode, self.half, self.pixels = model, decode, half, pixels

    def forward(self, image):
        if self.pixels is not None:
            image = self.pixels(image)
        heads = self.model(image.half() if self.half else image)
        heads = {k: v.float() for k, v in heads.items()}
        atts = [heads[f"att{i}"] for i in range(self.model.spec.levels) if f"att{i}" in heads]
        if self.decode == "none":
            return tuple(heads[k] for k in RAW_OUTPUTS) + tuple(atts)
        t = self.model.spec.test
        tl = _topk_corners(heads["tl_heat"], heads["tl_tag"], heads["tl_off"], t.top_k, t.nms_kernel)
        br = _topk_corners(heads["br_heat"], heads["br_tag"], heads["br_off"], t.top_k, t.nms_kernel)
        return tl + br + tuple(atts)


def max_opset() -> int:
    """The newest opset the TorchScript exporter (the one that emits our custom node) writes."""
    from torch.onnx import _constants
    return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))


def check_opset(opset: int) -> None:
    top = max_opset()
    if not MIN_OPSET <= int(opset) <= top:
        raise UserError(f"--opset {opset}: choose {MIN_OPSET}..{top} ({MIN_OPSET}: what the export and "
                        f"its CornerPool function body are written for; {top}: the newest this "
                        f"PyTorch {torch.__version__} exporter writes)")


def max_input_side(spec: ArchSpec) -> int:
    """Largest input side an export pools exactly (``DYNAMIC_MAX_MAP_SIDE`` map cells)."""
    return DYNAMIC_MAX_MAP_SIDE * spec.stride


def check_export_size(spec: ArchSpec, input_hw) -> None:
    """``input_hw`` must fit the network (``ArchSpec.check_input_size``) and the exporter."""
    limit = max_input_side(spec)
    if max(input_hw) > limit:
        raise UserError(f"input {input_hw[0]}x{input_hw[1]} is larger than an export supports "
                        f"({limit} px per side for {spec.name}: corner pooling is exact up to "
                        f"{DYNAMIC_MAX_MAP_SIDE} map cells)")
    try:
        spec.check_input_size(input_hw)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def trace_memory_estimate(spec: ArchSpec, input_hw, batch: int) -> int:
    """Rough bytes the trace and verification take at ``input_hw``: 9 float32 copies of the stem's
    half-resolution output plus the input (calibrated: cornernet-squeeze at 1023x1023 peaked at
    1.8 GB resident, 0.5 GB of it torch and the weights; this estimate gives 1.2 GB)."""
    h, w = (int(v) for v in input_hw)
    return 4 * batch * (3 * h * w + 9 * spec.stem_dim * ((h + 1) // 2) * ((w + 1) // 2))


def check_trace_memory(spec: ArchSpec, input_hw, batch: int) -> None:
    need, have = trace_memory_estimate(spec, input_hw, batch), _available_memory()
    if have is not None and need > have:
        raise UserError(f"tracing {spec.name} at {input_hw[0]}x{input_hw[1]} (batch {batch}) needs about "
                        f"{need / 2**30:.1f} GiB and {have / 2**30:.1f} GiB are available: give a "
                        "smaller --input-size, or leave it out (a dynamic-size export is traced at the "
                        f"official size and runs images up to {max_input_side(spec)} px a side)")


@dataclass
class ExportResult:
    path: Path
    metadata: dict
    max_abs_error: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    note: str | None = None                  # the fixed-size trade-off, when there is one
    verification: dict | None = None         # verify_against_torch's report


def _one_of(value, allowed, option: str) -> None:
    if value not in allowed:
        raise UserError(f"{option} must be {' or '.join(map(repr, allowed))}, not {value!r}")


def _log(progress, msg):
    if progress:
        progress(msg)


@dataclass
class ExportPlan:
    """What an export will do, decided and checked before anything is built or traced."""
    spec: ArchSpec
    input_hw: tuple           # traced and verified at this size
    dynamic_size: bool
    batch: int
    dynamic_batch: bool
    opset: int
    corner_pool: str
    decode: str
    precision: str
    output: Path
    input_dtype: str = "float32"

    @property
    def output_names(self) -> list:
        return output_names(self.spec, self.decode)

    @property
    def doubling_steps(self) -> int:
        """Log-step doubling steps of the corner pools' standard-op form: every side the export
        may see (``DYNAMIC_MAX_MAP_SIDE`` for a dynamic size)."""
        return doubling_steps(DYNAMIC_MAX_MAP_SIDE if self.dynamic_size
                              else max(self.spec.output_size(self.input_hw)))

    def dynamic_axes(self) -> dict | None:
        if not (self.dynamic_batch or self.dynamic_size):
            return None
        axes = {0: "batch"} if self.dynamic_batch else {}
        if self.dynamic_size:
            axes.update({2: "height", 3: "width"})
        out = {"image": axes}
        spatial = RAW_OUTPUTS + tuple(f"att{i}" for i in range(self.spec.levels))
        for name in self.output_names:
            out[name] = {0: "batch"} if self.dynamic_batch else {}
            if self.dynamic_size and name in spatial:
                out[name].update({2: "out_height", 3: "out_width"})
        return out

    def takes(self) -> str:
        """What the written file takes, in words."""
        if self.dynamic_size:
            side = max_input_side(self.spec)
            size = f"any height and width up to {side} px (dynamic size)"
        else:
            size = f"{self.input_hw[0]}x{self.input_hw[1]} inputs only (fixed size)"
        return f"{size}, batch {'of any size (dynamic)' if self.dynamic_batch else self.batch}"

    def metadata(self) -> dict:
        return build_metadata(self.spec, self.input_hw, None if self.dynamic_batch else self.batch,
                              self.decode, self.corner_pool, self.precision, self.dynamic_size,
                              self.input_dtype)


def plan_export(arch: str | None, checkpoint, output, *, model: CornerNet | None, input_size, batch: int,
                dynamic_batch: bool, dynamic_size: bool | None, opset: int, corner_pool: str,
                decode: str, precision: str, input_dtype: str = "float32") -> ExportPlan:
    """Check every choice (one-line UserErrors) and resolve the sizes, before the model is built."""
    _one_of(corner_pool, EXPORT_CORNER_POOL, "--corner-pool")
    _one_of(decode, DECODES, "--decode")
    _one_of(input_dtype, INPUT_DTYPES, "--input")
    _one_of(precision, EXPORT_PRECISIONS, "precision")
    check_opset(opset)
    if batch < 1:
        raise UserError("batch must be >= 1")
    requested_hw = parse_hw(input_size) if isinstance(input_size, str) else (
        tuple(int(v) for v in input_size) if input_size is not None else None)
    output = check_output_file(output, "--output") if output else None
    if output is not None:                 # before the checkpoint is read
        check_not_input(output, [("--checkpoint", checkpoint)])
    if model is None:
        if arch is None and checkpoint is None:
            raise UserError("give --arch, --checkpoint, or both")
        spec = spec_from_checkpoint(checkpoint, arch) if checkpoint else build_model_spec(arch)
        if arch and checkpoint and spec.name != arch.lower():
            spec = build_model_spec(arch)
    else:
        spec = model.spec
    for name in spec.class_names:           # what the metadata refuses, refused before the trace
        check_class_name(name, f"{checkpoint or 'the model'}: class name")
    family_of(spec).check_input_dtype(input_dtype)
    if dynamic_size is None:
        dynamic_size = family_of(spec).default_dynamic_size(requested_hw)
    input_hw = requested_hw or tuple(spec.input_size)
    check_export_size(spec, input_hw)      # before the (possibly long) build and load
    check_trace_memory(spec, input_hw, batch)
    if output is None:
        output = check_output_file(f"export/{spec.name}.onnx", "--output")
        check_not_input(output, [("--checkpoint", checkpoint)])
    return ExportPlan(spec=spec, input_hw=input_hw, dynamic_size=bool(dynamic_size), batch=int(batch),
                      dynamic_batch=bool(dynamic_batch), opset=int(opset), corner_pool=corner_pool,
                      decode=decode, precision=precision, output=Path(output), input_dtype=input_dtype)


def load_network(plan: ExportPlan, checkpoint, progress) -> CornerNet:
    """The PyTorch model of ``plan.spec`` with the checkpoint's weights (random without one)."""
    spec = plan.spec
    variant = describe_variant(spec, build_model_spec(spec.name))
    _log(progress, f"building {spec.name}" + (f" ({variant})" if variant != "the official variant" else ""))
    model = CornerNet(spec)
    if checkpoint:
        load_checkpoint(model, checkpoint)
        _log(progress, f"loaded {checkpoint}")
    else:
        _log(progress, "no checkpoint given: exporting randomly initialised weights")
    return model


def check_finite_weights(model: CornerNet, source: str) -> None:
    """Refuse (one line, naming the tensors) a network with a NaN or infinite weight or buffer:
    its export computes NaN, which would even "verify" against PyTorch's NaN."""
    bad = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            count = int(tensor.numel() - torch.isfinite(tensor).sum())
            if count:
                bad.append(f"{name} ({count} of {tensor.numel()})")
    if bad:
        raise UserError(f"{source} has NaN or infinite values in {len(bad)} tensor(s): "
                        f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}; its export would "
                        "compute NaN: nothing was written (retrain, or take an earlier checkpoint)")


def trace_to_onnx(plan: ExportPlan, model: CornerNet, progress):
    """Trace ``model`` into ONNX as ``plan`` says: ``(ModelProto, wrapper, traced input)``."""
    spec = plan.spec
    model = model.eval().float()
    if plan.precision == "fp16":
        model = copy.deepcopy(model).half()  # the caller's model stays float32
    steps = plan.doubling_steps
    for pool in model.corner_pools():
        pool.export_mode, pool.export_steps = plan.corner_pool, steps
    pixels = PixelInput(COCO_MEAN_BGR, COCO_STD_BGR) if plan.input_dtype == "uint8" else None
    wrapper = ExportWrapper(model, plan.decode, half=plan.precision == "fp16", pixels=pixels).eval()
    h, w = plan.input_hw
    try:
        dummy = verification_batch(plan.batch, plan.input_hw, plan.input_dtype)
    except (RuntimeError, MemoryError):
        raise UserError(f"not enough memory for a {plan.batch}x3x{h}x{w} input; "
                        "choose a smaller --input-size") from None
    _log(progress, f"tracing {spec.name} at {h}x{w}, batch "
                   f"{'dynamic' if plan.dynamic_batch else plan.batch}, corner pool '{plan.corner_pool}', "
                   f"decode '{plan.decode}', input {plan.input_dtype}"
                   + (" (normalised in the graph)" if plan.input_dtype == "uint8" else ""))
    buffer = io.BytesIO()
    try:
        # The TorchScript exporter is the one that honours autograd-Function symbolics (our custom
        # node); it warns that it is deprecated, which is not the user's concern.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (dummy,), buffer, dynamo=False, opset_version=plan.opset,
                              input_names=[INPUT_NAME], output_names=plan.output_names,
                              dynamic_axes=plan.dynamic_axes(), do_constant_folding=True)
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, MemoryError) or "alloc" in str(exc).lower():
            raise UserError(f"not enough memory to trace {spec.name} at {h}x{w}; "
                            "choose a smaller --input-size (a dynamic-size export traces at the "
                            "official size and still runs larger images)") from None
        raise
    finally:
        for pool in model.corner_pools():
            pool.export_mode = None
    return onnx.load_from_string(buffer.getvalue()), wrapper, dummy


def attach_contract(onnx_model, plan: ExportPlan) -> dict:
    """The corner-pool function body, the producer and the export metadata; then the ONNX checker.
    Returns the metadata."""
    if plan.corner_pool == "plugin":
        attach_corner_pool_function(onnx_model, plan.doubling_steps)
    metadata = plan.metadata()
    onnx_model.producer_name, onnx_model.producer_version = "cornernet-deploy", __version__
    set_metadata(onnx_model, metadata)
    try:
        onnx.checker.check_model(onnx_model, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug on our side, not a user error
        raise RuntimeError(f"exported model failed the ONNX checker: {exc}") from exc
    return metadata


def report_verification(report: dict, progress) -> None:
    """The differences, then one verdict line: PASS, or FAIL (raises ``VerificationError``)."""
    from .contract.agreement import TOLERANCES

    heads = {name: h["max_abs"] for name, h in report["heads"].items()}
    _log(progress, "max abs error vs PyTorch: " + ", ".join(f"{k} {v:.2e}" for k, v in heads.items()))
    if report["detections"] is not None:
        d = report["detections"]
        _log(progress, f"detections vs PyTorch: agreement {d['agreement']:.3f} "
                       f"({d['matched']} matched, {d['missed']} missed, {d['extra']} extra with "
                       f"score >= {d['min_score']:g}), max score delta {d['max_score_delta']:.2e}")
    tol = TOLERANCES[report["tolerance"]]
    profile = (f"the {tol.name} tolerance profile of `compare` (per element |onnx - torch| <= "
               f"{tol.head_atol:g} + {tol.head_rtol:g}*|torch|, outputs finite)")
    if report["failures"]:
        _log(progress, f"verification: FAIL against {profile}")
        raise VerificationError(f"ONNX Runtime differs from PyTorch beyond the {tol.name} "
                                f"tolerance of `compare`: {'; '.join(report['failures'])}; nothing "
                                "was written (--no-verify writes it anyway)")
    _log(progress, f"verification: PASS against {profile}")


def export_onnx(arch: str | None = None, checkpoint=None, output=None, *, model: CornerNet | None = None,
                input_size=None, batch: int = 1, dynamic_batch: bool = False,
                dynamic_size: bool | None = None, opset: int = MIN_OPSET, corner_pool: str = "plugin",
                decode: str = "none", precision: str = "fp32", input_dtype: str = "float32",
                verify: bool = True, progress=print) -> ExportResult:
    """Export a model to ONNX. ``model`` (already loaded) or ``arch``/``checkpoint`` give the network.

    ``corner_pool``: "plugin" (one ``cornernet_deploy::CornerPool`` node per fused pool, with a
    standard-op function body so plain ONNX Runtime runs the same file) or "onnx" (standard ops).
    ``decode``: "none" (raw heads) or "graph" (sigmoid, peak suppression, top-K and gathers in the
    graph). ``precision`` "fp16" exports a half-precision network with float32 input/outputs.
    ``input_dtype`` "uint8": the network takes raw BGR pixels and normalises them itself
    (``PixelInput``; the runtime then only resizes and pads); "float32": normalised input.
    ``dynamic_size`` None: the official test pipeline (the family's ``default_dynamic_size``);
    False with no ``input_size``: fixed at the architecture's input size; ``input_size`` with a
    dynamic size is the size the graph is traced and verified at.

    The steps: ``plan_export`` (every check), ``load_network``, ``trace_to_onnx``,
    ``attach_contract`` (function body, metadata, checker), ``verify_against_torch``, then the
    file is written atomically.
    """
    start = time.perf_counter()
    plan = plan_export(arch, checkpoint, output, model=model, input_size=input_size, batch=batch,
                       dynamic_batch=dynamic_batch, dynamic_size=dynamic_size, opset=opset,
                       corner_pool=corner_pool, decode=decode, precision=precision,
                       input_dtype=input_dtype)
    if model is None:
        model = load_network(plan, checkpoint, progress)
    check_finite_weights(model, str(checkpoint) if checkpoint else "the model")
    note = None if plan.dynamic_size else family_of(plan.spec).fixed_size_note(plan.spec, plan.input_hw,
                                                                                FIXED_SIZE_COST)
    if note:
        _log(progress, note)
    onnx_model, wrapper, dummy = trace_to_onnx(plan, model, progress)
    metadata = attach_contract(onnx_model, plan)
    result = ExportResult(plan.output, metadata, note=note)
    if verify:
        _log(progress, "verifying with ONNX Runtime (CPU)")
        report = verify_against_torch(onnx_model, wrapper, dummy, plan.output_names, plan.spec, plan.precision)
        result.verification = report
        result.max_abs_error = {name: h["max_abs"] for name, h in report["heads"].items()}
        report_verification(report, progress)
    with atomic_path(plan.output) as tmp:
        onnx.save(onnx_model, str(tmp))
    result.seconds = time.perf_counter() - start
    _log(progress, f"wrote {plan.output} ({plan.output.stat().st_size / 1e6:.1f} MB) in {result.seconds:.1f} s; "
                   f"it takes {plan.takes()}")
    return result


def build_model_spec(arch: str) -> ArchSpec:
    try:
        return get_arch(arch)
    except ValueError as exc:
        raise UserError(str(exc)) from None


class VerificationError(UserError):
    """The exported graph does not compute what the PyTorch model computes (within tolerance)."""


def verification_batch(batch: int, input_hw, input_dtype: str = "float32") -> torch.Tensor:
    """The traced and verified input: generated shapes scenes (``data.shapes``) as the runtime
    feeds them (normalised, or the pixels for a uint8-input export). Image-like input gives a
    trained model confident detections to compare, which random noise does not."""
    from .data.shapes import render_scene
    from .runtime.preprocess import network_input
    h, w = input_hw
    images = []
    for k in range(batch):
        scene, _, _ = render_scene(k, image_size=(h, w), num_objects=(2, 5),
                                   min_size=max(4, min(h, w) // 10), max_size=max(8, min(h, w) // 2))
        images.append(network_input(scene, COCO_MEAN_BGR, COCO_STD_BGR, input_dtype))
    return torch.from_numpy(np.stack(images))


def verify_against_torch(onnx_model, wrapper, dummy, names, spec: ArchSpec, precision: str) -> dict:
    """ONNX Runtime (CPU) vs PyTorch on ``dummy``, judged as ``compare`` judges two models, with the
    tolerance profile of ``precision`` (``contract.agreement.TOLERANCES``):

    - raw heads and attention maps: every element within ``atol + rtol * |torch|``;
    - in-graph decode: the top-K corner scores as sorted values (the k-th best score, whichever
      cell holds it), and the detections both decode to (official pairing, soft-NMS) matched by
      IoU within class, with ``compare``'s agreement and score-delta limits and its swap rule
      (an unmatched pair of one class within the score tolerance is one candidate either side
      of a cut). The top-K *indices*
      are not compared: among (nearly) tied scores their order is not defined by the arithmetic,
      and FP16 moves scores by ~1e-3.

    Returns ``{"tolerance", "heads": {name: summary}, "detections": summary | None, "failures"}``.
    """
    import onnxruntime as ort

    from .contract.agreement import TOLERANCES, HeadStats, detection_agreement
    from .runtime.decode import decode_outputs
    from .runtime.postprocess import postprocess

    tol = TOLERANCES["fp16" if precision == "fp16" else "fp32"]
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(names, {"image": dummy.numpy()})))
    with torch.no_grad():
        expected = dict(zip(names, (t.float().numpy() if t.is_floating_point() else t.numpy()
                                    for t in wrapper(dummy))))
    graph = "tl_inds" in names
    # NaN in the same place on both sides counts as equal for `compare` (HeadStats), not here:
    # an export that computes NaN or infinity is broken whatever PyTorch computes
    failures = []
    for name in names:
        for side, values in (("ONNX Runtime", got[name]), ("PyTorch", expected[name])):
            values = np.asarray(values)
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                count = values.size - int(np.count_nonzero(np.isfinite(values)))
                failures.append(f"{name}: {count} of {values.size} values from {side} are NaN or infinite")
    heads = {}
    for name in names:
        if graph and not name.endswith("_scores") and not name.startswith("att"):
            continue                       # indices and the values gathered at them: see detections
        stats = HeadStats(name, tol)
        stats.add(expected[name], got[name])
        heads[name] = stats.summary()
    failures += [f"{name}: max |onnx - torch| {h['max_abs']:.3g} ({h['tolerance_used']:.3g}x the allowance "
                 f"{tol.head_atol:g} + {tol.head_rtol:g}*|torch|)"
                 for name, h in heads.items() if not h["within_tolerance"]]
    detections = None
    if graph:
        out_hw = spec.output_size(dummy.shape[2:])

        def dets(outputs):
            rows = decode_outputs(outputs, spec.test, out_hw)
            return [postprocess(r, spec.num_classes, spec.test, spec.class_names) for r in rows]

        # compare's near-tie rule: an unmatched pair of one class within score_atol is a swap
        detections = detection_agreement(dets(expected), dets(got), tol.min_score, tol.score_atol)
        if detections["agreement"] < tol.min_agreement:
            failures.append(f"detections: agreement {detections['agreement']:.3f} < {tol.min_agreement:g} "
                            f"({detections['missed']} missed, {detections['extra']} extra)")
        if detections["max_score_delta"] > tol.score_atol:
            failures.append(f"detections: max score delta {detections['max_score_delta']:.3g} > "
                            f"{tol.score_atol:g}")
    return {"tolerance": tol.name, "heads": heads, "detections": detections, "failures": failures}
