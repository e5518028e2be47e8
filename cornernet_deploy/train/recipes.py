"""What training does per architecture family (``runtime.families``): how a sample is augmented
and turned into targets, and which loss terms apply. Each family names its recipe here
(``Family.training_recipe``); the trainer asks ``family_of(spec).training()``."""
from __future__ import annotations

import numpy as np

from .augment import augment_cornernet, augment_saccade
from .losses import CornerNetLoss
from .targets import cornernet_targets, saccade_targets

__all__ = ["TrainingRecipe", "SINGLE_PASS_RECIPE", "ATTENTION_ZOOM_RECIPE"]


class TrainingRecipe:
    def sample(self, image, boxes, labels, rng: np.random.Generator, aug_cfg, spec, input_hw, output_hw,
               train: bool = True):
        """(augmented image HxWx3 float32, targets dict of numpy) of one training image."""
        raise NotImplementedError

    def loss(self, spec) -> CornerNetLoss:
        raise NotImplementedError


class SinglePassRecipe(TrainingRecipe):
    """CornerNet / CornerNet-Squeeze (``core/sample/cornernet.py``)."""

    def sample(self, image, boxes, labels, rng, aug_cfg, spec, input_hw, output_hw, train=True):
        image, boxes, labels = augment_cornernet(image, boxes, labels, rng, aug_cfg, train=train)
        return image, cornernet_targets(boxes, labels, spec.num_classes, input_hw, output_hw,
                                        spec.gaussian_iou)

    def loss(self, spec) -> CornerNetLoss:
        return CornerNetLoss(attention=False)


class AttentionZoomRecipe(TrainingRecipe):
    """CornerNet-Saccade (``core/sample/cornernet_saccade.py``): zoomed crops, attention targets,
    heat loss masked to the corners that stay inside the crop."""

    def sample(self, image, boxes, labels, rng, aug_cfg, spec, input_hw, output_hw, train=True):
        image, boxes, labels, kept = augment_saccade(image, boxes, labels, rng, aug_cfg, train=train)
        # one map per hourglass level; each trained on the object sizes of its cell size
        # (contract.arch.SACCADE_ATT_LAYOUT), the sizes the runtime's zoom scales assume
        return image, saccade_targets(boxes, labels, kept, spec.num_classes, input_hw, output_hw,
                                      spec.gaussian_iou, att_ratios=spec.attention_ratios(),
                                      att_ranges=spec.attention_ranges())

    def loss(self, spec) -> CornerNetLoss:
        return CornerNetLoss(attention=True)


SINGLE_PASS_RECIPE = SinglePassRecipe()
ATTENTION_ZOOM_RECIPE = AttentionZoomRecipe()
