"""Each loss term on tiny tensors, against arithmetic written out by hand."""
import math

import pytest
import torch

from cornernet_deploy.train.losses import (CornerNetLoss, ae_loss, clamped_sigmoid, focal_loss,
                                           gather_feat, off_loss)

torch.set_num_threads(1)
LOG_HALF = math.log(0.5)  # -0.693147


def probs(*values):
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


# --------------------------------------------------------------------------- focal
def test_focal_loss_by_hand():
    # gt [1, 0.5, 0], p [0.5, 0.5, 0.2]
    # pos  : log(0.5) * (1 - 0.5)^2                 = -0.693147 * 0.25            = -0.173287
    # neg 1: log(1 - 0.5) * 0.5^2 * (1 - 0.5)^4     = -0.693147 * 0.25 * 0.0625   = -0.010830
    # neg 2: log(1 - 0.2) * 0.2^2 * 1               = -0.223144 * 0.04            = -0.008926
    # loss = -(sum) / num_pos(1)                    = 0.193043
    gt = probs(1, 0.5, 0)
    p = probs(0.5, 0.5, 0.2)
    expected = -(LOG_HALF * 0.25 + LOG_HALF * 0.25 * 0.0625 + math.log(0.8) * 0.04)
    assert expected == pytest.approx(0.193043, abs=1e-6)
    assert focal_loss([p], gt).item() == pytest.approx(expected, rel=1e-12)
    # one prediction per stack: summed
    assert focal_loss([p, p], gt).item() == pytest.approx(2 * expected, rel=1e-12)


def test_focal_loss_without_positives_is_not_normalised():
    # gt [0.5, 0], p [0.5, 0.2]: -(log(.5)*.25*.0625 + log(.8)*.04) = 0.010830 + 0.008926
    loss = focal_loss([probs(0.5, 0.2)], probs(0.5, 0)).item()
    assert loss == pytest.approx(0.0197561, abs=1e-6)


def test_focal_loss_divides_by_positives_of_the_whole_batch():
    # two images, each: gt [1, 0] p [0.5, 0.5]; per image numerator 0.173287 + 0.173287
    # -> (4 * 0.173287) / 2 positives = 0.346574
    gt = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]], dtype=torch.float64)
    p = torch.full_like(gt, 0.5)
    assert focal_loss([p], gt).item() == pytest.approx(-2 * LOG_HALF * 0.25, rel=1e-12)


def test_masked_focal_loss_ignores_masked_pixels_but_counts_all_positives():
    # gt [1, 1, 0, 0], p 0.5 everywhere, mask [1, 0, 0, 1]:
    # terms of 0.173287 each at pixels 0 and 3 only; divided by 2 positives -> 0.173287
    gt = probs(1, 1, 0, 0)
    p = torch.full_like(gt, 0.5)
    mask = probs(1, 0, 0, 1)
    assert focal_loss([p], gt, mask).item() == pytest.approx(-LOG_HALF * 0.25, rel=1e-12)


def test_clamped_sigmoid_bounds_and_gradient():
    x = torch.tensor([-30.0, 0.0, 30.0], requires_grad=True)
    p = clamped_sigmoid(x)
    assert p.tolist() == pytest.approx([1e-4, 0.5, 1 - 1e-4])
    p.sum().backward()
    assert x.grad.tolist() == pytest.approx([0.0, 0.25, 0.0])
    # a confident wrong negative costs log(1e-4) * (1 - 1e-4)^2 = -9.210340 * 0.9998 -> 9.208498
    loss = focal_loss([clamped_sigmoid(torch.tensor([[[[30.0]]]], dtype=torch.float64))],
                      torch.zeros(1, 1, 1, 1, dtype=torch.float64))
    assert loss.item() == pytest.approx(9.208498, abs=1e-6)


# --------------------------------------------------------------------------- pull / push
def test_pull_push_two_objects_by_hand():
    # e_tl = [0, 1], e_br = [1, 0.8] -> means m = [0.5, 0.9]
    # pull = [(0-.5)^2 + (1-.5)^2 + (1-.9)^2 + (.8-.9)^2] / (2 + 1e-4) = 0.52 / 2.0001 = 0.259987
    # push: pairs (0,0), (1,1): relu(1 - 0) = 1; (0,1), (1,0): relu(1 - 0.4) = 0.6
    #   each [x - 1/2.0001] / (2*1 + 1e-4); sum = (2*1 + 2*0.6 - 4/2.0001) / 2.0001
    #   = (3.2 - 1.99990) / 2.0001 = 0.600020  (~ mean of 0.6 over the ordered pairs j != k)
    tl = torch.tensor([[0.0, 1.0, 7.0]], dtype=torch.float64)   # third slot is padding
    br = torch.tensor([[1.0, 0.8, -3.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0]], dtype=torch.uint8)
    pull, push = ae_loss(tl, br, mask)
    assert pull.item() == pytest.approx(0.52 / 2.0001, rel=1e-6)
    assert pull.item() == pytest.approx(0.259987, abs=1e-6)
    assert push.item() == pytest.approx((3.2 - 4 / 2.0001) / 2.0001, rel=1e-6)
    assert push.item() == pytest.approx(0.600020, abs=1e-6)


def test_push_far_apart_is_almost_zero():
    # m = [0.5, 2.25]: |d| = 1.75 -> relu(1 - 1.75) = 0; push = (2 - 4/2.0001) / 2.0001 = 4.99975e-5
    _, push = ae_loss(torch.tensor([[0.0, 2.0]]).double(), torch.tensor([[1.0, 2.5]]).double(),
                      torch.tensor([[1, 1]]))
    # (float32 object counts, as the official code: the tiny difference is only good to ~1e-3)
    assert push.item() == pytest.approx((2 - 4 / 2.0001) / 2.0001, rel=2e-3)


def test_single_object_push_is_constant_and_empty_image_gives_zero():
    # N = 1: push = (1 - 1/1.0001) / (0 + 1e-4) = 1/1.0001 = 0.99990001, no gradient
    # (computed, like the official code, with float32 counts: 1.00017, the cancellation costs
    # about 3 digits)
    # pull: tl 0, br 2 -> mean 1 -> (1 + 1) / 1.0001 = 1.99980002
    tl = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    br = torch.tensor([[2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    pull, push = ae_loss(tl, br, torch.tensor([[1, 0]]))
    assert push.item() == pytest.approx(1 / 1.0001, rel=1e-3)
    assert pull.item() == pytest.approx(2 / 1.0001, rel=1e-6)
    push.backward()
    assert tl.grad.abs().sum() == 0
    pull0, push0 = ae_loss(tl, br, torch.tensor([[0, 0]]))
    assert pull0.item() == 0 and push0.item() == 0


def test_pull_push_summed_over_images():
    # image 0 as in test_pull_push_two_objects_by_hand, image 1 a single object (push 0.9999)
    tl = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    br = torch.tensor([[1.0, 0.8], [2.0, 0.0]], dtype=torch.float64)
    pull, push = ae_loss(tl, br, torch.tensor([[1, 1], [1, 0]]))
    assert pull.item() == pytest.approx(0.52 / 2.0001 + 2 / 1.0001, rel=1e-6)
    assert push.item() == pytest.approx((3.2 - 4 / 2.0001) / 2.0001 + 1 / 1.0001, rel=1e-3)


# --------------------------------------------------------------------------- offsets
def test_offset_loss_by_hand():
    # object 0: diff (0.3, 0.4) -> 0.5*0.09 + 0.5*0.16 = 0.125
    # object 1: diff (1.5, 0)   -> (1.5 - 0.5) + 0 = 1.0
    # padding slot ignored; / (2 objects + 1e-4) -> 1.125 / 2.0001 = 0.562472
    off = torch.tensor([[[0.2, 0.9], [2.0, 0.0], [9.0, 9.0]]], dtype=torch.float64)
    gt = torch.tensor([[[0.5, 0.5], [0.5, 0.0], [0.0, 0.0]]], dtype=torch.float64)
    loss = off_loss(off, gt, torch.tensor([[1, 1, 0]]))
    assert loss.item() == pytest.approx(1.125 / 2.0001, rel=1e-6)
    assert loss.item() == pytest.approx(0.562472, abs=1e-6)


def test_gather_feat_uses_y_times_w_plus_x():
    feat = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)  # C=2, H=3, W=4
    # (x=1, y=2) -> index 9: channel 0 value 9, channel 1 value 12 + 9 = 21
    assert gather_feat(feat, torch.tensor([[9, 0]])).tolist() == [[[9.0, 21.0], [0.0, 12.0]]]


# --------------------------------------------------------------------------- the whole loss
def _one_object_batch():
    # one image, one class, 4x4 maps; TL corner at (x1, y1), BR at (x2, y3), plain 0/1 heat maps
    gt_tl = torch.zeros(1, 1, 4, 4)
    gt_tl[0, 0, 1, 1] = 1
    gt_br = torch.zeros(1, 1, 4, 4)
    gt_br[0, 0, 3, 2] = 1
    return {"tl_heat": gt_tl, "br_heat": gt_br, "mask": torch.tensor([[1, 0]], dtype=torch.uint8),
            "tl_off": torch.tensor([[[0.5, 0.25], [0, 0]]]), "br_off": torch.zeros(1, 2, 2),
            "tl_ind": torch.tensor([[1 * 4 + 1, 0]]), "br_ind": torch.tensor([[3 * 4 + 2, 0]])}


def _zero_outputs(stacks):
    return [{"tl_heat": torch.zeros(1, 1, 4, 4), "br_heat": torch.zeros(1, 1, 4, 4),
             "tl_tag": torch.zeros(1, 1, 4, 4), "br_tag": torch.zeros(1, 1, 4, 4),
             "tl_off": torch.zeros(1, 2, 4, 4), "br_off": torch.zeros(1, 2, 4, 4)}
            for _ in range(stacks)]


def test_cornernet_loss_weights_and_intermediate_supervision():
    # Logits 0 -> p = 0.5 everywhere: every pixel costs -log(0.5) * 0.25 = 0.173287 (positive:
    # (1-p)^2 = .25; negative with gt 0: p^2 = .25), 16 pixels / 1 positive = 2.772589 per map,
    # TL + BR = 5.545177 per stack.
    # Tags all 0: pull 0; one object: push 1/1.0001 = 0.999900, weight 0.1 -> 0.099990.
    # Offsets: TL (0.5, 0.25) vs 0: 0.5*.25 + 0.5*.0625 = 0.15625 / 1.0001; BR 0 -> 0.156234.
    # Two identical stacks: every term summed over stacks then / 2 -> the one-stack value.
    focal = 2 * 16 * (-LOG_HALF * 0.25)
    push = 0.1 / 1.0001
    off = 0.15625 / 1.0001
    for stacks in (1, 2):
        total, terms = CornerNetLoss()(_zero_outputs(stacks), _one_object_batch())
        assert terms["focal"].item() == pytest.approx(focal, rel=1e-6)
        assert terms["focal"].item() == pytest.approx(5.545177, abs=1e-5)
        assert terms["pull"].item() == 0
        assert terms["push"].item() == pytest.approx(push, rel=1e-3)
        assert terms["off"].item() == pytest.approx(off, rel=1e-6)
        assert total.item() == pytest.approx(focal + push + off, rel=1e-5)
        assert total.item() == pytest.approx(5.801401, abs=1e-4)
        assert set(terms) == {"focal", "pull", "push", "off"}


def test_saccade_attention_term():
    # 2 stacks, one attention scale 2x2 with one positive, logits 0: per stack 4 * 0.173287 / 1
    # = 0.693147; summed over stacks (1.386294), / 2 stacks (0.693147), / 2 stacks again at the
    # end -> terms["att"] = 0.346574. Valid masks all 1 -> focal as in the unmasked case.
    targets = _one_object_batch()
    targets["tl_valid"] = torch.ones(1, 1, 4, 4)
    targets["br_valid"] = torch.ones(1, 1, 4, 4)
    att_gt = torch.zeros(1, 1, 2, 2)
    att_gt[0, 0, 1, 0] = 1
    targets["atts"] = [att_gt]
    outputs = _zero_outputs(2)
    for o in outputs:
        o["atts"] = [torch.zeros(1, 1, 2, 2)]
    total, terms = CornerNetLoss(attention=True)(outputs, targets)
    assert terms["att"].item() == pytest.approx(-LOG_HALF * 0.25 * 4 / 2, rel=1e-6)
    assert terms["att"].item() == pytest.approx(0.346574, abs=1e-6)
    assert total.item() == pytest.approx(5.801401 + 0.346574, abs=1e-4)
    # an invalid (masked) region removes its pixels from the heat term
    targets["tl_valid"][0, 0, 0, :] = 0   # 4 negative TL pixels ignored: 12 / 16 of TL's cost
    _, terms2 = CornerNetLoss(attention=True)(outputs, targets)
    assert terms2["focal"].item() == pytest.approx((12 + 16) * (-LOG_HALF * 0.25), rel=1e-6)


def test_gradients_flow_to_every_head():
    outputs = [{k: v.clone().requires_grad_() for k, v in o.items()} for o in _zero_outputs(2)]
    targets = _one_object_batch()
    targets["mask"] = torch.tensor([[1, 1]], dtype=torch.uint8)  # two objects: push has a gradient
    targets["tl_ind"] = torch.tensor([[5, 0]])
    targets["br_ind"] = torch.tensor([[14, 15]])
    targets["br_off"] = torch.full((1, 2, 2), 0.5)
    for o in outputs:  # distinct tags so that pull and push both have a gradient
        o["tl_tag"].data[0, 0, 1, 1] = 0.3
        o["br_tag"].data[0, 0, 3, 2] = -0.2
    total, _ = CornerNetLoss()(outputs, targets)
    total.backward()
    for o in outputs:
        for k, v in o.items():
            assert v.grad is not None and float(v.grad.abs().sum()) > 0, k
