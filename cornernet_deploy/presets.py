"""Named option sets for the CLI: ``export --preset NAME`` and ``build --profile NAME``.

The shipped sets are package data (``cornernet_deploy/assets/export_presets.json``,
``build_profiles.json``), so an installed wheel has them. A project can add its own, or override
a shipped one by name, in ``export/presets.json`` / ``engines/profiles.json`` under the current
folder.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

ASSETS = Path(__file__).resolve().parent / "assets"
# the project-local file a command names -> the shipped file
SHIPPED = {"export/presets.json": ASSETS / "export_presets.json",
           "engines/profiles.json": ASSETS / "build_profiles.json"}


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of named option sets")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def load_presets(relative: str) -> dict:
    """The shipped sets for ``relative`` (e.g. ``"export/presets.json"``), then the project's own
    ``./relative`` on top (same name: the project's wins)."""
    presets = {}
    shipped = SHIPPED.get(relative)
    if shipped is not None and shipped.is_file():
        presets.update(_read(shipped))
    local = Path.cwd() / relative
    if local.is_file():
        presets.update(_read(local))
    return presets


def preset_help(relative: str) -> str:
    """``name1, name2, ...`` of the available sets, for ``--help``."""
    try:
        names = list(load_presets(relative))
    except UserError:
        names = []
    return ", ".join(names) or "none found"


def apply_preset(args, relative: str, name: str | None, defaults: dict) -> None:
    """Fill every option left at None from the preset ``name``, then from ``defaults``."""
    preset = {}
    if name:
        presets = load_presets(relative)
        if name not in presets:
            raise UserError(f"unknown preset '{name}'; choose one of: {', '.join(presets) or 'none'} "
                            f"(shipped, plus ./{relative} if present)")
        if not isinstance(presets[name], dict):
            raise UserError(f"preset '{name}' is not a JSON object of option values")
        preset = {k: v for k, v in presets[name].items() if not k.startswith("_")}
    for key in set(preset) | set(defaults):
        if getattr(args, key, None) is None:
            setattr(args, key, preset.get(key, defaults.get(key)))
