"""FP32 ONNX export -> INT8 ONNX with explicit quantization (QuantizeLinear/DequantizeLinear pairs),
calibrated on images through the model's own pre-processing. Torch-free.

The result runs as it is in ONNX Runtime (which is how its accuracy is measured here) and is what
TensorRT needs for INT8: TensorRT 11 removed calibrator-based (implicit) INT8, so INT8 there means
a Q/DQ model built strongly typed; TensorRT 10 builds the same file with the INT8 (+FP16) flags.

Placement (TensorRT's Q/DQ recommendations, with the quantizer settings NVIDIA ModelOpt uses for
TensorRT): the data input and the weights of every ``Conv`` and ``ConvTranspose`` are quantized
(int8, symmetric: zero point 0, as TensorRT requires; weights per output channel, kept in float
behind a Q/DQ pair so that every TensorRT 10.x/11.x parses them; activations per tensor). Outputs
are not quantized: a convolution hands a float tensor to what follows. A tensor that feeds a
convolution is quantized once, and its other consumers (a residual ``Add``) see the same values,
which lets TensorRT fuse the addition into the int8 convolution. Stays float: biases (TensorRT
refuses an int32 DequantizeLinear), every other op (Add, Concat, ReLU, Cast), the
``cornernet_deploy::CornerPool`` nodes and their model-local function body (the quantizer leaves
both alone: TensorRT runs the plugin in FP32/FP16 and ONNX Runtime inlines the untouched body),
the in-graph decode (sigmoid, peak suppression, top-K) and, with ``float_heads``, the last
convolution of every head.

Before quantizing, a ``BatchNormalization`` that follows a ``Concat`` of convolutions
(CornerNet-Squeeze's fire modules) is folded into those convolutions (exact up to rounding), so the
quantized weights are the ones that run.

Calibration: ``onnxruntime.quantization.quantize_static`` (``minmax``, ``entropy`` or
``percentile``) with one backend call per calibration batch, so memory stays at one batch's
activations whatever the number of images.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from . import __version__
from .errors import UserError
from .fileio import atomic_path, check_not_input, check_output_file, sha256_file, write_errors_named
from .onnx_files import declared_outputs, load_export, set_metadata
from .contract.metadata import ModelMetadata, check_graph_outputs, parse_metadata
from .contract.op import CORNER_POOL

__all__ = ["quantize_onnx", "QuantizeResult", "METHODS", "QUANTIZED_OPS", "DEFAULT_NUM_IMAGES",
           "select_calibration_images", "head_output_convs", "fold_batchnorm_after_concat"]

METHODS = ("minmax", "entropy", "percentile")
QUANTIZED_OPS = ("Conv", "ConvTranspose")
DEFAULT_NUM_IMAGES = 100
DEFAULT_PERCENTILE = 99.999


@dataclass
class QuantizeResult:
    path: Path
    metadata: dict
    images: List[Path]
    max_abs_error: dict = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


def _log(progress, msg):
    if progress:
        progress(msg)


# ----------------------------------------------------------------------------------------------
# calibration images
# ----------------------------------------------------------------------------------------------

def select_calibration_images(sources: Sequence[str], num_images: int) -> List[Path]:
    """The calibration files: every image named by ``sources`` (files, folders, globs), then
    ``num_images`` of them evenly spaced over the sorted list (all when there are fewer)."""
    from .runtime.images import collect_images

    if isinstance(sources, (str, Path)):
        sources = [str(sources)]
    if not sources:
        raise UserError("give calibration images with --calib (a folder, files or a glob pattern)")
    if num_images < 1:
        raise UserError(f"--num-images must be >= 1, got {num_images}")
    try:
        paths = collect_images([str(s) for s in sources])
    except UserError as exc:
        raise UserError(f"calibration set: {exc}") from None
    if not paths:
        raise UserError("calibration set: no images found")
    if len(paths) > num_images:
        picks = np.unique(np.linspace(0, len(paths) - 1, num_images).round().astype(int))
        paths = [paths[i] for i in picks]
    return paths


class _CalibrationReader:
    """Batches of pre-processed calibration images for ONNX Runtime's calibrators.

    The pre-processing is the runtime's (``runtime.preprocess.preprocess`` at scale 1 with the
    model's input size, mean, std and input dtype: uint8 pixels for an export that normalises in
    its graph). A static-batch model gets full batches (the last one padded
    with black canvases, the value the model already sees around every image).
    ``__len__``/``set_range`` let ``quantize_static`` feed one batch per calibrator call.
    """

    def __init__(self, paths, metadata: ModelMetadata, bar=None):
        self.metadata = metadata
        self.spec = metadata.spec
        self.input_name = metadata.input_name
        self.batch = int(metadata.batch or 1)
        self.batches = [paths[i:i + self.batch] for i in range(0, len(paths), self.batch)]
        self.bar = bar
        self.converted = 0
        self.start, self.end = 0, len(self.batches)
        self.pos = 0

    def __len__(self):
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int):
        self.start, self.end = start_index, min(end_index, len(self.batches))
        self.pos = self.start

    def tensors(self, k: int) -> np.ndarray:
        from .runtime.preprocess import ImageConversionWarning, load_image, network_input, preprocess

        arrays = []
        for path in self.batches[k]:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ImageConversionWarning)
                try:
                    image = load_image(path)
                except UserError as exc:
                    raise UserError(f"calibration image {exc}") from None
            self.converted += any(issubclass(w.category, ImageConversionWarning) for w in caught)
            x, _ = preprocess(image, self.spec, 1.0, self.metadata.input_hw, self.metadata.mean,
                              self.metadata.std, self.metadata.input_dtype)
            arrays.append(x)
        h = max(a.shape[1] for a in arrays)
        w = max(a.shape[2] for a in arrays)
        black = network_input(np.zeros((h, w, 3), np.uint8), self.metadata.mean, self.metadata.std,
                              self.metadata.input_dtype)
        batch = np.repeat(black[None], self.batch, axis=0)  # short batches: black canvases
        for i, a in enumerate(arrays):  # a dynamic-size model with a static batch > 1: pad right/bottom
            batch[i, :, :a.shape[1], :a.shape[2]] = a
        return batch

    def get_next(self):
        if self.pos >= self.end:
            return None
        x = self.tensors(self.pos)
        self.pos += 1
        if self.bar is not None:
            self.bar.update(len(self.batches[self.pos - 1]))
        return {self.input_name: x}


# ----------------------------------------------------------------------------------------------
# graph passes
# ----------------------------------------------------------------------------------------------

def _consumers(model) -> dict:
    out: dict = {}
    for node in model.graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def head_output_convs(model: onnx.ModelProto) -> List[str]:
    """Names of the convolutions that produce the heads: walking back from the graph outputs
    through anything that is not a convolution (casts, the in-graph decode, sigmoid) to the first
    convolution on every path."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found, seen = [], set()
    stack = [o.name for o in model.graph.output]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in QUANTIZED_OPS:
            found.append(node.name)
        else:
            stack.extend(node.input)
    return sorted(found)


def fold_batchnorm_after_concat(model: onnx.ModelProto) -> int:
    """Fold ``BatchNormalization(Concat(conv_1, ..., conv_k), axis=1)`` into the convolutions'
    weights and biases (each conv output used only by that Concat; constant BN parameters).
    Returns how many BatchNormalization nodes were removed."""
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = _consumers(model)
    graph_outputs = {o.name for o in model.graph.output}
    folded = []
    for bn in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        cat = producer.get(bn.input[0])
        if cat is None or cat.op_type != "Concat" or len(consumers.get(cat.output[0], [])) != 1:
            continue
        axis = next((a.i for a in cat.attribute if a.name == "axis"), None)
        convs = [producer.get(i) for i in cat.input]
        if axis not in (1, -3) or any(
                c is None or c.op_type != "Conv" or len(consumers.get(c.output[0], [])) != 1
                or c.output[0] in graph_outputs or c.input[1] not in inits
                or (len(c.input) > 2 and c.input[2] not in inits)
                or len(consumers.get(c.input[1], [])) != 1 for c in convs):
            continue
        if any(name not in inits for name in bn.input[1:5]) or cat.output[0] in graph_outputs:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[name]).astype(np.float64) for name in bn.input[1:5])
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        start = 0
        for conv in convs:
            w_init = inits[conv.input[1]]
            w = numpy_helper.to_array(w_init).astype(np.float64)
            k = w.shape[0]
            s, t = scale[start:start + k], shift[start:start + k]
            start += k
            bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 \
                else np.zeros(k)
            w_init.CopyFrom(numpy_helper.from_array((w * s.reshape(-1, 1, 1, 1)).astype(np.float32), w_init.name))
            bias_name = conv.input[2] if len(conv.input) > 2 else f"{conv.name}.bias_folded"
            bias_tensor = numpy_helper.from_array((bias * s + t).astype(np.float32), bias_name)
            if len(conv.input) > 2:
                inits[bias_name].CopyFrom(bias_tensor)
            else:
                model.graph.initializer.append(bias_tensor)
                conv.input.append(bias_name)
        if start != scale.size:
            raise RuntimeError(f"{bn.name}: channel count mismatch while folding")  # a bug, not a user error
        cat.output[0] = bn.output[0]  # the Concat now yields what the BN did
        folded.append(bn)
    used_by_bn = {name for bn in folded for name in bn.input[1:5]}
    for bn in folded:
        model.graph.node.remove(bn)
    still_used = {i for n in model.graph.node for i in n.input}
    for name in used_by_bn - still_used:
        model.graph.initializer.remove(inits[name])
    # value_info of the removed intermediate tensors would now be stale
    gone = {bn.input[0] for bn in folded}
    for vi in [v for v in model.graph.value_info if v.name in gone]:
        model.graph.value_info.remove(vi)
    return len(folded)


# ----------------------------------------------------------------------------------------------
# the quantizer
# ----------------------------------------------------------------------------------------------

def _load_float_model(path: Path):
    if not path.is_file():
        raise UserError(f"{path}: no such ONNX file")
    model, metadata = load_export(path)
    check_graph_outputs(declared_outputs(model), metadata, path)
    precision = metadata.precision
    if precision == "int8":
        raise UserError(f"{path} is already an INT8 model; quantize its FP32 export instead")
    if precision != "fp32":
        raise UserError(f"{path} is an {precision} export; quantize an FP32 export "
                        "(`cornernet-deploy export` without --precision)")
    return model, metadata


def _run_outputs(model_bytes: bytes, x: np.ndarray, input_name: str) -> dict:
    import onnxruntime as ort
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {input_name: x})))


def _quantize_options(percentile: float) -> dict:
    """The settings NVIDIA ModelOpt passes to ONNX Runtime's quantizer for TensorRT."""
    return {
        "ActivationSymmetric": True, "WeightSymmetric": True,  # TensorRT: zero points must be 0
        "QuantizeBias": False,                                 # TensorRT: no int32 DequantizeLinear
        "AddQDQPairToWeight": True,                            # float weights + Q/DQ: every TensorRT 10.x/11.x
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},  # output channels
        "DedicatedQDQPair": False,
        "CalibStridedMinMax": 1,                               # one calibrator call per batch: bounded memory
        "CalibPercentile": float(percentile),
    }


def calibrate_and_quantize(float_model, reader: "_CalibrationReader", method: str, percentile: float,
                           float_nodes: list, bar):
    """ONNX Runtime's static Q/DQ quantization of ``float_model``, calibrated batch by batch."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="cornernet-quantize-") as tmp, \
            write_errors_named(f"{tmp} (a temporary folder: $TMPDIR chooses where)"):
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(float_model, str(src))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT's advice to pre-process: the folding is ours
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its threshold search
                quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ,
                                op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
                                reduce_range=False, activation_type=QuantType.QInt8,
                                weight_type=QuantType.QInt8, nodes_to_exclude=float_nodes,
                                calibrate_method=calibrate_method,
                                extra_options=_quantize_options(percentile))
        finally:
            root.setLevel(level)
            bar.close()
        return onnx.load(str(dst))


def attach_quantized_contract(quantized, model, metadata: ModelMetadata, quantization: dict) -> dict:
    """Our CornerPool function body (should the quantizer have dropped it), the int8 metadata
    (every key of the FP32 export, plus ``quantization``) and the ONNX checker. Returns the metadata."""
    if not any(f.domain == CORNER_POOL.domain and f.name == CORNER_POOL.op_type for f in quantized.functions):
        for f in model.functions:
            quantized.functions.append(f)
        have = {o.domain for o in quantized.opset_import}
        quantized.opset_import.extend(o for o in model.opset_import if o.domain not in have)
    new_metadata = {**metadata.raw, "toolkit_version": __version__, "precision": "int8",
                    "quantization": quantization}
    parse_metadata(new_metadata, "the quantized model")   # what readers will check, checked now
    set_metadata(quantized, new_metadata)
    quantized.producer_name, quantized.producer_version = "cornernet-deploy", __version__
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except onnx.checker.ValidationError as exc:  # a bug on our side, not a user error
        raise RuntimeError(f"quantized model failed the ONNX checker: {exc}") from exc
    return new_metadata


def verify_quantized(quantized, model, reader: "_CalibrationReader") -> dict:
    """Max |int8 - fp32| per output on the first calibration batch; RuntimeError for a shape
    change (a bug), UserError for a non-finite output (of the FP32 model itself: its weights)."""
    x = reader.tensors(0)
    got = _run_outputs(quantized.SerializeToString(), x, reader.input_name)
    ref = _run_outputs(model.SerializeToString(), x, reader.input_name)
    errors = {}
    for name, value in got.items():
        if value.shape != ref[name].shape:
            raise RuntimeError(f"quantized output {name} has shape {value.shape}, FP32 {ref[name].shape}")
        if name.endswith("_inds"):
            continue  # top-K indices: compared as detections by `compare`, not element-wise
        if not np.all(np.isfinite(ref[name])):
            raise UserError(f"the FP32 model's output {name} holds NaN or infinite values on the "
                            "first calibration batch: its weights are broken; nothing was written")
        if not np.all(np.isfinite(value)):
            raise UserError(f"quantized output {name} holds NaN or infinite values on the first "
                            "calibration batch; nothing was written")
        errors[name] = float(np.max(np.abs(value.astype(np.float64) - ref[name])))
    return errors


def quantize_onnx(model_path, calib: Sequence[str], output=None, *, num_images: int = DEFAULT_NUM_IMAGES,
                  method: str = "minmax", percentile: float = DEFAULT_PERCENTILE,
                  float_heads: bool = False, verify: bool = True, progress=print,
                  show_bar: bool = True) -> QuantizeResult:
    """Calibrate the FP32 export ``model_path`` on ``calib`` images and write the INT8 Q/DQ model.

    ``calib``: image files, folders or glob patterns; ``num_images`` of them (evenly spaced) are
    used. ``method``: ``minmax`` (ranges from the extreme values), ``entropy`` (KL-optimal
    thresholds) or ``percentile`` (the ``percentile``-th percentile of |x|). ``float_heads``: keep
    the last convolution of every head in float. The file appears only when complete, after the
    ONNX checker and an ONNX Runtime run on the first calibration batch.

    The steps: the checks and the calibration set, ``fold_batchnorm_after_concat``,
    ``calibrate_and_quantize``, ``attach_quantized_contract``, ``verify_quantized``, then the file
    is written atomically.
    """
    from onnxruntime import __version__ as ort_version
    from tqdm import tqdm

    start = time.perf_counter()
    model_path = Path(model_path)
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise UserError(f"--percentile must be in (0, 100], got {percentile}")
    output = check_output_file(output or model_path.with_name(f"{model_path.stem}_int8.onnx"), "--output")
    check_not_input(output, [("the input model", model_path)])
    model, metadata = _load_float_model(model_path)
    paths = select_calibration_images(calib, num_images)
    check_not_input(output, [("the calibration image", p) for p in paths])

    float_model = copy.deepcopy(model)
    folded = fold_batchnorm_after_concat(float_model)
    float_nodes = head_output_convs(float_model) if float_heads else []
    _log(progress, f"calibrating {model_path} on {len(paths)} image(s) ({method}); folded {folded} "
                   f"BatchNormalization node(s) into convolutions" +
         (f"; {len(float_nodes)} head convolutions stay float" if float_nodes else ""))
    bar = tqdm(total=len(paths), unit="img", desc="calibrate", disable=not show_bar)
    reader = _CalibrationReader(paths, metadata, bar)
    quantized = calibrate_and_quantize(float_model, reader, method, percentile, float_nodes, bar)
    if reader.converted:
        _log(progress, f"note: {reader.converted} calibration image(s) converted to 8-bit BGR "
                       "(grayscale, alpha or 16-bit), as cv2.imread does")
    quantization = {
        "method": method, **({"percentile": float(percentile)} if method == "percentile" else {}),
        "images": len(paths), "source": [str(s) for s in ([calib] if isinstance(calib, (str, Path)) else calib)],
        "preprocess": "runtime preprocess at scale 1 (the model's input size, mean, std)",
        "scheme": "int8 symmetric; weights per output channel, activations per tensor; "
                  "Q/DQ on the inputs of " + ", ".join(QUANTIZED_OPS),
        "float_nodes": float_nodes, "folded_batchnorms": folded,
        "tool": f"onnxruntime.quantization {ort_version}",
        "from": {"file": model_path.name, "sha256": sha256_file(model_path)},
    }
    new_metadata = attach_quantized_contract(quantized, model, metadata, quantization)
    result = QuantizeResult(output, new_metadata, paths)
    if verify:
        _log(progress, "verifying with ONNX Runtime (CPU) against the FP32 model")
        result.max_abs_error = verify_quantized(quantized, model, reader)
        _log(progress, "max abs difference vs FP32 (first calibration batch): " +
             ", ".join(f"{k} {v:.3g}" for k, v in result.max_abs_error.items()))
    with atomic_path(output) as tmp_path:
        onnx.save(quantized, str(tmp_path))
    result.seconds = time.perf_counter() - start
    _log(progress, f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB) in {result.seconds:.1f} s; "
                   f"check it with `cornernet-deploy compare {model_path} {output}`")
    return result
