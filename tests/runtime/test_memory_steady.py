"""Memory stays flat over long runs (issue 21, "held in that run": RSS flat over 1000 images and
200 detector open/close cycles). A leak of one image's buffers (~0.2 MB at 160 px) or of one
ONNX Runtime session (~3 MB for the demo model) per call would grow RSS by 160 MB or 450 MB over
the measured stretch; the bound of 24 MB leaves room for the allocator's own settling."""
import gc
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")]

GROWTH_LIMIT_MB = 24


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    pytest.importorskip("torch", reason="the demo export is made from the bundled checkpoint")
    from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
    from cornernet_deploy.exporter import export_onnx
    path = tmp_path_factory.mktemp("memory") / "demo.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=path, verify=False, progress=None)
    return path


@pytest.fixture(scope="module")
def scenes():
    from cornernet_deploy.data.shapes import render_scene
    return [render_scene(i, image_size=((96, 160),), num_objects=(1, 5))[0] for i in range(20)]


def test_rss_is_flat_over_1000_images(demo_export, scenes):
    from cornernet_deploy.runtime.detector import Detector
    detector = Detector.load(demo_export)
    try:
        for i in range(200):                     # warm up: sessions, arenas, caches settle
            detector(scenes[i % len(scenes)])
        gc.collect()
        settled = rss_mb()
        for i in range(800):
            detector(scenes[i % len(scenes)])
        gc.collect()
        grown = rss_mb() - settled
    finally:
        detector.close()
    assert grown < GROWTH_LIMIT_MB, f"RSS grew {grown:.1f} MB over 800 images"


def test_rss_is_flat_over_200_detector_open_close_cycles(demo_export, scenes):
    from cornernet_deploy.runtime.detector import Detector

    def cycle():
        detector = Detector.load(demo_export)
        try:
            detector(scenes[0])
        finally:
            detector.close()
    for _ in range(40):
        cycle()
    gc.collect()
    settled = rss_mb()
    for _ in range(160):
        cycle()
    gc.collect()
    grown = rss_mb() - settled
    assert grown < GROWTH_LIMIT_MB, f"RSS grew {grown:.1f} MB over 160 open/close cycles"
