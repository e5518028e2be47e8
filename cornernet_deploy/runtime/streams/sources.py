"""Video sources: files, cameras, network URLs and GStreamer pipelines, read with OpenCV.

``parse_source(text)`` tells what a command-line source is; ``VideoSource(spec).open()`` opens it
(a one-line ``UserError`` when it cannot), ``read()`` returns the next frame or None at its end.

* a file: whatever OpenCV's FFmpeg decodes (mp4/H.264, mkv, avi, ...); never drops a frame; a
  file that ends before the frame count its header announces is reported as truncated;
* a camera: an index (``0``) or a device path (``/dev/video0``); live;
* a URL (``rtsp://``, ``http://``, ``rtmp://``, ``udp://`` ...): live; opening and every read wait
  at most ``timeout`` seconds; a stream that breaks is reopened with a bounded backoff;
* a GStreamer pipeline (text with ``!``, ending in ``appsink``): live; needs an OpenCV built with
  GStreamer (Jetson's system OpenCV; the PyPI wheels have none).
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ...errors import UserError

__all__ = ["SourceSpec", "VideoSource", "parse_source", "hide_credentials", "opencv_has_gstreamer",
           "quiet_opencv"]

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt", "mms")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CAMERA_PATH = re.compile(r"^/dev/video\d+$")
# a URL's password (``scheme://user:PASSWORD@host``: up to the authority's last "@", so an
# unencoded "@" in the password is hidden too), secrets in its query (``?password=...``, as some
# IP cameras take them) and GStreamer's rtspsrc ``user-pw=PASSWORD``
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*):[^/?#\s]*@")
_QUERY_SECRET = re.compile(r"([?&;](?:password|passwd|pwd|pass|token|access_token|secret|key|"
                           r"signature|sig|auth)=)[^&;#\s]*", re.IGNORECASE)
_GST_PASSWORD = re.compile(r"(\buser-pw\s*=\s*)(\"[^\"]*\"|'[^']*'|[^\s!]+)")
# a frame rate outside this range is a container's placeholder, not a rate
_FPS_RANGE = (0.5, 1000.0)


@dataclass(frozen=True)
class SourceSpec:
    """What a source is: ``text`` the source as given with any password hidden (what messages,
    JSON Lines and summaries show: camera URLs often carry one); ``kind`` file | camera | url |
    gstreamer; ``target`` what OpenCV opens (password kept; left out of ``repr``); ``live``:
    frames come at the source's pace whether or not they are read (they may be dropped when the
    network falls behind); ``name``: a short name for output files."""

    text: str
    kind: str
    target: Union[str, int] = field(repr=False)
    live: bool
    name: str

    @property
    def reconnects(self) -> bool:
        return self.kind == "url"


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "stream"
    return name[:60]


def hide_credentials(text: str) -> str:
    """``text`` with every URL password and rtspsrc ``user-pw`` replaced by ``***`` (the user name
    stays: it tells which account was used)."""
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _GST_PASSWORD.sub(r"\1***", _QUERY_SECRET.sub(r"\1***", text))


def parse_source(text) -> SourceSpec:
    """The ``SourceSpec`` of a command-line source (see the module docstring); a missing file is
    a one-line ``UserError``."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    text = os.fspath(text) if isinstance(text, Path) else str(text)
    if not text.strip():
        raise UserError("empty source name")
    if "!" in text:
        return SourceSpec(hide_credentials(text), "gstreamer", text, True, "gstreamer")
    match = _URL.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            return parse_source(text[len("file://"):])
        shown = hide_credentials(text)
        if scheme not in URL_SCHEMES:
            raise UserError(f"{shown}: unknown URL scheme '{scheme}' (OpenCV's FFmpeg reads "
                            f"{', '.join(URL_SCHEMES)})")
        host_and_path = re.sub(r"^[^/?#]*@", "", shown[match.end():])   # no user name in a file name
        return SourceSpec(shown, "url", text, True, _safe_name(f"{scheme}-{host_and_path}"))
    if text.isdigit() and not Path(text).exists():
        return SourceSpec(text, "camera", int(text), True, f"camera{int(text)}")
    if _CAMERA_PATH.match(text):
        return SourceSpec(text, "camera", text, True, f"camera{text[len('/dev/video'):]}")
    path = Path(text)
    if not path.exists():
        raise UserError(f"{text}: no such file (sources are video files, camera indices, URLs or "
                        "GStreamer pipelines)")
    if path.is_dir():
        raise UserError(f"{text}: is a folder; give video files (`infer` takes folders of images)")
    return SourceSpec(text, "file", str(path), False, _safe_name(path.stem))


def opencv_has_gstreamer() -> bool:
    import cv2
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


def quiet_opencv() -> None:
    """Keep OpenCV's and FFmpeg's own log lines off the terminal: failures are reported here, in
    one line each. (FFmpeg reads its level when OpenCV first opens a video.)"""
    import cv2
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")          # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def _cameras() -> str:
    found = sorted(p.name for p in Path("/dev").glob("video*")) if Path("/dev").is_dir() else []
    return f"this machine has {', '.join('/dev/' + f for f in found)}" if found else \
        "this machine has no /dev/video* device"


class VideoSource:
    """One opened source. ``timeout``: seconds that opening a URL and each of its reads may
    wait. Not thread-safe: one reader thread per source."""

    def __init__(self, spec: SourceSpec, timeout: float = 10.0):
        self.spec = spec
        self.timeout = float(timeout)
        self.capture = None
        self.fps: Optional[float] = None
        self.size: Optional[tuple] = None            # (width, height)
        self.frame_count: Optional[int] = None       # files whose header says
        self.started_at: Optional[float] = None      # first opened (monotonic); kept across reconnects

    # -- opening ---------------------------------------------------------------------------------
    def open(self) -> "VideoSource":
        import cv2
        quiet_opencv()
        spec = self.spec
        ms = int(self.timeout * 1000)
        if spec.kind == "gstreamer":
            if not opencv_has_gstreamer():
                raise UserError(f"{spec.text}: a GStreamer pipeline, but this OpenCV {cv2.__version__} "
                                "has no GStreamer support (the PyPI wheels have none; Jetson's system "
                                "OpenCV has it)")
            capture = cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
        elif spec.kind == "camera":
            capture = cv2.VideoCapture(spec.target)
        elif spec.kind == "url":
            capture = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            capture = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise UserError(self._open_failure())
        self.capture = capture
        if self.started_at is None:
            self.started_at = time.monotonic()
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if _FPS_RANGE[0] <= fps <= _FPS_RANGE[1] else None
        w, h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None
        if spec.kind == "file":
            count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
            self.frame_count = int(count) if math.isfinite(count) and count > 0 else None
        return self

    def _open_failure(self) -> str:
        spec = self.spec
        if spec.kind == "camera":
            return f"camera {spec.target}: cannot open it (no such camera, or busy; {_cameras()})"
        if spec.kind == "url":
            return (f"{spec.text}: cannot open the stream within {self.timeout:g} s (unreachable, "
                    "refused, or not a video stream)")
        if spec.kind == "gstreamer":
            return f"{spec.text}: GStreamer could not start this pipeline (it must end in appsink)"
        return f"{spec.text}: not a video OpenCV's FFmpeg can decode (or a damaged file)"

    # -- reading -----------------------------------------------------------------------------------
    def read(self) -> Optional[np.ndarray]:
        """The next frame (HxWx3 uint8 BGR), or None at the end of the stream (or when it broke)."""
        if self.capture is None:
            return None
        ok, frame = self.capture.read()
        if not ok or frame is None or frame.size == 0:
            return None
        if frame.ndim == 2 or frame.shape[2] == 1:      # some cameras give gray
            import cv2
            frame = cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
        return frame

    def position(self) -> float:
        """Seconds into the stream of the frame just read: a file's presentation time, a live
        source's time since it was first opened."""
        if self.spec.kind == "file":
            import cv2
            ms = self.capture.get(cv2.CAP_PROP_POS_MSEC)
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000.0
        return time.monotonic() - (self.started_at or time.monotonic())

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None
