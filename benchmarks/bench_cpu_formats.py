#!/usr/bin/env python
"""Full-size latency of every CPU format, side by side: PyTorch FP32 and BF16, ONNX Runtime FP32
and INT8, OpenVINO FP32, BF16 and INT8.

    python benchmarks/bench_cpu_formats.py [--arch cornernet-squeeze] [--threads 2] [--iters 8]
        [--warmup 2] [--formats LIST] [--artifacts DIR] [--json FILE]

The model is the architecture with seeded random weights at its official input size (timings do
not depend on the weights). The files are prepared as ``cornernet-deploy benchmark`` prepares
them (``profiling.benchmark.Artifacts``: the FP32 export of the same weights, the INT8 Q/DQ model
calibrated on 16 generated scenes) and opened as its rows open them (``FORMATS``); they are then
timed by the profiler (``profiling.profile.profile_backends``: the real pipeline, one generated
scene per iteration, batch 1, no flip, iterations interleaved across the formats). Before timing,
each format's raw heads on one scene are compared with ONNX Runtime FP32's (max |d|), so a ratio
is printed only for formats that compute the model.

Ratios: end-to-end median of ONNX Runtime FP32 / this format's (``vs ORT FP32``, above 1: faster)
and PyTorch BF16's / this format's (``vs torch BF16``). No accuracy here: random weights; the
`benchmark` verb on a trained model measures accuracy.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CPU_FORMATS = ("onnxruntime-fp32", "onnxruntime-int8", "torch-fp32", "torch-bf16", "openvino-fp32",
               "openvino-bf16", "openvino-int8")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="cornernet-squeeze")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", type=int, default=4, help="generated scenes to cycle through")
    parser.add_argument("--formats", default=",".join(CPU_FORMATS))
    parser.add_argument("--artifacts", help="keep the prepared files here (default: a temporary folder)")
    parser.add_argument("--json")
    args = parser.parse_args()

    import cv2

    from cornernet_deploy.contract.arch import get_arch
    from cornernet_deploy.errors import UserError
    from cornernet_deploy.profiling.benchmark import FORMATS, Artifacts
    from cornernet_deploy.profiling.profile import (build_report, environment, generated_images,
                                                    profile_backends)
    from cornernet_deploy.runtime.backends import open_backend
    from cornernet_deploy.runtime.preprocess import preprocess

    wanted = args.formats.split(",")
    formats = [f for f in FORMATS if f.name in wanted]
    env = environment()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; {env['machine']['cpu']}, "
          f"{env['machine']['logical_cpus']} logical CPUs, flags {' '.join(env['machine']['cpu_flags'])}; "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.artifacts or tmp)
        calib = Path(tmp) / "calib"
        calib.mkdir()
        hw = tuple(get_arch(args.arch).input_size)
        for i, scene in enumerate(generated_images(16, hw, seed=100)):    # not the timed scenes
            cv2.imwrite(str(calib / f"{i:02d}.png"), scene)
        artifacts = Artifacts(args.arch, folder, calib=[str(calib)], calib_images=16, progress=print)
        opened, skipped = [], []
        for fmt in formats:
            try:
                path = artifacts.get(fmt.source)
                backend = open_backend(path, **fmt.open_options(args.threads))
            except UserError as exc:
                skipped.append((fmt.name, str(exc)))
                continue
            opened.append((fmt, backend))
        images = generated_images(args.images, hw)
        x = preprocess(images[0], opened[0][1].spec, 1.0, hw)[0][None]
        reference = next((b for f, b in opened if f.name == "onnxruntime-fp32"), opened[0][1]).run(x)
        diffs = {}
        for fmt, backend in opened:
            out = backend.run(x)
            diffs[fmt.name] = max(float(np.max(np.abs(out[k].astype(np.float64) - reference[k])))
                                  for k in reference)
        print(f"timing {len(opened)} formats at {hw[0]}x{hw[1]}, {args.threads} threads, {args.warmup} "
              f"warm-up + {args.iters} interleaved iterations")
        rows = profile_backends([b for _, b in opened], images, batch=1, warmup=args.warmup,
                                iters=args.iters, progress=print)
        report = build_report(rows, {"batch": 1, "warmup": args.warmup, "iters": args.iters,
                                     "images": f"generated:{args.images}x{hw[0]}x{hw[1]}",
                                     "num_images": args.images, "flip": False,
                                     "threads": args.threads, "benchmark": "bench_cpu_formats"})
        for _, backend in opened:
            backend.close()
    medians = {f.name: r["stages"]["end_to_end"]["median"] for (f, _), r in zip(opened, report["results"])}
    ort, tbf16 = medians.get("onnxruntime-fp32"), medians.get("torch-bf16")
    print("\n| format | end to end median (ms) | p90 | network median (ms) | max abs head diff vs ORT FP32 "
          "| vs ORT FP32 | vs torch BF16 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (fmt, _), r in zip(opened, report["results"]):
        e2e, net = r["stages"]["end_to_end"], r["stages"]["inference"]
        print(f"| {fmt.title} | {e2e['median']:.1f} | {e2e['p90']:.1f} | {net['median']:.1f} | "
              f"{diffs[fmt.name]:.2g} | {ort / e2e['median']:.2f}x | "
              + (f"{tbf16 / e2e['median']:.2f}x |" if tbf16 else "- |"))
    for name, reason in skipped:
        print(f"not run: {name}: {reason}")
    if args.json:
        report["head_diff_vs_onnxruntime_fp32"] = diffs
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
