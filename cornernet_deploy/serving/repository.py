"""A Triton Inference Server model repository for a cornernet-deploy model (``cornernet-deploy triton``).

From an ``.onnx`` (``export``)::

    REPO/NAME/config.pbtxt          Python backend: images in, detections out (see triton_model.py)
    REPO/NAME/labels.txt            class names, one per line (CLASSES is the 0-based line)
    REPO/NAME/1/model.py            our Python-backend model
    REPO/NAME/1/model.onnx          run by ONNX Runtime inside the Python model
    REPO/NAME/1/cornernet_deploy/   the torch-free runtime it imports (copied from this installation)

From an ``.engine`` (``build``, with its manifest) the network is a TensorRT model of its own,
called by the Python model through BLS::

    REPO/NAME/...                   as above, with 1/network.json (the engine manifest) instead of the ONNX
    REPO/NAME_net/config.pbtxt      platform tensorrt_plan; inputs/outputs/dims from the manifest
    REPO/NAME_net/1/model.plan      the engine
    REPO/libcornernet_deploy_plugins.so   the corner-pool plugin; tritonserver loads it through
                                    --backend-config=tensorrt,plugins=... (Triton only takes
                                    sub-directories of a repository for models, so files here are safe)

plus ``REPO/README.md`` (start, call, scale), ``REPO/requirements.txt`` (what the Python model
needs in the server's Python), ``REPO/Dockerfile`` (the Triton container with it) and
``REPO/cornernet-deploy.json`` (what was generated from what).
The whole repository is put together next to REPO and renamed into place (``fileio.atomic_dir``), so a
failure leaves nothing half-written.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from .. import __version__
from ..contract.manifest import EngineManifest, manifest_path
from ..contract.metadata import ModelMetadata, output_shapes, printable
from ..contract.op import PLUGIN_LIBRARY_NAME
from ..errors import UserError
from ..fileio import atomic_dir, check_not_input, check_output_dir, sha256_file, swap_lock
from ..onnx_files import load_export
from ..runtime.backends import registry
from ..runtime.preprocess import DEFAULT_MAX_PIXELS

PACKAGE_DIR = Path(__file__).resolve().parents[1]
MODEL_FILE = Path(__file__).with_name("triton_model.py")
REQUIREMENTS_FILE = Path(__file__).with_name("requirements-python-model.txt")
REPOSITORY_MANIFEST = "cornernet-deploy.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# what the generator writes at the repository's top: a model of one of these names would collide
RESERVED_NAMES = ("README.md", "Dockerfile", "requirements.txt", REPOSITORY_MANIFEST, PLUGIN_LIBRARY_NAME)
DEFAULT_MAX_BATCH = 8
DEFAULT_DELAY_US = 2000

_TRITON_DTYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint8": "TYPE_UINT8"}


@dataclass
class RepositoryResult:
    repo: Path
    models: List[str]
    files: List[str]


# ------------------------------------------------------------------------------------------------
# the network's tensors and the config.pbtxt files

def _tensor(name, dtype, dims, extra="") -> str:
    return (f'  {{ name: "{name}" data_type: {_TRITON_DTYPES.get(dtype, dtype)} '
            f'dims: [ {", ".join(str(int(d)) for d in dims)} ]{extra} }}')


def _dynamic_batching(delay_us: Optional[int]) -> str:
    if delay_us is None:
        return ""
    return f"dynamic_batching {{ max_queue_delay_microseconds: {int(delay_us)} }}\n"


def _parameters(params: dict) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                   for k, v in params.items())


def python_model_config(name: str, max_batch: int, instances: int, delay_us: Optional[int],
                        parameters: dict) -> str:
    """config.pbtxt of the Python model clients call (inputs/outputs: see triton_model.py)."""
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {int(max_batch)}\n'
        "input [\n"
        + _tensor("IMAGE_BYTES", "TYPE_STRING", [1], " optional: true") + ",\n"
        + _tensor("IMAGE", "TYPE_UINT8", [-1, -1, 3], " optional: true allow_ragged_batch: true") + "\n"
        "]\noutput [\n"
        + _tensor("NUM_DETECTIONS", "int32", [1]) + ",\n"
        + _tensor("BOXES", "float32", [-1, 4]) + ",\n"
        + _tensor("SCORES", "float32", [-1]) + ",\n"
        + _tensor("CLASSES", "int32", [-1], ' label_filename: "labels.txt"') + "\n"
        "]\n"
        + _dynamic_batching(delay_us)
        + f"instance_group [ {{ kind: KIND_CPU count: {int(instances)} }} ]\n"
        + _parameters(parameters))


def tensorrt_model_config(name: str, manifest: EngineManifest, instances: int, delay_us: Optional[int]) -> str:
    """config.pbtxt of the engine: shapes from the manifest's optimisation profile (its names and
    numbers were checked when it was read: ``EngineManifest.from_dict``)."""
    lo, hi = manifest.input_min, manifest.input_max
    hw = list(hi[2:])
    if lo[0] == hi[0] and hi[0] > 1:
        # a fixed batch of N > 1: Triton passes the whole [N, ...] tensor, no batching dimension
        max_batch, batch_dims = 0, [hi[0]]
    else:
        max_batch, batch_dims = hi[0], []
    outputs = output_shapes(manifest.metadata, hw)
    return (
        f'name: "{name}"\nplatform: "tensorrt_plan"\nmax_batch_size: {max_batch}\n'
        "input [\n" + _tensor(manifest.input_name, manifest.metadata.input_dtype, batch_dims + [3, *hw])
        + "\n]\n"
        "output [\n" + ",\n".join(_tensor(n, t, batch_dims + d) for n, t, d in outputs) + "\n]\n"
        + (_dynamic_batching(delay_us) if max_batch > 1 else "")
        + f"instance_group [ {{ kind: KIND_GPU count: {int(instances)} }} ]\n")


# ------------------------------------------------------------------------------------------------
# reading the model

def _onnx_metadata(path: Path) -> ModelMetadata:
    return load_export(path, load_external_data=False)[1]


def _plugin_library(manifest: EngineManifest, plugin) -> Path:
    """The plugin library to ship: ``--plugin``, else the one the manifest records, else the one
    ``plugin build`` made for the engine's TensorRT major; only ever our library
    (``verify_plugin_library``), with the manifest's SHA-256 where it records one."""
    from ..runtime.plugin_library import find_plugin_library, verify_plugin_library
    if plugin:
        path = Path(plugin)
        if not path.is_file():
            raise UserError(f"--plugin {plugin}: no such file")
    else:
        recorded = Path(manifest.plugin_library or "")
        path = recorded if manifest.plugin_library and recorded.is_file() else find_plugin_library(
            tensorrt_major=manifest.tensorrt_major)
    verify_plugin_library(path, manifest.plugin_sha256, "the plugin library")
    check_loads_in_triton(path)
    return path


def check_loads_in_triton(path: Path) -> None:
    """UserError unless the plugin library registers its creator when it is merely loaded, with the
    full TensorRT library: Triton's TensorRT backend opens each ``plugins=`` entry with a plain
    ``dlopen`` (tensorrt_backend ``src/tensorrt.cc`` -> ``OpenLibraryHandle``) and never asks the
    library for its creators, so the default build would load and register nothing, and the engine
    would fail to deserialize in the server."""
    from ..runtime.plugin_library import registers_on_load
    registers_with = registers_on_load(path)
    if registers_with is not None and registers_with.startswith("libnvinfer.so"):
        return
    why = (f"registers its creator with {registers_with}, not the full TensorRT (libnvinfer) that Triton "
           "runs" if registers_with else "registers its creator only when TensorRT's loadLibrary asks it "
           "(the default build), and Triton's TensorRT backend only dlopens plugin libraries")
    raise UserError(f"the plugin library {path} {why}: build it with `cornernet-deploy plugin build "
                    "--static-registration` (TensorRT installed, to link libnvinfer), build the engine "
                    "with that library (`cornernet-deploy build ... --plugin LIB`), then run triton again")


# ------------------------------------------------------------------------------------------------
# writing

def _module_file(name: str):
    """(file relative to the package, its package's dotted name) of module ``name``, or None."""
    rel = Path(*name.split(".")[1:])
    if (PACKAGE_DIR / rel / "__init__.py").is_file():
        return rel / "__init__.py", name
    if rel.parts and (PACKAGE_DIR / rel.with_suffix(".py")).is_file():
        return rel.with_suffix(".py"), name.rpartition(".")[0]
    return None


def _imports(file: Path, package: str, top_level_only: bool) -> set:
    """Dotted names this module imports (of this package, plus ``torch`` when it does); lazy
    imports inside functions too unless ``top_level_only``."""
    tree = ast.parse((PACKAGE_DIR / file).read_text())
    found = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)   # submodules named
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] in ("cornernet_deploy", "torch")}


def _needs_torch(name: str, memo: dict) -> bool:
    """Whether importing module ``name`` imports torch (through its top-level imports)."""
    if name.split(".")[0] == "torch":
        return True
    if name not in memo:
        memo[name] = False                     # cycles: assume not while we look
        found = _module_file(name)
        memo[name] = bool(found) and any(_needs_torch(m, memo)
                                         for m in _imports(found[0], found[1], top_level_only=True))
    return memo[name]


def runtime_closure() -> List[Path]:
    """The files of this package the Python model needs, relative to the package: ``runtime``
    (every module: the backend registry imports them all) and what they import, lazily too, but
    no module whose import pulls in torch (it could not run in the torch-free server anyway)."""
    todo = ["cornernet_deploy.runtime." + ".".join(p.relative_to(PACKAGE_DIR / "runtime").with_suffix("").parts)
            for p in (PACKAGE_DIR / "runtime").rglob("*.py")]
    files, seen, memo = set(), set(), {}
    while todo:
        name = todo.pop().replace(".__init__", "")
        if name in seen:
            continue
        seen.add(name)
        found = _module_file(name)
        if found is None or _needs_torch(name, memo):
            continue                           # a name imported from a module, torch, or a torch user
        file, package = found
        files.add(file)
        todo.extend(m for m in _imports(file, package, top_level_only=False) if not m.startswith("torch"))
        todo.extend(".".join(["cornernet_deploy", *file.parts[:i]]) for i in range(len(file.parts)))
    return sorted(files)


def _copy_runtime(dest: Path) -> None:
    target = dest / "cornernet_deploy"
    for rel in runtime_closure():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE_DIR / rel, target / rel)


def _requirements(onnx: bool) -> str:
    lines = [ln for ln in REQUIREMENTS_FILE.read_text().splitlines()
             if onnx or not ln.startswith("onnxruntime")]
    return "\n".join(lines) + "\n"


def _check_target(repo: Path, overwrite: bool, inputs) -> None:
    """Before the work: ``repo`` must be new or empty, or with ``overwrite`` one of ours, and
    hold none of the ``inputs`` (``fileio.check_not_input``)."""
    check_output_dir(repo, "--repo", whole=True)
    check_not_input(repo, inputs, "--repo", whole_folder=True)
    with swap_lock(repo):                     # never look while another run swaps it
        if repo.is_dir() and any(repo.iterdir()):
            if not overwrite:
                raise UserError(f"--repo {repo} exists and is not empty; pass --overwrite to replace it")
            _ours(repo)


def _ours(repo: Path) -> None:
    """Refuse (UserError) to replace a folder this command did not write."""
    if not (repo / REPOSITORY_MANIFEST).is_file():
        raise UserError(f"--repo {repo} was not written by cornernet-deploy (no {REPOSITORY_MANIFEST}); "
                        "refusing to replace it")


def write_repository(model, repo, *, name: Optional[str] = None, max_batch: Optional[int] = None,
                     instances: int = 1, python_instances: Optional[int] = None,
                     delay_us: Optional[int] = DEFAULT_DELAY_US, threads: int = 0,
                     score_threshold: float = 0.0, plugin=None, overwrite: bool = False,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> RepositoryResult:
    """Write a Triton model repository serving ``model`` (.onnx or .engine); see the module doc.

    ``max_batch``: images per Python-model execution (dynamic batching merges requests up to it);
    ``instances``: instances of the network per GPU (engine) / of the ONNX Python model;
    ``python_instances``: instances of the Python model for an engine (default ``instances``);
    ``delay_us``: the dynamic batcher's queue delay (None: no dynamic batching); ``threads``: ONNX
    Runtime intra-op threads per instance (0: its default); ``max_pixels``: the served model
    refuses images of more pixels, from their header before decoding (0: no limit).
    """
    model, repo = Path(model), Path(repo)
    if not model.is_file():
        raise UserError(f"{model}: no such model file")
    suffix = model.suffix.lower()
    kind = registry.model_kinds().get(suffix)
    serving = registry.get(kind).serving if kind else None
    if serving is None:
        servable = [info for info in registry.all_backends() if info.serving]
        raise UserError(f"{model}: expected {' or '.join(i.runs for i in servable)} (made by "
                        f"`cornernet-deploy export` / `build`), not '{suffix or model.name}'")
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", model.stem).lstrip("._-") or "cornernet"
    if not NAME_PATTERN.match(name):
        raise UserError(f"--name {name!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit")
    # case-blind: on a case-insensitive file system readme.md is README.md
    if name.casefold() in {n.casefold() for n in RESERVED_NAMES}:
        raise UserError(f"--name {name}: the repository's top holds a file of that name "
                        f"({', '.join(RESERVED_NAMES)}); choose another model name")
    if max_pixels < 0:
        raise UserError(f"--max-pixels must be >= 0, got {max_pixels}")
    for flag, value in (("--instances", instances), ("--python-instances", python_instances),
                        ("--max-batch", max_batch)):
        if value is not None and int(value) < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if delay_us is not None and int(delay_us) < 0:
        raise UserError(f"--dynamic-batching-delay-us must be >= 0, got {delay_us}")
    if threads < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    _check_target(repo, overwrite, [("the model", model), ("the model's manifest", manifest_path(model)),
                                    ("--plugin", plugin)])
    # "python": the network runs inside the Python model; "tensorrt_plan": a Triton model of its own
    is_onnx = serving == "python"

    if is_onnx:
        metadata, manifest, plugin_path = _onnx_metadata(model), None, None
        net_name = None
    else:
        manifest = EngineManifest.load(model)
        metadata = manifest.metadata
        plugin_path = _plugin_library(manifest, plugin)
        net_name = f"{name}_net"
        if manifest.min_batch > 1 and not manifest.static_batch:
            raise UserError(f"{model} needs batches of at least {manifest.min_batch}; build it "
                            "with --min-batch 1 (Triton sends any batch size up to the maximum)")
    spec = metadata.spec
    max_batch = int(max_batch or (manifest.max_batch if manifest else DEFAULT_MAX_BATCH))

    with atomic_dir(repo, _ours if overwrite else None, "--repo") as top:
        version = top / name / "1"
        version.mkdir(parents=True)
        shutil.copy2(MODEL_FILE, version / "model.py")
        _copy_runtime(version)
        # one label a line, whatever a class name holds
        (top / name / "labels.txt").write_text("".join(printable(n) + "\n" for n in metadata.class_names))
        params = {"score_threshold": f"{float(score_threshold):g}", "max_pixels": str(int(max_pixels))}
        if is_onnx:
            shutil.copy2(model, version / "model.onnx")
            params.update(network="onnxruntime", onnx_file="model.onnx", threads=str(int(threads)))
            py_count = instances
        else:
            (version / "network.json").write_text(manifest.to_json())
            params.update(network="triton", network_model=net_name, network_manifest="network.json")
            py_count = python_instances or instances
            net_version = top / net_name / "1"
            net_version.mkdir(parents=True)
            shutil.copy2(model, net_version / "model.plan")
            (top / net_name / "config.pbtxt").write_text(
                tensorrt_model_config(net_name, manifest, instances, delay_us))
            shutil.copy2(plugin_path, top / plugin_path.name)
        (top / name / "config.pbtxt").write_text(
            python_model_config(name, max_batch, py_count, delay_us, params))
        (top / "requirements.txt").write_text(_requirements(is_onnx))
        from .readme import repository_dockerfile, repository_readme
        (top / "Dockerfile").write_text(repository_dockerfile())
        (top / "README.md").write_text(repository_readme(
            name=name, net_name=net_name, model=model, metadata=metadata, manifest=manifest,
            max_batch=max_batch, delay_us=delay_us, max_pixels=int(max_pixels),
            plugin_file=plugin_path.name if plugin_path else None))
        record = {"toolkit_version": __version__, "source": str(model), "source_sha256": sha256_file(model),
                  "arch": spec.name, "models": [name] + ([net_name] if net_name else []),
                  "max_batch": max_batch, "instances": instances, "python_instances": py_count,
                  "dynamic_batching_delay_us": delay_us, "max_pixels": int(max_pixels)}
        (top / REPOSITORY_MANIFEST).write_text(json.dumps(record, indent=1))
        files = sorted(str(p.relative_to(top)) for p in top.rglob("*")
                       if p.is_file() and "cornernet_deploy" not in p.relative_to(top).parts)
    return RepositoryResult(repo, record["models"], files)
