"""compare: matching on hand-built detections with known IoUs, head statistics, tolerances, and
the command on tiny models (identical, plugin vs standard-op export, perturbed copy, graph decode)."""
import json

import numpy as np
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.errors import UserError
from cornernet_deploy.profiling.compare import (TOLERANCES, HeadStats, box_iou_matrix, choose_tolerance,
                                                detection_agreement, match_detections)
from cornernet_deploy.profiling.tensorrt import tensorrt_available
from cornernet_deploy.runtime.detections import Detections

TINY = dict(num_classes=3, width=0.125)


def dets(rows):
    """rows: (x1, y1, x2, y2, score, class)."""
    rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
    cls = rows[:, 5].astype(np.int64)
    return Detections(rows[:, :4], rows[:, 4], cls, [f"c{c}" for c in cls])


# ----------------------------------------------------------------------------------------------
# IoU and matching
# ----------------------------------------------------------------------------------------------

def test_iou_by_hand():
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 5],      # inside, half the area: 50 / 100
         [5, 0, 15, 10],     # half overlap: 50 / 150
         [20, 20, 30, 30],   # disjoint
         [0, 0, 10, 10],     # identical
         [2, 2, 2, 8]]       # zero area
    np.testing.assert_allclose(box_iou_matrix(a, b), [[0.5, 1 / 3, 0.0, 1.0, 0.0]])
    assert box_iou_matrix(np.zeros((0, 4)), b).shape == (0, 5)


def test_matching_threshold_class_and_greedy_order():
    a = dets([[0, 0, 10, 10, 0.9, 0],      # best match B0 (IoU 1) ...
              [0, 0, 10, 8, 0.8, 0],       # ... also overlaps B0 (IoU .8) and B1 (IoU .6)
              [50, 50, 60, 60, 0.7, 1],    # B2 has IoU 0.5 exactly (>= 0.5 matches)
              [80, 80, 90, 90, 0.6, 2]])   # B3 is the same box but another class
    b = dets([[0, 0, 10, 10, 0.85, 0],
              [0, 2, 10, 10, 0.75, 0],     # with A1: inter 6*10=60, union 80+80-60=100 -> 0.6
              [50, 50, 60, 55, 0.65, 1],
              [80, 80, 90, 90, 0.6, 1]])
    m = match_detections(a, b)
    # A0 (highest score) takes B0 first, so A1 falls back to B1
    assert [(i, j) for i, j, _ in m.pairs] == [(0, 0), (1, 1), (2, 2)]
    np.testing.assert_allclose([iou for _, _, iou in m.pairs], [1.0, 0.6, 0.5], rtol=1e-6)
    assert m.unmatched_a == [3] and m.unmatched_b == [3]
    # below the IoU threshold: no match
    m = match_detections(dets([[0, 0, 10, 10, 0.9, 0]]), dets([[0, 0, 10, 4.9, 0.9, 0]]))
    assert m.pairs == [] and m.unmatched_a == [0] and m.unmatched_b == [0]
    # empty sides
    m = match_detections(dets([]), dets([[0, 0, 1, 1, 0.5, 0]]))
    assert m.pairs == [] and m.unmatched_b == [0]


def test_agreement_counts_and_score_floor():
    a = [dets([[0, 0, 10, 10, 0.90, 0], [20, 20, 30, 30, 0.50, 1], [40, 40, 50, 50, 0.11, 2],
               [60, 60, 70, 70, 0.05, 0]])]
    b = [dets([[0, 0, 10, 10, 0.88, 0],        # matched, |d| = 0.02
               [40, 40, 50, 50, 0.09, 2],      # matches A's 0.11: straddles the floor, no miss
               [80, 80, 90, 90, 0.30, 1]])]    # extra
    s = detection_agreement(a, b, min_score=0.1)
    assert (s["count_a"], s["count_b"], s["matched"], s["missed"], s["extra"]) == (3, 2, 2, 1, 1)
    assert s["agreement"] == pytest.approx(1 - 2 / 5)
    assert s["max_score_delta"] == pytest.approx(0.02, abs=1e-6)
    assert s["mean_score_delta"] == pytest.approx(0.02, abs=1e-6)
    assert s["min_iou"] == 1.0
    assert detection_agreement([dets([])], [dets([])])["agreement"] == 1.0


# ----------------------------------------------------------------------------------------------
# head statistics and tolerances
# ----------------------------------------------------------------------------------------------

def test_head_stats_by_hand():
    tol = TOLERANCES["fp32"]
    h = HeadStats("x", tol)
    a = np.array([[1.0, -2.0, 0.0, 4.0]], np.float32)
    b = np.array([[1.0, -2.0002, 0.0, 4.0]], np.float32)
    h.add(a, b)
    s = h.summary()
    assert s["max_abs"] == pytest.approx(2e-4, rel=1e-3)
    assert s["mean_abs"] == pytest.approx(0.5e-4, rel=1e-3)
    assert s["max_rel"] == pytest.approx(2e-4 / 2.0002, rel=1e-3)
    # allowance at a = -2: 1e-4 + 1e-4 * 2 = 3e-4 -> two thirds used
    assert s["tolerance_used"] == pytest.approx(2 / 3, rel=1e-3) and s["within_tolerance"]
    assert s["worst"]["index"] == [0, 1]
    h.add(a, a + np.float32(1.0))
    assert not h.summary()["within_tolerance"]
    # NaN in the same place is equal; on one side only it is an infinite difference
    n = HeadStats("n", tol)
    n.add(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert n.summary()["max_abs"] == 0.0
    n.add(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert n.summary()["max_abs"] == np.inf and not n.summary()["within_tolerance"]
    with pytest.raises(UserError, match="shapes differ"):
        n.add(np.zeros(2), np.zeros(3))


def test_tolerance_profile_choice():
    assert choose_tolerance("auto", ["fp32", "fp32"]).name == "fp32"
    assert choose_tolerance(None, ["fp32", "fp16"]).name == "fp16"
    assert choose_tolerance("fp16", ["fp32", "fp32"]).name == "fp16"
    assert TOLERANCES["fp16"].head_atol > TOLERANCES["fp32"].head_atol
    with pytest.raises(UserError, match="unknown tolerance profile"):
        choose_tolerance("int4", [])


# ----------------------------------------------------------------------------------------------
# the command on tiny models
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.models import build_model, save_checkpoint
    d = tmp_path_factory.mktemp("cmp")
    torch.manual_seed(0)
    model = build_model("cornernet-squeeze", **TINY).eval()
    save_checkpoint(model, d / "tiny.pt")
    save_checkpoint(build_model("cornernet-squeeze", num_classes=5, width=0.125), d / "five.pt")
    for pool in ("plugin", "onnx"):
        export_onnx(model=model, output=d / f"{pool}.onnx", input_size=(127, 127), corner_pool=pool,
                    progress=None, verify=False)
    export_onnx(model=model, output=d / "graph.onnx", input_size=(127, 127), decode="graph",
                progress=None, verify=False)
    export_onnx(model=model, output=d / "big.onnx", input_size=(255, 255), progress=None, verify=False)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    save_checkpoint(model, d / "perturbed.pt")
    return d


def _compare(tmp_path, *argv):
    out = tmp_path / "c.json"
    # --min-score 0: every detection counts, so the detection check is never vacuous
    rc = main(["compare", *map(str, argv), "--num-images", "2", "--min-score", "0", "--json", str(out),
               "--quiet"])
    return rc, (json.loads(out.read_text()) if out.exists() else None)


def test_identical_models_pass_with_zero_differences(tiny, tmp_path, capsys):
    rc, report = _compare(tmp_path, tiny / "plugin.onnx", tiny / "plugin.onnx")
    assert rc == 0 and report["passed"] and report["failures"] == []
    assert set(report["heads"]) == {"tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off"}
    for h in report["heads"].values():
        assert h["max_abs"] == 0.0 and h["mean_abs"] == 0.0 and h["tolerance_used"] == 0.0
    d = report["detections"]
    assert d["count_a"] == d["count_b"] == d["matched"] > 0
    assert d["missed"] == d["extra"] == 0 and d["agreement"] == 1.0 and d["max_score_delta"] == 0.0
    assert "PASS" in capsys.readouterr().out


def test_plugin_and_standard_op_exports_agree_within_fp32_tolerance(tiny, tmp_path):
    rc, report = _compare(tmp_path, tiny / "plugin.onnx", tiny / "onnx.onnx")
    assert rc == 0, report["failures"]
    assert report["tolerance"]["name"] == "fp32"
    assert max(h["max_abs"] for h in report["heads"].values()) <= 1e-4
    assert report["detections"]["matched"] > 0 and report["detections"]["agreement"] == 1.0


def test_checkpoint_against_its_export(tiny, tmp_path):
    rc, report = _compare(tmp_path, tiny / "tiny.pt", tiny / "plugin.onnx")
    assert rc == 0, report["failures"]
    assert report["a"]["backend"] == "torch" and report["b"]["backend"] == "onnxruntime"
    assert report["canvas_hw"] == [127, 127]          # the torch model runs at the export's size


def test_perturbed_copy_fails_with_a_clear_message(tiny, tmp_path, capsys):
    rc, report = _compare(tmp_path, tiny / "tiny.pt", tiny / "perturbed.pt")
    assert rc == 1 and not report["passed"]
    err = capsys.readouterr().err
    fails = [ln for ln in err.splitlines() if ln.startswith("FAIL: ")]
    assert fails and any(ln.startswith("FAIL: head tl_heat: max |b-a|") for ln in fails)
    assert all("exceeds fp32 tolerance" in ln for ln in fails if ln.startswith("FAIL: head"))


def test_graph_decode_model_compares_detections_only(tiny, tmp_path, capsys):
    rc, report = _compare(tmp_path, tiny / "plugin.onnx", tiny / "graph.onnx")
    assert rc == 0, report["failures"]
    assert report["heads"] is None and "graph-decode" in report["note"]
    assert report["detections"]["matched"] > 0
    assert "raw heads not compared" in capsys.readouterr().out


def test_compare_one_line_errors(tiny, tmp_path, capsys):
    cases = [
        (["compare", "nope.onnx", str(tiny / "plugin.onnx")], "nope.onnx: no such file"),
        (["compare", str(tiny / "plugin.onnx"), str(tiny / "plugin.onnx"), "--tolerance-profile", "x"],
         "unknown tolerance profile 'x'"),
        (["compare", str(tiny / "plugin.onnx"), str(tiny / "big.onnx")], "different input sizes"),
        (["compare", str(tiny / "plugin.onnx"), str(tiny / "five.pt")], "not comparable"),
    ]
    for argv, message in cases:
        assert main(argv + ["--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err


TRT_OK, TRT_WHY = tensorrt_available()


@pytest.mark.tensorrt
@pytest.mark.skipif(not TRT_OK, reason=f"TensorRT not available: {TRT_WHY}")
def test_engine_against_onnx(tiny, tmp_path):
    from cornernet_deploy.tensorrt.builder import build_engine
    engine = tmp_path / "tiny.engine"
    build_engine(tiny / "plugin.onnx", engine)
    rc, report = _compare(tmp_path, tiny / "plugin.onnx", engine)
    assert rc == 0, report["failures"]
    assert report["b"]["backend"] == "tensorrt"
