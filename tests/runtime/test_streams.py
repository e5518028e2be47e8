"""The streams runtime (runtime/streams): sources, the staged runner, its Python API.

Truth: the frames written into lossless videos by the test, and the detections the pipeline gives
for each of them one at a time (``Detector.__call__``, what ``infer`` runs)."""
import threading

import cv2
import numpy as np
import pytest

from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime.detector import Detector
from cornernet_deploy.runtime.streams import StreamRun, default_batch_size, detect_streams, parse_source

from stream_servers import moving_scenes, wait_for, write_lossless


def same(a, b) -> bool:
    return (np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.class_ids, b.class_ids))


def test_parse_source_tells_files_cameras_urls_and_pipelines(tmp_path):
    clip = tmp_path / "my clip.mkv"
    clip.write_bytes(b"x")
    assert (parse_source(clip).kind, parse_source(clip).live, parse_source(clip).name) == ("file", False, "my-clip")
    assert parse_source(f"file://{clip}").target == str(clip)
    cam = parse_source("0")
    assert (cam.kind, cam.target, cam.live, cam.name) == ("camera", 0, True, "camera0")
    assert parse_source("/dev/video2").kind == "camera"
    url = parse_source("rtsp://user:secret@10.0.0.5:554/live/main")
    assert (url.kind, url.live, url.reconnects) == ("url", True, True)
    assert "secret" not in url.name and url.name == "rtsp-10.0.0.5-554-live-main"
    # the connection gets the password; what is shown or written does not
    assert url.target == "rtsp://user:secret@10.0.0.5:554/live/main"
    assert url.text == "rtsp://user:***@10.0.0.5:554/live/main" and "secret" not in repr(url)
    gst = parse_source("v4l2src ! videoconvert ! appsink")
    assert (gst.kind, gst.live) == ("gstreamer", True)
    for text, message in (("missing.mp4", "missing.mp4: no such file"), ("gopher://x/y", "unknown URL scheme 'gopher'"),
                          (str(tmp_path), "is a folder"), ("", "empty source")):
        with pytest.raises(UserError, match=message):
            parse_source(text)


@pytest.mark.parametrize("given, shown", [
    ("rtsp://admin:p@ss:w0rd@cam.local/ch1", "rtsp://admin:***@cam.local/ch1"),     # "@" unencoded
    ("rtsp://admin:pw@cam/stream?x=a@b", "rtsp://admin:***@cam/stream?x=a@b"),       # "@" in the query
    ("http://viewer:@cam/feed", "http://viewer:***@cam/feed"),
    ("rtsp://cam/cam/realmonitor?channel=1&user=admin&password=pw1&subtype=0",
     "rtsp://cam/cam/realmonitor?channel=1&user=admin&password=***&subtype=0"),
    ("https://cdn/live.m3u8?Token=abc&start=5", "https://cdn/live.m3u8?Token=***&start=5"),
    ("rtspsrc location=rtsp://u:pw@cam/x user-id=u user-pw=hunter2 ! decodebin ! appsink",
     "rtspsrc location=rtsp://u:***@cam/x user-id=u user-pw=*** ! decodebin ! appsink"),
    ("rtsp://user@cam/live", "rtsp://user@cam/live"),                               # no password
    ("udp://239.0.0.1:1234", "udp://239.0.0.1:1234"),
])
def test_passwords_in_sources_are_hidden_wherever_they_are_shown(given, shown):
    spec = parse_source(given)
    assert (spec.text, spec.target) == (shown, given)
    for secret in ("p@ss:w0rd", "pw1", "abc", "hunter2", ":pw@"):
        assert secret not in spec.name and (secret not in given or secret not in spec.text)
    if "@" in given.split("/")[2]:                          # a URL's user name stays out of file names
        assert given.split("//")[1].split(":")[0].split("@")[0] not in spec.name


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three lossless clips of different lengths and sizes, and their frames."""
    root = tmp_path_factory.mktemp("clips")
    frames = {"a": moving_scenes(9, (192, 256), seed=0), "b": moving_scenes(14, (160, 200), seed=100),
              "c": moving_scenes(5, (192, 256), seed=200)}
    return {name: (write_lossless(root / f"{name}.mkv", f), f) for name, f in frames.items()}


def test_every_frame_in_order_with_the_detections_of_that_frame_alone(demo_exports, clips):
    detector = Detector.load(demo_exports["uint8"], threads=1)
    paths = [clips[n][0] for n in "abc"]
    truth = {k: clips[n][1] for k, n in enumerate("abc")}
    seen = {k: [] for k in truth}
    with StreamRun(detector.pipeline, paths, batch_size=3) as run:
        for r in run:
            assert np.array_equal(r.image, truth[r.stream][r.index])       # lossless: the written frame
            assert same(r.detections, detector(truth[r.stream][r.index]))
            assert r.source == str(paths[r.stream]) and r.timestamp == pytest.approx(r.index / 10)
            seen[r.stream].append(r.index)
    assert seen == {k: list(range(len(f))) for k, f in truth.items()}
    assert [(s.status, s.decoded, s.processed, s.dropped) for s in run.states] == \
        [("ended", len(truth[k]), len(truth[k]), 0) for k in range(3)]
    # frames of several streams went through the network together (a and c share a size)
    assert run.stats.network_frames > run.stats.network_calls
    assert max(run.stats.batches) > 1


def test_float_and_pixel_models_give_the_same_stream(demo_exports, clips):
    results = []
    for dtype in ("float32", "uint8"):
        with detect_streams(demo_exports[dtype], [clips["b"][0]], threads=1) as run:
            results.append([(r.index, r.detections) for r in run])
    assert len(results[0]) == len(results[1]) == len(clips["b"][1])
    assert all(i == j and same(a, b) for (i, a), (j, b) in zip(*results))


def test_default_batch_follows_the_model(demo_exports, tmp_path):
    pipeline = Detector.load(demo_exports["float32"]).pipeline
    assert default_batch_size(pipeline, 3) == 3                 # dynamic batch: one per stream
    pipeline.max_batch, pipeline.static_batch = 2, False
    assert default_batch_size(pipeline, 3) == 2
    pipeline.max_batch, pipeline.static_batch = 4, True
    assert default_batch_size(pipeline, 1) == 4                 # a fixed batch is padded anyway


def _stream_threads():
    return [t for t in threading.enumerate() if t.name.startswith("stream-")]


def test_leaving_the_loop_early_releases_sources_and_threads(demo_exports, clips):
    run = detect_streams(demo_exports["float32"], [clips["a"][0], clips["b"][0]], threads=1)
    with run:
        for k, _ in enumerate(run):
            if k == 2:
                break
    wait_for(lambda: not _stream_threads(), 20, "the stream threads to end")
    assert all(s.capture is None for s in run.sources)


def test_stop_delivers_every_frame_already_read(demo_exports, clips):
    with detect_streams(demo_exports["float32"], [clips["b"][0]], threads=1, queue_size=2) as run:
        got = []
        for r in run:
            got.append(r.index)
            if len(got) == 3:
                run.stop()
    state = run.states[0]
    assert state.status == "stopped" and 3 <= state.processed == state.decoded < len(clips["b"][1])
    assert got == list(range(state.processed))


def test_a_frame_the_model_cannot_take_ends_the_run_with_one_line(demo_exports, tmp_path):
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    fixed = tmp_path / "fixed.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=fixed, input_size="127x127", verify=False, progress=None)
    thin = write_lossless(tmp_path / "thin.mkv", [np.full((4, 2000, 3), 128, np.uint8)] * 3)
    with pytest.raises(UserError, match=r"thin.mkv frame 0: .*too elongated") as info:
        with detect_streams(fixed, [thin]) as run:
            list(run)
    assert "\n" not in str(info.value)
    wait_for(lambda: not _stream_threads(), 20, "the stream threads to end")


def test_sources_that_cannot_be_opened_are_refused_before_anything_runs(demo_exports, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all " * 50)
    with pytest.raises(UserError, match="notes.mp4: not a video OpenCV's FFmpeg can decode"):
        detect_streams(demo_exports["float32"], [bad])
    with pytest.raises(UserError, match=r"camera 9: cannot open it \(no such camera"):
        detect_streams(demo_exports["float32"], ["9"])
    if not cv2.getBuildInformation().count("GStreamer:                   YES"):
        with pytest.raises(UserError, match="has no GStreamer support .*PyPI wheels have none"):
            detect_streams(demo_exports["float32"], ["videotestsrc ! appsink"])
