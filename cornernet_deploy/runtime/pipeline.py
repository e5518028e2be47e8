"""The torch-free detection pipeline: pre-process -> backend ``run`` -> decode -> post-process.

``CornerNetPipeline(spec_or_metadata, run)`` drives any backend through one callback,
``run(batch NCHW float32) -> {output name: array}``, with outputs named as in
``docs/CONTRACTS.md``: either the raw heads (``tl_heat`` ...) or the in-graph decode outputs
(``tl_scores`` ...), told apart by their keys; Saccade models add ``att0 .. att{levels-1}``.
``CornerNetPipeline.for_backend(backend)`` wires a backend's run, batch rules and metadata.

What happens between input and detections is the architecture family's (``families.py``):
CornerNet / CornerNet-Squeeze follow ``cornernet_inference`` (``core/test/cornernet.py``; see
``preprocess``, ``decode`` and ``postprocess`` for the steps and their quirks), CornerNet-Saccade
``cornernet_saccade_inference`` (``saccade.py``). The pipeline owns what they share: the settings,
the network calls in batches the model accepts (``run_network``, ``run_decoded``) and the stage
clock the profiler reads (``StageClock``), so profiling and comparing time and run this code,
not a copy of it.

The work is split into three stages the family implements: ``prepare`` (pre-process one image),
``network`` (run any number of prepared images, batched across them), ``finish`` (post-process
one image). ``batch`` runs them one after another; the streams runtime (``runtime/streams``) runs
them concurrently on separate threads, batching frames of several streams in one ``network``.
Both run the same methods.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..contract.arch import COCO_MEAN_BGR, COCO_STD_BGR, ArchSpec, TestConfig
from ..contract.metadata import ModelMetadata, parse_metadata
from ..errors import UserError
from .decode import decode_outputs
from .detections import Detections
from .families import family_of
from .preprocess import ImageMeta, preprocess

__all__ = ["CornerNetPipeline", "StageClock", "NonFiniteOutput", "check_finite_outputs",
           "OFFICIAL_MULTI_SCALE", "STAGES"]

RunFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]
RunTimedFn = Callable[[np.ndarray], Tuple[Mapping[str, np.ndarray], Mapping[str, Optional[float]]]]

# configs/CornerNet-multi_scale.json: pass as CornerNetPipeline(..., **OFFICIAL_MULTI_SCALE)
OFFICIAL_MULTI_SCALE = {"scales": (0.5, 0.75, 1.0, 1.25, 1.5), "merge": True, "weight_exp": 10.0}
# the stages of one pipeline call, as ``StageClock`` and the profiler report them (ms)
STAGES = ("preprocess", "h2d", "inference", "d2h", "postprocess", "end_to_end")
DEVICE_STAGES = ("h2d", "inference", "d2h")


class NonFiniteOutput(UserError):
    """The network gave NaN or infinite values: whatever finite detections the rest of its
    output decodes to come from broken arithmetic, so none are made (never written as NaN)."""


def check_finite_outputs(outputs: Mapping[str, np.ndarray]) -> None:
    """Raise ``NonFiniteOutput`` (one line) if a float output holds NaN or infinity."""
    bad = []
    for name, value in outputs.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            finite = np.isfinite(value)
            if not finite.all():
                bad.append(f"{name} ({value.size - np.count_nonzero(finite)} of {value.size})")
    if bad:
        raise NonFiniteOutput(f"the network output NaN or infinite values in {', '.join(bad)}: its "
                              "weights are broken or its arithmetic overflowed (FP16/INT8?); no "
                              "detections are made from it (`cornernet-deploy compare` against the "
                              "checkpoint shows where)")


class StageClock:
    """Stage times of pipeline calls, on the host clock (the device stages as the backend's
    ``run_timed`` reports them, CUDA events where it has them).

    ``preprocess`` is timed where the family prepares network inputs; ``network`` is the host
    time spent in the backend calls, of which ``h2d``/``inference``/``d2h`` are the backend's own
    split (None for a stage the backend does not have); ``postprocess`` is everything else of the
    call (decode, flip merge, rescale, soft-NMS): ``end_to_end - preprocess - network``. A
    family that runs the network several times per call (Saccade) adds its passes up."""

    def __init__(self):
        self.preprocess = 0.0
        self.network = 0.0
        self.device: Dict[str, Optional[float]] = {name: None for name in DEVICE_STAGES}
        self.network_calls = 0

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter_ns()
        try:
            yield self
        finally:
            ms = (time.perf_counter_ns() - start) / 1e6
            if name == "preprocess":
                self.preprocess += ms
            elif name == "network":
                self.network += ms
            else:
                raise ValueError(f"unknown stage {name!r}")

    def add_device(self, times: Mapping[str, Optional[float]]) -> None:
        self.network_calls += 1
        for name in DEVICE_STAGES:
            value = times.get(name)
            if value is not None:
                self.device[name] = (self.device[name] or 0.0) + float(value)

    def stages(self, end_to_end_ms: float) -> Dict[str, Optional[float]]:
        """The ``STAGES`` of the calls timed so far, given their wall time."""
        return {"preprocess": self.preprocess, **self.device,
                "postprocess": max(0.0, end_to_end_ms - self.preprocess - self.network),
                "end_to_end": end_to_end_ms}


class CornerNetPipeline:
    """Run a CornerNet-family model through a backend callback; images in, ``Detections`` out.

    ``spec_or_meta``: an ``ArchSpec`` (``contract.arch.get_arch(...)``) or the model's metadata
    (``ModelMetadata``, dict or JSON; its input size, batch, mean/std and class names are used
    unless given here). ``run(batch) -> dict`` is the backend call; ``run_timed(batch) ->
    (dict, {"h2d", "inference", "d2h"})`` the same call with the backend's own stage times (used
    when a ``StageClock`` is given). ``input_hw``: the model's fixed input (H, W), or None for a
    dynamic-size model. ``max_batch``: images per ``run`` call (None: no limit);
    ``static_batch``: the model takes exactly ``max_batch`` images (short batches are
    zero-padded; default: true when the metadata's ``batch`` is set and equals ``max_batch``).
    ``test`` overrides the spec's ``TestConfig``. ``scales``/``merge``/``weight_exp``: official
    multi-scale testing (``OFFICIAL_MULTI_SCALE``); ``nms_nt`` the linear/hard soft-NMS threshold.
    The network input is normalised float32, or (metadata ``input_dtype`` "uint8": the export
    normalises inside its graph) the resized, zero-padded uint8 pixels.

    Thread-safety: ``prepare``, ``network`` and ``finish`` may run concurrently, each on its own
    thread (the streams runtime); ``network`` is the only one that calls the backend.
    """

    def __init__(self, spec_or_meta: Union[ArchSpec, ModelMetadata, Mapping, str], run: RunFn, *,
                 input_hw: Optional[Sequence[int]] = None, max_batch: Optional[int] = None,
                 static_batch: Optional[bool] = None, test: Optional[TestConfig] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 class_names: Optional[Sequence[str]] = None, scales: Sequence[float] = (1.0,),
                 merge: bool = False, weight_exp: float = 10.0, nms_nt: Optional[float] = None,
                 max_images_per_step: int = 8, run_timed: Optional[RunTimedFn] = None):
        if isinstance(spec_or_meta, ArchSpec):
            spec, meta = spec_or_meta, None
        else:
            meta = parse_metadata(spec_or_meta, "the model")
            spec = meta.spec
        if not callable(run):
            raise TypeError("run must be callable: run(batch NCHW float32) -> dict of outputs")
        self.spec = spec
        self.family = family_of(spec)
        self.run = run
        self.run_timed = run_timed
        self.test = test if test is not None else spec.test
        self.mean = tuple(mean if mean is not None else (meta.mean if meta else COCO_MEAN_BGR))
        self.std = tuple(std if std is not None else (meta.std if meta else COCO_STD_BGR))
        self.class_names = tuple(class_names if class_names is not None
                                 else (meta.class_names if meta else spec.class_names))
        self.category_ids = tuple(meta.category_ids if meta else spec.category_ids)
        self.input_dtype = meta.input_dtype if meta else "float32"
        if self.input_dtype != "float32" and (self.mean, self.std) != (meta.mean, meta.std):
            raise UserError(f"the model normalises its {self.input_dtype} input inside its graph with "
                            f"mean {list(meta.mean)}, std {list(meta.std)}; they cannot be changed here")
        self.family.check_input_dtype(self.input_dtype)
        if len(self.class_names) != spec.num_classes:
            raise UserError(f"{len(self.class_names)} class names for a model with "
                            f"{spec.num_classes} classes")
        if input_hw is None and meta is not None:
            input_hw = meta.input_hw
        self.input_hw = tuple(int(s) for s in input_hw) if input_hw is not None else None
        meta_batch = meta.batch if meta else None
        if max_batch is None:
            max_batch = meta_batch
        if static_batch is None:
            # a batch size written in the metadata means the exported graph's batch is fixed
            static_batch = meta_batch is not None and int(max_batch) == int(meta_batch)
        self.max_batch = int(max_batch) if max_batch else None
        self.static_batch = bool(static_batch) and self.max_batch is not None
        self.scales = tuple(float(s) for s in scales)
        if not self.scales:
            raise UserError("at least one test scale is needed")
        self.merge = bool(merge)
        self.weight_exp = float(weight_exp)
        self.nms_nt = nms_nt
        self.max_images_per_step = max(1, int(max_images_per_step))
        self.saccade = spec.saccade_config()
        # what the network is fed: fixed crops (Saccade), the model's fixed size, or None
        self.network_hw = self.family.network_input_hw(spec, self.input_hw)

    @classmethod
    def for_backend(cls, backend, **options) -> "CornerNetPipeline":
        """The pipeline of an opened backend (``runtime.backends``): its metadata, run calls and
        batch rules; ``options`` as for the constructor (they win)."""
        options.setdefault("input_hw", backend.input_hw)
        options.setdefault("max_batch", backend.max_batch)
        options.setdefault("static_batch", getattr(backend, "static_batch", None))
        options.setdefault("run_timed", getattr(backend, "run_timed", None))
        for name in ("mean", "std", "class_names"):      # the backend interface's, as it says
            options.setdefault(name, getattr(backend, name))
        meta = getattr(backend, "model_metadata", None)
        return cls(meta if meta is not None else backend.spec, backend.run, **options)

    @classmethod
    def from_metadata(cls, meta: Union[Mapping, str], run: RunFn, **overrides) -> "CornerNetPipeline":
        """Build from the ONNX metadata dict (``metadata_props['cornernet_deploy']``)."""
        return cls(meta, run, **overrides)

    # ------------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, flip: Optional[bool] = None) -> Detections:
        return self.batch([image], flip=flip)[0]

    def batch(self, images: Sequence[np.ndarray], flip: Optional[bool] = None,
              clock: Optional[StageClock] = None) -> List[Detections]:
        """Detections for every image; as many images per ``run`` call as the model allows.
        ``clock``: time the stages into it (the profiler's)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        images = list(images)
        flip = self.resolve_flip(flip)
        results: List[Detections] = []
        step = self.max_images_per_step
        for start in range(0, len(images), step):
            results.extend(self.family.detect(self, images[start:start + step], flip, clock, start))
        return results

    # -- the stages (``batch`` runs them in turn; the streams runtime concurrently) ----------------
    def resolve_flip(self, flip: Optional[bool]) -> bool:
        """``flip`` or the model's test setting; UserError for a family without flip test."""
        flip = self.test.flip if flip is None else bool(flip)
        self.family.check_flip(flip)
        return flip

    def prepare(self, image: np.ndarray, flip: bool, name: str = "image"):
        """Pre-processing stage: one image (HxWx3 uint8 BGR) -> what ``network`` takes.
        ``flip``: as resolved by ``resolve_flip``; ``name`` names the image in errors."""
        return self.family.prepare(self, image, flip, name)

    def network(self, prepared: Sequence, clock: Optional[StageClock] = None) -> list:
        """Network stage: prepared images (of any callers or streams) through the model, in as
        few calls as it takes; one result per prepared image, for ``finish``."""
        return self.family.network(self, list(prepared), clock)

    def finish(self, prepared, result) -> Detections:
        """Post-processing stage of one image. ``NonFiniteOutput`` if finite outputs still decode
        to boxes or scores beyond float32's range once scaled back to the image."""
        dets = self.family.finish(self, prepared, result)
        if not (np.isfinite(dets.boxes).all() and np.isfinite(dets.scores).all()):
            raise NonFiniteOutput("the network's outputs decode to boxes or scores that are not "
                                  "finite numbers (values beyond float32 range); no detections "
                                  "are made from them")
        return dets

    def preprocess(self, image: np.ndarray, scale: float = 1.0) -> Tuple[np.ndarray, ImageMeta]:
        """One test scale of ``image`` as this model's network takes it (its input size, mean,
        std and input dtype): ``(tensor 3xHxW, meta)``."""
        return preprocess(image, self.spec, scale, self.input_hw, self.mean, self.std,
                          input_dtype=self.input_dtype)

    # ------------------------------------------------------------------------------------
    def run_network(self, tensors: np.ndarray, clock: Optional[StageClock] = None) -> Dict[str, np.ndarray]:
        """``run`` on ``tensors`` [M, 3, H, W] (float32, or uint8 for a pixel-input model) in
        batches the model takes (split to ``max_batch``, a static batch zero-padded); the outputs
        of all M, concatenated."""
        m = tensors.shape[0]
        step = self.max_batch or max(m, 1)
        parts = []
        for start in range(0, m, step):
            batch = tensors[start:start + step]
            real = batch.shape[0]
            if self.static_batch and real < self.max_batch:
                pad = np.zeros((self.max_batch - real,) + batch.shape[1:], batch.dtype)
                batch = np.concatenate([batch, pad])
            batch = np.ascontiguousarray(batch)
            if clock is None:
                outputs = self.run(batch)
            else:
                with clock.stage("network"):
                    if self.run_timed is not None:
                        outputs, times = self.run_timed(batch)
                    else:
                        t0 = time.perf_counter_ns()
                        outputs = self.run(batch)
                        times = {"inference": (time.perf_counter_ns() - t0) / 1e6}
                clock.add_device(times)
            if not isinstance(outputs, Mapping):
                raise TypeError(f"run() must return a dict of named outputs, got "
                                f"{type(outputs).__name__}")
            parts.append({k: np.asarray(v)[:real] for k, v in outputs.items()})
        if len(parts) <= 1:
            return parts[0] if parts else {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def decode(self, outputs: Mapping[str, np.ndarray], input_hw) -> np.ndarray:
        """The official decode of the outputs of inputs of ``input_hw``: ``[M, num_dets, 8]`` in
        output-map units. ``NonFiniteOutput`` if an output holds NaN or infinity."""
        check_finite_outputs(outputs)
        return decode_outputs(outputs, self.test, self.spec.output_size(tuple(input_hw)))

    def run_decoded(self, tensors: np.ndarray, need_atts: bool, clock: Optional[StageClock] = None):
        """``run_network`` then the decode: ``(dets [M, num_dets, 8] in output-map units,
        [att0 ..] or None)`` (the attention maps only with ``need_atts``)."""
        m = tensors.shape[0]
        if m == 0:
            empty = np.zeros((0, self.test.num_dets, 8), np.float32)
            return empty, ([] if need_atts else None)
        outputs = self.run_network(tensors, clock)
        dets = self.decode(outputs, tensors.shape[2:])
        atts = None
        if need_atts:
            names = [f"att{j}" for j in range(self.spec.levels)]   # one per hourglass level
            try:
                atts = [outputs[name].astype(np.float32) for name in names]
            except KeyError:
                raise ValueError(f"a Saccade model with {self.spec.levels} hourglass levels must "
                                 f"output {', '.join(names)}; got {sorted(outputs)}") from None
        return dets, atts
