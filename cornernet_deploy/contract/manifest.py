"""The engine manifest: what ``build`` records next to a TensorRT engine (``NAME.manifest.json``).

One class, ``EngineManifest``: the builder makes one and writes ``to_dict()``; every reader (the
TensorRT backend, ``profile --layers``, the Triton generator and its BLS model) loads it with
``EngineManifest.load`` / ``from_dict``, which check every value once, so a damaged or crafted
manifest is a one-line ``UserError`` and never reaches a config file or a shell command as it is.
Readers accept manifests without the newer keys (``tf32``, ``plugin_tensorrt_version``,
``corner_pool_layers``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..errors import UserError
from .metadata import ModelMetadata, check_tensor_name, parse_metadata
from .precision import ENGINE_PRECISIONS

__all__ = ["MANIFEST_FORMAT", "EngineManifest", "manifest_path", "log_path"]

MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def manifest_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.stem + ".manifest.json")


def log_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.stem + ".build.log")


@dataclass(frozen=True, eq=False)
class EngineManifest:
    tensorrt_version: str
    gpu: dict                          # {"name", "compute_capability", ...}
    precision: str
    input_name: str
    input_min: tuple                   # (N, C, H, W) of the optimisation profile
    input_opt: tuple
    input_max: tuple
    outputs: tuple
    metadata: ModelMetadata            # the export metadata with the built input_hw and batch
    toolkit_version: Optional[str] = None
    built: Optional[str] = None
    strongly_typed: Optional[bool] = None
    tf32: Optional[bool] = None
    engine_sha256: Optional[str] = None
    plugin_library: Optional[str] = None
    plugin_sha256: Optional[str] = None
    plugin_tensorrt_version: Optional[str] = None
    corner_pool_layers: tuple = ()
    onnx: Optional[str] = None
    onnx_sha256: Optional[str] = None
    extra: dict = field(default_factory=dict)   # keys a newer toolkit wrote, kept when re-written
    raw: Optional[dict] = None                  # the dict as read (``from_dict``), written back as is

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def input_hw(self) -> tuple:
        return tuple(self.input_max[2:])

    @property
    def min_batch(self) -> int:
        return self.input_min[0]

    @property
    def max_batch(self) -> int:
        return self.input_max[0]

    @property
    def static_batch(self) -> bool:
        return self.input_min[0] == self.input_max[0]

    @property
    def tensorrt_major(self) -> Optional[int]:
        head = str(self.tensorrt_version).split(".")[0]
        return int(head) if head.isdigit() else None

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object: as it was read, or (made by ``build``) from the fields."""
        if self.raw is not None:
            return json.loads(json.dumps(self.raw))
        out = dict(self.extra)
        out.update({
            "format": MANIFEST_FORMAT, "toolkit_version": self.toolkit_version, "built": self.built,
            "tensorrt_version": self.tensorrt_version, "gpu": dict(self.gpu),
            "precision": self.precision, "strongly_typed": self.strongly_typed, "tf32": self.tf32,
            "input": {"name": self.input_name, "min": list(self.input_min),
                      "opt": list(self.input_opt), "max": list(self.input_max)},
            "outputs": list(self.outputs), "engine_sha256": self.engine_sha256,
            "plugin_library": self.plugin_library, "plugin_sha256": self.plugin_sha256,
            "plugin_tensorrt_version": self.plugin_tensorrt_version,
            "corner_pool_layers": list(self.corner_pool_layers),
            "onnx": self.onnx, "onnx_sha256": self.onnx_sha256, "metadata": dict(self.metadata.raw),
        })
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data, source="the manifest") -> "EngineManifest":
        def fail(what):
            raise UserError(f"{source} is not a valid cornernet-deploy engine manifest: {what}")

        if not isinstance(data, dict):
            fail("not a JSON object")
        fmt = data.get("format", MANIFEST_FORMAT)
        if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt > MANIFEST_FORMAT:
            fail(f"format {fmt!r} (this toolkit reads {MANIFEST_FORMAT}; upgrade cornernet-deploy)")
        inp = data.get("input")
        if not isinstance(inp, dict):
            fail("no 'input' object")
        try:
            check_tensor_name(inp.get("name"), "input name")
        except UserError as exc:
            fail(str(exc))
        shapes = []
        for key in ("min", "opt", "max"):
            shape = inp.get(key, inp.get("max") if key == "opt" else None)
            if (not isinstance(shape, list) or len(shape) != 4
                    or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
                fail(f"input {key} shape {shape!r} is not 4 whole numbers >= 1")
            shapes.append(tuple(shape))
        lo, opt, hi = shapes
        if lo[1:] != hi[1:] or not (lo[0] <= opt[0] <= hi[0]):
            fail(f"input shapes min {list(lo)}, opt {list(opt)}, max {list(hi)} do not nest")
        outputs = data.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            fail("no 'outputs' list")
        for name in outputs:
            try:
                check_tensor_name(name, "output name")
            except UserError as exc:
                fail(str(exc))
        precision = data.get("precision", "fp32")
        if precision not in ENGINE_PRECISIONS:
            fail(f"precision {precision!r} (expected {', '.join(ENGINE_PRECISIONS)})")
        gpu = data.get("gpu") or {}
        if not isinstance(gpu, dict):
            fail("'gpu' is not an object")
        text = {}
        for key in ("tensorrt_version", "toolkit_version", "built", "plugin_library",
                    "plugin_tensorrt_version", "onnx"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                fail(f"'{key}' is not text")
            text[key] = value
        for key in ("engine_sha256", "plugin_sha256", "onnx_sha256"):
            value = data.get(key)
            if value is not None and not (isinstance(value, str) and _SHA256.match(value)):
                fail(f"'{key}' is not a SHA-256 hex digest")
            text[key] = value
        for key in ("strongly_typed", "tf32"):
            if data.get(key) is not None and not isinstance(data[key], bool):
                fail(f"'{key}' is not true or false")
        layers = data.get("corner_pool_layers") or []
        if not isinstance(layers, list) or not all(isinstance(n, str) for n in layers):
            fail("'corner_pool_layers' is not a list of names")
        metadata = parse_metadata(data.get("metadata"), f"{source} (its export metadata)")
        if metadata.input_name != inp["name"]:
            fail(f"input name {inp['name']!r} differs from the export's {metadata.input_name!r}")
        if list(outputs) != list(metadata.outputs):
            fail(f"outputs {outputs} differ from the export's {list(metadata.outputs)}")
        known = {"format", "input", "outputs", "precision", "gpu", "strongly_typed", "tf32",
                 "corner_pool_layers", "metadata", *text}
        return cls(tensorrt_version=text["tensorrt_version"] or "", gpu=dict(gpu), precision=precision,
                   input_name=inp["name"], input_min=lo, input_opt=opt, input_max=hi,
                   outputs=tuple(outputs), metadata=metadata,
                   toolkit_version=text["toolkit_version"], built=text["built"],
                   strongly_typed=data.get("strongly_typed"), tf32=data.get("tf32"),
                   engine_sha256=text["engine_sha256"], plugin_library=text["plugin_library"],
                   plugin_sha256=text["plugin_sha256"],
                   plugin_tensorrt_version=text["plugin_tensorrt_version"],
                   corner_pool_layers=tuple(layers), onnx=text["onnx"],
                   onnx_sha256=text["onnx_sha256"],
                   extra={k: v for k, v in data.items() if k not in known}, raw=data)

    @classmethod
    def load(cls, engine_path) -> "EngineManifest":
        """The manifest next to ``engine_path``; a one-line UserError when it is missing or invalid."""
        engine_path = Path(engine_path)
        path = manifest_path(engine_path)
        if not path.is_file():
            raise UserError(f"{engine_path} has no manifest ({path.name}); engines must be built with "
                            "`cornernet-deploy build`")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            raise UserError(f"{path} is not a cornernet-deploy engine manifest") from None
        return cls.from_dict(data, path)
