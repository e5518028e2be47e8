"""``export --input uint8``: the network takes raw BGR pixels and normalises them in its graph.

The truth: the official pre-processing (``core/test/cornernet.py``: ``uint8 / 255.`` in float64
stored as float32, then ``-= mean``, ``/= std`` in float32), restated here in numpy; and the float
export of the same checkpoint, which must give bit-identical heads and detections in ONNX Runtime.
"""
import json

import numpy as np
import onnx
import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.contract.arch import COCO_MEAN_BGR, COCO_STD_BGR
from cornernet_deploy.contract.manifest import EngineManifest
from cornernet_deploy.contract.metadata import parse_metadata
from cornernet_deploy.errors import UserError
from cornernet_deploy.runtime.backends import open_backend
from cornernet_deploy.runtime.pipeline import CornerNetPipeline

torch = pytest.importorskip("torch")

from cornernet_deploy.commands.demo import DEMO_CHECKPOINT  # noqa: E402
from cornernet_deploy.data.shapes import render_scene  # noqa: E402


def official_normalisation(canvas_u8):
    """The official arithmetic on an HxWx3 uint8 canvas -> 3xHxW float32."""
    x = (canvas_u8 / 255.).astype(np.float32).transpose(2, 0, 1)
    x -= np.float32(COCO_MEAN_BGR).reshape(3, 1, 1)
    x /= np.float32(COCO_STD_BGR).reshape(3, 1, 1)
    return x


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from cornernet_deploy.exporter import export_onnx
    root = tmp_path_factory.mktemp("pixels")
    out = {"root": root}
    for dtype in ("float32", "uint8"):
        out[dtype] = root / f"demo_{dtype}.onnx"
        export_onnx(checkpoint=DEMO_CHECKPOINT, output=out[dtype], dynamic_size=True, dynamic_batch=True,
                    input_dtype=dtype, verify=dtype == "uint8", progress=None)
    return out


def test_float32_quotient_of_every_byte_equals_the_float64_one_rounded():
    # the claim the in-graph Div rests on: float32 x/255 == float32(float64 x/255) for x in 0..255
    x = np.arange(256)
    assert np.array_equal(x.astype(np.float32) / np.float32(255), (x / 255.).astype(np.float32))


def test_the_graph_normalises_every_byte_exactly_as_the_official_code(exports):
    model = onnx.load(str(exports["uint8"]))
    nodes = model.graph.node
    assert [n.op_type for n in nodes[:5]] == ["Cast", "Constant", "Div", "Sub", "Div"]
    assert nodes[5].op_type == "Conv" and nodes[5].input[0] == nodes[4].output[0]
    model.graph.output.append(onnx.helper.make_tensor_value_info(nodes[4].output[0], onnx.TensorProto.FLOAT, None))
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    canvas = np.zeros((127, 255, 3), np.uint8)
    rng = np.random.default_rng(0)
    for c in range(3):                        # every byte value in every channel, in some order
        canvas[..., c] = np.resize(rng.permutation(256), (127, 255)).astype(np.uint8)
    got = session.run([nodes[4].output[0]], {"image": canvas.transpose(2, 0, 1)[None].copy()})[0][0]
    expected = official_normalisation(canvas)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("flip", [False, True])
def test_heads_and_detections_are_bit_identical_to_the_float_export(exports, flip):
    floats, pixels = open_backend(exports["float32"], threads=1), open_backend(exports["uint8"], threads=1)
    assert (floats.input_dtype, pixels.input_dtype) == ("float32", "uint8")
    pf, pu = CornerNetPipeline.for_backend(floats), CornerNetPipeline.for_backend(pixels)
    total = 0
    for seed in range(4):
        image = render_scene(2025 + seed, image_size=(150 + 31 * seed, 256), num_objects=(2, 5))[0]
        xf, meta_f = pf.preprocess(image)
        xu, meta_u = pu.preprocess(image)
        assert xu.dtype == np.uint8 and meta_u == meta_f
        # the runtime only resized and padded: the padding is 0, the image the resized pixels
        assert np.array_equal(official_normalisation(xu.transpose(1, 2, 0)), xf)
        heads_f, heads_u = floats.run(xf[None]), pixels.run(xu[None])
        for name in heads_f:
            assert np.array_equal(heads_f[name], heads_u[name]), name
        df, du = pf(image, flip=flip), pu(image, flip=flip)
        assert np.array_equal(df.boxes, du.boxes) and np.array_equal(df.scores, du.scores)
        assert np.array_equal(df.class_ids, du.class_ids)
        total += len(df.filter(0.5))
    assert total >= 4                           # the demo model really detects the shapes


def test_metadata_backends_and_refusals(exports, tmp_path, capsys):
    meta = json.loads(next(p.value for p in onnx.load(str(exports["uint8"])).metadata_props
                           if p.key == "cornernet_deploy"))
    assert meta["input_dtype"] == "uint8" and parse_metadata(meta).input_dtype == "uint8"
    older = {k: v for k, v in meta.items() if k != "input_dtype"}      # files from before the option
    assert parse_metadata(older).input_dtype == "float32"
    with pytest.raises(UserError, match="input_dtype 'float16'; expected one of float32, uint8"):
        parse_metadata({**meta, "input_dtype": "float16"}, "m.onnx")

    pixels = open_backend(exports["uint8"])
    with pytest.raises(UserError, match="takes uint8 input .* got a float32 batch"):
        pixels.run(np.zeros((1, 3, 127, 127), np.float32))
    with pytest.raises(UserError, match="takes float32 input .* got a uint8 batch"):
        open_backend(exports["float32"]).run(np.zeros((1, 3, 127, 127), np.uint8))
    with pytest.raises(UserError, match="normalises its uint8 input inside its graph"):
        CornerNetPipeline.for_backend(pixels, mean=(0.5, 0.5, 0.5))

    # metadata that contradicts the graph: refused when opened, not garbage later
    model = onnx.load(str(exports["float32"]))
    for prop in model.metadata_props:
        if prop.key == "cornernet_deploy":
            prop.value = json.dumps({**json.loads(prop.value), "input_dtype": "uint8"})
    onnx.save(model, str(tmp_path / "lying.onnx"))
    with pytest.raises(UserError, match="metadata says the network takes uint8 input, but its graph input is tensor.float."):
        open_backend(tmp_path / "lying.onnx")

    # CornerNet-Saccade cuts float crops: one line, exit 2, nothing written
    assert main(["export", "--arch", "cornernet-saccade", "--input", "uint8",
                 "--output", str(tmp_path / "s.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: CornerNet-Saccade cannot take uint8 input") and "\n" not in err
    assert not (tmp_path / "s.onnx").exists()


def test_quantize_calibrates_on_pixels_and_compare_passes(exports, tmp_path):
    from cornernet_deploy.data.shapes import generate_shapes_dataset
    from cornernet_deploy.profiling.compare import compare_backends
    from cornernet_deploy.contract.agreement import TOLERANCES
    from cornernet_deploy.quantize import _CalibrationReader, quantize_onnx

    generate_shapes_dataset(tmp_path / "calib", 3, seed=5, image_size=((128, 200),), num_objects=(1, 4))
    paths = sorted((tmp_path / "calib" / "images").iterdir())
    meta = parse_metadata({**json.loads(next(p.value for p in onnx.load(str(exports["uint8"])).metadata_props
                                             if p.key == "cornernet_deploy")), "batch": 2})
    reader = _CalibrationReader(paths, meta)
    first, second = reader.get_next()["image"], reader.get_next()["image"]
    assert first.dtype == second.dtype == np.uint8
    assert not second[1].any()                  # the short batch is padded with black pixels: 0

    result = quantize_onnx(exports["uint8"], [str(tmp_path / "calib" / "images")], tmp_path / "q.onnx",
                           progress=None, show_bar=False)
    quantized = onnx.load(str(result.path))
    assert quantized.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert parse_metadata(result.metadata).input_dtype == "uint8"

    images = [render_scene(3000 + k, image_size=(160, 200), num_objects=(2, 4))[0] for k in range(3)]
    floats, pixels = open_backend(exports["float32"]), open_backend(exports["uint8"])
    report = compare_backends(floats, pixels, images, TOLERANCES["fp32"])
    assert report["passed"] and all(h["max_abs"] == 0.0 for h in report["heads"].values())
    int8 = open_backend(result.path)
    assert compare_backends(floats, int8, images, TOLERANCES["int8"])["detections"]["count_b"] > 0


def test_profile_runs_pixel_input_models(exports):
    from cornernet_deploy.profiling.profile import profile_backends
    images = [render_scene(k, image_size=(128, 128))[0] for k in range(2)]
    rows = profile_backends([open_backend(exports["float32"]), open_backend(exports["uint8"])], images,
                            warmup=0, iters=2)
    assert rows[0].detections_per_image == rows[1].detections_per_image > 0


def test_triton_engine_config_declares_uint8_input(exports):
    from cornernet_deploy.serving.repository import tensorrt_model_config
    meta = json.loads(next(p.value for p in onnx.load(str(exports["uint8"])).metadata_props
                           if p.key == "cornernet_deploy"))
    manifest = EngineManifest.from_dict({
        "format": 1, "tensorrt_version": "10.3.0", "precision": "fp32", "gpu": {},
        "input": {"name": "image", "min": [1, 3, 255, 255], "opt": [4, 3, 255, 255], "max": [4, 3, 255, 255]},
        "outputs": meta["outputs"], "metadata": {**meta, "input_hw": [255, 255]}})
    assert manifest.metadata.input_dtype == "uint8"
    text = tensorrt_model_config("n_net", manifest, 1, 100)
    assert '{ name: "image" data_type: TYPE_UINT8 dims: [ 3, 255, 255 ] }' in text
