"""Artifact writing: a file (or a folder of results) appears under its final name only once it is
complete; output paths are checked before the work that fills them."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
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


def check_output_dir(path, option: str = "output", whole: bool = False) -> Path:
    """Refuse, before any work, an output folder path that could not be made or written.
    ``whole``: the folder will be replaced as a whole (``atomic_dir``), so the folder it is in
    must be writable too, and it may not be the current folder."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {path}: is a file; give a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path}: folder is not writable")
    else:
        _check_parents(path, option)
    if whole:
        real = path.resolve()
        cwd = Path.cwd().resolve()
        if real == cwd or real in cwd.parents:
            raise UserError(f"{option} {path}: is the current folder (or holds it); the results "
                            f"replace the folder as a whole, give a new folder")
        anchor = _nearest_existing(real.parent)
        if not os.access(anchor, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path}: {anchor} is not writable (the results are put "
                            f"together there and moved into place at the end)")
    return path


@contextlib.contextmanager
def atomic_dir(path, may_replace=None, option: str = "output"):
    """Yield an empty temporary folder next to ``path``; when the block succeeds it becomes
    ``path`` in one rename, so that readers and concurrent writers see the old folder or the new
    one whole, never a mix of two runs. ``path`` may be absent or empty; an existing non-empty
    ``path`` is replaced only if ``may_replace(path)`` returns (it raises UserError to refuse),
    and is then removed. Concurrent runs: the last to finish wins."""
    path = check_output_dir(path, option, whole=True)
    if path.is_symlink():                     # replace the folder it points to, not the link
        path = path.resolve()
    anchor = _nearest_existing(path.parent)  # the staging folder is on the same filesystem
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=anchor))
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write in {anchor} ({exc.strerror}); the results "
                        f"are put together there and moved into place at the end") from None
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give what mkdir would have
        path.parent.mkdir(parents=True, exist_ok=True)
        _swap_in(staging, path, may_replace, option)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, path: Path, may_replace, option: str) -> None:
    trash = []                                # old folders, removed once the new one is in place
    try:
        for _ in range(100):                  # other runs may swap in between our two renames
            try:
                os.rename(staging, path)      # atomic; replaces an absent or empty folder only
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise UserError(f"{option} {path}: cannot write the results ({exc.strerror})") from None
            if may_replace is None:
                raise UserError(f"{option} {path}: folder is not empty (filled by another run while "
                                f"this one worked?); nothing was written")
            may_replace(path)
            trash.append(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)))
            with contextlib.suppress(FileNotFoundError):   # another run moved it away first
                os.rename(path, trash[-1] / "old")
        raise UserError(f"{option} {path}: other runs keep replacing this folder; try again")
    finally:
        for folder in trash:
            shutil.rmtree(folder, ignore_errors=True)


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
