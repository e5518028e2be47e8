#!/usr/bin/env python
"""Decode + soft-NMS: our vectorised runtime vs a loop-based re-statement of the official code.

    python benchmarks/bench_postprocess.py [--repeats 20] [--ref-repeats 3] [--seed 0]

Ours: ``cornernet_deploy.runtime.decode.decode`` (sigmoid, 3x3 peak suppression, top-K, K x K
pairing, top ``num_dets``) and ``cornernet_deploy.runtime.postprocess.postprocess`` (drop -1 rows,
per-class Gaussian soft-NMS with the official stale-row quirk, 100 per image).
Reference: ``tests/reference_official.py`` -- ``ref_decode`` (per-element Python loops over the
K x K pairs; torch for the sigmoid and max-pool, as the official code) and ``ref_finish`` (the
Cython ``soft_nms`` restated as scalar float32 Python loops, then the per-image limit), written
from the official semantics (docs: OFFICIAL_SPEC.md section 3) and independent of the runtime.

Settings: CornerNet (80 classes, 128x128 maps, K = 100, num_dets = 1000) and CornerNet-Squeeze
(80 classes, 64x64, K = 20, num_dets = 100), ae_threshold 0.5, sigma 0.5, batch 1, single thread.
Heads are seeded synthetic maps (logits ~ N(-4, 1.5) with planted corner peaks of a few classes,
tags close together, so that many pairs are valid: see ``synthetic_heads``); both sides get identical inputs, and the script checks that their results
are equal before it reports any ratio. Calls are interleaved (ours, reference, ours, ...) so a
busy machine slows both alike. The ratio is reference median / ours median (> 1: ours is faster).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cornernet_deploy.profiling import profile  # noqa: E402  (cpu_model for the report header)

CONFIGS = {
    # name: (classes, map side, K, num_dets, stride)
    "cornernet": (80, 128, 100, 1000, 4),
    "cornernet-squeeze": (80, 64, 20, 100, 8),
}


def synthetic_heads(seed: int, classes: int, side: int, peaks: int = 120, busy_classes: int = 6):
    """Raw heads [1, ...]: background logits, plus ``peaks`` objects of ``busy_classes`` classes
    planted as TL/BR peak pairs; tags close together everywhere (sd 0.3), so that many of the
    K x K pairs are valid and soft-NMS has crowded classes to work through (as in a busy image)."""
    rng = np.random.default_rng(seed)
    tl = rng.normal(-4.0, 1.5, (1, classes, side, side)).astype(np.float32)
    br = rng.normal(-4.0, 1.5, (1, classes, side, side)).astype(np.float32)
    tl_tag = rng.normal(0.0, 0.3, (1, 1, side, side)).astype(np.float32)
    br_tag = rng.normal(0.0, 0.3, (1, 1, side, side)).astype(np.float32)
    for _ in range(peaks):
        c = int(rng.integers(busy_classes))
        x1, y1 = (int(v) for v in rng.integers(0, side // 2, 2))
        x2 = min(side - 1, x1 + int(rng.integers(4, side // 2)))
        y2 = min(side - 1, y1 + int(rng.integers(4, side // 2)))
        tag = rng.normal(0.0, 0.3)
        tl[0, c, y1, x1] = rng.uniform(1.0, 4.0)
        br[0, c, y2, x2] = rng.uniform(1.0, 4.0)
        tl_tag[0, 0, y1, x1] = tag + rng.normal(0, 0.1)
        br_tag[0, 0, y2, x2] = tag + rng.normal(0, 0.1)
    tl_off = rng.random((1, 2, side, side), dtype=np.float32)
    br_off = rng.random((1, 2, side, side), dtype=np.float32)
    return tl, br, tl_tag, br_tag, tl_off, br_off


def canonical(per_class_rows):
    """[(class, x1, y1, x2, y2, score)] sorted: equal as multisets <=> equal arrays."""
    rows = np.concatenate([np.column_stack([np.full(len(r), c, np.float64), r.astype(np.float64)])
                           for c, r in per_class_rows if len(r)]) if per_class_rows else np.zeros((0, 6))
    if not len(rows):
        return rows
    order = np.lexsort(tuple(rows[:, k] for k in range(rows.shape[1] - 1, -1, -1)))
    return rows[order]


def median_ms(samples):
    return float(np.median(samples)) / 1e6


def bench(name, repeats, ref_repeats, seed):
    from reference_official import ref_decode, ref_finish

    from cornernet_deploy.runtime.decode import decode
    from cornernet_deploy.runtime.postprocess import postprocess
    from cornernet_deploy.zoo import get_arch

    classes, side, k, num_dets, stride = CONFIGS[name]
    test = get_arch(name).test
    assert (test.top_k, test.num_dets) == (k, num_dets), (test, k, num_dets)
    heads = synthetic_heads(seed, classes, side)
    class_names = [f"c{i}" for i in range(classes)]

    def ours_decode():
        return decode(*heads, k=k, ae_threshold=test.ae_threshold, num_dets=num_dets,
                      kernel=test.nms_kernel)[0]

    def ref_dec():
        return ref_decode(*heads, K=k, ae_threshold=test.ae_threshold, num_dets=num_dets)[0]

    d_ours, d_ref = ours_decode(), ref_dec()
    decode_equal = np.array_equal(d_ours, d_ref)
    rows = d_ours.copy()
    rows[:, 0:4] *= stride                       # image pixels (the +1 convention is in pixels)
    rows = rows[rows[:, 4] > -1]

    def ours_nms():
        return postprocess(rows.copy(), classes, test, class_names)

    def ref_nms():
        return ref_finish(rows.copy(), rows[:, 7].astype(np.int64), num_classes=classes,
                          max_per_image=test.max_per_image, sigma=test.soft_nms_sigma, Nt=0.3,
                          keep_stale=test.keep_stale_rows)

    det = ours_nms()
    ours_rows = [(c, np.column_stack([det.boxes[det.class_ids == c], det.scores[det.class_ids == c]]))
                 for c in range(classes)]
    ref = ref_nms()
    nms_equal = np.array_equal(canonical(ours_rows), canonical([(j - 1, v) for j, v in ref.items()]))

    times = {"decode": ([], []), "soft_nms": ([], [])}
    for stage, fo, fr in (("decode", ours_decode, ref_dec), ("soft_nms", ours_nms, ref_nms)):
        per_ref = max(1, repeats // max(1, ref_repeats))
        for r in range(max(repeats, ref_repeats)):
            if r < repeats:
                t0 = time.perf_counter_ns()
                fo()
                times[stage][0].append(time.perf_counter_ns() - t0)
            if r < ref_repeats * per_ref and r % per_ref == 0:
                t0 = time.perf_counter_ns()
                fr()
                times[stage][1].append(time.perf_counter_ns() - t0)
    return {"name": name, "classes": classes, "side": side, "k": k, "num_dets": num_dets,
            "valid_pairs": int(len(rows)), "final_dets": len(det),
            "decode_equal": decode_equal, "nms_equal": nms_equal,
            "decode": [median_ms(v) for v in times["decode"]],
            "soft_nms": [median_ms(v) for v in times["soft_nms"]],
            "n": {s: [len(v[0]), len(v[1])] for s, v in times.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of ours per stage")
    parser.add_argument("--ref-repeats", type=int, default=3, help="timed calls of the reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        sys.exit("the reference decode needs PyTorch (pip install -e '.[torch]')")
    print(f"# bench_postprocess  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# {profile.cpu_model()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__}; single thread")
    header = (f"{'config':<18} {'stage':<9} {'ours ms':>9} {'ref ms':>10} {'speed-up':>9} "
              f"{'equal':>6} {'runs':>7}")
    print(header)
    print("-" * len(header))
    ok = True
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        r = bench(name, args.repeats, args.ref_repeats, args.seed)
        for stage, equal in (("decode", r["decode_equal"]), ("soft_nms", r["nms_equal"])):
            ours, ref = r[stage]
            ok &= bool(equal)
            print(f"{name:<18} {stage:<9} {ours:>9.3f} {ref:>10.2f} {ref / ours:>8.1f}x "
                  f"{'yes' if equal else 'NO':>6} {r['n'][stage][0]:>3}/{r['n'][stage][1]:<3}")
        ours_t, ref_t = r["decode"][0] + r["soft_nms"][0], r["decode"][1] + r["soft_nms"][1]
        print(f"{name:<18} {'total':<9} {ours_t:>9.3f} {ref_t:>10.2f} {ref_t / ours_t:>8.1f}x")
        print(f"{'':<18} ({r['classes']} classes, {r['side']}x{r['side']}, K={r['k']}, "
              f"num_dets={r['num_dets']}; {r['valid_pairs']} valid pairs -> {r['final_dets']} detections)")
    if not ok:
        print("RESULTS DIFFER between ours and the reference: ratios are not comparable", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
