"""The contract package: the op identity agrees with the C++ plugin, the export metadata is read
(and checked) in one place, the engine manifest round-trips, and the layering holds."""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cornernet_deploy.contract.arch import get_arch
from cornernet_deploy.contract.manifest import EngineManifest, manifest_path
from cornernet_deploy.contract.metadata import (GRAPH_OUTPUTS, RAW_OUTPUTS, build_metadata,
                                                parse_metadata)
from cornernet_deploy.contract.op import CORNER_POOL, PLUGIN_LIBRARY_NAME, PLUGIN_VERSION_TAG
from cornernet_deploy.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cornernet_deploy"
PLUGIN = ROOT / "plugins"


# ------------------------------------------------------------------------------------------------
# the op identity: Python and C++ name the same op

def _cpp_string(source: str, name: str) -> str:
    m = re.search(rf'\b{name}\b\s*(?:\[\])?\s*=\s*"([^"]*)"', source)
    assert m, f"{name} not found"
    return m.group(1)


def test_the_plugin_header_names_the_op_the_contract_names():
    header = (PLUGIN / "cornerPoolPlugin" / "cornerPoolPlugin.h").read_text()
    source = (PLUGIN / "cornerPoolPlugin" / "cornerPoolPlugin.cpp").read_text()
    assert _cpp_string(header, "kCornerPoolName") == CORNER_POOL.plugin_name == CORNER_POOL.op_type
    assert _cpp_string(header, "kCornerPoolVersion") == CORNER_POOL.plugin_version
    assert _cpp_string(header, "kCornerPoolNamespace") == CORNER_POOL.plugin_namespace == CORNER_POOL.domain
    assert _cpp_string(header, "kModeField") == CORNER_POOL.mode_attribute
    # the enum's order is the kINT32 form of the field: kTopLeft = 0, kBottomRight = 1
    enum = re.search(r"enum class CornerPoolMode[^{]*\{([^}]*)\}", header).group(1)
    values = dict(re.findall(r"(k\w+)\s*=\s*(\d+)", enum))
    names = {"kTopLeft": _cpp_string(source, "kTopLeftName"),
             "kBottomRight": _cpp_string(source, "kBottomRightName")}
    assert tuple(names[k] for k in sorted(values, key=lambda k: int(values[k]))) == CORNER_POOL.modes


def test_the_plugin_library_is_named_and_tagged_as_the_contract_says():
    cmake = (PLUGIN / "CMakeLists.txt").read_text()
    assert f"add_library({PLUGIN_LIBRARY_NAME[3:-3]} SHARED" in cmake      # lib<name>.so
    tag_prefix = _cpp_string((PLUGIN / "cornernetDeployPlugins.cpp").read_text(), "kHeadersTag")
    assert re.fullmatch(PLUGIN_VERSION_TAG, (tag_prefix + "10.3.0").encode())


# ------------------------------------------------------------------------------------------------
# the export metadata: one reader, every field checked

SQUEEZE = get_arch("cornernet-squeeze")


def _metadata(**changes):
    meta = build_metadata(SQUEEZE, (511, 511), 1, "none", "plugin", "fp32", dynamic_size=False)
    meta.update(changes)
    return meta


def test_what_the_writer_writes_the_reader_reads():
    meta = parse_metadata(json.dumps(_metadata()), "m.onnx")
    assert meta.spec == SQUEEZE and meta.input_hw == (511, 511) and meta.batch == 1
    assert meta.outputs == RAW_OUTPUTS and meta.decode == "none" and meta.precision == "fp32"
    graph = parse_metadata(_metadata(decode="graph", outputs=list(GRAPH_OUTPUTS)))
    assert graph.outputs == GRAPH_OUTPUTS
    # the stored form {METADATA_KEY: {...}} and an arch name alone are read too
    assert parse_metadata({"cornernet_deploy": _metadata()}).spec == SQUEEZE
    assert parse_metadata({"arch": "cornernet-squeeze"}).class_names == SQUEEZE.class_names


@pytest.mark.parametrize("changes, message", [
    (dict(input_hw="abc"), "input_hw 'abc'"),
    (dict(input_hw=[511, "x"]), "input_hw 'x'"),
    (dict(input_hw=[500, 500]), "cannot take input side 500"),
    (dict(mean=[0.1, 0.2, 0.3, 0.4, 0.5]), "expected 3 numbers"),
    (dict(std=[0.2, 0.0, 0.2]), "std 0.0"),
    (dict(batch="x"), "batch 'x'"),
    (dict(batch=0), "batch 0"),
    (dict(test=[1, 2]), "'test' that is not an object"),
    (dict(test={**_metadata()["test"], "top_k": -5}), "test.top_k -5"),
    (dict(test={**_metadata()["test"], "nms_kernel": 2}), "odd window"),
    (dict(class_names=["a", "b"]), "2 class names for a model with 80 classes"),
    (dict(class_names=["a\nb"] + ["c"] * 79), "control character"),
    (dict(category_ids=[1]), "1 category ids"),
    (dict(decode="fancy"), "decode 'fancy'"),
    (dict(outputs=["tl_heat"]), "lists outputs"),
    (dict(precision="fp8"), "precision 'fp8'"),
    (dict(input_name='image" }\nbackend: "python'), "input_name"),
    (dict(spec="resnet"), "'spec' that is not an object"),
    (dict(spec=None, arch="yolo"), "architecture 'yolo'"),
    (dict(channel_order="RGB"), "expects RGB input"),
    (dict(format=99), "format 99"),
])
def test_crafted_metadata_is_one_line_naming_the_file_and_field(changes, message):
    with pytest.raises(UserError) as err:
        parse_metadata(json.dumps(_metadata(**changes)), "m.onnx")
    text = str(err.value)
    assert message in text and text.startswith("m.onnx") and "\n" not in text.replace("a\nb", "")


@pytest.mark.parametrize("raw", [None, "not json", "[1, 2]", 42])
def test_a_missing_or_non_object_entry_is_refused(raw):
    with pytest.raises(UserError, match="m.onnx"):
        parse_metadata(raw, "m.onnx")


# ------------------------------------------------------------------------------------------------
# the engine manifest

def _manifest(**changes):
    data = {"format": 1, "tensorrt_version": "10.16.1.11", "gpu": {"name": "X", "compute_capability": "9.0"},
            "precision": "fp16", "input": {"name": "image", "min": [1, 3, 511, 511], "opt": [2, 3, 511, 511],
                                           "max": [4, 3, 511, 511]},
            "outputs": list(RAW_OUTPUTS), "plugin_sha256": "ab" * 32, "corner_pool_layers": ["p0"],
            "metadata": _metadata(batch=None), "from_a_newer_toolkit": {"kept": True}}
    data.update(changes)
    return data


def test_manifest_round_trips_and_keeps_unknown_keys(tmp_path):
    engine = tmp_path / "m.engine"
    manifest_path(engine).write_text(json.dumps(_manifest()))
    m = EngineManifest.load(engine)
    assert (m.min_batch, m.max_batch, m.static_batch, m.input_hw) == (1, 4, False, (511, 511))
    assert m.tensorrt_major == 10 and m.metadata.spec == SQUEEZE
    again = m.to_dict()
    assert again["from_a_newer_toolkit"] == {"kept": True}
    assert EngineManifest.from_dict(json.loads(m.to_json())).to_dict() == again


@pytest.mark.parametrize("changes, message", [
    (dict(input={"name": 'image"\n', "min": [1, 3, 511, 511], "max": [1, 3, 511, 511]}), "input name"),
    (dict(input={"name": "image", "min": [-1, 3, 511, 511], "max": [1, 3, 511, 511]}), "min shape"),
    (dict(input={"name": "image", "min": [4, 3, 511, 511], "max": [1, 3, 511, 511]}), "do not nest"),
    (dict(outputs="tl_heat"), "'outputs' list"),
    (dict(outputs=["tl_heat"]), "differ from the export's"),
    (dict(precision="fp64"), "precision 'fp64'"),
    (dict(plugin_sha256="nope"), "plugin_sha256"),
    (dict(tensorrt_version=10), "'tensorrt_version' is not text"),
    (dict(metadata={"arch": "yolo"}), "architecture 'yolo'"),
])
def test_a_crafted_manifest_is_one_line(changes, message):
    with pytest.raises(UserError) as err:
        EngineManifest.from_dict(_manifest(**changes), "m.manifest.json")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_engine_without_a_manifest_says_how_engines_are_made(tmp_path):
    with pytest.raises(UserError, match="engines must be built with `cornernet-deploy build`"):
        EngineManifest.load(tmp_path / "m.engine")


# ------------------------------------------------------------------------------------------------
# the layering (docs/ARCHITECTURE.md)

def _imports(path: Path) -> set:
    """Every module a file imports (relative imports resolved), lazily inside functions too."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    else:
        package = package.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _ours(imports: set) -> set:
    return {m for m in imports if m.startswith("cornernet_deploy")}


def test_the_contract_package_imports_nothing_of_ours_but_errors_and_no_framework():
    for path in (PACKAGE / "contract").glob("*.py"):
        imports = _imports(path)
        ours = {m for m in _ours(imports) if not m.startswith("cornernet_deploy.contract")}
        # `from .. import __version__` (build_metadata) is the package's version string
        assert ours <= {"cornernet_deploy.errors", "cornernet_deploy.errors.UserError",
                        "cornernet_deploy", "cornernet_deploy.__version__"}, (path.name, ours)
        frameworks = {m.split(".")[0] for m in imports} & {"torch", "onnx", "onnxruntime", "tensorrt", "cv2"}
        assert not frameworks, (path.name, frameworks)


def test_the_named_layer_leaks_are_gone():
    assert not any(m.startswith("cornernet_deploy.profiling")
                   for m in _imports(PACKAGE / "exporter.py"))
    assert not any(m.startswith("cornernet_deploy.runtime.pipeline")
                   for m in _imports(PACKAGE / "runtime" / "backends" / "base.py"))
    for path in (PACKAGE / "runtime").rglob("*.py"):
        assert not any(m.startswith("cornernet_deploy.tensorrt") for m in _imports(path)), path


def _string_constants(path: Path) -> set:
    """String literals of a module's code: docstrings and ``__all__`` (names, not values) left out."""
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and \
                node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            skip.add(id(node.body[0].value))
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip}


def test_the_metadata_is_parsed_and_the_manifest_read_in_one_place_each():
    """Nothing but contract.metadata decodes the metadata JSON, nothing outside the manifest class
    reads a manifest's raw keys, and the op identity and the precision names are written once."""
    parse_sites, manifest_sites, op_sites, precision_sites = [], [], [], []
    identity = {CORNER_POOL.op_type, *CORNER_POOL.modes}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(PACKAGE).as_posix()
        if re.search(r"json\.loads\([^)]*METADATA_KEY|custom_metadata_map\.get\(METADATA_KEY\)\)", text) \
                and rel != "contract/metadata.py":
            parse_sites.append(rel)
        if re.search(r"manifest\[\"(input|metadata|outputs)\"\]|manifest\.get\(\"", text):
            manifest_sites.append(rel)
        if _string_constants(path) & identity:
            op_sites.append(rel)
        if re.search(r"[\(\[]\s*\"(fp32|fp16|bf16|int8)\"\s*,\s*\"(fp32|fp16|bf16|int8)\"", text):
            precision_sites.append(rel)
    assert parse_sites == [] and manifest_sites == []
    assert op_sites == ["contract/op.py"]
    assert precision_sites == ["contract/precision.py"]


def test_the_runtime_never_imports_torch_nor_the_build_tooling():
    code = ("import sys\nimport cornernet_deploy.runtime, cornernet_deploy.runtime.backends as b\n"
            "import cornernet_deploy.runtime.families, cornernet_deploy.runtime.plugin_library\n"
            "[i.name for i in b.registry.all_backends()]\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('onnx.', 'cornernet_deploy.tensorrt',"
            " 'cornernet_deploy.profiling', 'cornernet_deploy.train', 'cornernet_deploy.models'))]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
