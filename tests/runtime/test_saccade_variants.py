"""CornerNet-Saccade variants that train and export also run: other input sizes, other depths.

The truth is the official ``cornernet_saccade_inference`` (``tests/helpers/reference_official.py``) run
with the settings the official config would name for such a model: ``input_size`` [287, 287],
or ``att_ratios``/``att_scales`` of the maps a two-level hourglass has.
"""
import hashlib

import numpy as np
import pytest

import reference_official as ro
from cornernet_deploy.runtime.pipeline import CornerNetPipeline
from cornernet_deploy.contract.arch import get_arch


def spec_of(levels=3, **changes):
    spec = get_arch("cornernet-saccade").replace(num_classes=3, **changes)
    return spec.replace(levels=levels) if levels != 3 else spec


def image(h, w, seed):
    return (np.random.RandomState(seed).rand(h, w, 3) * 255).astype(np.uint8)


class FakeSaccade:
    """Heads seeded by each input's bytes, at the shapes a real model of ``spec`` outputs for that
    input (output map ``(side + 1) // 4``, one attention map per level, innermost first)."""

    def __init__(self, spec):
        self.spec, self.shapes = spec, []

    def heads(self, tensor):
        rng = np.random.RandomState(int.from_bytes(hashlib.sha256(tensor.tobytes()).digest()[:4], "little"))
        c = self.spec.num_classes
        oh, ow = self.spec.output_size(tensor.shape[1:])
        d = dict(tl_heat=(rng.randn(1, c, oh, ow) - 4).astype(np.float32),
                 br_heat=(rng.randn(1, c, oh, ow) - 4).astype(np.float32),
                 tl_tag=rng.randn(1, 1, oh, ow).astype(np.float32),
                 br_tag=rng.randn(1, 1, oh, ow).astype(np.float32),
                 tl_off=rng.rand(1, 2, oh, ow).astype(np.float32),
                 br_off=rng.rand(1, 2, oh, ow).astype(np.float32))
        for _ in range(2):  # two confident boxes per crop
            cls = rng.randint(c)
            y1, x1 = rng.randint(0, oh // 2), rng.randint(0, ow // 2)
            y2, x2 = rng.randint(oh // 2 + 1, oh - 1), rng.randint(ow // 2 + 1, ow - 1)
            d["tl_heat"][0, cls, y1, x1] = d["br_heat"][0, cls, y2, x2] = rng.uniform(1, 3)
            d["tl_tag"][0, 0, y1, x1] = d["br_tag"][0, 0, y2, x2] = 0.0
        for j, ratio in enumerate(self.spec.attention_ratios()):
            side = (tensor.shape[1] + 1) // ratio
            a = (rng.rand(1, 1, side, side) * 0.25).astype(np.float32)
            a[0, 0, rng.randint(side), rng.randint(side)] = rng.uniform(0.35, 1.0)
            d[f"att{j}"] = a
        return d

    def __call__(self, batch):
        self.shapes.append(tuple(batch.shape[1:]))
        parts = [self.heads(t) for t in batch]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def rows(d):
    r = np.concatenate([d.boxes, d.scores[:, None], d.class_ids[:, None].astype(np.float32)], 1)
    return r[np.lexsort(r.T[::-1])]


def ref_rows(top):
    r = np.concatenate([np.concatenate([top[j], np.full((len(top[j]), 1), j - 1, np.float32)], 1)
                        for j in top])
    return r[np.lexsort(r.T[::-1])]


@pytest.mark.parametrize("seed,shape", [(0, (300, 400)), (1, (500, 220))])
def test_a_287_input_runs_its_crops_at_287_as_the_official_config_would(seed, shape):
    spec = spec_of()
    im = image(*shape, seed)
    run = FakeSaccade(spec)
    got = CornerNetPipeline(spec, run, input_hw=(287, 287))(im)
    ref, locs, candidates = ro.ref_saccade_inference(im, FakeSaccade(spec), num_classes=3,
                                                     input_size=287)
    assert set(run.shapes) == {(3, 287, 287)} and len(run.shapes) == 2   # first pass + zoom
    assert len(locs) > 0 and candidates <= 16 and len(got) > 0
    np.testing.assert_array_equal(rows(got), ref_rows(ref))


def test_a_two_level_variant_uses_its_two_maps_with_their_official_zoom():
    spec = spec_of(levels=2)
    # maps of 8 and 4 px per cell: the official medium- and small-object maps, zoom 2 and 4
    assert spec.attention_ratios() == (8, 4)
    assert spec.saccade.att_scales == (2, 4) and spec.saccade.att_nms_kernels == (3, 3)
    assert spec.attention_ranges() == ((32, 96), (0, 32))
    im = image(320, 280, 3)
    got = CornerNetPipeline(spec, FakeSaccade(spec))(im)
    ref, locs, _ = ro.ref_saccade_inference(im, FakeSaccade(spec), num_classes=3,
                                            att_ratios=(8, 4), att_scales=(2, 4))
    assert len(locs) > 0 and len(got) > 0
    np.testing.assert_array_equal(rows(got), ref_rows(ref))


def test_a_file_recording_the_three_map_settings_for_two_levels_still_runs():
    """Checkpoints and exports written before variants got their own settings record (1, 2, 4)."""
    import dataclasses
    spec = spec_of(levels=2)
    old = dataclasses.replace(spec, saccade=get_arch("cornernet-saccade").saccade)
    im = image(260, 300, 4)
    a = CornerNetPipeline(old, FakeSaccade(spec))(im)
    b = CornerNetPipeline(spec, FakeSaccade(spec))(im)
    np.testing.assert_array_equal(rows(a), rows(b))


def test_each_map_keeps_the_official_meaning_of_its_cell_size():
    spec = spec_of()
    assert spec.attention_ratios() == (16, 8, 4) and spec.attention_scales() == (1, 2, 4)
    assert spec.saccade == get_arch("cornernet-saccade").saccade
    one = spec_of(levels=1)
    assert one.attention_ratios() == (4,) and one.attention_scales() == (4,)
    assert one.attention_ranges() == ((0, 32),)
    deeper = get_arch("cornernet-saccade").replace(levels=4, dims=(256, 384, 384, 512, 512),
                                                   modules=(1, 1, 1, 1, 1))
    assert deeper.attention_ratios() == (32, 16, 8, 4)
    assert deeper.attention_scales() == (1, 1, 2, 4)
    assert deeper.attention_ranges() == ((96, 256), (96, 256), (32, 96), (0, 32))
