"""The staged stream runner: decode | pre-process | network | post-process | your loop, concurrently.

Threads joined by bounded queues (the heavy parts release the GIL: OpenCV's decode and resize,
the backend's network call, numba's soft-NMS; ``benchmarks/bench_streams.py`` measures the
overlap):

* one reader per source decodes frames into that source's bounded queue. A file's reader waits
  when its queue is full (files never drop a frame); a live source's reader drops the oldest
  frame instead, counts it, and goes on, so latency stays bounded when the network falls behind;
* the pre-processing thread takes the queues round-robin: ``pipeline.prepare``;
* the network thread takes what is prepared, up to ``batch_size`` frames of any streams, and runs
  them in one ``pipeline.network`` call (cross-stream batching);
* the post-processing thread: ``pipeline.finish``;
* the caller's loop iterates over ``FrameResult``s: per stream in frame order.

These are ``CornerNetPipeline``'s own stage methods, the ones ``batch`` runs in turn, so a frame's
detections are exactly what ``infer`` gives for the same decoded image.

``stop()`` (Ctrl-C, SIGTERM) ends the readers; the frames already read are still processed and
delivered, then iteration ends. ``close()`` abandons what is in flight.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterator, List, Optional, Sequence

import numpy as np

from ...errors import UserError
from ..detections import Detections
from .sources import SourceSpec, VideoSource, parse_source

__all__ = ["StreamRun", "StreamState", "FrameResult", "StageStats", "STAGE_NAMES"]

# the per-frame stages the runner times (ms): "read" is decoding (a live source's read also waits
# for its next frame), "network" a network call's time per frame of its batch, "output" what the
# caller reports (its own work), "latency" from a frame's decode to its delivery
STAGE_NAMES = ("read", "preprocess", "network", "postprocess", "output", "latency")


@dataclass
class StreamState:
    """One source and what became of it. ``status``: running | ended | stopped (by ``stop()``) |
    truncated (a file shorter than its header says) | lost (a stream that broke off and could
    not be reopened) | failed; ``message``: one line for anything but a plain end."""

    index: int
    spec: SourceSpec
    fps: Optional[float] = None
    size: Optional[tuple] = None
    frame_count: Optional[int] = None
    decoded: int = 0
    dropped: int = 0
    processed: int = 0
    reconnects: int = 0
    status: str = "running"
    message: Optional[str] = None

    def describe(self) -> dict:
        return {"stream": self.index, "source": self.spec.text, "kind": self.spec.kind,
                "live": self.spec.live, "fps": self.fps, "size": list(self.size) if self.size else None,
                "frames_decoded": self.decoded, "frames_processed": self.processed,
                "frames_dropped": self.dropped, "reconnects": self.reconnects,
                "status": self.status, "message": self.message}


@dataclass
class FrameResult:
    """One processed frame: ``stream`` (index of its source), ``source`` (as given, any password
    shown as ``***``), ``index`` (its place in the source, counting dropped frames too),
    ``timestamp`` (seconds into the stream), ``captured`` (UNIX time it was decoded), the frame
    (HxWx3 uint8 BGR) and its detections (boxes in the frame's pixels); ``latency_ms`` from
    decode to delivery."""

    stream: int
    source: str
    index: int
    timestamp: float
    captured: float
    image: np.ndarray
    detections: Detections
    latency_ms: float


class StageStats:
    """Per-stage times (ms): totals, and a window of recent samples for live progress. Each
    stage is written by its own thread only."""

    def __init__(self, window: int = 256):
        self.count: Dict[str, int] = {n: 0 for n in STAGE_NAMES}
        self.total: Dict[str, float] = {n: 0.0 for n in STAGE_NAMES}
        self.recent: Dict[str, Deque[float]] = {n: collections.deque(maxlen=window) for n in STAGE_NAMES}
        self.batches: Deque[int] = collections.deque(maxlen=window)
        self.network_calls = 0
        self.network_frames = 0

    def add(self, name: str, ms: float) -> None:
        self.count[name] += 1
        self.total[name] += ms
        self.recent[name].append(ms)

    def mean(self, name: str, recent: bool = False) -> Optional[float]:
        if recent:
            values = list(self.recent[name])
            return sum(values) / len(values) if values else None
        return self.total[name] / self.count[name] if self.count[name] else None

    def summary(self) -> dict:
        out = {name: self.mean(name) for name in STAGE_NAMES}
        out["frames_per_network_call"] = (self.network_frames / self.network_calls
                                          if self.network_calls else None)
        return out


@dataclass
class _Frame:
    stream: int
    index: int
    timestamp: float
    captured: float
    decoded_ns: int
    image: np.ndarray
    prepared: object = None
    result: object = None
    detections: Optional[Detections] = None


@dataclass
class _End:
    stream: int


_DONE = object()                     # the end of all streams, passed down the stages


class _FrameBuffer:
    """Decoded frames waiting for pre-processing: a bounded queue per source, taken round-robin."""

    def __init__(self, states: Sequence[StreamState], capacity: int, abort: threading.Event):
        self.states = states
        self.capacity = int(capacity)
        self.abort = abort
        self.cond = threading.Condition()
        self.queues: List[Deque] = [collections.deque() for _ in states]
        self.next = 0

    def put(self, stream: int, frame: _Frame, drop_oldest: bool) -> bool:
        """Queue ``frame``; a full queue drops its oldest frame (``drop_oldest``) or waits. False
        when the run was abandoned."""
        with self.cond:
            q = self.queues[stream]
            while len(q) >= self.capacity:
                if drop_oldest:
                    q.popleft()
                    self.states[stream].dropped += 1
                    break
                if self.abort.is_set():
                    return False
                self.cond.wait(0.1)
            q.append(frame)
            self.cond.notify_all()
            return True

    def end(self, stream: int) -> None:
        with self.cond:
            self.queues[stream].append(_End(stream))     # never dropped, never waits
            self.cond.notify_all()

    def get(self):
        """The next item (a frame or a stream's end) round-robin over the sources; None when the
        run was abandoned."""
        with self.cond:
            while not self.abort.is_set():
                n = len(self.queues)
                for k in range(n):
                    s = (self.next + k) % n
                    if self.queues[s]:
                        self.next = s + 1
                        item = self.queues[s].popleft()
                        self.cond.notify_all()
                        return item
                self.cond.wait(0.1)
            return None


class StreamRun:
    """Detections on video streams through ``pipeline`` (``CornerNetPipeline``), pipelined.

    ``sources``: source texts (``sources.parse_source``), ``SourceSpec``s or camera indices; all
    are opened before anything runs (a one-line ``UserError`` for one that cannot be).
    ``batch_size``: most frames per network call (frames of several streams are batched together).
    ``flip``: the flip test (None: the model's setting). ``queue_size``: decoded frames held per
    source. ``drop``: live sources drop their oldest frame when the network falls behind (False:
    they wait, and latency grows). ``max_frames``: stop each stream after this many frames.
    ``timeout``: seconds that opening a URL and each read may wait; ``reconnect``: attempts to
    reopen a broken URL stream, waiting ``backoff`` s, then twice as long each time (at most
    ``max_backoff``). ``on_stream_end(state)``: called from the iterating thread after a stream's
    last frame. ``note(line)``: one-line notices (reconnects).

    Iterate over it (``FrameResult`` per frame, in frame order per stream); ``states`` tells what
    became of every source, ``stats`` the stage times. A context manager (``close`` on exit).
    """

    def __init__(self, pipeline, sources: Sequence, *, batch_size: int = 1, flip: Optional[bool] = None,
                 queue_size: int = 4, drop: bool = True, max_frames: Optional[int] = None,
                 timeout: float = 10.0, reconnect: int = 5, backoff: float = 0.5, max_backoff: float = 8.0,
                 on_stream_end: Optional[Callable[[StreamState], None]] = None,
                 note: Optional[Callable[[str], None]] = None):
        if batch_size < 1 or queue_size < 1:
            raise UserError("batch size and queue size must be at least 1")
        if not sources:
            raise UserError("no source given")
        self.pipeline = pipeline
        self.flip = pipeline.resolve_flip(flip)
        self.batch_size = int(batch_size)
        self.drop = bool(drop)
        self.max_frames = max_frames
        self.reconnect, self.backoff, self.max_backoff = int(reconnect), float(backoff), float(max_backoff)
        self.on_stream_end = on_stream_end
        self.note = note or (lambda line: None)
        self.stats = StageStats()
        specs = [s if isinstance(s, SourceSpec) else parse_source(s) for s in sources]
        self.sources: List[VideoSource] = []
        try:
            for spec in specs:
                self.sources.append(VideoSource(spec, timeout).open())
        except BaseException:
            for source in self.sources:
                source.close()
            raise
        self.states = [StreamState(k, s.spec, s.fps, s.size, s.frame_count) for k, s in enumerate(self.sources)]
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._buffer = _FrameBuffer(self.states, queue_size, self._abort)
        # Upstream of the network (the slowest stage) frames wait, so that queue is short: the next
        # batch is prepared while one runs. Downstream the stages are faster and their queues stay
        # empty; their slack only keeps a momentarily slow writer from stalling the network.
        self._prepared: queue.Queue = queue.Queue(2 * self.batch_size)
        self._ran: queue.Queue = queue.Queue(4 * self.batch_size)
        self._results: queue.Queue = queue.Queue(4 * self.batch_size)
        self._threads: List[threading.Thread] = []
        self._error: Optional[BaseException] = None
        self._started = False
        self.started_at: Optional[float] = None
        self.owned: list = []                # what close() also closes (detect_streams' detector)

    # -- control ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """End every stream now; the frames already decoded are still processed and delivered."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Abandon what is in flight and release every source (idempotent)."""
        self._stop.set()
        self._abort.set()
        for t in self._threads:
            t.join(timeout=10)
        for source in self.sources:
            source.close()
        while self.owned:
            self.owned.pop().close()

    def __enter__(self) -> "StreamRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record_output(self, ms: float) -> None:
        """The caller's own per-frame work (drawing, writing), for the stage statistics."""
        self.stats.add("output", ms)

    # -- running ---------------------------------------------------------------------------------
    def _start(self) -> None:
        self._started = True
        self.started_at = time.monotonic()
        workers = [(f"read-{k}", self._read, (k,)) for k in range(len(self.sources))]
        workers += [("preprocess", self._preprocess_loop, ()), ("network", self._network_loop, ()),
                    ("postprocess", self._postprocess_loop, ())]
        for name, target, args in workers:
            thread = threading.Thread(target=self._guarded, args=(target, args), name=f"stream-{name}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def __iter__(self) -> Iterator[FrameResult]:
        if self._started:
            raise RuntimeError("a StreamRun is iterated once")
        self._start()
        done = False
        try:
            while True:
                item = self._take(self._results)
                if item is None:
                    break
                if item is _DONE:
                    done = True
                    break
                if isinstance(item, _End):
                    if self.on_stream_end is not None:
                        self.on_stream_end(self.states[item.stream])
                    continue
                state = self.states[item.stream]
                state.processed += 1
                latency = (time.perf_counter_ns() - item.decoded_ns) / 1e6
                self.stats.add("latency", latency)
                yield FrameResult(item.stream, state.spec.text, item.index, item.timestamp, item.captured,
                                  item.image, item.detections, latency)
        finally:
            if done:
                for t in self._threads:
                    t.join(timeout=10)
            else:
                self.close()
        if self._error is not None:
            raise self._error

    def _guarded(self, target, args) -> None:
        try:
            target(*args)
        except BaseException as exc:        # the first error ends the run; the caller raises it
            if self._error is None:
                self._error = exc
            self._abort.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _take(self, q: queue.Queue):
        while not self._abort.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return None

    # -- the stages ------------------------------------------------------------------------------
    def _read(self, k: int) -> None:
        source, state = self.sources[k], self.states[k]
        drop = state.spec.live and self.drop
        index = 0
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and index >= self.max_frames:
                    state.status = "ended"
                    break
                t0 = time.perf_counter_ns()
                frame = source.read()
                if frame is None:
                    if source.spec.reconnects and self.reconnect > 0 and not self._stop.is_set():
                        if self._reopen(source, state):
                            continue
                    else:
                        self._classify_end(source, state)
                    break
                now = time.perf_counter_ns()
                self.stats.add("read", (now - t0) / 1e6)
                item = _Frame(k, index, source.position(), time.time(), now, frame)
                index += 1
                state.decoded += 1
                if not self._buffer.put(k, item, drop):
                    break
            else:
                state.status = "stopped"
        except Exception as exc:            # a source that breaks in an unforeseen way ends alone
            state.status = "failed"
            state.message = f"{state.spec.text}: reading failed after {state.decoded} frames ({exc})"
        finally:
            source.close()
            self._buffer.end(k)

    def _classify_end(self, source: VideoSource, state: StreamState) -> None:
        if self._stop.is_set():
            state.status = "stopped"
        elif state.spec.kind == "file" and state.frame_count and state.decoded < state.frame_count - 1:
            state.status = "truncated"
            state.message = (f"{state.spec.text}: the video ends after {state.decoded} of the "
                             f"{state.frame_count} frames its header announces (truncated or damaged file)")
        elif state.spec.live and state.spec.kind != "url":
            state.status = "lost"
            state.message = f"{state.spec.text}: stopped delivering frames after {state.decoded}"
        else:
            state.status = "ended"

    def _reopen(self, source: VideoSource, state: StreamState) -> bool:
        """Reopen a broken URL stream with a bounded backoff; False (status "lost") after the
        last attempt, or when the run is stopped."""
        last = None
        for attempt in range(1, self.reconnect + 1):
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            if self._stop.wait(delay):
                state.status = "stopped"
                return False
            source.close()
            try:
                source.open()
            except UserError as exc:
                last = exc
                continue
            state.reconnects += 1
            self.note(f"{state.spec.text}: reconnected (attempt {attempt})")
            return True
        state.status = "lost"
        state.message = (f"{state.spec.text}: the stream broke off after {state.decoded} frames and "
                         f"{self.reconnect} reconnect attempts failed ({last})")
        return False

    def _preprocess_loop(self) -> None:
        ended = 0
        while ended < len(self.states):
            item = self._buffer.get()
            if item is None:
                return
            if isinstance(item, _End):
                ended += 1
            else:
                t0 = time.perf_counter_ns()
                item.prepared = self._stage_call(item, self.pipeline.prepare, item.image, self.flip, "frame")
                self.stats.add("preprocess", (time.perf_counter_ns() - t0) / 1e6)
            if not self._put(self._prepared, item):
                return
        self._put(self._prepared, _DONE)

    def _network_loop(self) -> None:
        pending = None
        while True:
            item = pending if pending is not None else self._take(self._prepared)
            pending = None
            if item is None:
                return
            if not isinstance(item, _Frame):        # a stream's end, or the end of all
                if not self._put(self._ran, item) or item is _DONE:
                    return
                continue
            batch = [item]
            while len(batch) < self.batch_size:      # whatever else is ready, of any stream
                try:
                    nxt = self._prepared.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _Frame):
                    pending = nxt                    # keeps its place after this batch
                    break
                batch.append(nxt)
            t0 = time.perf_counter_ns()
            results = self._stage_call(batch[0], self.pipeline.network, [f.prepared for f in batch])
            ms = (time.perf_counter_ns() - t0) / 1e6
            self.stats.network_calls += 1
            self.stats.network_frames += len(batch)
            self.stats.batches.append(len(batch))
            for f, r in zip(batch, results):
                f.result = r
                self.stats.add("network", ms / len(batch))
                if not self._put(self._ran, f):
                    return

    def _postprocess_loop(self) -> None:
        while True:
            item = self._take(self._ran)
            if item is None:
                return
            if isinstance(item, _Frame):
                t0 = time.perf_counter_ns()
                item.detections = self._stage_call(item, self.pipeline.finish, item.prepared, item.result)
                item.prepared = item.result = None
                self.stats.add("postprocess", (time.perf_counter_ns() - t0) / 1e6)
            if not self._put(self._results, item) or item is _DONE:
                return

    def _stage_call(self, frame: _Frame, fn, *args):
        try:
            return fn(*args)
        except UserError as exc:
            raise UserError(f"{self.states[frame.stream].spec.text} frame {frame.index}: {exc}") from None
