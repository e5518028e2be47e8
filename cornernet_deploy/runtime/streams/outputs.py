"""What a stream run writes: per stream an annotated video and the detections as JSON Lines.

Streams may never end, so these files are written as the frames come, not staged and renamed:

* JSON Lines: one line per processed frame, each line one ``write`` of a whole line to a file
  opened for appending, so a run that is interrupted (even killed) leaves whole lines;
* the video: OpenCV's FFmpeg writer, closed on every way out of the run (end, Ctrl-C, SIGTERM, an
  error), so the file stays playable. MP4 (MPEG-4 Part 2, FourCC ``mp4v``: the OpenCV wheels
  write no H.264) is written whole only when closed; MKV survives even ``kill -9``/power loss.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import UserError
from ..detections import Detections

__all__ = ["VIDEO_FORMATS", "JsonLinesWriter", "VideoWriter", "StreamOutputs", "frame_record",
           "check_output_folder"]

# container -> FourCC OpenCV's FFmpeg writes with the PyPI wheel (checked: mp4v and MJPG encode;
# avc1/H264/X264 do not)
VIDEO_FORMATS = {"mp4": "mp4v", "mkv": "mp4v", "avi": "MJPG"}
DEFAULT_FPS = 25.0          # a live source that reports no frame rate
OUTPUT_SUFFIXES = (".jsonl",) + tuple(f".{ext}" for ext in VIDEO_FORMATS)
SUMMARY_FILE = "summary.json"


def frame_record(source: str, stream: int, index: int, timestamp: float, captured: float,
                 detections: Detections, category_ids) -> dict:
    """One JSON line: the frame and its detections as ``infer`` writes them (COCO ``bbox`` x, y,
    w, h in the frame's pixels, the exact float32 values; ``category_id``, ``category_name``)."""
    dets = []
    for entry, name in zip(detections.to_coco(None, category_ids, decimals=None), detections.class_names):
        del entry["image_id"]
        dets.append({**entry, "category_name": name})
    return {"source": source, "stream": stream, "frame": index, "timestamp": round(float(timestamp), 6),
            "captured": round(float(captured), 6), "detections": dets}


class JsonLinesWriter:
    """Appends one JSON object per line; each line is written by one ``os.write``."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write ({exc.strerror})") from None

    def write(self, record: dict) -> None:
        data = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
        try:
            written = os.write(self.fd, data)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write ({exc.strerror})") from None
        if written != len(data):
            raise UserError(f"{self.path}: short write (disk full?)")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class VideoWriter:
    """An annotated video of ``size`` (width, height) at ``fps``; frames of another size (a
    stream that came back at another resolution) are resized to it."""

    def __init__(self, path, fps: Optional[float], size, fmt: str = "mp4"):
        import cv2
        if fmt not in VIDEO_FORMATS:
            raise UserError(f"video format {fmt!r}: choose {', '.join(VIDEO_FORMATS)}")
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))
        self.fps = float(fps) if fps else DEFAULT_FPS
        self.fourcc = VIDEO_FORMATS[fmt]
        self.writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*self.fourcc),
                                      self.fps, self.size)
        if not self.writer.isOpened():
            raise UserError(f"{self.path}: OpenCV cannot write a {fmt} video ({self.fourcc}) of "
                            f"{self.size[0]}x{self.size[1]} here")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import cv2
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class StreamOutputs:
    """What the ``stream`` command writes for ``states`` (``StreamRun.states``) into ``folder``:
    per stream ``N-NAME.jsonl`` (detections from ``score_threshold`` up) and, with a
    ``video_format``, ``N-NAME.<format>`` (detections from ``vis_score_threshold`` drawn; opened
    at the stream's first frame, at the source's frame rate and size)."""

    def __init__(self, folder, states, category_ids, score_threshold: float = 0.0,
                 video_format: Optional[str] = "mp4", vis_score_threshold: float = 0.5):
        self.folder = Path(folder)
        self.states, self.category_ids = states, category_ids
        self.score_threshold, self.vis_score_threshold = score_threshold, vis_score_threshold
        self.format = video_format
        self.names = [f"{s.index}-{s.spec.name}" for s in states]
        self.jsonl = [JsonLinesWriter(self.folder / f"{name}.jsonl") for name in self.names]
        self.videos: list = [None] * len(states)

    def write(self, result) -> None:
        """One ``FrameResult``: its JSON line, and its drawing into the stream's video."""
        from ..visualize import draw_detections
        k = result.stream
        if self.jsonl[k] is None:
            return
        if self.format is not None:
            drawing = draw_detections(result.image, result.detections, self.vis_score_threshold)
            if self.videos[k] is None:
                h, w = drawing.shape[:2]
                self.videos[k] = VideoWriter(self.folder / f"{self.names[k]}.{self.format}",
                                             self.states[k].fps, self.states[k].size or (w, h), self.format)
            self.videos[k].write(drawing)
        self.jsonl[k].write(frame_record(result.source, k, result.index, result.timestamp, result.captured,
                                         result.detections.filter(self.score_threshold), self.category_ids))

    def close(self, k: int) -> None:
        if self.jsonl[k] is not None:
            self.jsonl[k].close()
            self.jsonl[k] = None
        if self.videos[k] is not None:
            self.videos[k].close()

    def close_all(self) -> None:
        for k in range(len(self.names)):
            self.close(k)

    def files(self, k: int) -> list:
        out = [self.folder / f"{self.names[k]}.jsonl"]
        if self.videos[k] is not None:
            out.insert(0, self.videos[k].path)
        return out


def _ours(entry: Path) -> bool:
    return entry.is_file() and (entry.name == SUMMARY_FILE or entry.suffix in OUTPUT_SUFFIXES)


def check_output_folder(folder, overwrite: bool, inputs=()) -> tuple:
    """``(folder, files to remove before writing)``. The folder must be new or empty;
    ``overwrite`` lets a run replace what an earlier stream run wrote there (only its kinds of
    files: videos, .jsonl, summary.json; removed by the caller once the run has started). A folder
    that holds one of the ``inputs`` (source files) is refused: nothing written may replace an
    input."""
    from ...fileio import check_output_dir
    folder = check_output_dir(folder, "--output")
    stale = []
    if folder.is_dir():
        real = folder.resolve()
        for path in inputs:
            if Path(path).resolve().parent == real:
                raise UserError(f"--output {folder}: holds the source {path}; write the results to "
                                "another folder")
        entries = list(folder.iterdir())
        if entries and not overwrite:
            raise UserError(f"--output {folder}: folder is not empty; pass --overwrite to replace an "
                            "earlier stream run's files, or give a new folder")
        foreign = sorted(e.name for e in entries if not _ours(e))
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise UserError(f"--output {folder}: holds files a stream run does not write ({shown}); "
                            "give a new folder")
        stale = entries
    return folder, stale
