"""Collect image paths from files, folders and glob patterns, and read them with their conversion
notes (for ``infer`` and ``eval``)."""
from __future__ import annotations

import glob
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..fileio import IMAGE_SUFFIXES

Note = Optional[Callable[[str], None]]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _hidden(path: Path) -> bool:
    # dotfiles: macOS AppleDouble "._x.jpg", ".DS_Store", editors' temporary files
    return path.name.startswith(".")


def _holds_images(folder: Path) -> bool:
    return any(_is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)
               for p in folder.rglob("*"))


def _list(names: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _folder_images(folder: Path, recursive: bool, note: Note, visited=None) -> List[Path]:
    """The image files of ``folder`` (sorted; subfolders' after the folder's own when recursive),
    without hidden files and folders; the skipped ones are noted."""
    visited = set() if visited is None else visited
    visited.add(folder.resolve())
    entries = sorted(folder.iterdir())
    hidden = [p for p in entries if _hidden(p) and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    visible = [p for p in entries if not _hidden(p)]
    files = [p for p in visible if _is_image(p)]
    subfolders = [p for p in visible if p.is_dir()]
    if hidden and note:
        note(f"{folder}: skipped hidden files: {_list([p.name for p in hidden])}")
    if recursive:
        for sub in subfolders:
            if sub.resolve() not in visited:          # a link back up would loop forever
                files += _folder_images(sub, True, note, visited)
    elif note:
        with_images = [p for p in subfolders if _holds_images(p)]
        if with_images:
            note(f"{folder}: skipped subfolders with images: {_list([p.name + '/' for p in with_images])} "
                 f"(pass --recursive to include them)")
    return files


def collect_images(inputs: Sequence[str], recursive: bool = False, note: Note = None) -> List[Path]:
    """Every image named by ``inputs``, each once, in the order given: files as given (whatever
    their name), folders: their image files sorted by name (``recursive``: subfolders' too),
    glob patterns: their matches. Hidden files and folders (names starting with ``.``) in a folder
    or behind a wildcard are skipped. ``note(message)`` hears what was skipped (hidden files,
    subfolders, files named twice). UserError when an input names nothing."""
    found: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = _folder_images(path, recursive, note)
            if not files:
                hint = ""
                if not recursive and any(p.is_dir() and not _hidden(p) and _holds_images(p)
                                         for p in path.iterdir()):
                    hint = "; its subfolders do: pass --recursive"
                raise UserError(f"{item}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                                f"{hint}")
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
    seen, unique, repeated = set(), [], []
    for p in found:
        key = p.resolve()
        if key in seen:
            repeated.append(p)
        else:
            seen.add(key)
            unique.append(p)
    if repeated and note:
        note(f"named more than once, processed once: {_list([str(p) for p in repeated])}")
    return unique


def read_image(path, note: Note = None, max_pixels: Optional[int] = None) -> np.ndarray:
    """``preprocess.load_image(path)`` (8-bit BGR) with its conversion warnings (grayscale, alpha,
    16-bit) passed to ``note`` as plain messages instead of Python warnings. ``max_pixels``: the
    pixel limit (None: ``preprocess.DEFAULT_MAX_PIXELS``; 0: none)."""
    from .preprocess import DEFAULT_MAX_PIXELS, ImageConversionWarning, load_image

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImageConversionWarning)
        image = load_image(path, DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
    for w in caught:
        if issubclass(w.category, ImageConversionWarning) and note:
            note(str(w.message))
        elif not issubclass(w.category, ImageConversionWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return image
