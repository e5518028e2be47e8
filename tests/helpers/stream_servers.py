"""Real video servers on loopback for the stream tests, started and stopped by the tests (installed
by .ci/run: ffmpeg, and GStreamer's RTSP server run by the system Python), plus generated clips.

Every wait polls with a time limit; ports are chosen free at run time (the RTSP server binds port 0
itself and reports the port it got)."""
import contextlib
import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"

RTSP_SERVER = textwrap.dedent('''
    import sys
    import gi
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")                      # any free port; reported below
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch('( filesrc location="%s" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )'
                       % sys.argv[1])
    server.get_mount_points().add_factory("/clip", factory)
    server.attach(None)
    print(server.get_bound_port(), flush=True)
    GLib.MainLoop().run()
''')


def need(tool_ok: bool, reason: str):
    """Skip without the tool; in CI (.ci/run installs it) fail instead."""
    if tool_ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (.ci/run installs it)")
    pytest.skip(reason)


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


def have_rtsp_server() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = ('import gi; gi.require_version("GstRtspServer", "1.0"); '
             'from gi.repository import GstRtspServer')
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lossless(path, frames, fps=10):
    """Frames -> an FFV1 .mkv (lossless: decoding gives the frames back exactly)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return Path(path)


def to_h264(src, dst, gop=10):
    """An H.264 .mp4 of ``src`` (what RTSP/MPEG-TS servers carry); the system ffmpeg encodes it."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-g", str(gop), str(dst)], check=True, timeout=120)
    return Path(dst)


def decode_all(path):
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def stop(process, timeout=10):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@contextlib.contextmanager
def rtsp_server(clip: Path, tmp_path: Path):
    """GStreamer's RTSP server serving ``clip`` (H.264 .mp4) at rtsp://127.0.0.1:PORT/clip."""
    script = tmp_path / "rtsp_server.py"
    script.write_text(RTSP_SERVER)
    process = subprocess.Popen([SYSTEM_PYTHON, str(script), str(clip)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()          # the bound port, once it listens
        assert line.strip().isdigit(), f"RTSP server did not start: {line!r} {process.stderr.read()[-500:]}"
        yield f"rtsp://127.0.0.1:{int(line)}/clip"
    finally:
        stop(process)


@contextlib.contextmanager
def http_ts_server(clip: Path, realtime: bool = True):
    """``ffmpeg [-re] -i clip -c copy -listen 1 -f mpegts http://127.0.0.1:PORT``: one client,
    at the clip's frame rate (``realtime``) or as fast as the network takes it. Yields
    ``(url, process)``; the URL accepts a connection once ffmpeg listens (polled)."""
    port = free_port()
    cmd = ["ffmpeg", "-loglevel", "error", "-nostdin"] + (["-re"] if realtime else []) + [
        "-i", str(clip), "-c", "copy", "-listen", "1", "-f", "mpegts", f"http://127.0.0.1:{port}"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _listening(port) or process.poll() is not None, 20, f"ffmpeg to listen on {port}")
        assert process.poll() is None, process.stderr.read()[-500:]
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop(process)


def _listening(port) -> bool:
    # /proc/net/tcp lists listening sockets (state 0A) without connecting: a probe connection
    # would be the one client `-listen 1` serves
    hex_port = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        if any(l.split()[1].endswith(hex_port) and l.split()[3] == "0A" for l in lines):
            return True
    return False


@contextlib.contextmanager
def silent_server():
    """A TCP server that accepts connections and never says a word (a stream that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def moving_scenes(count, hw=(192, 256), seed=0):
    """Generated shapes scenes the demo model detects (one per frame)."""
    from cornernet_deploy.data.shapes import render_scene
    return [render_scene(seed + i, image_size=hw, num_objects=(2, 4))[0] for i in range(count)]


def frames_equal(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)
