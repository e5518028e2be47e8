#!/usr/bin/env python
"""Streams: the pipelined runtime vs the same frames one after another, on a generated video.

    python benchmarks/bench_streams.py [--frames 300] [--size 256] [--rounds 3] [--threads 1]

The bundled demo model (CornerNet-Squeeze, 3 classes) exported twice, with normalised float32
input and with ``--input uint8`` (the same network, normalisation in the graph), run by ONNX
Runtime on the CPU with ``--threads`` intra-op threads; a generated ``--frames``-frame video of
``--size`` x ``--size`` shapes scenes (MPEG-4 Part 2 .mp4, what OpenCV's writer makes). Per round,
in rotating order (so load on a shared machine hits every variant alike):

* ``network``: the network alone on the frames' pre-computed inputs, one after another (the
  ceiling: no decode, pre- or post-processing, drawing or encoding);
* ``sequential``: decode -> pre-process -> network -> post-process -> draw -> encode -> JSON line,
  one frame after another on one thread;
* ``pipelined``: the same work through ``StreamRun`` (decode, pre-process, network, post-process
  on their own threads) with the ``stream`` command's outputs written in the loop;
* ``pipelined x4``: four streams of the video at once, batched across streams (batch 4);
* ``pipelined uint8``: as ``pipelined`` with the uint8-input export.

Then the pre-processing stage alone (``pipeline.prepare`` of every frame) with uint8 against float
input, interleaved. Besides wall-clock frames per second, every variant's process CPU time per
frame is printed: on a machine shared with other jobs the wall-clock ratios move with their load,
the CPU time per frame much less; pipelined minus network-only CPU time is the host work that has
to fit beside the network (on a second core) for the stream to keep the network's pace. Before timing, the script checks that every variant gives the same detections
for every frame. Printed: frames per second (median over rounds) and the ratios, each naming what
it is against; per-round ratios are computed within the round.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_video(path: Path, frames: int, size: int) -> Path:
    import cv2
    from cornernet_deploy.data.shapes import render_scene
    scenes = [render_scene(i, image_size=size, num_objects=(2, 5))[0] for i in range(min(frames, 30))]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 25, (size, size))
    for i in range(frames):
        writer.write(scenes[i % len(scenes)])
    writer.release()
    return path


def decoded_frames(path: Path):
    from cornernet_deploy.runtime.streams import VideoSource, parse_source
    source = VideoSource(parse_source(path)).open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    return frames


def run_network(pipeline, inputs):
    for x in inputs:
        pipeline.run(x[None])
    return len(inputs)


def run_sequential(pipeline, video: Path, folder: Path, category_ids):
    """Every stage of every frame in turn, on this thread, with the stream command's outputs."""
    from cornernet_deploy.runtime.streams import FrameResult, StreamState, VideoSource, parse_source
    from cornernet_deploy.runtime.streams.outputs import StreamOutputs
    spec = parse_source(video)
    source = VideoSource(spec).open()
    state = StreamState(0, spec, source.fps, source.size)
    outputs = StreamOutputs(folder, [state], category_ids)
    detections, k = [], 0
    while (frame := source.read()) is not None:
        dets = pipeline(frame)
        outputs.write(FrameResult(0, spec.text, k, source.position(), time.time(), frame, dets, 0.0))
        detections.append(dets)
        k += 1
    outputs.close_all()
    source.close()
    return detections


def run_pipelined(pipeline, videos, folder: Path, category_ids, batch_size: int):
    from cornernet_deploy.runtime.streams import StreamRun
    from cornernet_deploy.runtime.streams.outputs import StreamOutputs
    detections = [[] for _ in videos]
    with StreamRun(pipeline, videos, batch_size=batch_size) as run:
        outputs = StreamOutputs(folder, run.states, category_ids)
        for result in run:
            outputs.write(result)
            detections[result.stream].append(result.detections)
        outputs.close_all()
    return detections, run.stats.summary()


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x.boxes, y.boxes) and np.array_equal(x.scores, y.scores)
                                    for x, y in zip(a, b))


def cpu_description() -> str:
    from cornernet_deploy.profiling.profile import cpu_model
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wide = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return f"{cpu_model()}; avx2 {'yes' if 'avx2' in flags else 'no'}; " \
           f"avx512*/amx*: {', '.join(wide) if wide else 'none'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)

    import onnxruntime

    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.runtime.detector import Detector

    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    models = {}
    for dtype in ("float32", "uint8"):
        path = work / f"demo_{dtype}.onnx"
        export_onnx(checkpoint=DEMO_CHECKPOINT, output=path, dynamic_size=True, dynamic_batch=True,
                    input_dtype=dtype, verify=False, progress=None)
        models[dtype] = Detector.load(path, threads=args.threads)
    video = make_video(work / "video.mp4", args.frames, args.size)
    frames = decoded_frames(video)
    pipe, pipe8 = models["float32"].pipeline, models["uint8"].pipeline
    category_ids = models["float32"].category_ids
    inputs = [pipe.preprocess(f)[0] for f in frames]
    print(f"# bench_streams {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"# CPU: {cpu_description()}; Python {platform.python_version()}, onnxruntime "
          f"{onnxruntime.__version__}, {args.threads} intra-op thread(s)")
    print(f"# demo model, {len(frames)} frames of {args.size}x{args.size} (mp4v), {args.rounds} rounds, "
          "variants interleaved in rotating order")

    # the same detections from every variant, before anything is timed
    (work / "check-seq").mkdir()
    (work / "check-pipe").mkdir()
    truth = run_sequential(pipe, video, work / "check-seq", category_ids)
    piped, _ = run_pipelined(pipe8, [video, video], work / "check-pipe", category_ids, 2)
    assert all(same(truth, d) for d in piped), "the pipelined runs differ from the sequential one"

    variants = {
        "network": lambda folder: (run_network(pipe, inputs), None),
        "sequential": lambda folder: (len(run_sequential(pipe, video, folder, category_ids)), None),
        "pipelined": lambda folder: _count(run_pipelined(pipe, [video], folder, category_ids, 1)),
        "pipelined x4": lambda folder: _count(run_pipelined(pipe, [video] * 4, folder, category_ids, 4)),
        "pipelined uint8": lambda folder: _count(run_pipelined(pipe8, [video], folder, category_ids, 1)),
    }
    fps = {name: [] for name in variants}
    cpu = {name: [] for name in variants}         # process CPU ms (all threads) per frame
    stage_means = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            folder = work / f"r{r}-{name.replace(' ', '_')}"
            folder.mkdir()
            t0, c0 = time.perf_counter(), _cpu_seconds()
            count, stats = variants[name](folder)
            fps[name].append(count / (time.perf_counter() - t0))
            cpu[name].append((_cpu_seconds() - c0) * 1000 / count)
            if stats:
                stage_means[name].append(stats)
        print(f"round {r + 1}: " + ", ".join(f"{n} {fps[n][-1]:.1f} fps" for n in names))

    prep = {"float32": [], "uint8": []}
    for r in range(args.rounds):
        for dtype in (("float32", "uint8") if r % 2 == 0 else ("uint8", "float32")):
            p = pipe if dtype == "float32" else pipe8
            t0 = time.perf_counter()
            for f in frames:
                p.prepare(f, False)
            prep[dtype].append((time.perf_counter() - t0) * 1000 / len(frames))

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(fps[a], fps[b]))

    med = {n: statistics.median(v) for n, v in fps.items()}
    print("\nframes per second (median of rounds); CPU ms per frame (all threads of the process):")
    for n in names:
        extra = ""
        if stage_means[n]:
            s = stage_means[n][-1]
            extra = ("  [last round, ms per frame: read {read:.1f}, preprocess {preprocess:.1f}, network "
                     "{network:.1f}, postprocess {postprocess:.1f}, frames per network call "
                     "{frames_per_network_call:.2f}]").format(**s)
        print(f"  {n:16s} {med[n]:7.1f} fps  {statistics.median(cpu[n]):6.1f} CPU ms{extra}")
    ratios = {
        "pipelined / network-only": ratio("pipelined", "network"),
        "pipelined / sequential": ratio("pipelined", "sequential"),
        "sequential / network-only": ratio("sequential", "network"),
        "pipelined x4 (all 4 streams' frames) / network-only": ratio("pipelined x4", "network"),
        "pipelined uint8 / network-only (float32)": ratio("pipelined uint8", "network"),
        "pipelined uint8 / pipelined float32": ratio("pipelined uint8", "pipelined"),
    }
    print("\nratios (median of per-round ratios; > 1: the first is faster):")
    for k, v in ratios.items():
        print(f"  {k:52s} {v:.3f}")
    host = statistics.median(cpu["pipelined"]) - statistics.median(cpu["network"])
    print(f"\nhost work beside the network (pipelined CPU ms per frame - network-only): {host:.1f} ms, "
          f"against {statistics.median(cpu['network']):.1f} ms of network: "
          + ("it fits on a second idle core" if host < statistics.median(cpu["network"]) else
             "more than the network: the host side cannot hide behind it"))
    pf, pu = statistics.median(prep["float32"]), statistics.median(prep["uint8"])
    print(f"\npre-processing stage (pipeline.prepare, ms per frame, median of {args.rounds}): float32 input "
          f"{pf:.3f}, uint8 input {pu:.3f}; float32 / uint8 = {pf / pu:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"fps": fps, "cpu_ms": cpu, "ratios": ratios, "prepare_ms": prep,
                                               "stages": stage_means}, indent=1))
    return 0


def _cpu_seconds() -> float:
    import os
    t = os.times()
    return t.user + t.system


def _count(result):
    detections, stats = result
    return sum(len(d) for d in detections), stats


if __name__ == "__main__":
    sys.exit(main())
