#!/usr/bin/env python
"""CPU end to end: ONNX Runtime vs PyTorch eager, per architecture at its official input size.

    python benchmarks/bench_cpu_end_to_end.py [--archs cornernet-squeeze,cornernet-saccade,cornernet]
        [--iters N] [--warmup N] [--json DIR]

For each architecture: random weights (seed 0; timings do not depend on the weights), exported to
ONNX with the corner-pool custom op (ONNX Runtime runs its standard-op function body) at the
official input size (511x511; Saccade 255x255), then four configurations timed side by side by
the profiler (``cornernet_deploy.profiling``: same images, interleaved iterations, per-stage
medians): ONNX Runtime and PyTorch eager, each with 1 thread and with the library's default
thread count. Each iteration is one generated scene through pre-processing, the network and the
official decode + soft-NMS (no flip test, batch 1). Before timing, the script checks that both
backends compute the same heads (max |ORT - torch| on one input).

The ratio printed is PyTorch median / ONNX Runtime median at the same thread setting (> 1: ONNX
Runtime is faster). Keep iterations few: CornerNet (Hourglass-104) takes seconds per forward on a
small CPU. Per-architecture defaults: iterations 10 / 5 / 3 for Squeeze / Saccade / CornerNet.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cornernet_deploy.profiling import profile  # noqa: E402  (cpu_model for the report header)

DEFAULT_ITERS = {"cornernet-squeeze": 10, "cornernet-saccade": 5, "cornernet": 3}


def bench_arch(arch, iters, warmup, workdir, json_dir=None):
    import torch

    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.profiling.profile import build_report, generated_images, profile_backends
    from cornernet_deploy.profiling.report import profile_table, write_json
    from cornernet_deploy.runtime.backends import open_backend

    torch_default = torch.get_num_threads()
    base = open_backend(arch)                                    # seeded random weights
    onnx_path = Path(workdir) / f"{arch}.onnx"
    export_onnx(model=base.net, output=onnx_path, corner_pool="plugin", dynamic_size=False, verify=False,
                progress=None)  # fixed at the timed size, as the recorded results
    base.net.eval()
    t1 = copy.copy(base)
    t1.threads = 1
    tdef = copy.copy(base)
    tdef.threads = None
    o1 = open_backend(onnx_path, threads=1)
    odef = open_backend(onnx_path)
    hw = tuple(base.spec.input_size)
    images = generated_images(4, hw)
    # same computation? (one input, both backends)
    from cornernet_deploy.runtime.preprocess import preprocess
    x = preprocess(images[0], base.spec, 1.0, hw)[0][None]
    ref = t1.run(x)
    got = o1.run(x)
    max_diff = max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref)
    runners = [o1, t1, odef, tdef]
    rows = profile_backends(runners, images, batch=1, warmup=warmup, iters=iters)
    settings = {"batch": 1, "warmup": warmup, "iters": iters, "images": f"generated:4x{hw[0]}x{hw[1]}",
                "num_images": 4, "flip": False, "benchmark": "bench_cpu_end_to_end",
                "torch_default_threads": torch_default}
    report = build_report(rows, settings)
    if json_dir:
        write_json(Path(json_dir) / f"cpu_end_to_end_{arch}.json", report)
    del runners, o1, odef, t1, tdef, base
    gc.collect()
    return report, max_diff, profile_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--archs", default="cornernet-squeeze,cornernet-saccade,cornernet")
    parser.add_argument("--iters", type=int, help="timed iterations (default per architecture)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", metavar="DIR", help="also write each profile report as JSON here")
    parser.add_argument("--tables", action="store_true", help="print the full per-stage tables too")
    args = parser.parse_args(argv)
    import onnxruntime
    import torch
    from rich.console import Console

    print(f"# bench_cpu_end_to_end  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# {profile.cpu_model()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
          f"torch {torch.__version__} (default threads {torch.get_num_threads()}), onnxruntime "
          f"{onnxruntime.__version__}")
    header = (f"{'arch':<18} {'input':>7} {'threads':>7} {'ORT infer':>10} {'torch infer':>12} "
              f"{'ratio':>6} {'ORT e2e':>9} {'torch e2e':>10} {'ratio':>6} {'runs':>5}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as workdir:
        for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
            iters = args.iters or DEFAULT_ITERS.get(arch, 3)
            report, max_diff, table = bench_arch(arch, iters, args.warmup, workdir, args.json)
            res = report["results"]
            hw = res[0]["input_hw"]
            for label, (o, t) in (("1", (res[0], res[1])), ("default", (res[2], res[3]))):
                oi, ti = o["stages"]["inference"]["median"], t["stages"]["inference"]["median"]
                oe, te = o["stages"]["end_to_end"]["median"], t["stages"]["end_to_end"]["median"]
                print(f"{arch:<18} {hw[0]:>3}x{hw[1]:<3} {label:>7} {oi:>8.1f}ms {ti:>10.1f}ms "
                      f"{ti / oi:>5.2f}x {oe:>7.1f}ms {te:>8.1f}ms {te / oe:>5.2f}x {iters:>5}")
            print(f"{'':<18} heads max |ORT - torch| = {max_diff:.2e}; medians in ms; "
                  "ratio = torch / ORT")
            if args.tables:
                Console(width=160).print(table(report, title=f"{arch}: per-stage latency (ms)"))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
