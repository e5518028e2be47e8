"""The backend registry: every backend module registers what it opens and what it can do.

A backend is one module in this package that calls ``register(BackendInfo(...))`` at import
(or a third-party module named by an entry point of the group ``cornernet_deploy.backends``).
``open_backend``, the commands and the Triton generator ask the registry (``backend_for``,
``get``, ``all_backends``, ``devices`` ...) and never test a backend's name. The modules are
imported on first use of the registry; importing one must not import its framework (that happens
when a model is opened), so listing the backends stays cheap and works without them installed.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from ...errors import UserError

__all__ = ["BackendInfo", "register", "get", "all_backends", "backend_for", "devices", "providers",
           "precisions", "aliases", "model_kinds", "describe_kinds", "unusable_device"]

# What a backend can do beyond run/run_timed (asked by profile, compare, benchmark, serving):
#   "timed_copies"   run_timed times h2d and d2h apart (device memory)
#   "layer_profile"  layer_profile(batch, iterations) -> [(layer, ms)]
#   "arch_names"     opens an architecture name (seeded random weights), not only files
CAPABILITIES = ("timed_copies", "layer_profile", "arch_names")


@dataclass(frozen=True)
class BackendInfo:
    """What one backend opens and offers.

    ``opener(model, *, device, precision, threads, provider, arch, input_hw, seed,
    plugin_library, cache_dir)`` returns a ``base.Backend``; it imports the framework.
    ``suffixes``: the model files it opens (lower case, with the dot); ``runs``: those files in
    words, for messages; ``also_opens``: suffixes of another backend's files that this one opens
    too when asked for by name (``--backend``; OpenVINO reads ``.onnx``);
    ``devices``/``providers``/``precisions``: what ``--device``,
    ``--provider`` and ``--precision`` may ask of it (``precisions`` empty: files carry their own
    and the option is refused); ``default_device``; ``serving``: how ``triton`` serves such a
    file (``"python"``: the network runs inside the Python model; ``"tensorrt_plan"``: a TensorRT
    model of its own; None: not servable); ``describer(path) -> (ModelMetadata or ArchSpec,
    [(field, text)])``: what ``info`` shows of such a file, read without running it.
    ``device_check(device)``: why ``device`` cannot be used on this machine, in one line (None: it
    can); imports the framework, so it is asked only where a command must know before opening a
    model (None: not known until a model is opened).
    """

    name: str
    opener: Callable
    suffixes: Tuple[str, ...]
    runs: str
    aliases: Tuple[str, ...] = ()
    devices: Tuple[str, ...] = ("cpu",)
    default_device: str = "cpu"
    providers: Tuple[str, ...] = ()
    precisions: Tuple[str, ...] = ()
    capabilities: frozenset = frozenset()
    serving: Optional[str] = None
    file_noun: str = "model"   # what its files are called in messages ("engine" ...)
    describer: Optional[Callable] = None
    also_opens: Tuple[str, ...] = ()
    device_check: Optional[Callable[[str], Optional[str]]] = None

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def opens(self, model) -> bool:
        """Whether this backend opens ``model``: one of its file kinds, another backend's kind it
        also opens when asked, or an architecture name (``arch_names``)."""
        from ...contract.arch import ARCHS
        suffix = Path(str(model)).suffix.lower()
        if suffix:
            return suffix in self.suffixes + self.also_opens
        return self.can("arch_names") and str(model).lower() in ARCHS


_REGISTRY: Dict[str, BackendInfo] = {}
_discovered = False
ENTRY_POINT_GROUP = "cornernet_deploy.backends"


def register(info: BackendInfo) -> BackendInfo:
    """Add ``info`` (a second registration of the same name replaces the first)."""
    unknown = set(info.capabilities) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"backend {info.name}: unknown capabilities {sorted(unknown)}")
    _REGISTRY[info.name] = info
    return info


def _discover() -> None:
    """Import every backend module of this package, then the entry points' (once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    here = Path(__file__).parent
    for module in pkgutil.iter_modules([str(here)]):
        if module.name in ("base", "registry") or module.name.startswith("_"):
            continue
        importlib.import_module(f"{__package__}.{module.name}")
    try:
        from importlib.metadata import entry_points
        found = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:      # Python 3.9: entry_points() takes no group
        from importlib.metadata import entry_points
        found = entry_points().get(ENTRY_POINT_GROUP, [])
    for entry in found:
        entry.load()


def all_backends() -> Tuple[BackendInfo, ...]:
    """Every registered backend, by name (the order of messages and choices does not depend on
    which module happened to be imported first)."""
    _discover()
    return tuple(sorted(_REGISTRY.values(), key=lambda info: info.name))


def aliases() -> Dict[str, str]:
    """Every accepted spelling of a backend name -> its name."""
    out = {}
    for info in all_backends():
        out[info.name] = info.name
        out.update({a: info.name for a in info.aliases})
    return out


def get(name: str) -> BackendInfo:
    """The backend called ``name`` (or an alias of it); a one-line UserError for an unknown one."""
    table = aliases()
    key = str(name).lower()
    if key not in table:
        raise UserError(f"unknown backend '{name}' (choose {', '.join(i.name for i in all_backends())})")
    return _REGISTRY[table[key]]


def _union(attribute: str) -> Tuple[str, ...]:
    out = []
    for info in all_backends():
        out += [v for v in getattr(info, attribute) if v not in out]
    return tuple(out)


def devices() -> Tuple[str, ...]:
    return _union("devices")


def providers() -> Tuple[str, ...]:
    return _union("providers")


def precisions() -> Tuple[str, ...]:
    return _union("precisions")


def model_kinds() -> Dict[str, str]:
    """File suffix -> backend name."""
    return {s: info.name for info in all_backends() for s in info.suffixes}


def unusable_device(device: str) -> Optional[str]:
    """Why no backend can use ``device`` on this machine (one line), or None when one can (or a
    backend cannot tell before a model is opened)."""
    reasons = []
    for info in all_backends():
        if device not in info.devices:
            continue
        if info.device_check is None:
            return None
        reason = info.device_check(device)
        if reason is None:
            return None
        reasons.append(f"{info.name}: {reason}")
    return "; ".join(reasons) or f"no backend runs on '{device}'"


def describe_kinds() -> str:
    """'.onnx for ONNX Runtime, ... ' for messages."""
    return ", ".join(f"{'/'.join(info.suffixes)} ({info.runs})" for info in all_backends() if info.suffixes)


def backend_for(model) -> BackendInfo:
    """The backend that opens ``model`` (a model file, or an architecture name for a backend with
    the ``arch_names`` capability); a one-line UserError when none does."""
    from ...contract.arch import ARCHS

    text = str(model)
    path = Path(text)
    suffix = path.suffix.lower()
    for info in all_backends():
        if suffix and suffix in info.suffixes:
            return info
    if text.lower() in ARCHS and not path.suffix:
        for info in all_backends():
            if info.can("arch_names"):
                return info
    if not path.suffix and not path.exists():
        raise UserError(f"{text}: no such file, and not an architecture name ({', '.join(ARCHS)})")
    raise UserError(f"{text}: unknown model type '{path.suffix or path.name}' (expected {describe_kinds()}, "
                    "or an architecture name)")
