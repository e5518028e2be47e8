"""Named option sets (``export/presets.json``, ``engines/profiles.json``) for the CLI."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

# The presets ship in the repository folders; a copy next to the package serves installed wheels.
_ROOT = Path(__file__).resolve().parents[1]


def load_presets(relative: str) -> dict:
    for base in (Path.cwd(), _ROOT):
        path = base / relative
        if path.is_file():
            try:
                return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
            except ValueError as exc:
                raise UserError(f"{path}: not valid JSON ({exc})") from None
    return {}


def apply_preset(args, relative: str, name: str | None, defaults: dict) -> None:
    """Fill every option left at None from the preset ``name``, then from ``defaults``."""
    preset = {}
    if name:
        presets = load_presets(relative)
        if name not in presets:
            raise UserError(f"unknown preset '{name}' in {relative}; choose one of: {', '.join(presets) or 'none'}")
        preset = {k: v for k, v in presets[name].items() if not k.startswith("_")}
    for key in set(preset) | set(defaults):
        if getattr(args, key, None) is None:
            setattr(args, key, preset.get(key, defaults.get(key)))
