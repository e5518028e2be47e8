"""The torch-free detection pipeline: pre-process -> backend ``run`` -> decode -> post-process.

``CornerNetPipeline(spec_or_metadata, run)`` drives any backend through one callback,
``run(batch NCHW float32) -> {output name: array}``, with outputs named as in
``docs/CONTRACTS.md``: either the raw heads (``tl_heat`` ...) or the in-graph decode outputs
(``tl_scores`` ...), told apart by their keys; Saccade models add ``att0 .. att{levels-1}``.

CornerNet / CornerNet-Squeeze follow ``cornernet_inference`` (``core/test/cornernet.py``); see
``preprocess``, ``decode`` and ``postprocess`` for the steps and their quirks. CornerNet-Saccade
follows ``cornernet_saccade_inference`` (``saccade.py``).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from cornernet_deploy.errors import UserError
from cornernet_deploy.zoo import (COCO_MEAN_BGR, COCO_STD_BGR, METADATA_KEY, ArchSpec, TestConfig,
                                  get_arch, parse_metadata, spec_from_dict, spec_to_dict)

from .decode import decode_outputs
from .detections import Detections
from .postprocess import flip_merge, postprocess, rescale_dets
from .preprocess import check_image, flip_tensor, preprocess
from .saccade import saccade_detect

__all__ = ["CornerNetPipeline", "spec_from_metadata", "OFFICIAL_MULTI_SCALE", "METADATA_KEY"]

RunFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


# configs/CornerNet-multi_scale.json: pass as CornerNetPipeline(..., **OFFICIAL_MULTI_SCALE)
OFFICIAL_MULTI_SCALE = {"scales": (0.5, 0.75, 1.0, 1.25, 1.5), "merge": True, "weight_exp": 10.0}

def spec_from_metadata(meta: Union[Mapping, str]) -> Tuple[ArchSpec, dict]:
    """The ``cornernet_deploy`` ONNX metadata (dict or its JSON text) -> ``(ArchSpec, extras)``.

    ``extras``: ``input_hw`` (tuple or None), ``batch`` (int or None), ``mean``, ``std``,
    ``class_names``, ``category_ids``, ``decode``. The spec's ``test``/``saccade`` are taken from
    the metadata's ``test``/``saccade`` entries when present.
    """
    if isinstance(meta, (str, bytes)):
        meta = parse_metadata(meta, "the model", required=True)
    if not isinstance(meta, Mapping):
        raise UserError("model metadata must be a JSON object")
    if METADATA_KEY in meta and isinstance(meta[METADATA_KEY], (str, Mapping)) and "arch" not in meta:
        return spec_from_metadata(meta[METADATA_KEY])
    try:
        if meta.get("spec"):
            data = dict(meta["spec"])
        elif meta.get("arch"):
            data = spec_to_dict(get_arch(meta["arch"]))
        else:
            raise UserError("model metadata names no architecture ('spec' or 'arch')")
        for entry in ("test", "saccade"):   # the test settings recorded beside the spec win
            if meta.get(entry):
                data[entry] = meta[entry]
        spec = spec_from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, UserError):
            raise
        raise UserError(f"model metadata does not describe a known architecture ({exc})") from None
    order = meta.get("channel_order", "BGR")
    if order != "BGR":
        raise UserError(f"model expects {order} input; this runtime feeds BGR as the official code")
    input_hw = meta.get("input_hw")
    extras = {
        "input_hw": tuple(int(s) for s in input_hw) if input_hw else None,
        "batch": int(meta["batch"]) if meta.get("batch") else None,
        "mean": tuple(meta.get("mean") or COCO_MEAN_BGR),
        "std": tuple(meta.get("std") or COCO_STD_BGR),
        "class_names": tuple(meta.get("class_names") or spec.class_names),
        "category_ids": tuple(meta.get("category_ids") or spec.category_ids),
        "decode": meta.get("decode"),
    }
    return spec, extras


class CornerNetPipeline:
    """Run a CornerNet-family model through a backend callback; images in, ``Detections`` out.

    ``spec_or_meta``: an ``ArchSpec`` (``zoo.get_arch(...)``) or the model's metadata (dict or
    JSON, see ``spec_from_metadata``; its input size, batch, mean/std and class names are used
    unless given here). ``run(batch) -> dict`` is the backend call. ``input_hw``: the model's
    fixed input (H, W), or None for a dynamic-size model. ``max_batch``: images per ``run`` call
    (None: no limit); ``static_batch``: the model takes exactly ``max_batch`` images (short batches
    are zero-padded; default: true when the metadata's ``batch`` is set and equals ``max_batch``). ``test`` overrides the spec's ``TestConfig``. ``scales``/``merge``/
    ``weight_exp``: official multi-scale testing (``OFFICIAL_MULTI_SCALE``); ``nms_nt`` the
    linear/hard soft-NMS threshold.
    """

    def __init__(self, spec_or_meta: Union[ArchSpec, Mapping, str], run: RunFn, *,
                 input_hw: Optional[Sequence[int]] = None, max_batch: Optional[int] = None,
                 static_batch: Optional[bool] = None, test: Optional[TestConfig] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 class_names: Optional[Sequence[str]] = None, scales: Sequence[float] = (1.0,),
                 merge: bool = False, weight_exp: float = 10.0, nms_nt: Optional[float] = None,
                 max_images_per_step: int = 8):
        if isinstance(spec_or_meta, ArchSpec):
            spec, extras = spec_or_meta, {}
        else:
            spec, extras = spec_from_metadata(spec_or_meta)
        if not callable(run):
            raise TypeError("run must be callable: run(batch NCHW float32) -> dict of outputs")
        self.spec = spec
        self.run = run
        self.test = test if test is not None else spec.test
        self.mean = tuple(mean if mean is not None else extras.get("mean", COCO_MEAN_BGR))
        self.std = tuple(std if std is not None else extras.get("std", COCO_STD_BGR))
        self.class_names = tuple(class_names if class_names is not None
                                 else extras.get("class_names", spec.class_names))
        self.category_ids = tuple(extras.get("category_ids", spec.category_ids))
        if len(self.class_names) != spec.num_classes:
            raise UserError(f"{len(self.class_names)} class names for a model with "
                            f"{spec.num_classes} classes")
        if input_hw is None:
            input_hw = extras.get("input_hw")
        self.input_hw = tuple(int(s) for s in input_hw) if input_hw is not None else None
        meta_batch = extras.get("batch")
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
        self.saccade = spec.saccade_config() if self.is_saccade else None
        if self.is_saccade:
            # every attention/zoom crop is cut at the model's input size (a dynamic-size export:
            # the architecture's), as the official test with that ``input_size`` configured
            self.crop_hw = tuple(self.input_hw or spec.input_size)
            try:
                spec.check_input_size(self.crop_hw)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        elif self.input_hw is not None:
            try:
                spec.check_input_size(self.input_hw)
            except ValueError as exc:
                raise UserError(str(exc)) from None

    @classmethod
    def from_metadata(cls, meta: Union[Mapping, str], run: RunFn, **overrides) -> "CornerNetPipeline":
        """Build from the ONNX metadata dict (``metadata_props['cornernet_deploy']``)."""
        return cls(meta, run, **overrides)

    @property
    def is_saccade(self) -> bool:
        return self.spec.saccade is not None

    # ------------------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, flip: Optional[bool] = None) -> Detections:
        return self.batch([image], flip=flip)[0]

    def batch(self, images: Sequence[np.ndarray], flip: Optional[bool] = None) -> List[Detections]:
        """Detections for every image; as many images per ``run`` call as the model allows."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        images = list(images)
        results: List[Detections] = []
        step = self.max_images_per_step
        for start in range(0, len(images), step):
            chunk = images[start:start + step]
            if self.is_saccade:
                if flip:
                    raise UserError("CornerNet-Saccade has no flip test (the official code "
                                    "never flips it)")
                results.extend(saccade_detect(chunk, self._infer_saccade, self.spec, self.test,
                                              self.saccade, self.mean, self.std,
                                              self.class_names, input_hw=self.crop_hw))
            else:
                results.extend(self._detect(chunk, self.test.flip if flip is None else bool(flip)))
        return results

    # ------------------------------------------------------------------------------------
    def _run_chunked(self, tensors: np.ndarray, decode: bool, atts: bool):
        """``run`` on ``tensors`` [M, 3, H, W] in batches; returns (dets [M, nd, 8], atts)."""
        m = tensors.shape[0]
        out_hw = self.spec.output_size(tensors.shape[2:])
        step = self.max_batch or max(m, 1)
        dets, att_parts = [], []
        for start in range(0, m, step):
            batch = tensors[start:start + step]
            real = batch.shape[0]
            if self.static_batch and real < self.max_batch:
                pad = np.zeros((self.max_batch - real,) + batch.shape[1:], np.float32)
                batch = np.concatenate([batch, pad])
            outputs = self.run(np.ascontiguousarray(batch, dtype=np.float32))
            if not isinstance(outputs, Mapping):
                raise TypeError(f"run() must return a dict of named outputs, got "
                                f"{type(outputs).__name__}")
            outputs = {k: np.asarray(v)[:real] for k, v in outputs.items()}
            if decode:
                dets.append(decode_outputs(outputs, self.test, out_hw))
            if atts:
                names = [f"att{j}" for j in range(self.spec.levels)]   # one per hourglass level
                try:
                    att_parts.append([outputs[name].astype(np.float32) for name in names])
                except KeyError:
                    raise ValueError(f"a Saccade model with {self.spec.levels} hourglass levels must "
                                     f"output {', '.join(names)}; got {sorted(outputs)}") from None
        det_arr = np.concatenate(dets) if dets else np.zeros((0, self.test.num_dets, 8), np.float32)
        att_arr = ([np.concatenate([p[j] for p in att_parts]) for j in range(self.spec.levels)]
                   if atts else None)
        return det_arr, att_arr

    def _infer_saccade(self, tensors: np.ndarray, need_atts: bool):
        return self._run_chunked(tensors, True, need_atts)

    def _detect(self, images: Sequence[np.ndarray], flip: bool) -> List[Detections]:
        images = [check_image(im, f"image {i}") for i, im in enumerate(images)]
        items = []          # (image index, scale index, flipped, tensor, meta)
        for i, im in enumerate(images):
            for si, s in enumerate(self.scales):
                tensor, meta = preprocess(im, self.spec, s, self.input_hw, self.mean, self.std)
                items.append((i, si, False, tensor, meta))
                if flip:
                    items.append((i, si, True, flip_tensor(tensor), meta))
        # one run per input size (dynamic models: images of different padded sizes)
        groups: Dict[tuple, List[int]] = {}
        for idx, item in enumerate(items):
            groups.setdefault(item[3].shape, []).append(idx)
        dets: List[Optional[np.ndarray]] = [None] * len(items)
        for shape, idxs in groups.items():
            out, _ = self._run_chunked(np.stack([items[k][3] for k in idxs]), True, False)
            for k, d in zip(idxs, out):
                dets[k] = d
        per_image: List[List[np.ndarray]] = [[] for _ in images]
        k = 0
        while k < len(items):
            i, si, _, _, meta = items[k]
            d = dets[k]
            if flip:
                d = flip_merge(d, dets[k + 1], meta.output_hw[1])
                k += 2
            else:
                k += 1
            per_image[i].append(rescale_dets(d, meta, clip=self.test.clip_boxes))
        return [postprocess(np.concatenate(parts), self.spec.num_classes, self.test,
                            self.class_names, merge=self.merge, weight_exp=self.weight_exp,
                            nt=self.nms_nt)
                for parts in per_image]
