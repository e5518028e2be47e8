"""Artifact writing: a file appears under its final name only once it is complete; output paths
are checked before the work that fills them."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from .errors import UserError


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would have
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_parents(path: Path, option: str) -> None:
    """Every existing ancestor must be a writable folder (a file in the way cannot be fixed by us)."""
    anchor = _nearest_existing(path.parent if path.parent != path else path)
    if not anchor.is_dir():
        raise UserError(f"{option} {path}: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {anchor} is not writable")


def check_output_file(path, option: str = "output") -> Path:
    """Refuse, before any work, an output file path that could not be written: an existing folder
    of that name, a file where a parent folder should be, or a read-only folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name")
    _check_parents(path, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: exists and is not writable")
    return path


def check_output_dir(path, option: str = "output") -> Path:
    """Refuse, before any work, an output folder path that could not be made or written."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {path}: is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path}: folder is not writable")
        return path
    _check_parents(path, option)
    return path
