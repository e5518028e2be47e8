"""``cornernet-deploy stream MODEL SOURCE...``: detections on video files, cameras, RTSP/HTTP
streams and GStreamer pipelines, several at once, pipelined and batched across streams
(``runtime/streams``); per stream an annotated video and the detections as JSON Lines.

A verb of its own, not ``infer``: its inputs (URLs, cameras, pipelines that may never end) and
outputs (videos, line-by-line JSON written as frames come, live progress) differ from ``infer``'s
folder of still images, whose results appear whole at the end.

Ends at the end of every stream, or on Ctrl-C / SIGTERM: the frames already read are finished,
every file is closed (the videos stay playable), ``summary.json`` says what became of every
stream; a second Ctrl-C abandons the frames in flight (files are still closed). Exit status 0
when every stream ended normally, 1 when one broke off (a truncated file, a stream lost after its
reconnect attempts), 2 for a usage error, 130 / 143 after Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import json
import signal
import sys
import time

from .common import add_device_arguments, backend_options, nonnegative_int, plural, positive_float, positive_int, score

OK, BROKE_OFF = 0, 1


def add_arguments(parser):
    from ..runtime.streams.outputs import VIDEO_FORMATS
    from ..runtime.visualize import DRAW_SCORE_THRESHOLD

    parser.add_argument("model", help=".onnx from `export`, TensorRT .engine from `build`, OpenVINO "
                                      ".xml, or a checkpoint .pt/.pth/.pkl (needs torch)")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="video files (what OpenCV's FFmpeg decodes: mp4, mkv, avi, ...), camera "
                             "indices (0) or /dev/videoN, URLs (rtsp://, http://, rtmp://, udp:// ...), "
                             "or GStreamer pipelines ending in appsink (needs an OpenCV with GStreamer: "
                             "Jetson's system OpenCV, not the PyPI wheel)")
    parser.add_argument("--output", default="streams",
                        help="output folder, new or empty (default: ./streams): per stream "
                             "N-NAME.mp4 and N-NAME.jsonl, and summary.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier stream run's files in --output")
    parser.add_argument("--no-video", action="store_true", help="write the JSON Lines only")
    parser.add_argument("--video-format", choices=list(VIDEO_FORMATS), default="mp4",
                        help="annotated video container: mp4 (MPEG-4 Part 2, default), mkv (same codec; "
                             "stays playable even if the process is killed), avi (Motion JPEG)")
    parser.add_argument("--batch-size", "--batch", dest="batch_size", type=positive_int, default=None,
                        metavar="N", help="most frames per network call, frames of several streams "
                                          "together (default: one per stream, as far as the model's "
                                          "batch allows)")
    parser.add_argument("--score-threshold", "--min-score", dest="score_threshold", type=score,
                        default=0.0, metavar="SCORE",
                        help="keep detections from this score up in the JSON Lines (default 0: all)")
    parser.add_argument("--vis-score-threshold", type=score, default=DRAW_SCORE_THRESHOLD, metavar="SCORE",
                        help=f"draw detections from this score up (default {DRAW_SCORE_THRESHOLD})")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="force flip test-time augmentation")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="disable flip test-time augmentation")
    parser.add_argument("--no-drop", action="store_true",
                        help="live sources keep every frame when the network falls behind (latency "
                             "then grows); by default their oldest frames are dropped and counted")
    parser.add_argument("--queue-size", type=positive_int, default=4, metavar="N",
                        help="decoded frames held per source (default 4)")
    parser.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                        help="end each stream after N frames")
    parser.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="how long opening a URL and each of its reads may wait (default 10)")
    parser.add_argument("--reconnect", type=nonnegative_int, default=5, metavar="N",
                        help="attempts to reopen a URL stream that broke off, 0.5 s apart and twice "
                             "as long each time up to 8 s (default 5; 0: a broken stream ends)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line")
    add_device_arguments(parser)


class _Progress:
    """One line on stderr: rewritten in place on a terminal, every few seconds elsewhere."""

    def __init__(self, run, enabled: bool):
        self.run, self.enabled = run, enabled
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else 5.0
        self.last = time.monotonic()
        self.frames_then = 0
        self.frames = 0

    def tick(self, force: bool = False) -> None:
        self.frames += 1
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.every and not force):
            return
        fps = (self.frames - self.frames_then) / max(now - self.last, 1e-9)
        self.last, self.frames_then = now, self.frames
        stats = self.run.stats
        dropped = sum(s.dropped for s in self.run.states)

        def ms(name):
            value = stats.mean(name, recent=True)
            return "-" if value is None else f"{value:.1f}"
        line = (f"frames {self.frames} | {fps:.1f} fps | dropped {dropped} | ms/frame: read {ms('read')} "
                f"pre {ms('preprocess')} net {ms('network')} post {ms('postprocess')} out {ms('output')} "
                f"| latency {ms('latency')} ms")
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _summary(run, outputs, seconds: float, stopped_by) -> dict:
    stats = run.stats.summary()
    return {"schema": "cornernet_deploy.stream", "format": 1, "seconds": round(seconds, 3),
            "stopped_by": stopped_by,
            "streams": [{**s.describe(), "files": [str(p) for p in outputs.files(s.index)]}
                        for s in run.states],
            "mean_ms": {k: (round(v, 3) if v is not None else None) for k, v in stats.items()}}


def run(args) -> int:
    from ..fileio import write_text_atomic
    from ..runtime.detector import Detector
    from ..runtime.streams import StreamRun, default_batch_size, parse_source
    from ..runtime.streams.outputs import SUMMARY_FILE, StreamOutputs, check_output_folder

    def note(message):
        sys.stderr.write(("\n" if progress.tty and progress.enabled else "") + f"note: {message}\n")

    specs = [parse_source(s) for s in args.sources]                  # plain mistakes first
    folder, stale = check_output_folder(args.output, args.overwrite,
                                        [s.target for s in specs if s.kind == "file"])
    detector = Detector.load(args.model, **backend_options(args))
    pipeline = detector.pipeline
    batch = args.batch_size or default_batch_size(pipeline, len(specs))
    if pipeline.max_batch is not None and batch > pipeline.max_batch:
        sys.stderr.write(f"note: the model takes {plural(pipeline.max_batch, 'frame')} per call; "
                         f"--batch-size {batch} runs as several calls\n")
    outputs = None
    run_ = StreamRun(pipeline, specs, batch_size=batch, flip=args.flip, queue_size=args.queue_size,
                     drop=not args.no_drop, max_frames=args.max_frames, timeout=args.timeout,
                     reconnect=args.reconnect, note=lambda m: note(m),
                     on_stream_end=lambda state: outputs.close(state.index) if outputs else None)
    run_.owned.append(detector)
    progress = _Progress(run_, not args.no_progress)
    stopped_by = []

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        if stopped_by:                          # the second one: abandon the frames in flight
            raise KeyboardInterrupt
        stopped_by.append(name)
        run_.stop()
        note(f"{name}: finishing the frames already read, then closing the files "
             f"({'Ctrl-C' if signum == signal.SIGINT else 'a second signal'} again abandons them)")

    handlers = {}
    start = time.monotonic()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path in stale:                      # an earlier run's files (--overwrite), now that this one runs
            path.unlink(missing_ok=True)
        outputs = StreamOutputs(folder, run_.states, detector.category_ids, args.score_threshold,
                                None if args.no_video else args.video_format, args.vis_score_threshold)
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
        for result in run_:
            t0 = time.perf_counter_ns()
            outputs.write(result)
            run_.record_output((time.perf_counter_ns() - t0) / 1e6)
            progress.tick()
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        run_.close()
        if outputs is not None:
            outputs.close_all()
        progress.end()
        seconds = time.monotonic() - start
        if outputs is not None:
            try:
                write_text_atomic(folder / SUMMARY_FILE, json.dumps(
                    _summary(run_, outputs, seconds, stopped_by[0] if stopped_by else None), indent=1))
            except OSError as exc:      # e.g. the disk filled up: the streams' own files are closed
                note(f"could not write {folder / SUMMARY_FILE} ({exc.strerror or exc})")
    failed = [s for s in run_.states if s.status in ("truncated", "lost", "failed")]
    for s in failed:
        print(f"error: {s.message}", file=sys.stderr)
    total = sum(s.processed for s in run_.states)
    for s in run_.states:
        files = ", ".join(str(p) for p in outputs.files(s.index))
        print(f"stream {s.index} {s.spec.text}: {plural(s.processed, 'frame')} processed, {s.dropped} dropped, "
              f"{s.status} -> {files}")
    stats = run_.stats
    means = ", ".join(f"{name} {stats.mean(name):.1f}" for name in ("read", "preprocess", "network", "postprocess",
                                                                    "output") if stats.mean(name) is not None)
    print(f"{plural(total, 'frame')} of {plural(len(run_.states), 'stream')} in {seconds:.1f} s "
          f"({total / max(seconds, 1e-9):.1f} fps); mean ms per frame: {means}; summary: {folder / SUMMARY_FILE}")
    if stopped_by:
        print(f"stopped by {stopped_by[0]}", file=sys.stderr)
        return 128 + int(getattr(signal, stopped_by[0]))
    return BROKE_OFF if failed else OK
