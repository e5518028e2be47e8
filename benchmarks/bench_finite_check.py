#!/usr/bin/env python
"""What the runtime's NaN/infinity check of the network outputs costs (issue 21 item 5).

    python benchmarks/bench_finite_check.py [--repeats 21] [--cases cornernet,squeeze]

``runtime.pipeline.check_finite_outputs`` runs on every network output before the decode. Both
sides run ``CornerNetPipeline.batch`` on one image through a backend callback that hands out a
fresh copy of fixed raw heads (``bench_postprocess.synthetic_heads``: CornerNet 80 classes at
128x128, CornerNet-Squeeze 80 classes at 64x64, each with and without the flip copy; the demo
model's 3 classes at 32x32), as a network writes new outputs on every call:
- with: the pipeline as it is;
- without: the same pipeline with the check replaced by a no-op (in this process only).
The network's own time is not there, so the share printed is what the check adds to everything
else the runtime does per image, an upper bound of its share of end-to-end time. Interleaved
sample by sample, the sides taking turns going first; wall clock, one thread; median and the
25-75 % range; ratio = with / without. Both sides' detections are checked equal first.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_postprocess import synthetic_heads  # noqa: E402

from cornernet_deploy.profiling import profile  # noqa: E402
from cornernet_deploy.runtime import pipeline as pipeline_module  # noqa: E402

CASES = {
    # name: (arch, classes, map side, flip)
    "cornernet-flip": ("cornernet", 80, 128, True),
    "cornernet": ("cornernet", 80, 128, False),
    "squeeze-flip": ("cornernet-squeeze", 80, 64, True),
    "squeeze": ("cornernet-squeeze", 80, 64, False),
    "demo-squeeze": ("cornernet-squeeze", 3, 32, False),
}
NAMES = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off")
CHECK = pipeline_module.check_finite_outputs


def timed(fn, min_ms=20.0):
    """ms per call: the call repeated until a sample lasts ``min_ms``."""
    n, start = 0, time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < min_ms:
        fn()
        n += 1
    return (time.perf_counter() - start) * 1e3 / n


def bench(name, repeats):
    from cornernet_deploy.contract.arch import get_arch

    arch, classes, side, flip = CASES[name]
    spec = get_arch(arch)
    spec = spec.replace(num_classes=classes, class_names=tuple(f"c{i}" for i in range(classes)),
                        category_ids=tuple(range(1, classes + 1)))
    busy = min(6, classes)
    heads = synthetic_heads(0, classes, side, busy_classes=busy)
    if flip:
        heads = tuple(np.concatenate([a, b]) for a, b in zip(heads, synthetic_heads(1, classes, side,
                                                                                    busy_classes=busy)))
    outputs = dict(zip(NAMES, heads))
    pipe = pipeline_module.CornerNetPipeline(spec, lambda batch: {k: v.copy() for k, v in outputs.items()},
                                             input_hw=(side * spec.stride - 1,) * 2)
    image = np.zeros((side * spec.stride - 1,) * 2 + (3,), np.uint8)

    def run(check):
        pipeline_module.check_finite_outputs = check
        return pipe.batch([image], flip=flip)[0]

    no_check = lambda outputs: None  # noqa: E731
    a, b = run(CHECK), run(no_check)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores) and len(a) > 0
    samples = {"with": [], "without": []}
    for r in range(repeats):
        order = ("with", "without") if r % 2 == 0 else ("without", "with")
        for side_name in order:
            check = CHECK if side_name == "with" else no_check
            samples[side_name].append(timed(lambda: run(check)))
    pipeline_module.check_finite_outputs = CHECK
    q = {k: (np.median(v), np.percentile(v, 25), np.percentile(v, 75)) for k, v in samples.items()}
    values = sum(h.size for h in heads)
    print(f"| {name} | {values / 1e6:.2f} M | {q['with'][0]:.2f} [{q['with'][1]:.2f}-{q['with'][2]:.2f}] | "
          f"{q['without'][0]:.2f} [{q['without'][1]:.2f}-{q['without'][2]:.2f}] | "
          f"{q['with'][0] / q['without'][0]:.3f}x | {q['with'][0] - q['without'][0]:+.2f} ms |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args(argv)
    print(f"# {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, "
          f"{profile.environment()['machine']['cpu']}, Python {platform.python_version()}, numpy "
          f"{np.__version__}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| case | output values | with check ms [25-75 %] | without ms [25-75 %] | with / without | difference |")
    print("|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        bench(name, args.repeats)


if __name__ == "__main__":
    main()
