"""Load official princeton-vl checkpoints and our own, with short, useful errors.

Accepted files (read with ``torch.load(weights_only=True)``: no pickled code runs):
- an official release (``CornerNet_500000.pkl`` ...): a flat state dict whose keys start with
  ``module.`` (the official ``DummyModule`` wrapper); ``num_batches_tracked`` may be absent;
- the original princeton-vl/CornerNet release, whose keys use other prefixes (``module.kps.`` ...):
  renamed with the pure prefix map below;
- our format: ``{"format": "cornernet_deploy", "arch": name, "spec": {...}, "state_dict": {...}}``.
"""
from __future__ import annotations

import dataclasses
import functools
import pickle
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import atomic_path
from ..zoo import ARCHS, ArchSpec, SaccadeConfig, TestConfig, get_arch

FORMAT = "cornernet_deploy"

# princeton-vl/CornerNet (original repo) -> CornerNet-Lite layout; longest prefix first.
ORIGINAL_REPO_RENAMES = (
    ("module.inters_.", "module.hg.inters_."), ("module.cnvs_.", "module.hg.cnvs_."),
    ("module.pre.", "module.hg.pre."), ("module.kps.", "module.hg.hgs."),
    ("module.cnvs.", "module.hg.cnvs."), ("module.inters.", "module.hg.inters."),
    ("module.tl_cnvs.", "module.tl_modules."), ("module.br_cnvs.", "module.br_modules."),
    ("module.tl_regrs.", "module.tl_offs."), ("module.br_regrs.", "module.br_offs."),
)
_WRAPPER_PREFIXES = ("module.", "model.")


class CheckpointError(UserError):
    """The file is not a checkpoint, or not one for this architecture."""


def spec_to_dict(spec: ArchSpec) -> dict:
    return dataclasses.asdict(spec)


def spec_from_dict(d: dict) -> ArchSpec:
    d = dict(d)
    d["test"] = TestConfig(**d["test"])
    d["saccade"] = SaccadeConfig(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in d["saccade"].items()}) if d.get("saccade") else None
    for key in ("dims", "modules", "input_size", "class_names", "category_ids"):
        d[key] = tuple(d[key])
    return ArchSpec(**d)


def read_checkpoint(path) -> dict:
    """Raw contents of a checkpoint file (a dict), or CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a plain checkpoint (refusing to run pickled code): {first}") from None
    except Exception as exc:  # torch.load raises many types on damaged files; none is useful raw
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def unwrap_state_dict(obj: dict) -> tuple[dict, dict]:
    """(state dict without wrapper prefixes, our metadata or {})."""
    meta = {}
    if obj.get("format") == FORMAT or "state_dict" in obj:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj.get("state_dict")
        if not isinstance(obj, dict):
            raise CheckpointError("checkpoint has no 'state_dict' dictionary")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise CheckpointError(f"not a state dict: entry {key!r} is a {type(value).__name__}")
        for old, new in ORIGINAL_REPO_RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        state[key] = value
    return state, meta


@functools.lru_cache(maxsize=8)
def _expected_shapes(spec: ArchSpec) -> dict:
    from .cornernet import CornerNet
    with torch.device("meta"):
        model = CornerNet(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def guess_architecture(state: dict) -> str | None:
    """The zoo architecture whose key names best match ``state`` (None if nothing fits well).

    Names, not shapes, decide: width variants and other class counts keep the official names.
    """
    keys = {k for k in state if not k.endswith("num_batches_tracked")}
    best, best_score = None, 0.0
    for name, spec in ARCHS.items():
        expected = {k for k in _expected_shapes(spec) if not k.endswith("num_batches_tracked")}
        score = len(keys & expected) / max(len(keys | expected), 1)
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def _first(items, n=3) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_state_dict_strict(model, state: dict, source: str = "checkpoint") -> None:
    """Strict load that tolerates missing ``num_batches_tracked`` and explains mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
             for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches: {_first(wrong, 2)}")
        guess = guess_architecture(state)
        hint = (f"; the file looks like a '{guess}' checkpoint" if guess and guess != model.spec.name
                else "")
        raise CheckpointError(f"{source} does not fit architecture '{model.spec.name}': "
                              + "; ".join(parts) + hint)
    full = dict(state)
    for k, v in expected.items():  # absent num_batches_tracked keep the model's own value
        full.setdefault(k, v)
    model.load_state_dict(full, strict=True)


def load_checkpoint(model, path) -> dict:
    """Load ``path`` into ``model`` (strict); returns the file's metadata (empty for official files)."""
    state, meta = unwrap_state_dict(read_checkpoint(path))
    load_state_dict_strict(model, state, source=str(path))
    return meta


def spec_from_checkpoint(path, default_arch: str | None = None) -> ArchSpec:
    """The architecture a checkpoint was saved for: its recorded spec, else its arch name, else a
    guess from its keys (official files record nothing), else ``default_arch``."""
    obj = read_checkpoint(path)
    if obj.get("spec"):
        return spec_from_dict(obj["spec"])
    if isinstance(obj.get("arch"), str):
        return get_arch(obj["arch"])
    if default_arch:
        return get_arch(default_arch)
    state, _ = unwrap_state_dict(obj)
    guess = guess_architecture(state)
    if guess is None:
        raise CheckpointError(f"cannot tell which architecture {path} belongs to; pass --arch")
    return get_arch(guess)


def save_checkpoint(model, path, **extra) -> None:
    """Our format, written atomically; loadable with ``weights_only=True``."""
    payload = {"format": FORMAT, "arch": model.spec.name, "spec": spec_to_dict(model.spec),
               "state_dict": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
