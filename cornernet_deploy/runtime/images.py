"""Collect image paths from files, folders and glob patterns (for ``infer`` and ``eval``)."""
from __future__ import annotations

import glob
from pathlib import Path
from typing import List, Sequence

from ..errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def collect_images(inputs: Sequence[str]) -> List[Path]:
    """Every image named by ``inputs`` (files as given; folders: their image files, sorted;
    globs: their matches), without duplicates. UserError when something names nothing."""
    found: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise UserError(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found += files
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise UserError(f"{item}: pattern matches no files")
            found += matches
        else:
            raise UserError(f"{item}: no such file or folder")
    seen, unique = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
