"""Architecture families: how a CornerNet-family model is run, exported and trained.

Two families, one interface (``Family``); the pipeline, the exporter, the profiler, ``compare``
and the trainer ask ``family_of(spec)`` and never test the architecture themselves:

* ``SINGLE_PASS`` (CornerNet, CornerNet-Squeeze; ``core/test/cornernet.py``): every image is
  padded at each test scale (optionally with its mirror image), run once, decoded, merged;
* ``ATTENTION_ZOOM`` (CornerNet-Saccade; ``core/test/cornernet_saccade.py``): a first pass over
  down-sized views finds attention peaks, zoomed square crops around them are run next
  (``saccade.py``).

Adding a family (e.g. CenterNet with center pooling) is one ``Family`` subclass here, its
``detect`` and training recipe (``train/recipes.py``), and the ``ArchSpec`` traits that select it
(docs/EXTENDING.md). Torch-free; the training recipe is named, not imported, so the runtime never
pulls in the trainer.
"""
from __future__ import annotations

import importlib
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..contract.arch import ArchSpec
from ..errors import UserError
from .detections import Detections
from .postprocess import flip_merge, postprocess, rescale_dets
from .preprocess import check_image, flip_tensor, preprocess
from .saccade import saccade_detect

__all__ = ["Family", "SINGLE_PASS", "ATTENTION_ZOOM", "FAMILIES", "family_of"]


class Family:
    """What differs between architecture families, for every part that runs, exports or trains."""

    name = "?"
    description = ""
    flip_test = True            # the official test may add each image's mirror image
    training_recipe = ""        # "module:attribute" of its ``train.recipes`` recipe

    # -- runtime ------------------------------------------------------------------------------
    def network_input_hw(self, spec: ArchSpec, input_hw) -> Optional[tuple]:
        """The input size the pipeline feeds (None: each image's own padded size); UserError when
        the network cannot take it."""
        raise NotImplementedError

    def detect(self, pipeline, images: Sequence[np.ndarray], flip: bool, clock=None) -> List[Detections]:
        """Detections for ``images`` through ``pipeline`` (``CornerNetPipeline``): its
        ``run_decoded`` runs the network in batches; ``clock`` times the stages."""
        raise NotImplementedError

    def check_flip(self, flip) -> None:
        if flip and not self.flip_test:
            raise UserError(f"{self.description} has no flip test (the official code never flips it)")

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

    def detect(self, pipeline, images, flip, clock=None):
        """``cornernet_inference``: every test scale (and its mirror with ``flip``) of every image,
        one network run per input size, then flip merge, rescale, soft-NMS per image."""
        stage = clock.stage if clock is not None else _no_stage
        with stage("preprocess"):
            images = [check_image(im, f"image {i}") for i, im in enumerate(images)]
            items = []          # (image index, tensor, meta); a flipped copy follows its original
            for i, im in enumerate(images):
                for s in pipeline.scales:
                    tensor, meta = preprocess(im, pipeline.spec, s, pipeline.input_hw, pipeline.mean,
                                              pipeline.std)
                    items.append((i, tensor, meta))
                    if flip:
                        items.append((i, flip_tensor(tensor), meta))
            groups: Dict[tuple, List[int]] = {}    # one run per input size (dynamic models)
            for idx, item in enumerate(items):
                groups.setdefault(item[1].shape, []).append(idx)
            stacked = [(idxs, np.stack([items[k][1] for k in idxs])) for idxs in groups.values()]
        dets: List[Optional[np.ndarray]] = [None] * len(items)
        for idxs, tensors in stacked:
            out, _ = pipeline.run_decoded(tensors, need_atts=False, clock=clock)
            for k, d in zip(idxs, out):
                dets[k] = d
        per_image: List[List[np.ndarray]] = [[] for _ in images]
        step = 2 if flip else 1
        for k in range(0, len(items), step):
            i, _, meta = items[k]
            d = flip_merge(dets[k], dets[k + 1], meta.output_hw[1]) if flip else dets[k]
            per_image[i].append(rescale_dets(d, meta, clip=pipeline.test.clip_boxes))
        return [postprocess(np.concatenate(parts), pipeline.spec.num_classes, pipeline.test,
                            pipeline.class_names, merge=pipeline.merge, weight_exp=pipeline.weight_exp,
                            nt=pipeline.nms_nt)
                for parts in per_image]


class AttentionZoom(Family):
    name = "attention-zoom"
    description = "CornerNet-Saccade"
    flip_test = False
    training_recipe = "cornernet_deploy.train.recipes:ATTENTION_ZOOM_RECIPE"

    def network_input_hw(self, spec, input_hw):
        # every attention/zoom crop is cut at the model's input size (a dynamic-size export: the
        # architecture's), as the official test with that ``input_size`` configured
        crop = tuple(int(s) for s in (input_hw or spec.input_size))
        _check_size(spec, crop)
        return crop

    def default_dynamic_size(self, requested_hw) -> bool:
        return False            # its official test always runs fixed-size square crops

    def detect(self, pipeline, images, flip, clock=None):
        self.check_flip(flip)
        return saccade_detect(images, lambda x, need: pipeline.run_decoded(x, need, clock=clock),
                              pipeline.spec, pipeline.test, pipeline.saccade, pipeline.mean,
                              pipeline.std, pipeline.class_names, input_hw=pipeline.network_hw,
                              clock=clock)


def _check_size(spec: ArchSpec, input_hw) -> None:
    try:
        spec.check_input_size(input_hw)
    except ValueError as exc:
        raise UserError(str(exc)) from None


class _NoStage:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _no_stage(_name):
    return _NoStage()


SINGLE_PASS = SinglePass()
ATTENTION_ZOOM = AttentionZoom()
FAMILIES = {f.name: f for f in (SINGLE_PASS, ATTENTION_ZOOM)}


def family_of(spec: ArchSpec) -> Family:
    """The family of ``spec``: attention heads make the attention/zoom family."""
    return ATTENTION_ZOOM if spec.attention else SINGLE_PASS
