#!/usr/bin/env python
"""How far BF16 runs land from FP32: the measurement behind the `bf16` tolerance profile of
``compare`` (``contract.agreement.TOLERANCES``).

    python benchmarks/measure_bf16_agreement.py --images DIR [--num-images N] \
        --pair A B [--pair A B ...] [--arch-pair ARCH --arch-images N] [--json FILE]

A side is ``MODEL[@BACKEND][:PRECISION]``: ``demo.onnx@openvino:bf16``, ``demo.pt:bf16`` (torch),
``demo.onnx`` (ONNX Runtime FP32); ``--arch-pair cornernet-squeeze`` adds the architecture with
seeded random weights at its official input size: torch FP32 vs torch BF16 and, through an FP32
export of the same weights, OpenVINO FP32 vs OpenVINO BF16, on generated scenes.

For each pair, on every image (A and B given the same pre-processed input, as ``compare`` does):

* raw heads: per head, the smallest ``atol`` that covers every element of ``|b - a| <= atol +
  rtol * |a|`` for rtol 0.01, 0.02, 0.05 and 0.1 (so a profile can be chosen), and max |b - a|;
* with ``--profile NAME``: ``compare_backends`` with that profile over all images and over every
  run of 4 consecutive images (compare's default ``--num-images``): the share of the head
  allowance used, detection agreement, max score delta, PASS/FAIL per chunk.

Prints one block per pair; ``--json`` writes everything.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RTOLS = (0.01, 0.02, 0.05, 0.1)


def parse_side(text):
    precision = None
    if ":" in text.rsplit("/", 1)[-1]:
        text, precision = text.rsplit(":", 1)
    backend = None
    if "@" in text.rsplit("/", 1)[-1]:
        text, backend = text.rsplit("@", 1)
    return text, backend, precision


def open_side(text, threads):
    from cornernet_deploy.runtime.backends import open_backend
    model, backend, precision = parse_side(text)
    return open_backend(model, backend, precision=precision, threads=threads)


def needed_atol(a, b):
    """{rtol: smallest atol with |b - a| <= atol + rtol |a| everywhere}, and max |b - a|."""
    a = a.astype(np.float64)
    diff = np.abs(b.astype(np.float64) - a)
    return {r: float(np.max(diff - r * np.abs(a), initial=0.0)) for r in RTOLS}, float(diff.max(initial=0.0))


def measure_heads(a, b, images):
    from cornernet_deploy.runtime.pipeline import CornerNetPipeline
    from cornernet_deploy.runtime.preprocess import preprocess

    canvas = tuple(a.input_hw or b.input_hw or ()) or None
    pa = CornerNetPipeline.for_backend(a, input_hw=canvas)
    pb = CornerNetPipeline.for_backend(b, input_hw=canvas)
    heads = {}
    for image in images:
        x = preprocess(image, a.spec, 1.0, canvas, a.mean, a.std)[0][None]
        oa, ob = pa.run_network(x), pb.run_network(x)
        for name in oa:
            need, max_abs = needed_atol(oa[name], ob[name])
            h = heads.setdefault(name, {"max_abs": 0.0, "atol_needed": {r: 0.0 for r in RTOLS}})
            h["max_abs"] = max(h["max_abs"], max_abs)
            for r in RTOLS:
                h["atol_needed"][r] = max(h["atol_needed"][r], need[r])
    return heads


def judge(a, b, images, profile):
    from cornernet_deploy.contract.agreement import TOLERANCES
    from cornernet_deploy.profiling.compare import compare_backends

    tol = TOLERANCES[profile]
    whole = compare_backends(a, b, images, tol)
    chunks = [compare_backends(a, b, images[k:k + 4], tol) for k in range(0, len(images) - 3, 4)]
    used = {name: h["tolerance_used"] for name, h in (whole["heads"] or {}).items()}
    return {
        "profile": profile, "passed": whole["passed"], "failures": whole["failures"],
        "heads_allowance_used": used, "detections": whole["detections"],
        "chunks": len(chunks), "chunks_passed": sum(c["passed"] for c in chunks),
        "chunk_min_agreement": min((c["detections"]["agreement"] for c in chunks), default=None),
        "chunk_max_score_delta": max((c["detections"]["max_score_delta"] for c in chunks), default=None),
        "chunk_failures": [f for c in chunks for f in c["failures"]][:10],
    }


def report(label, heads, judged):
    print(f"\n== {label}")
    print("  head      max|b-a|  " + "  ".join(f"atol@rtol{r:g}" for r in RTOLS))
    for name, h in heads.items():
        print(f"  {name:8s}  {h['max_abs']:.3g}  " + "  ".join(f"{h['atol_needed'][r]:10.3g}" for r in RTOLS))
    if judged:
        d = judged["detections"]
        print(f"  profile {judged['profile']}: {'PASS' if judged['passed'] else 'FAIL'}; heads use "
              + ", ".join(f"{k} {v:.2f}x" for k, v in judged["heads_allowance_used"].items()))
        print(f"  detections >= {d['min_score']}: agreement {d['agreement']:.3f} ({d['missed']} missed, "
              f"{d['extra']} extra of {d['count_a']} + {d['count_b']}), max |dscore| "
              f"{d['max_score_delta']:.3g}, mean {d['mean_score_delta']:.3g}")
        print(f"  4-image chunks: {judged['chunks_passed']}/{judged['chunks']} pass; min agreement "
              f"{judged['chunk_min_agreement']}, max |dscore| {judged['chunk_max_score_delta']}")
        for line in judged["chunk_failures"][:5]:
            print(f"    {line}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", help="folder of images for the --pair models")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"))
    parser.add_argument("--arch-pair", action="append", default=[], metavar="ARCH")
    parser.add_argument("--arch-images", type=int, default=4)
    parser.add_argument("--profile", help="judge every pair with this tolerance profile")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()

    from cornernet_deploy.profiling.profile import environment, generated_images, load_images
    from cornernet_deploy.runtime.backends import open_backend

    env = environment()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  {env['machine']['cpu']}  "
          f"flags: {' '.join(env['machine'].get('cpu_flags', []))}  python {platform.python_version()}")
    out = {"machine": env["machine"], "versions": env["versions"], "pairs": []}
    images = load_images(args.images, limit=args.num_images) if args.pair else []
    for side_a, side_b in args.pair:
        a, b = open_side(side_a, args.threads), open_side(side_b, args.threads)
        heads = measure_heads(a, b, images)
        judged = judge(a, b, images, args.profile) if args.profile else None
        label = f"{a.label} vs {b.label}, {len(images)} images of {args.images}"
        report(label, heads, judged)
        out["pairs"].append({"a": a.describe(), "b": b.describe(), "images": len(images),
                             "heads": heads, "judged": judged})
    for arch in args.arch_pair:
        from cornernet_deploy.exporter import export_onnx
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = open_backend(arch, threads=args.threads)
            bf16 = open_backend(arch, precision="bf16", threads=args.threads)
            onnx_path = Path(tmp) / f"{arch}.onnx"
            export_onnx(model=fp32.net, output=onnx_path, dynamic_size=False, verify=False, progress=None)
            ov32 = open_backend(onnx_path, "openvino", threads=args.threads)
            ov16 = open_backend(onnx_path, "openvino", precision="bf16", threads=args.threads)
            scenes = generated_images(args.arch_images, fp32.spec.input_size)
            for a, b in ((fp32, bf16), (ov32, ov16)):
                heads = measure_heads(a, b, scenes)
                judged = judge(a, b, scenes, args.profile) if args.profile else None
                report(f"{a.label} vs {b.label}, {len(scenes)} generated scenes (random weights)", heads, judged)
                out["pairs"].append({"a": a.describe(), "b": b.describe(), "images": len(scenes),
                                     "heads": heads, "judged": judged})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
