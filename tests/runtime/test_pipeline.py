"""The whole runtime pipeline with fake backends (plain Python functions returning planted heads):
hand-computed boxes, the official oracle end to end, batching, metadata, properties, Saccade."""
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_official as ro
from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime import CornerNetPipeline, Detections, OFFICIAL_MULTI_SCALE
from cornernet_deploy.runtime.decode import topk_corners
from cornernet_deploy.runtime.postprocess import flip_merge, rescale_dets
from cornernet_deploy.runtime.preprocess import ImageMeta
from cornernet_deploy.runtime.saccade import (bilinear_resize, crop_into_canvas, decode_atts,
                                              first_pass_locations, location_nms, numpy_argsort,
                                              prepare_crops, ref_locations)
from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR, get_arch

torch.set_num_threads(1)
HERE = os.path.dirname(os.path.abspath(__file__))                              # tests/runtime
HELPERS = os.path.join(os.path.dirname(HERE), "helpers")                       # tests/helpers
HEADS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")


def small(name, classes=4, **test):
    spec = get_arch(name).replace(num_classes=classes)
    return dataclasses.replace(spec, test=dataclasses.replace(spec.test, **test)) if test else spec


CORNERNET = small("cornernet", top_k=20, num_dets=200)
SQUEEZE = small("cornernet-squeeze")
SACCADE = small("cornernet-saccade", classes=3)


def sig(x):
    """torch's float32 sigmoid (the official one), on its SIMD path (a 64-element call)."""
    return float(torch.sigmoid(torch.full((64,), x, dtype=torch.float32))[0])


def image(h, w, seed=0):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


def seed_of(arr):
    return int.from_bytes(hashlib.sha256(np.ascontiguousarray(arr).tobytes()).digest()[:4], "little")


def random_heads(rng, c, h, w, peaks=10):
    d = dict(tl_heat=(rng.randn(1, c, h, w) - 4).astype(np.float32),
             br_heat=(rng.randn(1, c, h, w) - 4).astype(np.float32),
             tl_tag=(rng.randn(1, 1, h, w) * 2).astype(np.float32),
             br_tag=(rng.randn(1, 1, h, w) * 2).astype(np.float32),
             tl_off=rng.rand(1, 2, h, w).astype(np.float32),
             br_off=rng.rand(1, 2, h, w).astype(np.float32))
    for _ in range(peaks):
        cls, t = rng.randint(c), rng.randn()
        y1, x1 = rng.randint(0, h - 2), rng.randint(0, w - 2)
        y2, x2 = rng.randint(y1, h), rng.randint(x1, w)
        for kind, (y, x), tag in (("tl", (y1, x1), t), ("br", (y2, x2), t + rng.uniform(-.6, .6))):
            d[f"{kind}_heat"][0, cls, y, x] = rng.uniform(-1, 3)
            d[f"{kind}_tag"][0, 0, y, x] = tag
    return d


class HashRun:
    """Deterministic fake backend: each input's heads are seeded by a hash of its bytes, so the
    same tensor always gets the same heads (and any pre-processing difference shows)."""

    def __init__(self, spec, graph=False, atts=False, peaks=10):
        self.spec, self.graph, self.atts, self.calls = spec, graph, atts, []
        self.peaks = peaks

    def heads_for(self, tensor):
        rng = np.random.RandomState(seed_of(tensor))
        oh, ow = self.spec.output_size(tensor.shape[1:])
        d = random_heads(rng, self.spec.num_classes, oh, ow, self.peaks)
        if self.atts:
            for j, s in enumerate((16, 32, 64)):
                a = (rng.rand(1, 1, s, s) * 0.25).astype(np.float32)
                a[0, 0, rng.randint(s), rng.randint(s)] = rng.uniform(0.3, 1.0)
                d[f"att{j}"] = a
        return d

    def __call__(self, batch):
        self.calls.append(batch.shape[0])
        parts = [self.heads_for(t) for t in batch]
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self.graph:
            k = self.spec.test.top_k
            tl = topk_corners(out["tl_heat"], out["tl_tag"], out["tl_off"], k)
            br = topk_corners(out["br_heat"], out["br_tag"], out["br_off"], k)
            atts = {name: v for name, v in out.items() if name.startswith("att")}
            out = {f"{p}_{n}": getattr(c, n) for p, c in (("tl", tl), ("br", br))
                   for n in ("scores", "inds", "tags", "offs")}
            out.update(atts)
        return out


def as_rows(d: Detections):
    rows = np.concatenate([d.boxes, d.scores[:, None], d.class_ids[:, None].astype(np.float32)], 1)
    return rows[np.lexsort(rows.T[::-1])]


def ref_rows(top):
    rows = np.concatenate([np.concatenate([top[j], np.full((len(top[j]), 1), j - 1, np.float32)], 1)
                           for j in top])
    return rows[np.lexsort(rows.T[::-1])]


# --- pieces by hand --------------------------------------------------------------------------

def test_flip_merge_by_hand():
    a = np.float32([[1, 2, 3, 4, .5, .5, .5, 0]])
    f = np.float32([[2, 7, 5, 9, .4, .4, .4, 1]])
    out = flip_merge(a, f, out_w=128)
    np.testing.assert_array_equal(out, np.float32([[1, 2, 3, 4, .5, .5, .5, 0],
                                                   [123, 7, 126, 9, .4, .4, .4, 1]]))


def test_rescale_by_hand():
    meta = ImageMeta(image_hw=(600, 800), scale=0.5, scaled_hw=(300, 400), input_hw=(383, 511),
                     output_hw=(96, 128), borders=(41.0, 341.0, 55.0, 455.0), ratios=(0.25, 0.5),
                     requested_scale=0.5)
    d = np.float32([[40, 20, 300, 200, .9, .9, .9, 0]])
    out = rescale_dets(d, meta)
    # x: 40/0.5 - 55 = 25 -> /0.5 = 50; x2: 600 - 55 = 545 -> clip 400 -> 800
    # y: 20/0.25 - 41 = 39 -> 78; y2: 800 - 41 = 759 -> clip 300 -> 600
    np.testing.assert_array_equal(out[0, :4], np.float32([50, 78, 800, 600]))
    np.testing.assert_array_equal(rescale_dets(d, meta, clip=False)[0, :4],
                                  np.float32([50, 78, 1090, 1518]))


def planted_run(pairs_per_element):
    """A backend returning flat low heat with the given planted pairs, per batch element:
    pairs_per_element[b] = [(cls, (y1, x1), (ox1, oy1), (y2, x2), (ox2, oy2), logit), ...]."""
    calls = []

    def run(batch):
        calls.append(batch.shape[0])
        oh, ow = CORNERNET.output_size(batch.shape[2:])
        n, c = batch.shape[0], CORNERNET.num_classes
        d = dict(tl_heat=np.full((n, c, oh, ow), -30, np.float32),
                 br_heat=np.full((n, c, oh, ow), -30, np.float32),
                 tl_tag=np.zeros((n, 1, oh, ow), np.float32), br_tag=np.zeros((n, 1, oh, ow), np.float32),
                 tl_off=np.zeros((n, 2, oh, ow), np.float32), br_off=np.zeros((n, 2, oh, ow), np.float32))
        for b in range(n):
            for cls, (y1, x1), o1, (y2, x2), o2, logit in pairs_per_element[b]:
                d["tl_heat"][b, cls, y1, x1] = logit
                d["tl_off"][b, :, y1, x1] = o1
                d["br_heat"][b, cls, y2, x2] = logit
                d["br_off"][b, :, y2, x2] = o2
        return d
    run.calls = calls
    return run


def test_planted_pair_maps_to_the_hand_computed_box():
    # 300x400 -> input 383x511, output 96x128, borders top 41 left 55
    run = planted_run([[(2, (20, 30), (0.5, 0.25), (60, 90), (0.25, 0.75), 3.0)]])
    det = CornerNetPipeline(CORNERNET, run)(image(300, 400), flip=False)
    x1, y1 = 30.5 * 511 / 128 - 55, 20.25 * 383 / 96 - 41
    x2, y2 = 90.25 * 511 / 128 - 55, 60.75 * 383 / 96 - 41
    big = det.filter(0.5)
    assert len(big) == 1 and big.class_ids[0] == 2 and big.class_names == ["class_2"]
    np.testing.assert_allclose(big.boxes[0], [x1, y1, x2, y2], rtol=1e-5)
    assert big.scores[0] == np.float32(sig(3.0))


def test_flip_copy_mirrors_back_and_is_decayed_by_soft_nms():
    # element 1 is the mirrored input: the same object at x' = out_w - x (out_w = 128)
    # TL x' = 128 - 90.25 = 37.75, BR x' = 128 - 30.5 = 97.5
    pairs = [[(1, (20, 30), (0.5, 0.25), (60, 90), (0.25, 0.75), 2.0)],
             [(1, (20, 37), (0.75, 0.25), (60, 97), (0.5, 0.75), 2.0)]]
    run = planted_run(pairs)
    det = CornerNetPipeline(CORNERNET, run)(image(300, 400)).filter(0.05)
    assert run.calls == [2]                        # image and its mirror in one run call
    assert len(det) == 2
    np.testing.assert_array_equal(det.boxes[0], det.boxes[1])     # identical after the merge
    s = sig(2.0)
    assert det.scores[0] == np.float32(s)
    assert det.scores[1] == pytest.approx(s * math.exp(-1 / 0.5), rel=1e-6)   # IoU 1, sigma 0.5


# --- against the official oracle ---------------------------------------------------------------

@pytest.mark.parametrize("graph", [False, True])
def test_cornernet_with_flip_equals_official(graph):
    imgs = [image(200, 300, 1), image(150, 120, 2)]
    run = HashRun(CORNERNET, graph=graph)
    dets = CornerNetPipeline(CORNERNET, run).batch(imgs)
    for im, d in zip(imgs, dets):
        ref = ro.ref_cornernet_inference(im, HashRun(CORNERNET), K=20, ae_threshold=0.5,
                                         num_dets=200, flip=True, num_classes=4, stride=4)
        assert len(d) > 10
        np.testing.assert_array_equal(as_rows(d), ref_rows(ref))
    assert run.calls == [2, 2]                     # two input sizes, image + mirror each


def test_squeeze_equals_official():
    im = image(180, 260, 3)
    d = CornerNetPipeline(SQUEEZE, HashRun(SQUEEZE))(im)
    ref = ro.ref_cornernet_inference(im, HashRun(SQUEEZE), K=20, ae_threshold=0.5, num_dets=100,
                                     flip=False, num_classes=4, stride=8)
    np.testing.assert_array_equal(as_rows(d), ref_rows(ref))


def test_multi_scale_merge_equals_official():
    im = image(160, 200, 4)
    d = CornerNetPipeline(CORNERNET, HashRun(CORNERNET), **OFFICIAL_MULTI_SCALE)(im)
    ref = ro.ref_cornernet_inference(im, HashRun(CORNERNET), K=20, ae_threshold=0.5, num_dets=200,
                                     flip=True, num_classes=4, stride=4,
                                     scales=OFFICIAL_MULTI_SCALE["scales"], merge=True)
    np.testing.assert_array_equal(as_rows(d), ref_rows(ref))


# --- batching, static models, metadata -------------------------------------------------------

def test_static_batch_is_padded_and_results_do_not_depend_on_batching():
    imgs = [image(100, 120, 5), image(100, 120, 6)]
    ref = CornerNetPipeline(CORNERNET, HashRun(CORNERNET)).batch(imgs)
    run = HashRun(CORNERNET)
    got = CornerNetPipeline(CORNERNET, run, max_batch=3, static_batch=True).batch(imgs)
    assert run.calls == [3, 3]                     # 4 inputs (2 images + mirrors) -> 3 + (1 + 2 pad)
    for a, b in zip(ref, got):
        np.testing.assert_array_equal(as_rows(a), as_rows(b))


def metadata(arch_spec, **extra):
    spec = arch_spec
    meta = {"format": 1, "toolkit_version": "0.1.0", "arch": spec.name,
            "spec": dataclasses.asdict(spec), "input_name": "image", "input_hw": None,
            "batch": None, "channel_order": "BGR", "mean": list(COCO_MEAN_BGR),
            "std": list(COCO_STD_BGR), "stride": spec.stride, "class_names": list(spec.class_names),
            "category_ids": list(spec.category_ids), "decode": "none",
            "test": dataclasses.asdict(spec.test),
            "saccade": dataclasses.asdict(spec.saccade) if spec.saccade else None,
            "outputs": list(HEADS), "corner_pool": "onnx", "precision": "fp32"}
    meta.update(extra)
    return json.loads(json.dumps(meta))


def test_from_metadata_with_fixed_input_and_batch_one():
    meta = metadata(CORNERNET, input_hw=[255, 383], batch=1)
    run = HashRun(CORNERNET)
    pipe = CornerNetPipeline.from_metadata(json.dumps(meta), run)
    assert pipe.spec == CORNERNET and pipe.input_hw == (255, 383) and pipe.static_batch
    im = image(200, 300, 7)
    got = pipe(im)
    assert run.calls == [1, 1]
    # a backend passing its own batch limit: still static when it equals the metadata's
    run2 = HashRun(CORNERNET)
    assert CornerNetPipeline(meta, run2, max_batch=1).static_batch
    assert not CornerNetPipeline(metadata(CORNERNET, batch=None), run2, max_batch=4).static_batch
    direct = CornerNetPipeline(CORNERNET, HashRun(CORNERNET), input_hw=(255, 383))(im)
    np.testing.assert_array_equal(as_rows(got), as_rows(direct))
    # an image whose own padded size is the model input: identical to the official dynamic path
    small_im = image(200, 300, 8)
    np.testing.assert_array_equal(
        as_rows(pipe(small_im)), as_rows(CornerNetPipeline(CORNERNET, HashRun(CORNERNET))(small_im)))


@pytest.mark.parametrize("bad,msg", [
    (dict(input_hw=[500, 500]), "k\\*128-1"),
    (dict(channel_order="RGB"), "RGB"),
    (dict(spec=None, arch=None), "architecture"),
])
def test_bad_metadata_is_a_user_error(bad, msg):
    with pytest.raises(UserError, match=msg):
        CornerNetPipeline(metadata(CORNERNET, **bad), HashRun(CORNERNET))


def test_backend_contract_errors_are_clear():
    pipe = CornerNetPipeline(CORNERNET, lambda b: [b])
    with pytest.raises(TypeError, match="dict"):
        pipe(image(50, 50))
    pipe = CornerNetPipeline(CORNERNET, lambda b: {"tl_heat": b})
    with pytest.raises(ValueError, match="br_heat"):
        pipe(image(50, 50))
    with pytest.raises(UserError, match="8-bit"):
        CornerNetPipeline(CORNERNET, HashRun(CORNERNET))(np.zeros((9, 9, 3), np.uint16))


# --- properties -------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(h=st.integers(8, 140), w=st.integers(8, 140), seed=st.integers(0, 2 ** 31 - 1),
       flip=st.booleans(), scales=st.sampled_from([(1.0,), (0.5, 1.25)]),
       fixed=st.booleans())
def test_output_properties(h, w, seed, flip, scales, fixed):
    im = image(h, w, seed % 1000)
    pipe = CornerNetPipeline(CORNERNET, HashRun(CORNERNET), scales=scales,
                             input_hw=(127, 127) if fixed else None)
    d = pipe(im, flip=flip)
    assert len(d) <= 100 or len(np.unique(d.scores[99:])) == 1       # ties may keep more
    assert (np.diff(d.scores) <= 0).all()                            # sorted, descending
    x1, y1, x2, y2 = d.boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all()                       # clipped to the image
    assert (x2 <= w + 1e-3).all() and (y2 <= h + 1e-3).all()
    assert (x2 >= x1).all() and (y2 >= y1).all()                     # never inverted
    assert (d.scores > -1).all()
    again = pipe(im.copy(), flip=flip)                               # deterministic
    np.testing.assert_array_equal(as_rows(d), as_rows(again))


class PermutedRun(HashRun):
    def __init__(self, spec, perm):
        super().__init__(spec)
        self.perm = perm

    def __call__(self, batch):
        out = super().__call__(batch)
        for k in ("tl_heat", "br_heat"):
            permuted = np.empty_like(out[k])
            permuted[:, self.perm] = out[k]          # old channel c -> new channel perm[c]
            out[k] = permuted
        return out


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), perm=st.permutations(range(4)))
def test_permuting_class_channels_permutes_class_ids(seed, perm):
    im = image(90, 110, seed)
    base = CornerNetPipeline(CORNERNET, HashRun(CORNERNET))(im)
    got = CornerNetPipeline(CORNERNET, PermutedRun(CORNERNET, np.array(perm)))(im)
    mapped = Detections(base.boxes, base.scores, np.array(perm)[base.class_ids],
                        [CORNERNET.class_names[perm[c]] for c in base.class_ids])
    np.testing.assert_array_equal(as_rows(got), as_rows(mapped))


# --- Detections -------------------------------------------------------------------------------

def test_detections_to_coco_and_filter():
    d = Detections(np.float32([[10.123, 20.456, 30.789, 40.001], [0, 0, 1, 1]]),
                   np.float32([0.87654, 0.01]), np.array([11, 0]), ["stop sign", "person"])
    coco = d.to_coco(42)
    assert coco[0] == {"image_id": 42, "category_id": 13, "score": 0.88,
                       "bbox": [10.12, 20.46, 20.67, 19.55]}
    assert coco[1]["category_id"] == 1
    assert d.to_coco(1, category_ids=range(100, 200))[0]["category_id"] == 111
    assert len(d) == 2 and len(d.filter(0.5)) == 1 and d.filter(0.5).class_names == ["stop sign"]
    assert len(Detections()) == 0 and Detections().to_coco(1) == []
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2), ["a", "b"])


# --- Saccade ----------------------------------------------------------------------------------

def test_crop_size_is_taken_in_float64():
    # 255 / float32(0.425) = 599.99998 -> 599 (numpy 1.x), not 600
    loc = np.array([[250, 250, 0.425]], dtype=np.float32)
    _, offsets = prepare_crops(np.zeros((500, 500, 3)), loc, (255, 255), COCO_MEAN_BGR, COCO_STD_BGR)
    np.testing.assert_array_equal(offsets, [[250 - 599 // 2, 250 - 599 // 2]])


def test_first_pass_locations():
    locs = first_pass_locations((300, 400), (192, 255))
    assert locs.dtype == np.float32
    np.testing.assert_array_equal(locs, np.float32([[150, 200, 192 / 400], [150, 200, 255 / 400]]))


def test_crop_into_canvas_by_hand():
    # 100x100 crop at the centre: factor 2.55, canvas rows 127 - int(50*2.55) = 0 to
    # 127 + 127 = 254: row and column 254 stay empty
    canvas = np.zeros((255, 255, 3), np.float32)
    offset = crop_into_canvas(np.ones((100, 100, 3)), (50, 50), 100, canvas)
    assert offset == (0, 0)
    assert (canvas[:254, :254] == 1).all() and (canvas[254] == 0).all() and (canvas[:, 254] == 0).all()
    # a window hanging over the top-left corner: only the part inside the image is pasted
    canvas = np.zeros((255, 255, 3), np.float32)
    offset = crop_into_canvas(np.ones((100, 100, 3)), (10, 20), 100, canvas)
    assert offset == (-40, -30)
    # top = 10 -> rows 127 - 25 = 102 .. 127 + int(50*2.55) = 254; left = 20 -> cols 76 .. 254
    assert (canvas[102:254, 76:254] == 1).all()
    assert canvas[:102].sum() == 0 and canvas[:, :76].sum() == 0


@pytest.mark.parametrize("src,dst", [((37, 53), (255, 200)), ((300, 250), (101, 77)),
                                     ((2, 3), (9, 4)), ((64, 64), (64, 64))])
def test_bilinear_resize_equals_torch(src, dst):
    x = np.random.RandomState(0).rand(*src, 3)
    ref = F.interpolate(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()), size=list(dst),
                        mode="bilinear", align_corners=False)[0].numpy().transpose(1, 2, 0)
    # torch 2.x on CPU fuses multiply-adds differently (as CUDA did for the official run): the
    # float64 values agree to ~1e-14; prepare_crops checks the float32 crops bit for bit
    np.testing.assert_allclose(bilinear_resize(x, dst), ref, rtol=0, atol=1e-13)


def test_prepare_crops_equals_official_crop_image_gpu():
    img = np.random.RandomState(1).rand(120, 170, 3)
    locs = np.array([[60, 85, 255 / 170], [10.7, 160.2, 1.7], [119, 0, 3.3], [-5, 90, 0.9]])
    for dtype in (np.float32, np.float64):
        mine, off = prepare_crops(img, locs.astype(dtype), (255, 255), COCO_MEAN_BGR, COCO_STD_BGR)
        ref, ref_off = ro.ref_prepare_images(torch.from_numpy(img.transpose(2, 0, 1).copy()),
                                             locs.astype(dtype), COCO_MEAN_BGR, COCO_STD_BGR)
        np.testing.assert_array_equal(off, ref_off)
        np.testing.assert_array_equal(mine, ref)


def test_location_nms_by_hand():
    locs = np.array([
        [100, 100, 1.0, 0.9],   # L1 taken
        [110, 300, 1.0, 0.8],   # dy = 10 <= 16 (the min of |dy|, |dx|), same scale: dropped
        [300, 300, 1.5, 0.7],   # far from L1: taken
        [305, 500, 1.0, 0.6],   # dy = 5 <= 16/1.5 but scale ratio 1.5 > 1.2: taken
        [400, 400, 2.0, 0.5],   # far from all: taken
        [100, 700, 1.1, 0.4],   # dy = 0 from L1, ratio 1/1.1 = 0.91: dropped
    ])
    out = location_nms(locs[::-1].copy(), thresh=16)
    np.testing.assert_array_equal(out, locs[[0, 2, 3, 4]])
    assert location_nms(np.zeros((0, 4))).shape == (0, 4)


def test_decode_atts_by_hand():
    atts = [np.zeros((2, 1, s, s), np.float32) for s in (16, 32, 64)]
    atts[0][0, 0, 2, 3] = 0.5        # view 0 (scale 0.5, offset (-10, -20)), 16 px cells
    atts[1][0, 0, 1, 1] = 0.4        # -> x = 1*8/0.5 - 20 = -4: outside, dropped
    atts[2][0, 0, 5, 6] = 0.35
    atts[2][0, 0, 9, 9] = 0.3        # not > 0.3
    atts[0][1, 0, 4, 4] = 0.9        # view 1 has scale 2.5 > 2: skipped
    scales = np.float32([0.5, 2.5])
    offsets = np.float32([[-10, -20], [0, 0]])
    out = decode_atts(atts, (1, 2, 4), scales, offsets, (300, 400), 0.3, (255, 255))
    np.testing.assert_allclose(out, [[2 * 16 / 0.5 - 10, 3 * 16 / 0.5 - 20, 0.5, 0.5],
                                     [5 * 4 / 0.5 - 10, 6 * 4 / 0.5 - 20, 2.0, 0.35]], rtol=1e-7)


def test_ref_locations_by_hand():
    dets = np.float32([[0, 0, 100, 50, 0.6, 0, 0, 0],      # m = 100 > 96: 192/100
                       [10, 10, 50, 30, 0.9, 0, 0, 0],     # m = 40: 64/40
                       [0, 0, 10, 20, 0.7, 0, 0, 0],       # m = 20: 24/20
                       [0, 0, 10, 20, 0.5, 0, 0, 0]])      # score not > 0.5
    np.testing.assert_allclose(ref_locations(dets), [[25, 50, 1.92, 1], [20, 30, 1.6, 1],
                                                     [10, 5, 1.2, 1]], rtol=1e-6)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=0, max_size=16))
def test_numpy_argsort_is_stable_up_to_16_elements(values):
    v = np.array(values, dtype=np.float64)
    np.testing.assert_array_equal(numpy_argsort(v), np.argsort(v, kind="stable"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=17, max_size=300))
def test_numpy_argsort_sorts(values):
    v = np.array(values)
    order = numpy_argsort(v)
    assert sorted(order.tolist()) == list(range(len(v)))
    assert (np.diff(v[order]) >= 0).all()


class SaccadeRun:
    """Stateful fake backend for the hand-worked Saccade case (call 1: the two first-pass views,
    call 2: the zoom crops)."""

    def __init__(self, plants):
        self.plants, self.calls = plants, []

    def __call__(self, batch):
        call = len(self.calls)
        self.calls.append(batch.shape[0])
        n, c = batch.shape[0], SACCADE.num_classes
        d = dict(tl_heat=np.full((n, c, 64, 64), -30, np.float32),
                 br_heat=np.full((n, c, 64, 64), -30, np.float32),
                 tl_tag=np.zeros((n, 1, 64, 64), np.float32), br_tag=np.zeros((n, 1, 64, 64), np.float32),
                 tl_off=np.zeros((n, 2, 64, 64), np.float32), br_off=np.zeros((n, 2, 64, 64), np.float32))
        for j, s in enumerate((16, 32, 64)):
            d[f"att{j}"] = np.zeros((n, 1, s, s), np.float32)
        for (b, cls, (y1, x1), o1, (y2, x2), logit) in self.plants.get(call, []):
            d["tl_heat"][b, cls, y1, x1] = logit
            d["tl_off"][b, :, y1, x1] = o1
            d["br_heat"][b, cls, y2, x2] = logit
        return d


def test_saccade_hand_worked_first_pass_and_zoom():
    # image 300x400; view 1 (size 255): scale float32(0.6375), crop int(255/scale) = 400,
    # offset (150 - 200, 200 - 200) = (-50, 0); out -> image: v / (64/255) / 0.6375 + offset
    plants = {0: [(1, 1, (20, 10), (0.5, 0.5), (40, 50), 3.0)],
              1: [(0, 2, (8, 8), (0.25, 0.25), (30, 30), 2.0)]}
    run = SaccadeRun(plants)
    det = CornerNetPipeline(SACCADE, run)(image(300, 400))
    assert run.calls == [2, 1]             # two first-pass views, then one reference zoom crop
    assert len(det) == 2
    first = det[det.class_ids == 1]
    np.testing.assert_allclose(first.boxes[0], [65.625, 78.125, 312.5, 200.0], rtol=1e-6)
    assert first.scores[0] == np.float32(sig(3.0))
    # the first-pass box (score > 0.5) becomes a zoom location: centre (139.0625, 189.0625),
    # longest side 246.875 > 96 -> zoom 192/246.875 (float32); crop int(255/zoom) = 327
    z = float(np.float32(192) / np.float32(246.875))
    crop = int(255 / z)
    assert crop == 327
    off_y, off_x = 139 - crop // 2, 189 - crop // 2
    k = 255 / 64
    zoomed = det[det.class_ids == 2]
    np.testing.assert_allclose(zoomed.boxes[0], [8.25 * k / z + off_x, 8.25 * k / z + off_y,
                                                 30 * k / z + off_x, 30 * k / z + off_y], rtol=1e-6)
    assert zoomed.scores[0] == np.float32(sig(2.0))


def test_saccade_batch_and_max_batch_do_not_change_results():
    imgs = [image(300, 400, 1), image(200, 150, 2)]
    a = CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True)).batch(imgs)
    run = HashRun(SACCADE, atts=True)
    b = [CornerNetPipeline(SACCADE, run, max_batch=3)(im) for im in imgs]
    assert max(run.calls) <= 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(as_rows(x), as_rows(y))


@pytest.mark.parametrize("seed,shape", [(0, (300, 400)), (1, (480, 200)), (2, (100, 150))])
def test_saccade_equals_official(seed, shape):
    im = image(*shape, seed)
    d = CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True, peaks=2))(im)
    ref, locs, candidates = ro.ref_saccade_inference(im, HashRun(SACCADE, atts=True, peaks=2),
                                                     num_classes=3)
    # at most 16 location candidates: numpy 1.x's argsort is then an insertion sort, i.e. the
    # oracle's stable sort (more ties: test_tie_order_against_numpys_own_generic_introsort)
    assert 0 < len(locs) and candidates <= 16
    np.testing.assert_array_equal(as_rows(d), ref_rows(ref))


def test_saccade_in_graph_decode_equals_raw_heads_and_empty_batches():
    imgs = [image(260, 200, 9), image(120, 330, 10)]
    raw = CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True)).batch(imgs)
    graph = CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True, graph=True)).batch(imgs)
    for a, b in zip(raw, graph):
        assert len(a) > 0
        np.testing.assert_array_equal(as_rows(a), as_rows(b))
    assert CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True)).batch([]) == []
    assert CornerNetPipeline(CORNERNET, HashRun(CORNERNET)).batch([]) == []


def test_saccade_refuses_flip_and_input_sizes_it_cannot_crop():
    with pytest.raises(UserError, match="flip"):
        CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True))(image(50, 50), flip=True)
    with pytest.raises(UserError, match="square"):
        CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True), input_hw=(255, 511))
    with pytest.raises(UserError, match="k\\*32-1"):
        CornerNetPipeline(SACCADE, HashRun(SACCADE, atts=True), input_hw=(300, 300))
    with pytest.raises(ValueError, match="att0"):
        CornerNetPipeline(SACCADE, HashRun(SACCADE))(image(50, 50))


GENERIC_SORT_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path[:0] = [{here!r}, {helpers!r}]
    # gate: numpy 1.x's generic introsort is an insertion sort (stable) below 17 elements
    rng = np.random.RandomState(0)
    for _ in range(50):
        v = rng.randint(0, 3, size=rng.randint(2, 17)).astype(float)
        if not np.array_equal(np.argsort(v), np.argsort(v, kind="stable")):
            print("SKIP: numpy dispatches argsort to a SIMD sort here"); sys.exit(0)
    from cornernet_deploy.runtime.saccade import numpy_argsort
    for _ in range(300):
        v = rng.randint(0, rng.randint(1, 20), size=rng.randint(17, 400)).astype(float)
        assert np.array_equal(np.argsort(v), numpy_argsort(v))
    import test_pipeline as tp
    # cases with 19 to 23 location candidates, most of them tied at score 1
    for seed, shape in ((3, (300, 400)), (12, (420, 360)), (16, (460, 340))):
        im = tp.image(*shape, seed)
        d = tp.CornerNetPipeline(tp.SACCADE, tp.HashRun(tp.SACCADE, atts=True, peaks=30))(im)
        ref, locs, candidates = tp.ro.ref_saccade_inference(
            im, tp.HashRun(tp.SACCADE, atts=True, peaks=30), num_classes=3, argsort=np.argsort)
        assert candidates > 16 and len(locs) > 0
        assert np.array_equal(tp.as_rows(d), tp.ref_rows(ref))
    print("OK")
""")


def test_tie_order_against_numpys_own_generic_introsort(tmp_path):
    """With numpy's SIMD sort dispatch disabled, ``np.argsort`` *is* numpy 1.x's introsort:
    the port and the whole Saccade pipeline (the oracle calling ``np.argsort`` as the official
    code) must then agree on tie-heavy inputs with more than 16 locations."""
    import numpy._core._multiarray_umath as mu
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(getattr(mu, "__cpu_dispatch__", [])),
               PYTHONPATH=os.path.dirname(os.path.dirname(HERE)), OMP_NUM_THREADS="1")
    script = tmp_path / "generic_sort.py"
    script.write_text(GENERIC_SORT_SCRIPT.format(here=HERE, helpers=HELPERS))
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    if res.stdout.startswith("SKIP"):
        pytest.skip(res.stdout.strip())
    assert res.stdout.strip().endswith("OK")
