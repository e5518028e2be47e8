"""`cornernet-deploy quantize`: INT8 Q/DQ models calibrated through the runtime's pre-processing.

The references are independent of the quantizer: the FP32 export (itself checked against PyTorch
and the official pipeline elsewhere), ONNX Runtime's own BatchNormalization, hand-computed
normalisation values, and the ONNX graph the TensorRT Q/DQ rules ask for.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from cornernet_deploy.cli import main
from cornernet_deploy.data import generate_shapes_dataset
from cornernet_deploy.data.shapes import render_scene
from cornernet_deploy.onnx_function import DOMAIN, OP_TYPE
from cornernet_deploy.contract.metadata import METADATA_KEY

pytest.importorskip("onnxruntime.quantization")
torch = pytest.importorskip("torch")

DEMO = Path(__file__).resolve().parents[2] / "cornernet_deploy" / "assets" / "demo_squeeze_shapes.pt"
CALIB_IMAGES = 8          # a few suffice to test; the measured model uses 100 (docs/int8.md)
CALIB_SEED = 2024         # the demo model's training split (scripts/train_demo_model.py)
HELD_OUT_SEED = 2025      # its held-out split: never used for calibration
HEAD_CONVS = sorted(f"/model/{h}s.0/{h}s.0.1/Conv" for h in
                    ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off"))


def _metadata(model) -> dict:
    return json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The demo model exported with --dynamic-size (the export that reproduces the official
    accuracy), its graph-decode twin, a calibration set, and both quantized."""
    from cornernet_deploy.exporter import export_onnx
    from cornernet_deploy.quantize import quantize_onnx

    root = tmp_path_factory.mktemp("int8")
    generate_shapes_dataset(root / "calib", CALIB_IMAGES, seed=CALIB_SEED, image_size=((128, 256),),
                            num_objects=(1, 5))
    out = {"root": root, "calib": root / "calib" / "images"}
    for decode in ("none", "graph"):
        fp32 = root / f"demo_{decode}.onnx"
        export_onnx(checkpoint=str(DEMO), output=fp32, dynamic_size=True, decode=decode, progress=None)
        out[decode] = fp32
        out[f"{decode}_int8"] = quantize_onnx(fp32, [str(out["calib"])], root / f"demo_{decode}_int8.onnx",
                                              progress=None, show_bar=False)
    return out


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _inits(model):
    return {t.name: t for t in model.graph.initializer}


# ----------------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------------

# Documented tolerance (measured on the 200 held-out scenes, 100 calibration images: agreement
# 0.976 from score 0.3, mean |score delta| 0.011, p95 0.017, max 0.53 where INT8 moves a near-tied
# corner pairing): agreement >= 0.9 from score 0.3, mean |score delta| <= 0.03, max <= 0.6 (the
# `int8` tolerance profile of `compare`).
MIN_AGREEMENT, MAX_MEAN_DELTA, MAX_DELTA = 0.9, 0.03, 0.6


def _agreement(fp32_path, int8_path, seeds):
    from cornernet_deploy.profiling.compare import DetectionStats
    from cornernet_deploy.runtime import Detector

    fp32, int8 = Detector.load(fp32_path), Detector.load(int8_path)
    stats = DetectionStats(min_score=0.3)
    for seed in seeds:
        image = render_scene((HELD_OUT_SEED, seed), image_size=((128, 256),), num_objects=(1, 5))[0]
        stats.add(fp32(image), int8(image))
    summary = stats.summary()
    assert summary["count_a"] >= len(seeds)          # the scenes hold objects the model finds
    assert summary["agreement"] >= MIN_AGREEMENT, summary
    assert summary["mean_score_delta"] <= MAX_MEAN_DELTA, summary
    assert summary["max_score_delta"] <= MAX_DELTA, summary
    assert summary["min_iou"] >= 0.5


def test_int8_detections_agree_with_fp32_on_held_out_scenes(work):
    """IoU-matched within class (``compare``'s matching) on held-out scenes (the val seed)."""
    _agreement(work["none"], work["none_int8"].path, range(12))


def test_graph_decode_int8_agrees_with_its_fp32(work):
    _agreement(work["graph"], work["graph_int8"].path, range(100, 106))


def test_int8_map_close_to_fp32_on_held_out_scenes(work):
    """COCO mAP@0.5 with pycocotools on 30 held-out scenes (the first 30 of the demo model's val
    split); measured with 8 calibration images: AP50 0.950 -> 0.941, AP 0.825 -> 0.812."""
    pytest.importorskip("pycocotools")
    from cornernet_deploy.evaluation import evaluate
    from cornernet_deploy.runtime import Detector

    val = generate_shapes_dataset(work["root"] / "val", 30, seed=HELD_OUT_SEED, image_size=((128, 256),),
                                  num_objects=(1, 5))
    fp32 = evaluate(Detector.load(work["none"]), val, val.parent / "images", progress=False)
    int8 = evaluate(Detector.load(work["none_int8"].path), val, val.parent / "images", progress=False)
    assert fp32["AP50"] > 0.8                        # a model worth comparing
    assert int8["AP50"] >= fp32["AP50"] - 0.03, (fp32["AP50"], int8["AP50"])
    assert int8["AP"] >= fp32["AP"] - 0.03, (fp32["AP"], int8["AP"])


# ----------------------------------------------------------------------------------------------
# Q/DQ structure
# ----------------------------------------------------------------------------------------------

def _check_quantized_conv(conv, producer, inits):
    """Activation Q -> DQ into input 0 (per tensor); weights through Q -> DQ per output channel
    into input 1; int8, zero points 0 (symmetric); bias still a float32 initializer (TensorRT
    takes no int32 DequantizeLinear)."""
    def pair(tensor):
        dq = producer[tensor]
        assert dq.op_type == "DequantizeLinear", conv.name
        q = producer[dq.input[0]]
        assert q.op_type == "QuantizeLinear", conv.name
        assert list(q.input[1:]) == list(dq.input[1:])
        zero = inits[q.input[2]]
        assert zero.data_type == TensorProto.INT8 and np.all(numpy_helper.to_array(zero) == 0)
        return q, numpy_helper.to_array(inits[q.input[1]])

    q, scale = pair(conv.input[0])
    assert scale.size == 1
    wq, wscale = pair(conv.input[1])
    weight = inits[wq.input[0]]
    assert weight.data_type == TensorProto.FLOAT
    axis = next((a.i for a in wq.attribute if a.name == "axis"), 1)
    out_axis = 0 if conv.op_type == "Conv" else 1
    assert axis == out_axis and wscale.size == weight.dims[out_axis], conv.name
    # symmetric per channel: the largest |w| of each channel maps to 127 (TensorRT's weight range)
    w = np.moveaxis(numpy_helper.to_array(weight), out_axis, 0).reshape(wscale.size, -1)
    wmax = np.abs(w).max(axis=1)
    live = wmax > 0                                   # an all-zero channel gets scale 1
    np.testing.assert_allclose(wmax[live] / 127, wscale[live], rtol=1e-5)
    if len(conv.input) > 2:
        assert conv.input[2] in inits and inits[conv.input[2]].data_type == TensorProto.FLOAT


def test_every_convolution_is_quantized_and_corner_pool_stays_float(work):
    fp32, int8 = onnx.load(str(work["none"])), onnx.load(str(work["none_int8"].path))
    producer, inits = _producers(int8), _inits(int8)
    convs = [n for n in int8.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == sum(n.op_type in ("Conv", "ConvTranspose") for n in fp32.graph.node) == 93
    for conv in convs:
        _check_quantized_conv(conv, producer, inits)
    # Q/DQ only on what convolutions read: every DequantizeLinear feeds a convolution (its other
    # consumers, residual Adds and Concats, see the same quantized values)
    for node in int8.graph.node:
        if node.op_type == "DequantizeLinear":
            users = [n for n in int8.graph.node if node.output[0] in n.input]
            assert any(u.op_type in ("Conv", "ConvTranspose") for u in users), node.name
            assert {u.op_type for u in users} <= {"Conv", "ConvTranspose", "Add", "Concat"}, node.name
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert node.domain in ("", "ai.onnx")
    # the fire modules' BatchNormalization was folded into the convolutions
    assert not any(n.op_type == "BatchNormalization" for n in int8.graph.node)
    # corner pools: same nodes, float inputs (not dequantized), body untouched
    pools = [n for n in int8.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN]
    ref_pools = [n for n in fp32.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN]
    assert [(p.name, p.attribute) for p in pools] == [(p.name, p.attribute) for p in ref_pools]
    for pool in pools:
        assert all(producer[i].op_type not in ("DequantizeLinear", "QuantizeLinear") for i in pool.input)
    assert [f.SerializeToString() for f in int8.functions] == [f.SerializeToString() for f in fp32.functions]
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for f in int8.functions for n in f.node)
    # outputs are float, straight from the head convolutions' Cast
    assert all(producer[o.name].op_type == "Cast" for o in int8.graph.output)
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in int8.graph.output)


def test_in_graph_decode_stays_float(work):
    int8 = onnx.load(str(work["graph_int8"].path))
    producer = _producers(int8)
    decode_ops = [n for n in int8.graph.node if n.op_type in ("Sigmoid", "MaxPool", "TopK", "Gather")]
    assert {n.op_type for n in decode_ops} == {"Sigmoid", "MaxPool", "TopK", "Gather"}
    for node in decode_ops:
        for name in node.input:
            if name in producer:
                assert producer[name].op_type not in ("DequantizeLinear", "QuantizeLinear"), node.name


def test_float_heads_keeps_the_last_head_convolutions_float(work, tmp_path):
    from cornernet_deploy.quantize import head_output_convs, quantize_onnx

    assert head_output_convs(onnx.load(str(work["none"]))) == HEAD_CONVS
    assert head_output_convs(onnx.load(str(work["graph"]))) == HEAD_CONVS
    result = quantize_onnx(work["none"], [str(work["calib"])], tmp_path / "fh.onnx", num_images=2,
                           float_heads=True, progress=None, show_bar=False)
    model = onnx.load(str(result.path))
    producer, inits = _producers(model), _inits(model)
    for conv in model.graph.node:
        if conv.op_type not in ("Conv", "ConvTranspose"):
            continue
        if conv.name in HEAD_CONVS:
            assert producer[conv.input[0]].op_type == "Relu" and conv.input[1] in inits
        else:
            _check_quantized_conv(conv, producer, inits)
    assert result.metadata["quantization"]["float_nodes"] == HEAD_CONVS


def test_batchnorm_folding_is_exact(work):
    """The folded float model against ONNX Runtime running the original BatchNormalization."""
    import onnxruntime as ort

    from cornernet_deploy.quantize import fold_batchnorm_after_concat

    model = onnx.load(str(work["none"]))
    folded = onnx.load(str(work["none"]))
    assert fold_batchnorm_after_concat(folded) == 20
    assert fold_batchnorm_after_concat(folded) == 0          # nothing left to fold
    onnx.checker.check_model(folded, full_check=True)
    x = np.random.default_rng(0).normal(0, 1, (1, 3, 127, 255)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})  # noqa: E731
    for a, b in zip(run(model), run(folded)):
        assert np.max(np.abs(a - b)) <= 1e-4 * max(1.0, np.abs(a).max())


def test_calibration_batches_use_the_runtime_preprocessing(work):
    """Static batch 2, three images: the pre-processed tensors of the runtime, then a black canvas
    ((0 - mean) / std per channel, computed here by hand)."""
    import cv2

    from cornernet_deploy.quantize import _CalibrationReader
    from cornernet_deploy.contract.metadata import parse_metadata
    from cornernet_deploy.runtime.preprocess import preprocess

    meta = dict(_metadata(onnx.load(str(work["none"]))), input_hw=[127, 127], batch=2)
    paths = sorted(work["calib"].iterdir())[:3]
    reader = _CalibrationReader(paths, parse_metadata(meta))
    assert len(reader) == 2
    batches = [reader.get_next()["image"] for _ in range(2)]
    assert reader.get_next() is None
    spec = parse_metadata(meta).spec
    for k, path in enumerate(paths):
        expected, _ = preprocess(cv2.imread(str(path)), spec, 1.0, (127, 127), meta["mean"], meta["std"])
        np.testing.assert_array_equal(batches[k // 2][k % 2], expected)
    black = (0.0 - np.float32(meta["mean"])) / np.float32(meta["std"])
    np.testing.assert_allclose(batches[1][1], np.broadcast_to(black[:, None, None], (3, 127, 127)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# metadata, files
# ----------------------------------------------------------------------------------------------

def test_metadata_records_int8_and_the_calibration(work):
    from cornernet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    fp32_meta = _metadata(onnx.load(str(work["none"])))
    meta = _metadata(onnx.load(str(work["none_int8"].path)))
    assert meta["precision"] == "int8"
    q = meta["quantization"]
    assert q["method"] == "minmax" and q["images"] == CALIB_IMAGES
    assert q["source"] == [str(work["calib"])]
    assert q["from"] == {"file": work["none"].name,
                         "sha256": hashlib.sha256(work["none"].read_bytes()).hexdigest()}
    assert q["folded_batchnorms"] == 20 and q["float_nodes"] == []
    assert q["tool"].startswith("onnxruntime.quantization ")
    same = {k: v for k, v in fp32_meta.items() if k not in ("precision",)}
    assert {k: meta[k] for k in same} == same            # everything the runtime needs is unchanged
    backend = OnnxRuntimeBackend(work["none_int8"].path)
    assert backend.precision == "int8" and backend.input_hw is None
    onnx.checker.check_model(onnx.load(str(work["none_int8"].path)), full_check=True)


def test_num_images_picks_evenly_spaced_files(work):
    from cornernet_deploy.quantize import select_calibration_images

    files = sorted(work["calib"].iterdir())
    assert select_calibration_images([str(work["calib"])], 3) == [files[0], files[4], files[7]]
    assert select_calibration_images([str(work["calib"])], 100) == files
    assert select_calibration_images([str(work["calib"] / "00000[01].png")], 5) == files[:2]


def test_quantize_cli_writes_the_model_and_reports(work, tmp_path, capsys):
    out = tmp_path / "cli_int8.onnx"
    rc = main(["quantize", str(work["none"]), "--calib", str(work["calib"]), "--num-images", "2",
               "--method", "percentile", "--percentile", "99.9", "--output", str(out), "--no-progress"])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "2 image(s) (percentile)" in text and "max abs difference vs FP32" in text
    q = _metadata(onnx.load(str(out)))["quantization"]
    assert (q["method"], q["percentile"], q["images"]) == ("percentile", 99.9, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli_int8.onnx"]   # no temporary left


def test_default_output_is_next_to_the_model(work, tmp_path):
    import shutil

    from cornernet_deploy.quantize import quantize_onnx

    src = tmp_path / "m.onnx"
    shutil.copy(work["none"], src)
    result = quantize_onnx(src, [str(work["calib"])], num_images=1, method="entropy", verify=False,
                           progress=None, show_bar=False)
    assert result.path == tmp_path / "m_int8.onnx" and result.path.is_file()


def test_nothing_is_written_when_verification_fails(work, tmp_path, monkeypatch):
    import cornernet_deploy.quantize as quantize

    def broken(model_bytes, x, input_name):
        raise RuntimeError("boom")

    monkeypatch.setattr(quantize, "_run_outputs", broken)
    with pytest.raises(RuntimeError, match="boom"):
        quantize.quantize_onnx(work["none"], [str(work["calib"])], tmp_path / "x.onnx", num_images=1,
                               progress=None, show_bar=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# user mistakes: one line, exit 2, nothing written
# ----------------------------------------------------------------------------------------------

def _fails(args, capsys, *expected):
    rc = main(["quantize", *args, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for e in expected:
        assert e in err, err
    return err


def test_bad_calibration_sets(work, tmp_path, capsys):
    model, out = str(work["none"]), tmp_path / "out" / "x.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails([model, "--calib", str(empty), "--output", str(out)], capsys, "calibration set", "holds no images")
    _fails([model, "--calib", str(tmp_path / "missing"), "--output", str(out)], capsys, "no such file or folder")
    _fails([model, "--calib", str(tmp_path / "*.jpg"), "--output", str(out)], capsys, "matches no files")
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(render_scene(i, 64)[0].tobytes()[:100])   # not a PNG
    _fails([model, "--calib", str(bad), "--output", str(out)], capsys, "calibration image", "0.png", "cannot decode")
    (bad / "0.png").write_bytes(b"")
    _fails([model, "--calib", str(bad / "0.png"), "--output", str(out)], capsys, "0.png", "empty (0 bytes), not an image")
    for flag, value, message in (("--num-images", "0", "must be at least 1, got 0"),
                                 ("--percentile", "0", "must be greater than 0, got 0")):
        with pytest.raises(SystemExit) as exc:       # argparse: a usage error, exit 2
            main(["quantize", model, "--calib", str(work["calib"]), flag, value, "--output", str(out)])
        assert exc.value.code == 2
        assert f"argument {flag}: {message}" in capsys.readouterr().err
    _fails([model, "--calib", str(work["calib"]), "--method", "percentile", "--percentile", "101",
            "--output", str(out)], capsys, "--percentile lies in (0, 100]")
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_bad_models(work, tmp_path, capsys):
    calib = str(work["calib"])
    _fails([str(tmp_path / "none.onnx"), "--calib", calib], capsys, "no such ONNX file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    _fails([str(garbage), "--calib", calib], capsys, "is not an ONNX model")
    foreign = onnx.load(str(work["none"]))
    del foreign.metadata_props[:]
    onnx.save(foreign, str(tmp_path / "foreign.onnx"))
    _fails([str(tmp_path / "foreign.onnx"), "--calib", calib], capsys, "not exported by cornernet-deploy")
    _fails([str(work["none_int8"].path), "--calib", calib], capsys, "already an INT8 model")
    fp16 = onnx.load(str(work["none"]))
    meta = dict(_metadata(fp16), precision="fp16")
    del fp16.metadata_props[:]
    onnx.helper.set_model_props(fp16, {METADATA_KEY: json.dumps(meta)})
    onnx.save(fp16, str(tmp_path / "fp16.onnx"))
    _fails([str(tmp_path / "fp16.onnx"), "--calib", calib], capsys, "fp16 export", "FP32 export")
    _fails([str(work["none"]), "--calib", calib, "--output", str(work["none"])], capsys, "is the input model")
    _fails([str(work["none"]), "--calib", calib, "--output", str(tmp_path)], capsys, "is a folder")


# ----------------------------------------------------------------------------------------------
# the INT8 model downstream
# ----------------------------------------------------------------------------------------------

def test_build_int8_needs_a_quantized_model(work, capsys):
    rc = main(["build", str(work["none"]), "--precision", "int8"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "is a float model" in err and f"cornernet-deploy quantize {work['none']} --calib" in err
    for precision in ("fp32", "fp16"):
        rc = main(["build", str(work["none_int8"].path), "--precision", precision])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "INT8 (Q/DQ) model; build it with --precision int8" in err, err


def test_compare_picks_the_int8_profile_and_passes_the_demo_model(work, tmp_path):
    from cornernet_deploy.profiling.compare import choose_tolerance

    assert choose_tolerance(None, ["fp32", "int8"]).name == "int8"
    assert choose_tolerance("auto", ["int8", "fp16"]).name == "int8"
    assert choose_tolerance(None, ["fp32", "fp16"]).name == "fp16"
    report = tmp_path / "cmp.json"
    rc = main(["compare", str(work["none"]), str(work["none_int8"].path), "--json", str(report), "--quiet"])
    data = json.loads(report.read_text())
    assert data["tolerance"]["name"] == "int8" and data["b"]["precision"] == "int8"
    assert rc == 0 and data["passed"], data["failures"]
    # the same pair is far outside the fp16 allowances: the profile is what makes it pass
    assert main(["compare", str(work["none"]), str(work["none_int8"].path), "--tolerance-profile", "fp16",
                 "--quiet"]) == 1


def test_quantize_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, cornernet_deploy.quantize; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
