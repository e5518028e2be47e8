#!/usr/bin/env python
"""PyTorch on CUDA: FP32 vs FP16 per architecture (skips cleanly without a GPU).

    python benchmarks/bench_gpu_torch.py [--archs cornernet-squeeze,cornernet-saccade,cornernet]
        [--batch 1] [--iters 50] [--warmup 10] [--json DIR]

For each architecture (random weights, seed 0, official input size): two configurations timed side
by side by the profiler -- torch CUDA FP32 and FP16 (``model.half()``; the input is converted on
the device, the heads are returned as float32). Device stages are timed with CUDA events on a
dedicated stream after warm-up (host-to-device copy from pinned memory, the forward pass,
device-to-host copy into pinned memory); pre- and post-processing with the host clock. The ratio
printed is FP32 median / FP16 median (> 1: FP16 is faster). Also printed: the largest heat-map
logit difference FP16 vs FP32 on one input, so a speed-up is never reported for a broken model.
Exit status 0 with a "skipped" line when PyTorch sees no CUDA GPU.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--archs", default="cornernet-squeeze,cornernet-saccade,cornernet")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", metavar="DIR", help="also write each profile report as JSON here")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("skipped: PyTorch is not installed")
        return 0
    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU visible to PyTorch (torch %s, CUDA build %s)"
              % (torch.__version__, torch.version.cuda))
        return 0

    from cornernet_deploy.profiling.profile import build_report, generated_images, profile_backends
    from cornernet_deploy.profiling.report import write_json
    from cornernet_deploy.runtime.backends import open_backend
    from cornernet_deploy.runtime.preprocess import preprocess

    torch.backends.cudnn.benchmark = True
    gpu = torch.cuda.get_device_name(0)
    print(f"# bench_gpu_torch  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version()}; python {platform.python_version()}; batch {args.batch}")
    header = (f"{'arch':<18} {'input':>7} {'fp32 infer':>11} {'fp16 infer':>11} {'ratio':>6} "
              f"{'fp32 e2e':>9} {'fp16 e2e':>9} {'ratio':>6} {'fp16 img/s':>10} {'max|dheat|':>10}")
    print(header)
    print("-" * len(header))
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        r32 = open_backend(arch, device="cuda", precision="fp32")
        r16 = open_backend(arch, device="cuda", precision="fp16")
        hw = tuple(r32.spec.input_size)
        images = generated_images(8, hw)
        x = preprocess(images[0], r32.spec, 1.0, hw)[0][None]
        h32, h16 = r32.run(x), r16.run(x)
        dheat = max(float(np.max(np.abs(h32[k] - h16[k]))) for k in ("tl_heat", "br_heat"))
        rows = profile_backends([r32, r16], images, batch=args.batch, warmup=args.warmup,
                               iters=args.iters)
        report = build_report(rows, {"batch": args.batch, "warmup": args.warmup, "iters": args.iters,
                                     "images": f"generated:8x{hw[0]}x{hw[1]}", "num_images": 8,
                                     "flip": False, "benchmark": "bench_gpu_torch"})
        if args.json:
            write_json(Path(args.json) / f"gpu_torch_{arch}.json", report)
        a, b = report["results"]
        ai, bi = a["stages"]["inference"]["median"], b["stages"]["inference"]["median"]
        ae, be = a["stages"]["end_to_end"]["median"], b["stages"]["end_to_end"]["median"]
        print(f"{arch:<18} {hw[0]:>3}x{hw[1]:<3} {ai:>9.2f}ms {bi:>9.2f}ms {ai / bi:>5.2f}x "
              f"{ae:>7.2f}ms {be:>7.2f}ms {ae / be:>5.2f}x {b['throughput_ips']:>10.1f} {dheat:>10.3g}")
        sys.stdout.flush()
        del r32, r16, rows
        gc.collect()
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
