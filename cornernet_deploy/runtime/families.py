"""Architecture families: how a CornerNet-family model is run, exported and trained.

Two families, one interface (``Family``); the pipeline, the exporter, the profiler, ``compare``
and the trainer ask ``family_of(spec)`` and never test the architecture themselves:

* ``SINGLE_PASS`` (CornerNet, CornerNet-Squeeze; ``core/test/cornernet.py``): every image is
  padded at each test scale (optionally with its mirror image), run once, decoded, merged;
* ``ATTENTION_ZOOM`` (CornerNet-Saccade; ``core/test/cornernet_saccade.py``): a first pass over
  down-sized views finds attention peaks, zoomed square crops around them are run next
  (``saccade.py``).

Adding a family (e.g. CenterNet with center pooling) is one ``Family`` subclass here (its
``prepare``/``network``/``finish`` stages), its training recipe (``train/recipes.py``), and the
``ArchSpec`` traits that select it (docs/EXTENDING.md). Torch-free; the training recipe is named, not imported, so the runtime never
pulls in the trainer.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..contract.arch import ArchSpec
from ..errors import UserError
from .detections import Detections
from .postprocess import flip_merge, postprocess, rescale_dets
from .preprocess import check_image, flip_tensor
from .saccade import saccade_detect

__all__ = ["Family", "SINGLE_PASS", "ATTENTION_ZOOM", "FAMILIES", "family_of"]


class Family:
    """What differs between architecture families, for every part that runs, exports or trains."""

    name = "?"
    description = ""
    flip_test = True            # the official test may add each image's mirror image
    training_recipe = ""        # "module:attribute" of its ``train.recipes`` recipe
    # why the network cannot take uint8 pixels (``export --input uint8``); "" when it can
    no_pixel_input = ""

    # -- runtime ------------------------------------------------------------------------------
    def network_input_hw(self, spec: ArchSpec, input_hw) -> Optional[tuple]:
        """The input size the pipeline feeds (None: each image's own padded size); UserError when
        the network cannot take it."""
        raise NotImplementedError

    # The pipeline's three stages, which the streams runtime runs concurrently (pre-processing |
    # network | post-processing, each on its own thread) and ``detect`` runs one after another.
    def prepare(self, pipeline, image: np.ndarray, flip: bool, name: str = "image"):
        """Pre-processing stage of one image: what ``network`` needs to run it."""
        raise NotImplementedError

    def network(self, pipeline, prepared: Sequence, clock=None) -> list:
        """Network stage of any number of prepared images (of one caller or of several video
        streams), in as few network calls as the model takes (``pipeline.run_decoded``): one
        result per prepared image."""
        raise NotImplementedError

    def finish(self, pipeline, prepared, result) -> Detections:
        """Post-processing stage of one image: its ``network`` result -> ``Detections``."""
        raise NotImplementedError

    def detect(self, pipeline, images: Sequence[np.ndarray], flip: bool, clock=None,
               first_index: int = 0) -> List[Detections]:
        """Detections for ``images`` through ``pipeline`` (``CornerNetPipeline``): the three
        stages in turn; ``clock`` times them."""
        stage = clock.stage if clock is not None else _no_stage
        with stage("preprocess"):
            prepared = [self.prepare(pipeline, im, flip, f"image {first_index + i}")
                        for i, im in enumerate(images)]
        results = self.network(pipeline, prepared, clock)
        return [pipeline.finish(p, r) for p, r in zip(prepared, results)]   # its checks too

    def check_flip(self, flip) -> None:
        if flip and not self.flip_test:
            raise UserError(f"{self.description} has no flip test (the official code never flips it)")

    def check_input_dtype(self, input_dtype: str) -> None:
        """UserError when the family's network input cannot be ``input_dtype``."""
        if input_dtype == "uint8" and self.no_pixel_input:
            raise UserError(f"{self.description} cannot take uint8 input: {self.no_pixel_input}")

    # -- export --------------------------------------------------------------------------------
    def default_dynamic_size(self, requested_hw) -> bool:
        """Whether an export without a size choice gets dynamic height/width (the official test
        pipeline's input)."""
        raise NotImplementedError

    def fixed_size_note(self, spec: ArchSpec, input_hw, measured_cost: str) -> Optional[str]:
        """What a fixed input size costs this family, in one line (None: nothing)."""
        return None

    # -- training ------------------------------------------------------------------------------
    def training(self):
        """The family's training recipe (``train.recipes``; imports torch)."""
        module, _, attribute = self.training_recipe.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __repr__(self) -> str:
        return f"<family {self.name}>"


class SinglePass(Family):
    name = "single-pass"
    description = "CornerNet / CornerNet-Squeeze"
    flip_test = True
    training_recipe = "cornernet_deploy.train.recipes:SINGLE_PASS_RECIPE"

    def network_input_hw(self, spec, input_hw):
        if input_hw is not None:
            _check_size(spec, input_hw)
        return None if input_hw is None else tuple(int(s) for s in input_hw)

    def default_dynamic_size(self, requested_hw) -> bool:
        # CornerNet and CornerNet-Squeeze run each image at its own padded size; an explicit
        # size asks for that fixed size
        return requested_hw is None

    def fixed_size_note(self, spec, input_hw, measured_cost):
        h, w = input_hw
        return (f"note: fixed input {h}x{w}: the runtime shrinks larger images to fit, where the official "
                f"test runs each image at scale 1 in its own padded size, so accuracy drops unless your "
                f"images are about {h}x{w} ({measured_cost}); leave out --input-size to keep the "
                "official accuracy")

    # ``cornernet_inference``: every test scale (and its mirror with ``flip``) of every image, one
    # network run per input size, then flip merge, rescale, soft-NMS per image.
    def prepare(self, pipeline, image, flip, name="image"):
        image = check_image(image, name)
        tensors, metas = [], []          # a flipped copy follows its original
        for s in pipeline.scales:
            tensor, meta = pipeline.preprocess(image, s)
            tensors.append(tensor)
            metas.append(meta)
            if flip:
                tensors.append(flip_tensor(tensor))
                metas.append(meta)
        return _ScaledInputs(tensors, metas, bool(flip))

    def network(self, pipeline, prepared, clock=None):
        # only the backend calls: the decode is post-processing (``finish``), so that a
        # concurrent runner overlaps it with the next network call
        stage = clock.stage if clock is not None else _no_stage
        with stage("preprocess"):
            groups: Dict[tuple, List[tuple]] = {}    # one run per input size (dynamic models)
            for i, p in enumerate(prepared):
                for k, tensor in enumerate(p.tensors):
                    groups.setdefault(tensor.shape, []).append((i, k))
            stacked = [(keys, np.stack([prepared[i].tensors[k] for i, k in keys]))
                       for keys in groups.values()]
        outputs: List[List[Optional[dict]]] = [[None] * len(p.tensors) for p in prepared]
        for keys, tensors in stacked:
            out = pipeline.run_network(tensors, clock)
            for row, (i, k) in enumerate(keys):
                outputs[i][k] = {name: value[row:row + 1] for name, value in out.items()}
        return outputs

    def finish(self, pipeline, prepared, outputs):
        dets = [pipeline.decode(out, meta.input_hw)[0] for out, meta in zip(outputs, prepared.metas)]
        parts = []
        step = 2 if prepared.flip else 1
        for k in range(0, len(dets), step):
            meta = prepared.metas[k]
            d = flip_merge(dets[k], dets[k + 1], meta.output_hw[1]) if prepared.flip else dets[k]
            parts.append(rescale_dets(d, meta, clip=pipeline.test.clip_boxes))
        return postprocess(np.concatenate(parts), pipeline.spec.num_classes, pipeline.test,
                           pipeline.class_names, merge=pipeline.merge, weight_exp=pipeline.weight_exp,
                           nt=pipeline.nms_nt)


class _ScaledInputs:
    """A prepared image of the single-pass family: its network inputs (one per test scale, each
    followed by its mirror image with flip) and their geometry."""

    __slots__ = ("tensors", "metas", "flip")

    def __init__(self, tensors, metas, flip):
        self.tensors, self.metas, self.flip = tensors, metas, flip


class AttentionZoom(Family):
    name = "attention-zoom"
    description = "CornerNet-Saccade"
    flip_test = False
    no_pixel_input = ("its zoom crops are resized bilinearly in float64 (the official crop_image_gpu), "
                      "so its network input is not 8-bit pixels; export it with --input float32")
    training_recipe = "cornernet_deploy.train.recipes:ATTENTION_ZOOM_RECIPE"

    def network_input_hw(self, spec, input_hw):
        # every attention/zoom crop is cut at the model's input size (a dynamic-size export: the
        # architecture's), as the official test with that ``input_size`` configured
        crop = tuple(int(s) for s in (input_hw or spec.input_size))
        _check_size(spec, crop)
        return crop

    def default_dynamic_size(self, requested_hw) -> bool:
        return False            # its official test always runs fixed-size square crops

    # The zoom passes depend on the first pass (and each other), so the network stage runs the
    # whole attention/zoom detection, crops included; pre-processing only checks the image and
    # post-processing has nothing left to do.
    def prepare(self, pipeline, image, flip, name="image"):
        self.check_flip(flip)
        return check_image(image, name)

    def network(self, pipeline, prepared, clock=None):
        return saccade_detect(prepared, lambda x, need: pipeline.run_decoded(x, need, clock=clock),
                              pipeline.spec, pipeline.test, pipeline.saccade, pipeline.mean,
                              pipeline.std, pipeline.class_names, input_hw=pipeline.network_hw,
                              clock=clock)

    def finish(self, pipeline, prepared, result):
        return result


def _check_size(spec: ArchSpec, input_hw) -> None:
    try:
        spec.check_input_size(input_hw)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _no_stage(_name):
    """A stage that times nothing (no clock)."""
    return contextlib.nullcontext()


SINGLE_PASS = SinglePass()
ATTENTION_ZOOM = AttentionZoom()
FAMILIES = {f.name: f for f in (SINGLE_PASS, ATTENTION_ZOOM)}


def family_of(spec: ArchSpec) -> Family:
    """The family of ``spec``: attention heads make the attention/zoom family."""
    return ATTENTION_ZOOM if spec.attention else SINGLE_PASS
