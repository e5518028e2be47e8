"""Load official princeton-vl checkpoints and our own, with short, useful errors.

Accepted files (read with ``torch.load(weights_only=True)``: no pickled code runs):
- an official release (``CornerNet_500000.pkl`` ...): a flat state dict whose keys start with
  ``module.`` (the official ``DummyModule`` wrapper); ``num_batches_tracked`` may be absent;
- the original princeton-vl/CornerNet release, whose keys use other prefixes (``module.kps.`` ...):
  renamed with the pure prefix map below;
- our format: ``{"format": "cornernet_deploy", "arch": name, "spec": {...}, "state_dict": {...}}``.
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path

import torch

from ..errors import UserError
from ..fileio import atomic_path
from ..contract.arch import ARCHS, ArchSpec, get_arch, spec_from_dict, spec_to_dict

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


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pkl", ".bin", ".ckpt")
_ZIP_MAGIC = b"PK\x03\x04"       # torch.save since PyTorch 1.6
_PICKLE_PROTO = b"\x80"           # legacy torch.save and the official .pkl releases (pickle >= 2)


def _looks_like_onnx(path: Path) -> bool:
    if path.suffix.lower() == ".onnx":
        return True
    try:
        import onnx
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unparsable is simply not ONNX
        return False
    return len(model.graph.node) > 0


def _not_a_checkpoint(path: Path, head: bytes) -> CheckpointError:
    if _looks_like_onnx(path):
        return CheckpointError(
            f"{path} is an ONNX model, not a PyTorch checkpoint: infer, eval, compare and profile "
            "take it as it is; export needs the .pt/.pth/.pkl weights it was made from")
    shown = head[:12].decode("ascii", "replace") if head.isascii() else head[:8].hex(" ")
    return CheckpointError(
        f"{path} is not a PyTorch checkpoint: a torch.save file is a zip archive or a pickle, "
        f"this one starts with {shown!r}")


def read_checkpoint(path) -> dict:
    """Raw contents of a checkpoint file (a dict), or CheckpointError with a one-line reason."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in CHECKPOINT_SUFFIXES)
        hint = (f"; it holds {', '.join(inside[:4])}{' ...' if len(inside) > 4 else ''}" if inside
                else "; it holds no .pt/.pth/.pkl file")
        raise CheckpointError(f"{path} is a folder: give the checkpoint file inside it{hint}")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_PROTO)):
        raise _not_a_checkpoint(path, head)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a plain checkpoint (refusing to run pickled code): {first}") from None
    except Exception as exc:  # torch.load raises many types on damaged files; none is useful raw
        raise CheckpointError(f"{path} is a damaged or truncated PyTorch checkpoint "
                              f"({type(exc).__name__}: {str(exc).strip()[:80] or 'no detail'})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


# keys under which training scripts commonly store the model's state dict (tried in order)
_WRAPPER_KEYS = ("model_state_dict", "model", "net", "state")


def unwrap_state_dict(obj: dict) -> tuple[dict, dict]:
    """(state dict without wrapper prefixes, our metadata or {})."""
    meta = {}
    if obj.get("format") == FORMAT or "state_dict" in obj:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj.get("state_dict")
        if not isinstance(obj, dict):
            raise CheckpointError("checkpoint has no 'state_dict' dictionary")
    else:
        # common training-script layouts, e.g. {"model": sd, "optimizer": ..., "epoch": ...};
        # their other entries are not ours, so no metadata is taken from them
        for wrapper in _WRAPPER_KEYS:
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
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

    An architecture one of whose variants has exactly these tensors (``infer_variant``) wins;
    otherwise names, not shapes, decide (width variants and other class counts keep the official
    names).
    """
    for name, spec in ARCHS.items():
        if infer_variant(state, spec) is not None:
            return name
    keys = {k for k in state if not k.endswith("num_batches_tracked")}
    best, best_score = None, 0.0
    for name, spec in ARCHS.items():
        expected = {k for k in _expected_shapes(spec) if not k.endswith("num_batches_tracked")}
        score = len(keys & expected) / max(len(keys | expected), 1)
        if score > best_score:
            best, best_score = name, score
    return best if best_score > 0.5 else None


def _count_indices(state: dict, prefix: str) -> int:
    """How many consecutive children ``prefix0.``, ``prefix1.`` ... the state has."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in state):
        n += 1
    return n


def infer_variant(state: dict, base: ArchSpec) -> ArchSpec | None:
    """The variant of ``base`` whose tensors ``state`` holds, read from names and shapes: stacks,
    hourglass depth, channel widths, blocks per level and class count. ``None`` when no variant of
    ``base`` has exactly these tensors (another architecture, or a damaged file)."""
    try:
        stacks = _count_indices(state, "hg.hgs.")
        levels = max(k.split(".").count("low2") for k in state if k.startswith("hg.hgs.0."))
        dims, modules = [int(state["hg.cnvs.0.conv.weight"].shape[0])], []
        for level in range(levels):
            prefix = "hg.hgs.0." + "low2." * level
            dims.append(int(state[f"{prefix}low1.0.bn2.weight"].shape[0]))
            modules.append(_count_indices(state, f"{prefix}up1."))
        modules.append(_count_indices(state, "hg.hgs.0." + "low2." * levels))
        changes = dict(
            stacks=stacks, levels=levels, dims=tuple(dims), modules=tuple(modules),
            stem_dim=int(state["hg.pre.0.conv.weight"].shape[0]),
            pool_dim=int(state["tl_modules.0.p1_conv1.conv.weight"].shape[0]),
            head_dim=int(state["tl_heats.0.0.conv.weight"].shape[0]))
        num_classes = int(state["tl_heats.0.1.weight"].shape[0])
        if num_classes != base.num_classes:
            changes["num_classes"] = num_classes
        spec = base.replace(**changes)
    except (KeyError, ValueError, IndexError, AttributeError):
        return None
    expected = {k: v for k, v in _expected_shapes(spec).items() if not k.endswith("num_batches_tracked")}
    got = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return spec if got == expected else None


def describe_variant(spec: ArchSpec, base: ArchSpec) -> str:
    """What differs from the official architecture, in flag terms (``'1 stack, 3 levels, ...'``)."""
    parts = []
    if spec.dims != base.dims[: spec.levels + 1]:
        parts.append("channels " + "/".join(map(str, spec.dims)))
    if spec.stacks != base.stacks:
        parts.append(f"{spec.stacks} stack{'s' if spec.stacks != 1 else ''}")
    if spec.levels != base.levels:
        parts.append(f"{spec.levels} levels")
    if spec.num_classes != base.num_classes:
        parts.append(f"{spec.num_classes} classes")
    return ", ".join(parts) or "the official variant"


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
        if guess and guess != model.spec.name:
            hint = f"; the file looks like a '{guess}' checkpoint: pass --arch {guess}"
        elif infer_variant(state, get_arch(model.spec.name)) is not None:
            hint = ("; the file holds another variant of it (its widths/depth/classes can be read "
                    "from the file: give no --arch, or save the model with "
                    "cornernet_deploy.models.save_checkpoint, which records its architecture)")
        else:
            hint = ("; no width/depth/stack/class variant of it has these tensors either: is this "
                    "the right file?")
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
    """The architecture a checkpoint was saved for: its recorded spec, else its arch name (or
    ``default_arch``, else a guess from its key names: official files record nothing) with the
    variant its tensors hold (``infer_variant``: a plain ``state_dict()`` of a narrower, shallower
    or other-class model)."""
    obj = read_checkpoint(path)
    if obj.get("spec"):
        return spec_from_dict(obj["spec"])
    state, _ = unwrap_state_dict(obj)
    name = obj.get("arch") if isinstance(obj.get("arch"), str) else default_arch
    if name is None:
        name = guess_architecture(state)
        if name is None:
            raise CheckpointError(f"cannot tell which architecture {path} belongs to: its {len(state)} "
                                  "tensors fit no width/depth/stack/class variant of "
                                  f"{', '.join(ARCHS)}; pass --arch to see which tensors differ")
    try:
        base = get_arch(name)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return infer_variant(state, base) or base


def save_checkpoint(model, path, **extra) -> None:
    """Our format, written atomically; loadable with ``weights_only=True``."""
    payload = {"format": FORMAT, "arch": model.spec.name, "spec": spec_to_dict(model.spec),
               "state_dict": model.state_dict(), **extra}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # through a Python file, so that a full disk raises an OSError (ENOSPC), which
        # atomic_path names; torch.save to a path reports only "unexpected pos N vs M"
        torch.save(payload, f)
