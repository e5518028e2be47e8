"""Corner-pool kernel vs PyTorch (flip + cummax + add) on the GPU, side by side.

    python benchmarks/bench_corner_pool_gpu.py [--library PATH] [--iters 200] [--flush-l2] [--json out.json]
                                               [--require-gpu]

For batch 1 and 8, channels 128 and 256, 128x128 maps, FP32 and FP16, both fused modes: mean time per
call on the GPU, effective bandwidth with bytes = 3 * numel * sizeof(dtype) (a and b read once, out written
once: the minimum any implementation must move), its share of the GPU's peak (spec table by GPU name, and a
measured device-to-device copy = practical ceiling), and the speed-up over PyTorch. Each configuration is
checked for exact equality with PyTorch before it is timed.

Timing: a ctypes call plus a kernel launch costs microseconds on the host, as much as the kernel itself at
batch 1, so calls are captured in a CUDA graph (--graph-calls launches per graph, both for our kernel and
for the PyTorch reference) and the graph replays are timed with CUDA events: the numbers are the GPU's
time per call. If capture fails, a plain launch loop is timed instead and the row says so ("timing").

Caution: an H100/H200 L2 (50 MB) holds a whole batch-1 FP32 problem (25 MB at C=128), so back-to-back
timings at batch 1 can exceed DRAM bandwidth; --flush-l2 writes a 256 MB buffer before every call (inside
the graph; the time of the flushes alone is measured and subtracted). Prints a skip message and exits 0
without a CUDA GPU, unless --require-gpu (scripts/gpu_check.sh): then it fails with exit status 3. With
--json the file is rewritten after every configuration, so a run cut short still leaves its rows.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Spec DRAM bandwidth, GB/s (vendor data sheets). First matching substring of torch.cuda.get_device_name wins.
PEAK_BANDWIDTH_GBPS = [
    ("GH200", 4000.0),         # before "H200", which it contains (HBM3 version; HBM3e: 4900)
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),          # SXM5 80GB HBM3
    ("H800", 3350.0),
    ("B200", 8000.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),          # 40GB
    ("L40S", 864.0),
    ("L40", 864.0),
    ("L4", 300.0),
    ("A10G", 600.0),
    ("A10", 600.0),
    ("RTX 4090", 1008.0),
    ("RTX 3090", 936.0),
    ("T4", 320.0),
    ("Thor", 273.0),
    ("Orin", 204.8),           # AGX Orin 32/64GB; Orin NX 102.4, Orin Nano 68/102
]

MODES = {"top_left": 0, "bottom_right": 1}


def spec_peak(name: str):
    for key, value in PEAK_BANDWIDTH_GBPS:
        if key in name:
            return value
    return None


def torch_reference(torch, mode, a, b):
    if mode == "top_left":
        vertical = torch.flip(torch.cummax(torch.flip(a, [2]), 2)[0], [2])
        horizontal = torch.flip(torch.cummax(torch.flip(b, [3]), 3)[0], [3])
    else:
        vertical = torch.cummax(a, 2)[0]
        horizontal = torch.cummax(b, 3)[0]
    return vertical + horizontal


def time_us(torch, fn, iters, warmup, flush=None, graph_calls=20):
    """(mean microseconds of GPU time per fn() call, timing method). fn must launch on
    torch.cuda.current_stream() as it is when called (capture runs on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as graph capture requires
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    def graph_of(body):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            for _ in range(graph_calls):
                body()
        return graph

    def replay_us(graph):
        replays = max(1, iters // graph_calls)
        graph.replay()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1000.0 / (replays * graph_calls)

    try:
        if flush is None:
            return replay_us(graph_of(fn)), "cuda graph"

        def flushed():
            flush()
            fn()
        return replay_us(graph_of(flushed)) - replay_us(graph_of(flush)), "cuda graph, L2 flushed"
    except RuntimeError as exc:  # capture not possible here: time launches (includes host overhead)
        print(f"note: CUDA graph capture failed ({exc}); timing a launch loop instead", file=sys.stderr)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        if flush is not None:
            flush()
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000.0 / iters, "launch loop" + (" (flush included)" if flush else "")


def measured_copy_gbps(torch, iters=50):
    """Device-to-device copy of 1 GiB: bytes read + written per second, the practical bandwidth ceiling."""
    n = (1 << 30) // 4
    src = torch.empty(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    us, _ = time_us(torch, lambda: dst.copy_(src), iters=iters, warmup=5, graph_calls=10)
    return 2 * (1 << 30) / (us * 1e-6) / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", help="library exporting cornerPoolForward (kernel-only or the plugin "
                                          "library); default: compile the kernels for this GPU with nvcc")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--flush-l2", action="store_true", help="evict L2 before every timed call")
    parser.add_argument("--graph-calls", type=int, default=20, help="launches captured per CUDA graph")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--require-gpu", action="store_true",
                        help="no usable CUDA GPU is a failure (exit 3) instead of a skip (exit 0)")
    args = parser.parse_args(argv)

    def no_gpu(reason):
        if args.require_gpu:
            print(f"FAILED: {reason} (--require-gpu)", file=sys.stderr)
            return 3
        print(f"skipped: {reason}")
        return 0

    try:
        import torch
    except ImportError:
        return no_gpu("torch is not installed")
    if not torch.cuda.is_available():
        return no_gpu(f"no CUDA GPU (torch {torch.__version__}: torch.cuda.is_available() is False)")
    from cornernet_deploy.tensorrt import plugin_build

    if args.library:
        library = Path(args.library)
    else:
        cache = Path(tempfile.gettempdir()) / "cornernet_deploy_bench"
        library = plugin_build.compile_kernel_library(cache, arch="native", echo=lambda m: print("$", m))
    lib = plugin_build.load_kernel_library(library)

    name = torch.cuda.get_device_name()
    peak = spec_peak(name)
    copy_gbps = measured_copy_gbps(torch)
    print(f"GPU: {name}; spec peak: {peak if peak else 'unknown'} GB/s; measured D2D copy: {copy_gbps:.0f} GB/s; "
          f"library: {library}; {'L2 flushed before each call' if args.flush_l2 else 'back-to-back calls'}; "
          f"{args.graph_calls} calls per CUDA graph")
    flush = None
    if args.flush_l2:
        scrub = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")  # well above any L2 size
        flush = lambda: scrub.zero_()  # noqa: E731

    header = (f"{'mode':<13}{'dtype':<9}{'N':>3}{'C':>5}  {'ours us':>9}{'GB/s':>8}{'%spec':>7}{'%copy':>7}"
              f"  {'torch us':>9}{'GB/s':>8}  {'speed-up':>8}")
    print(header)
    print("-" * len(header))
    results = []
    failures = 0
    for dtype in (torch.float32, torch.float16):
        for mode in MODES:
            for n in (1, 8):
                for c in (128, 256):
                    shape = (n, c, 128, 128)
                    gen = torch.Generator(device="cuda").manual_seed(n * 1000 + c)
                    a = torch.randn(shape, device="cuda", generator=gen).to(dtype)
                    b = torch.randn(shape, device="cuda", generator=gen).to(dtype)
                    out = torch.empty_like(a)
                    dtype_code = 1 if dtype == torch.float16 else 0

                    def ours():  # the current stream at call time: graph capture runs on its own stream
                        status = lib.cornerPoolForward(MODES[mode], dtype_code, a.data_ptr(), b.data_ptr(),
                                                       out.data_ptr(), *shape, torch.cuda.current_stream().cuda_stream)
                        if status != 0:
                            raise RuntimeError(lib.cornerPoolStatusString(status).decode())

                    ours()
                    reference = torch_reference(torch, mode, a, b)
                    exact = torch.equal(out, reference)
                    failures += not exact
                    ours_us, timing = time_us(torch, ours, args.iters, args.warmup, flush, args.graph_calls)
                    torch_us, torch_timing = time_us(torch, lambda: torch_reference(torch, mode, a, b), args.iters,
                                                     args.warmup, flush, args.graph_calls)
                    nbytes = 3 * a.numel() * a.element_size()
                    ours_gbps, torch_gbps = nbytes / (ours_us * 1e-6) / 1e9, nbytes / (torch_us * 1e-6) / 1e9
                    row = {"gpu": name, "mode": mode, "dtype": str(dtype).replace("torch.", ""), "N": n, "C": c,
                           "H": 128, "W": 128, "bytes": nbytes, "ours_us": ours_us, "ours_gbps": ours_gbps,
                           "torch_us": torch_us, "torch_gbps": torch_gbps, "speedup": torch_us / ours_us,
                           "spec_peak_gbps": peak, "copy_gbps": copy_gbps, "exact_match": exact,
                           "l2_flushed": args.flush_l2, "timing": timing, "torch_timing": torch_timing}
                    results.append(row)
                    spec_share = f"{100 * ours_gbps / peak:6.0f}%" if peak else "     ?"
                    row["copy_share"] = ours_gbps / copy_gbps
                    print(f"{mode:<13}{row['dtype']:<9}{n:>3}{c:>5}  {ours_us:>9.1f}{ours_gbps:>8.0f}{spec_share}"
                          f"{100 * ours_gbps / copy_gbps:>6.0f}%  {torch_us:>9.1f}{torch_gbps:>8.0f}  "
                          f"{row['speedup']:>7.1f}x{'' if exact else '  MISMATCH vs torch'}", flush=True)
                    if args.json:  # after every row: a run stopped by a time limit keeps what it measured
                        Path(args.json).write_text(json.dumps(results, indent=2))
    if failures:
        print(f"{failures} configuration(s) differ from PyTorch", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
