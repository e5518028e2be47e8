#!/usr/bin/env python
"""Serving throughput: the generated Triton repository with dynamic batching on vs off, 1/4/16 clients.

    python benchmarks/bench_serving.py [--clients 1,4,16] [--requests 32] [--rounds 3]
        [--max-batch 8] [--delay-us 2000] [--threads 1] [--protocol grpc] [--triton-env .venv-triton]

The bundled demo model (CornerNet-Squeeze on synthetic shapes) is exported to ONNX (dynamic batch
and size), and two repositories are generated from it by `cornernet-deploy triton`: `batched`
(dynamic batching, queue delay --delay-us, up to --max-batch images per execution) and `unbatched`
(--no-dynamic-batching); otherwise identical (1 instance, ONNX Runtime on the CPU with --threads
threads). One real tritonserver (2.51, from the nvidia-pytriton wheel in --triton-env, the
environment .ci/run makes) serves both, so the two are measured side by side: for every client
count, --rounds rounds alternate which model goes first, each sending --requests requests of the
demo scene (256x256 PNG) from N concurrent clients. Every answer must equal the single-request
answer, or the run fails. Printed per (model, clients): throughput (answered requests / wall time,
summed over rounds), latency p50/p90/p99, and the mean batch Triton executed (its statistics
endpoint); ratios: batched / unbatched throughput at the same client count, and each model's
throughput at N clients / at 1 client. For context, the network alone in this process (ONNX
Runtime, same threads, the scene's 319x319 input): ms per image at batch 1 vs at --max-batch,
interleaved.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cornernet_deploy.profiling import profile  # noqa: E402  (cpu_model for the report header)


def executed_batches(url, model):
    """The statistics before a load, once the answers already sent are counted in them."""
    from cornernet_deploy.serving.client import settled_batch_sizes
    return settled_batch_sizes(url, model)


def mean_batch(delta):
    runs = sum(delta.values())
    return sum(b * n for b, n in delta.items()) / runs if runs else float("nan")


def network_per_image_ms(onnx, image, batch, threads, reps=5):
    """Median ms per image of the network alone at batch 1 and at ``batch`` (interleaved)."""
    import time

    import numpy as np

    from cornernet_deploy.runtime.backends import open_backend
    from cornernet_deploy.runtime.preprocess import preprocess

    backend = open_backend(onnx, threads=threads)
    x = preprocess(image, backend.spec, 1.0, None)[0][None]
    xb = np.repeat(x, batch, 0)
    backend.run(x), backend.run(xb)
    one, many = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(batch):
            backend.run(x)
        one.append((time.perf_counter() - t0) * 1e3 / batch)
        t0 = time.perf_counter()
        backend.run(xb)
        many.append((time.perf_counter() - t0) * 1e3 / batch)
    return float(np.median(one)), float(np.median(many)), x.shape[2:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=32, help="requests per measurement (split over the clients)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per instance")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--triton-env", default=str(ROOT / ".venv-triton"))
    args = parser.parse_args(argv)

    import cv2
    import numpy as np
    import onnxruntime

    from cornernet_deploy.cli import main as cli
    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.data.shapes import render_scene
    from cornernet_deploy.serving.client import detect, executed_since, load_test, same_detections
    from cornernet_deploy.serving.local_server import LocalTritonServer, probe_env

    env = probe_env(args.triton_env)
    clients = [int(c) for c in args.clients.split(",")]
    print(f"# bench_serving  {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"# {profile.cpu_model()}, {os.cpu_count()} logical CPUs, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; python {platform.python_version()}, "
          f"onnxruntime {onnxruntime.__version__}; server env: python {env['python']}, numpy {env['numpy']}")
    print(f"# tritonserver 2.51 (nvidia-pytriton), {args.protocol}; 1 instance, {args.threads} ORT thread(s); "
          f"batched: max batch {args.max_batch}, delay {args.delay_us} us; {args.requests} requests x "
          f"{args.rounds} rounds per cell")

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as work:
        work = Path(work)
        onnx = work / "demo.onnx"
        if cli(["export", "--checkpoint", str(DEMO_CHECKPOINT), "--dynamic-batch", "--dynamic-size",
                "--output", str(onnx), "--no-verify"]) != 0:
            return 1
        common = ["--max-batch", str(args.max_batch), "--threads", str(args.threads)]
        repos = {"batched": ["--dynamic-batching-delay-us", str(args.delay_us)],
                 "unbatched": ["--no-dynamic-batching"]}
        for name, flags in repos.items():
            if cli(["triton", str(onnx), "--repo", str(work / name), "--name", name] + common + flags) != 0:
                return 1
        image, _, _ = render_scene(7, image_size=256, num_objects=(3, 5))
        png = cv2.imencode(".png", image)[1].tobytes()
        net_one, net_many, net_hw = network_per_image_ms(onnx, image, args.max_batch, args.threads)

        with LocalTritonServer([work / n for n in repos], python_env=args.triton_env) as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            reference = {n: detect(url, args.protocol, n, png) for n in repos}     # also the warm-up
            assert same_detections(reference["batched"], reference["unbatched"])
            cells = {}
            for c in clients:
                per_client = max(1, -(-args.requests // c))
                for r in range(args.rounds):
                    order = list(repos) if r % 2 == 0 else list(repos)[::-1]
                    for name in order:
                        before = executed_batches(server.http_url, name)
                        res = load_test(url, args.protocol, name, png, clients=c, requests_per_client=per_client)
                        # Triton counts an execution after answering it: wait until all are counted
                        delta = executed_since(server.http_url, name, before, images=len(res.latencies_ms))
                        if res.errors or not all(same_detections(a, reference[name]) for a in res.answers):
                            print(f"FAILED: {name}, {c} clients: {res.errors[:3] or 'detections differ'}")
                            return 1
                        cell = cells.setdefault((name, c), {"lat": [], "n": 0, "wall": 0.0, "batch": []})
                        cell["lat"] += res.latencies_ms
                        cell["n"] += len(res.latencies_ms)
                        cell["wall"] += res.wall_s
                        cell["batch"].append(mean_batch(delta))
                sys.stdout.flush()

    header = (f"{'model':<10} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
              f"{'mean batch':>10} {'vs 1 client':>11}")
    print(header)
    print("-" * len(header))
    tput = {k: v["n"] / v["wall"] for k, v in cells.items()}
    for name in repos:
        for c in clients:
            v = cells[(name, c)]
            p = np.percentile(v["lat"], [50, 90, 99])
            print(f"{name:<10} {c:>7} {tput[(name, c)]:>7.2f} {p[0]:>7.0f} {p[1]:>7.0f} {p[2]:>7.0f} "
                  f"{np.mean(v['batch']):>10.2f} {tput[(name, c)] / tput[(name, clients[0])]:>10.2f}x")
    print("\nthroughput ratio batched / unbatched (same clients, same run):")
    for c in clients:
        print(f"  {c:>2} clients: {tput[('batched', c)] / tput[('unbatched', c)]:.2f}x")
    print(f"network alone in-process (ONNX Runtime, {args.threads} thread(s), {net_hw[0]}x{net_hw[1]}): "
          f"{net_one:.1f} ms/image at batch 1, {net_many:.1f} ms/image at batch {args.max_batch}")
    print("every answer equalled the single-request detections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
