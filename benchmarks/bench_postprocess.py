#!/usr/bin/env python
"""Decode + soft-NMS: our runtime vs our loop oracle and (optionally) the compiled official code.

    python benchmarks/bench_postprocess.py [--official PATH] [--repeats 15] [--oracle-repeats 2]

Sides, all on identical inputs, interleaved call by call (ours, official, oracle, ours, ...), so
a busy machine slows them alike:
- ours: ``runtime.decode.decode`` and ``runtime.postprocess.per_class_nms`` + ``max_per_image``;
- oracle: ``tests/helpers/reference_official.py`` (``ref_decode``, ``ref_finish``), OUR loop-based
  re-statement of the official algorithm (torch for sigmoid and max-pool, the Cython as scalar
  Python loops), not the official code;
- official (``--official PATH`` = a CornerNet-Lite checkout with ``core/external/nms`` built,
  see tests/runtime/test_official_compiled.py): its torch ``_decode`` and its compiled Cython
  ``soft_nms``; the glue around ``soft_nms`` (drop -1 rows, one ``classes == j`` selection per
  class, the ``max_per_image`` partition) is ``cornernet_inference``'s, restated here.
Without ``--official`` the official code is not run and no ratio against it is printed.

Stages: decode (raw heads -> [N, num_dets, 8]), soft-NMS (valid rows in pixels, flip copy
merged -> per-class soft-NMS -> 100 per image), total = both; and "graph", our post-processing
of a ``--decode graph`` export (top-K corners given: pairing, flip merge, soft-NMS, limit,
Detections). Heads: seeded synthetic maps (``synthetic_heads``), batch 2 (image + second seed as
the mirrored copy) with flip. Every result is checked equal before a ratio is printed: decode
bit for bit (against the official: its valid rows, torch.topk orders ties arbitrarily), soft-NMS
output bit for bit class by class. Times: wall clock, single thread (torch too); a sample
repeats a fast stage until it lasts ~5 ms and the sides take turns going first; median and
the 25-75 % range of the samples; ratio = other side's median / ours (> 1: ours faster).
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

CASES = {
    # name: (arch, classes, map side, stride, flip)
    "cornernet-flip": ("cornernet", 80, 128, 4, True),
    "cornernet": ("cornernet", 80, 128, 4, False),
    "squeeze": ("cornernet-squeeze", 80, 64, 8, False),
    "squeeze-flip": ("cornernet-squeeze", 80, 64, 8, True),
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


def official_nms_stage(nms, rows, classes, test):
    """``cornernet_inference`` from the -1 filter to ``max_per_image``, around the compiled
    ``soft_nms`` (restated glue; the Cython is the official one)."""
    dets = rows[rows[:, 4] > -1]
    cls = dets[:, -1]
    top = {}
    for j in range(classes):
        top[j + 1] = dets[cls == j][:, 0:7].astype(np.float32)
        nms.soft_nms(top[j + 1], Nt=test.soft_nms_nt, method=test.soft_nms_method)
        top[j + 1] = top[j + 1][:, 0:5]
    scores = np.hstack([top[j][:, -1] for j in range(1, classes + 1)])
    if len(scores) > test.max_per_image:
        kth = len(scores) - test.max_per_image
        thresh = np.partition(scores, kth)[kth]
        for j in range(1, classes + 1):
            top[j] = top[j][top[j][:, -1] >= thresh]
    return [top[j + 1] for j in range(classes)]


def same_bits(a_list, b_list):
    return len(a_list) == len(b_list) and all(
        a.shape == b.shape and np.array_equal(np.ascontiguousarray(a, np.float32).view(np.uint32),
                                              np.ascontiguousarray(b, np.float32).view(np.uint32))
        for a, b in zip(a_list, b_list))


def bench(name, repeats, oracle_repeats, official):
    import torch
    from reference_official import ref_decode, ref_finish

    from cornernet_deploy.runtime.decode import decode, pair_corners, topk_corners
    from cornernet_deploy.runtime.postprocess import (flip_merge, max_per_image, per_class_nms,
                                                      postprocess)
    from cornernet_deploy.contract.arch import get_arch

    arch, classes, side, stride, flip = CASES[name]
    test = get_arch(arch).test
    k, num_dets = test.top_k, test.num_dets
    heads = synthetic_heads(0, classes, side)
    if flip:
        heads = tuple(np.concatenate([a, b]) for a, b in zip(heads, synthetic_heads(1, classes, side)))
    theads = [torch.from_numpy(a) for a in heads]
    names = [f"c{i}" for i in range(classes)]
    dec_kw = dict(k=k, ae_threshold=test.ae_threshold, num_dets=num_dets, kernel=test.nms_kernel)

    def rows_of(dets):
        d = flip_merge(dets[0], dets[1], side) if flip else dets[0]
        d = d[d[:, 4] > -1].copy()
        d[:, 0:4] *= stride                      # pixels: the +1 convention is in pixels
        return d

    side_fns = {"ours": {}, "oracle": {}}
    side_fns["ours"]["decode"] = lambda: decode(*heads, **dec_kw)
    side_fns["oracle"]["decode"] = lambda: ref_decode(*heads, K=k, ae_threshold=test.ae_threshold,
                                                      num_dets=num_dets, kernel=test.nms_kernel)
    mine = side_fns["ours"]["decode"]()
    rows = rows_of(mine)
    side_fns["ours"]["soft_nms"] = lambda: max_per_image(per_class_nms(rows, classes, test),
                                                         test.max_per_image)
    side_fns["oracle"]["soft_nms"] = lambda: [v for _, v in sorted(ref_finish(
        rows.copy(), rows[:, 7], num_classes=classes, max_per_image=test.max_per_image,
        sigma=test.soft_nms_sigma, Nt=test.soft_nms_nt, keep_stale=test.keep_stale_rows).items())]
    equal = {"oracle": {"decode": np.array_equal(mine.view(np.uint32),
                                                 side_fns["oracle"]["decode"]().view(np.uint32)),
                        "soft_nms": same_bits(side_fns["ours"]["soft_nms"](),
                                              side_fns["oracle"]["soft_nms"]())}}
    if official is not None:
        nms, utils = official
        side_fns["official"] = {
            "decode": lambda: utils._decode(*theads, K=k, kernel=test.nms_kernel,
                                            ae_threshold=test.ae_threshold, num_dets=num_dets),
            "soft_nms": lambda: official_nms_stage(nms, rows, classes, test)}
        ref = side_fns["official"]["decode"]().numpy()
        dec_ok = all(int((mine[b, :, 4] > -1).sum()) == int((ref[b, :, 4] > -1).sum())
                     and np.array_equal(mine[b, ref[b, :, 4] > -1].view(np.uint32),
                                        ref[b, ref[b, :, 4] > -1].view(np.uint32))
                     for b in range(len(ref)))
        equal["official"] = {"decode": dec_ok,
                             "soft_nms": same_bits(side_fns["ours"]["soft_nms"](),
                                                   side_fns["official"]["soft_nms"]())}

    tl = topk_corners(heads[0], heads[2], heads[4], k, test.nms_kernel)
    br = topk_corners(heads[1], heads[3], heads[5], k, test.nms_kernel)

    def graph():                                 # a --decode graph export's CPU work
        dets = pair_corners(tl, br, (side, side), test.ae_threshold, num_dets, test.no_border)
        d = flip_merge(dets[0], dets[1], side) if flip else dets[0]
        d[:, 0:4] *= stride
        return postprocess(d, classes, test, names)
    side_fns["ours"]["graph"] = graph

    times = {s: {st: [] for st in fns} for s, fns in side_fns.items()}
    inner = {}                                   # calls per sample: a sample lasts >= ~5 ms
    for s, fns in side_fns.items():
        for stage, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            inner[s, stage] = 1 if s == "oracle" else max(1, int(0.005 / (time.perf_counter() - t0)))
    sides = list(side_fns)
    for r in range(repeats):                     # interleaved, stage by stage, rotating order
        for stage in ("decode", "soft_nms", "graph"):
            for s in sides[r % len(sides):] + sides[:r % len(sides)]:
                fns = side_fns[s]
                if stage not in fns or (s == "oracle" and r % max(1, repeats // oracle_repeats)):
                    continue
                reps = inner[s, stage]
                t0 = time.perf_counter()
                for _ in range(reps):
                    fns[stage]()
                times[s][stage].append((time.perf_counter() - t0) / reps)
    return dict(name=name, rows=len(rows), k=k, classes=classes, side=side, flip=flip,
                times=times, equal=equal,
                final=int(sum(len(c) for c in side_fns["ours"]["soft_nms"]())))


def stats_ms(samples):
    q = np.percentile(np.asarray(samples) * 1e3, [25, 50, 75])
    return q[1], q[0], q[2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--official", metavar="PATH",
                        help="CornerNet-Lite checkout with core/external/nms built")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per stage and side")
    parser.add_argument("--oracle-repeats", type=int, default=2, help="timed calls of the oracle")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        sys.exit("the oracle and the official decode need PyTorch (pip install -e '.[torch]')")
    official = None
    if args.official:
        from official_code import load_official
        try:
            official = load_official(args.official)
        except (FileNotFoundError, ImportError) as e:
            sys.exit(f"--official: {e} (build it: see tests/runtime/test_official_compiled.py)")
    print(f"# bench_postprocess  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# {profile.cpu_model()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}); single thread; wall-clock ms, "
          f"median [25-75 %]")
    from cornernet_deploy.runtime import soft_nms_compiled
    print("# our soft-NMS: " + ("numba-compiled loops (numba " + __import__("numba").__version__ + ")"
                                if soft_nms_compiled.available() else
                                "numpy path (numba not installed, or CORNERNET_DEPLOY_NUMBA=0)"))
    print(f"# official code: {args.official}" if official else
          "# official code: NOT RUN (pass --official PATH); ratios below are against our oracle only")
    ok = True
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        r = bench(name, args.repeats, args.oracle_repeats, official)
        print(f"\n{name}: {r['classes']} classes, {r['side']}x{r['side']}, K={r['k']}, "
              f"flip={r['flip']}; {r['rows']} valid rows -> {r['final']} detections")
        others = [s for s in ("official", "oracle") if s in r["times"]]
        print(f"  {'stage':<9} {'ours':>22} " + " ".join(f"{s:>22} {'ratio':>6} {'equal':>5}" for s in others))
        totals = {s: 0.0 for s in ["ours"] + others}
        for stage in ("decode", "soft_nms", "total", "graph"):
            if stage == "total":
                cells = {s: (totals[s], None, None) for s in totals}
            elif stage not in r["times"]["ours"] or not r["times"]["ours"][stage]:
                continue
            else:
                cells = {s: stats_ms(r["times"][s][stage]) for s in totals
                         if r["times"][s].get(stage)}
                for s, c in cells.items():
                    totals[s] += c[0]
            def cell(c):
                return f"{c[0]:9.2f}" + (f" [{c[1]:.2f}-{c[2]:.2f}]" if c[1] is not None else "")
            line = f"  {stage:<9} {cell(cells['ours']):>22} "
            for s in others:
                if s in cells:
                    eq = r["equal"][s].get(stage)
                    ok &= eq is not False
                    line += (f"{cell(cells[s]):>22} {cells[s][0] / cells['ours'][0]:5.1f}x "
                             f"{'' if eq is None else ('yes' if eq else 'NO'):>5} ")
            print(line)
    if not ok:
        print("RESULTS DIFFER: the ratios are not comparable", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
