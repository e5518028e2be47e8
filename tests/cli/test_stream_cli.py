"""``cornernet-deploy stream``: files, real RTSP and HTTP/MPEG-TS servers on loopback, dropped-frame
accounting, signals, and bad input.

Truth: the frames the test wrote (lossless clips) or decodes from the served H.264 file itself
(the same bitstream decodes to the same frames), and `infer`'s detections of those frames."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from cornernet_deploy.cli import main

from stream_servers import (decode_all, have_ffmpeg, have_rtsp_server, http_ts_server, moving_scenes, need,
                            rtsp_server, silent_server, stop, to_h264, wait_for, write_lossless)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def as_infer(records):
    """The detections of JSON lines in infer's detections.json form (without file/image ids)."""
    return [[{k: d[k] for k in ("bbox", "score", "category_id", "category_name")} for d in r["detections"]]
            for r in records]


def infer_detections(capsys, model, frames, folder):
    """`infer` on every frame saved as PNG: its detections per frame, in frame order."""
    folder.mkdir()
    paths = []
    for k, f in enumerate(frames):
        paths.append(folder / f"{k:05d}.png")
        assert cv2.imwrite(str(paths[-1]), f)
    rc, _, err = cli(capsys, "infer", model, *paths, "--output", folder / "out", "--no-progress")
    assert rc == 0, err
    by_file = {str(p): [] for p in paths}
    for d in json.loads((folder / "out" / "detections.json").read_text()):
        by_file[d["file_name"]].append({k: d[k] for k in ("bbox", "score", "category_id", "category_name")})
    return [by_file[str(p)] for p in paths]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A lossless 20-frame clip of shapes scenes, its frames, and an H.264 .mp4 of it."""
    root = tmp_path_factory.mktemp("clip")
    frames = moving_scenes(20, (192, 256), seed=500)
    lossless = write_lossless(root / "scenes.mkv", frames)
    h264 = to_h264(lossless, root / "scenes.mp4") if have_ffmpeg() else None
    return {"mkv": lossless, "frames": frames, "mp4": h264}


def test_each_frame_gets_infers_detections_and_a_playable_video(demo_exports, clip, tmp_path, capsys):
    short = write_lossless(tmp_path / "short.mkv", moving_scenes(6, (192, 256), seed=900))
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "stream", demo_exports["uint8"], clip["mkv"], short, "--output", out,
                          "--threads", "1", "--no-progress")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0-scenes.jsonl", "0-scenes.mp4", "1-short.jsonl",
                                                     "1-short.mp4", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["frames_processed"], s["frames_dropped"], s["status"]) for s in summary["streams"]] == \
        [(20, 0, "ended"), (6, 0, "ended")]
    assert summary["mean_ms"]["frames_per_network_call"] > 1          # frames of both streams in one call
    for k, (path, frames) in enumerate(((clip["mkv"], clip["frames"]), (short, decode_all(short)))):
        records = lines(out / f"{k}-{path.stem}.jsonl")
        assert [r["frame"] for r in records] == list(range(len(frames)))
        assert all(r["source"] == str(path) and r["stream"] == k for r in records)
        # infer, with the float export, on the same decoded frames: the same detections exactly
        assert as_infer(records) == infer_detections(capsys, demo_exports["float32"], frames, tmp_path / f"i{k}")
        video = decode_all(out / f"{k}-{path.stem}.mp4")
        assert len(video) == len(frames) and video[0].shape == frames[0].shape
        cap = cv2.VideoCapture(str(out / f"{k}-{path.stem}.mp4"))
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    assert "2 streams" in stdout and "26 frames" in stdout


def _served_frames_match(records, frames, model_detections):
    """Every processed frame of a served stream is the file's frame of that index: same detections."""
    return all(as_infer([r])[0] == model_detections[r["frame"]] for r in records)


@pytest.fixture(scope="module")
def served_truth(demo_exports, clip):
    """infer's detections of every frame of the H.264 clip, decoded from the file."""
    if clip["mp4"] is None:
        return None
    frames = decode_all(clip["mp4"])
    from cornernet_deploy.runtime.detector import Detector
    from cornernet_deploy.runtime.streams.outputs import frame_record
    detector = Detector.load(demo_exports["float32"], threads=1)
    return [as_infer([frame_record("", 0, k, 0, 0, detector(f), detector.category_ids)])[0]
            for k, f in enumerate(frames)]


def test_rtsp_stream_from_a_real_rtsp_server(demo_exports, clip, served_truth, tmp_path, capsys):
    need(have_ffmpeg(), "no ffmpeg to encode the H.264 clip")
    need(have_rtsp_server(), "no GStreamer RTSP server (gir1.2-gst-rtsp-server-1.0, python3-gi)")
    with rtsp_server(clip["mp4"], tmp_path) as url:
        rc, _, err = cli(capsys, "stream", demo_exports["uint8"], url, "--output", tmp_path / "out",
                         "--reconnect", "0", "--threads", "1", "--no-progress")
    assert rc == 0, err
    stream = json.loads((tmp_path / "out" / "summary.json").read_text())["streams"][0]
    assert (stream["kind"], stream["live"], stream["status"], stream["frames_decoded"]) == ("url", True, "ended", 20)
    records = lines(next((tmp_path / "out").glob("*.jsonl")))
    assert len(records) == stream["frames_processed"] == 20 - stream["frames_dropped"]
    assert _served_frames_match(records, clip["frames"], served_truth)


def test_http_mpegts_stream_from_ffmpeg(demo_exports, clip, served_truth, tmp_path, capsys):
    need(have_ffmpeg(), "no ffmpeg")
    with http_ts_server(clip["mp4"], realtime=True) as (url, _):
        rc, _, err = cli(capsys, "stream", demo_exports["float32"], url, "--output", tmp_path / "out",
                         "--reconnect", "0", "--threads", "1", "--no-progress")
    assert rc == 0, err
    stream = json.loads((tmp_path / "out" / "summary.json").read_text())["streams"][0]
    assert (stream["status"], stream["frames_decoded"]) == ("ended", 20)
    records = lines(next((tmp_path / "out").glob("*.jsonl")))
    assert len(records) == stream["frames_processed"] == 20 - stream["frames_dropped"]
    assert _served_frames_match(records, clip["frames"], served_truth)


def test_a_password_in_a_url_is_used_but_never_shown_or_written(demo_exports, clip, tmp_path, capsys):
    need(have_ffmpeg(), "no ffmpeg")
    secret = "s3cret-Pw"
    with http_ts_server(clip["mp4"], realtime=False) as (url, _):
        given = url.replace("http://", f"http://viewer:{secret}@") + "/feed?token=" + secret
        rc, out, err = cli(capsys, "stream", demo_exports["float32"], given, "--output", tmp_path / "out",
                           "--reconnect", "0", "--no-drop", "--threads", "1", "--no-progress")
    assert rc == 0, err
    shown = url.replace("http://", "http://viewer:***@") + "/feed?token=***"
    records = lines(next((tmp_path / "out").glob("*.jsonl")))
    assert len(records) == 20 and all(r["source"] == shown for r in records)       # it was read
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["streams"][0]["source"] == shown
    files = list((tmp_path / "out").iterdir())
    assert not [p.name for p in files if secret in p.name or "viewer" in p.name]
    assert not [p.name for p in files if secret.encode() in p.read_bytes()]
    assert secret not in out + "".join(err) and shown in out
    # and a URL that cannot be opened says which, without its password
    with silent_server() as port:
        rc, _, err = cli(capsys, "stream", demo_exports["float32"], f"rtsp://admin:{secret}@127.0.0.1:{port}/x",
                         "--timeout", "1", "--reconnect", "0", "--output", tmp_path / "o2")
    assert rc == 2 and err == [f"error: rtsp://admin:***@127.0.0.1:{port}/x: cannot open the stream within 1 s "
                               "(unreachable, refused, or not a video stream)"], err


def test_a_live_source_faster_than_the_network_drops_its_oldest_frames(demo_exports, tmp_path, capsys):
    need(have_ffmpeg(), "no ffmpeg")
    frames = moving_scenes(120, (384, 512), seed=50)           # 4x the network work of the clip above
    mp4 = to_h264(write_lossless(tmp_path / "big.mkv", frames), tmp_path / "big.mp4")
    truth = decode_all(mp4)
    with http_ts_server(mp4, realtime=False) as (url, _):        # as fast as TCP takes it
        rc, _, err = cli(capsys, "stream", demo_exports["float32"], url, "--output", tmp_path / "out",
                         "--reconnect", "0", "--queue-size", "1", "--flip", "--threads", "1", "--no-progress",
                         "--no-video")
    assert rc == 0, err
    stream = json.loads((tmp_path / "out" / "summary.json").read_text())["streams"][0]
    records = lines(next((tmp_path / "out").glob("*.jsonl")))
    assert stream["frames_decoded"] == 120 and stream["frames_dropped"] > 0
    assert len(records) == stream["frames_processed"] == 120 - stream["frames_dropped"]
    indices = [r["frame"] for r in records]
    assert indices == sorted(set(indices)) and indices[-1] <= 119
    # the index of each line is the frame it describes: check a few against the file's frames
    from cornernet_deploy.runtime.detector import Detector
    from cornernet_deploy.runtime.streams.outputs import frame_record
    detector = Detector.load(demo_exports["float32"], threads=1)
    for r in records[:: max(1, len(records) // 5)]:
        dets = detector(truth[r["frame"]], flip=True)
        assert as_infer([r]) == as_infer([frame_record("", 0, 0, 0, 0, dets, detector.category_ids)])


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_a_playable_video_and_whole_json_lines(demo_exports, tmp_path, sig, status):
    long = write_lossless(tmp_path / "long.mkv", moving_scenes(10, (192, 256), seed=7) * 30)   # 300 frames
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "cornernet_deploy.cli", "stream", str(demo_exports["float32"]),
                                str(long), "--output", str(out), "--threads", "1", "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        jsonl = out / "0-long.jsonl"
        wait_for(lambda: jsonl.is_file() and jsonl.read_text().count("\n") >= 5, 120, "five JSON lines")
        process.send_signal(sig)
        rc = process.wait(60)
    finally:
        stop(process)
    err = process.stderr.read()
    assert rc == status, err
    assert "finishing the frames already read" in err
    records = lines(jsonl)                               # every line whole and valid
    assert 5 <= len(records) < 300 and [r["frame"] for r in records] == list(range(len(records)))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == signal.Signals(sig).name
    stream = summary["streams"][0]
    assert stream["status"] == "stopped" and stream["frames_processed"] == stream["frames_decoded"] == len(records)
    assert len(decode_all(out / "0-long.mp4")) == len(records)     # playable, every frame in it


def test_bad_sources_are_one_line_each(demo_exports, tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video " * 100)
    model = demo_exports["float32"]
    for source, message in ((bad, "notes.mp4: not a video OpenCV's FFmpeg can decode"),
                            ("7", "camera 7: cannot open it (no such camera"),
                            (tmp_path / "missing.mkv", "missing.mkv: no such file"),
                            ("gopher://host/x", "unknown URL scheme 'gopher'")):
        rc, _, err = cli(capsys, "stream", model, source, "--output", tmp_path / "o")
        assert rc == 2 and len(err) == 1 and message in err[0], err
        assert not (tmp_path / "o").exists()
    # the output folder may not hold a source (nothing written may replace an input)
    clip = write_lossless(tmp_path / "c.mkv", moving_scenes(2))
    rc, _, err = cli(capsys, "stream", model, clip, "--output", tmp_path, "--overwrite")
    assert rc == 2 and "holds the source" in err[0] and clip.stat().st_size > 0


def test_an_unreachable_url_gives_up_within_its_timeout(demo_exports, tmp_path, capsys):
    with silent_server() as port:
        start = time.monotonic()
        rc, _, err = cli(capsys, "stream", demo_exports["float32"], f"http://127.0.0.1:{port}/feed",
                         "--timeout", "1", "--output", tmp_path / "o")
        took = time.monotonic() - start
    assert rc == 2 and len(err) == 1 and "cannot open the stream within 1 s" in err[0], err
    assert took < 15, took


def test_a_truncated_video_keeps_the_frames_before_the_damage(demo_exports, tmp_path, capsys):
    frames = moving_scenes(30, (192, 256), seed=3)
    whole = write_lossless(tmp_path / "whole.mkv", frames)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    expected = len(decode_all(cut))                       # what FFmpeg can still decode
    assert 0 < expected < 30
    rc, _, err = cli(capsys, "stream", demo_exports["float32"], cut, "--output", tmp_path / "o", "--no-progress")
    assert rc == 1
    assert err == [f"error: {cut}: the video ends after {expected} of the 30 frames its header announces "
                   "(truncated or damaged file)"]
    records = lines(tmp_path / "o" / "0-cut.jsonl")
    assert [r["frame"] for r in records] == list(range(expected))
    assert len(decode_all(tmp_path / "o" / "0-cut.mp4")) == expected


def test_a_stream_that_dies_is_retried_then_given_up(demo_exports, tmp_path):
    need(have_ffmpeg(), "no ffmpeg")
    out = tmp_path / "o"
    # 10 s at its frame rate: opening the stream (FFmpeg probes ~2 s of it) leaves most of it to come
    mp4 = to_h264(write_lossless(tmp_path / "long.mkv", moving_scenes(10, (192, 256)) * 10), tmp_path / "long.mp4")
    with http_ts_server(mp4, realtime=True) as (url, server):
        process = subprocess.Popen([sys.executable, "-m", "cornernet_deploy.cli", "stream",
                                    str(demo_exports["float32"]), url, "--output", str(out), "--threads", "1",
                                    "--reconnect", "2", "--timeout", "2", "--no-progress"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
        try:
            jsonl = next(iter(wait_for(lambda: list(out.glob("*.jsonl")), 60, "the JSON Lines file")))
            wait_for(lambda: jsonl.read_text().count("\n") >= 3, 60, "three frames")
            stop(server)                                  # the camera goes away mid-stream
            start = time.monotonic()
            rc = process.wait(60)
            took = time.monotonic() - start
        finally:
            stop(process)
    err = process.stderr.read().strip().splitlines()
    assert rc == 1, err
    stream = json.loads((out / "summary.json").read_text())["streams"][0]
    assert [line for line in err if line.startswith("error:")] == [
        f"error: {url}: the stream broke off after {stream['frames_decoded']} frames and 2 reconnect attempts "
        f"failed ({url}: cannot open the stream within 2 s (unreachable, refused, or not a video stream))"]
    assert took < 2 * 2 + 0.5 + 1 + 15               # bounded: timeouts + backoff, with slack for load
    assert stream["status"] == "lost" and 3 <= stream["frames_processed"] == len(lines(jsonl))
    assert stream["frames_processed"] + stream["frames_dropped"] == stream["frames_decoded"] < 100


def test_kill_9_leaves_whole_json_lines_and_a_playable_mkv(demo_exports, tmp_path):
    long = write_lossless(tmp_path / "long.mkv", moving_scenes(10, (192, 256), seed=8) * 30)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "cornernet_deploy.cli", "stream", str(demo_exports["float32"]),
                                str(long), "--output", str(out), "--threads", "1", "--no-progress",
                                "--video-format", "mkv"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        jsonl = out / "0-long.jsonl"
        wait_for(lambda: jsonl.is_file() and jsonl.read_text().count("\n") >= 40, 180, "forty JSON lines")
        process.kill()
        assert process.wait(30) == -signal.SIGKILL
    finally:
        stop(process)
    records = lines(jsonl)                         # whole lines only, every one valid JSON
    assert jsonl.read_text().endswith("\n") and [r["frame"] for r in records] == list(range(len(records)))
    assert not (out / "summary.json").exists()
    assert 0 < len(decode_all(out / "0-long.mkv")) <= len(records)     # plays up to where it was cut


def test_overwrite_replaces_only_an_earlier_stream_run(demo_exports, tmp_path, capsys):
    clip = write_lossless(tmp_path / "c.mkv", moving_scenes(3))
    out = tmp_path / "out"
    args = ["stream", demo_exports["float32"], clip, "--output", out, "--no-progress"]
    assert cli(capsys, *args)[0] == 0
    before = sorted(p.name for p in out.iterdir())
    rc, _, err = cli(capsys, *args, "--max-frames", "2")
    assert rc == 2 and "folder is not empty; pass --overwrite" in err[0]
    assert len(lines(out / "0-c.jsonl")) == 3                  # untouched
    assert cli(capsys, *args, "--max-frames", "2", "--overwrite")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == before and len(lines(out / "0-c.jsonl")) == 2
    (out / "notes.txt").write_text("mine")
    rc, _, err = cli(capsys, *args, "--overwrite")
    assert rc == 2 and "holds files a stream run does not write (notes.txt)" in err[0]
    assert (out / "notes.txt").read_text() == "mine" and len(lines(out / "0-c.jsonl")) == 2
