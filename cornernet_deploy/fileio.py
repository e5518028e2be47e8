"""Artifact writing: a file (or a folder of results) appears under its final name only once it is
complete; output paths are checked before the work that fills them, never name an input, and a
write the disk refuses is one line naming the path.

Staging files and folders are hidden next to their target, named
``.NAME.cdp-HOST-PID-XXXXXXXX.part`` (``.old`` for a replaced folder on its way out): ``PID`` is
the writing process, so that a later write into the same folder removes those of a process that
is gone (killed with ``kill -9``, or its machine lost power) and leaves those of live ones alone.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from .errors import UserError, warn

# errors of a write that the disk or filesystem refuses, whatever the program does
# The image files a folder argument stands for (infer, eval, quantize's calibration folders): the
# readers list them (runtime/images.py), and no output may replace one (check_not_input).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
# staging names keep this many bytes of the target's name, so that a target whose name is
# near the filesystem's limit (255 bytes) still has a staging name
STAGING_NAME_BYTES = 120
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16] or "host"
_STAGING = re.compile(r"^\..*\.cdp-(?P<host>[A-Za-z0-9]{1,16})-(?P<pid>\d+)-[a-z0-9_]{8}"
                      r"(?P<kind>\.[A-Za-z0-9]{1,8})$")
_LOCK_RECORD = 64       # bytes of "PID HOST" in a lock file (exclusive_folder), space-padded
# what an earlier version named its staging files: owner unknown, so only mentioned
_LEGACY_STAGING = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")


def user_cache_dir(*parts: str) -> Path:
    """The toolkit's folder of the user's cache (``$XDG_CACHE_HOME/cornernet_deploy``, else
    ``~/.cache/cornernet_deploy``), with ``parts`` below it; not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "cornernet_deploy", *parts)


def truncate_name(name: str, max_bytes: int) -> str:
    """``name`` cut to at most ``max_bytes`` bytes of UTF-8, at a character boundary."""
    raw = os.fsencode(name)
    if len(raw) <= max_bytes:
        return name
    return raw[:max_bytes].decode("utf-8", "ignore")


def _staging_prefix(path: Path) -> str:
    return f".{truncate_name(path.name, STAGING_NAME_BYTES)}.cdp-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):   # another user's live process; a pid out of range
        return pid > 0
    return True


def remove_stale_staging(folder) -> list:
    """Remove the staging files and folders in ``folder`` whose writer is gone (this machine's
    processes only); say so in one warning. A staging file of an earlier version, whose writer
    is unknown, is mentioned, not removed. Returns the names removed."""
    folder = Path(folder)
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.startswith(".")]
    except OSError:
        return []
    removed, unknown = [], []
    for name in entries:
        m = _STAGING.match(name)
        if m is None:
            if _LEGACY_STAGING.match(name):
                unknown.append(name)
            continue
        if m["host"] != _HOST or _alive(int(m["pid"])):
            continue
        target = folder / name
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        except FileNotFoundError:             # another run removed it first
            continue
        except OSError:
            continue                          # not ours to remove after all (permissions)
        removed.append(name)
    if removed:
        warn(f"removed {len(removed)} partial file(s) left in {folder} by runs that were killed "
             f"({_shown(removed)})")
    if unknown:
        warn(f"{folder} holds {len(unknown)} partial file(s) of an interrupted run of an earlier "
             f"version ({_shown(unknown)}); remove them if no run is writing there")
    return removed


def _shown(names, limit: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")


def write_error_message(path, exc: OSError) -> str:
    """One line for an ``OSError`` met writing ``path`` (or for any OSError when ``path`` is
    None: the path it names, if any)."""
    what = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file too large for the filesystem", errno.EROFS: "read-only filesystem",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
            errno.ENAMETOOLONG: "file name too long", errno.EMFILE: "too many open files",
            errno.ENOENT: "no such file or folder"}.get(exc.errno, exc.strerror or str(exc))
    where = path if path is not None else exc.filename
    return f"{where}: {what}" if where is not None else what


def _write_refusal(exc: BaseException):
    """The OSError of ``WRITE_ERRNOS`` that is ``exc`` or that caused it (a library may turn it
    into its own error: torch.save's "unexpected pos N vs M"), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def write_errors_named(path, outcome: str = "nothing was written"):
    """A write the filesystem refuses (full, quota, read-only) becomes one line naming ``path``
    and saying ``outcome``."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - only a write refusal is turned into a UserError
        refusal = _write_refusal(exc)
        if refusal is None:
            raise
        raise UserError(f"{write_error_message(path, refusal)}; {outcome}") from None


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.
    A full disk (or quota, read-only filesystem) while the block writes is a ``UserError`` naming
    ``path``; the temporary file is removed whatever happens. A symbolic link is followed (the
    file it names is replaced); a device or pipe (``/dev/null``, ``/dev/stdout``, a FIFO) is
    written directly: renaming a file over it would replace the device itself."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file() and not path.is_dir():
        with write_errors_named(path):
            yield path
        return
    with write_errors_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_staging_prefix(path), suffix=suffix or ".part", dir=path.parent)
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


def _finite(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN or infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(value, **dumps_options) -> str:
    """Strict JSON (what every reader parses): a number that is not finite is written as
    ``null``, never as the ``NaN``/``Infinity`` that ``json.dumps`` writes by default."""
    return json.dumps(_finite(value), allow_nan=False, **dumps_options)


def write_json_atomic(path, value, **dumps_options) -> None:
    write_text_atomic(path, json_text(value, **dumps_options) + "\n")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:                           # a name too long, a loop of links
        return False


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not _exists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def name_max(folder) -> int:
    """The longest file name, in bytes, that the filesystem of ``folder`` (or of its nearest
    existing ancestor) takes."""
    try:
        return int(os.pathconf(_nearest_existing(Path(folder)), "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _check_names(path: Path, option: str) -> None:
    """Every name on the way must be one the filesystem takes, and a link must lead somewhere."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{option} {path}: a symbolic link that leads to itself (a loop); "
                            "remove it or give another path") from None
    limit = name_max(path)
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise UserError(f"{option} {path}: file name too long ({len(os.fsencode(part))} bytes "
                            f"in one name; the filesystem takes {limit})")


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
    _check_names(path, option)
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
    _check_names(path, option)
    # a folder replaced as a whole may be between the two renames of another run's swap: look
    # under the lock that the swap holds
    with swap_lock(path) if whole else contextlib.nullcontext():
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


def _identity(path: Path):
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_not_input(output, inputs, option: str = "--output", whole_folder: bool = False,
                    label: str | None = None) -> None:
    """Refuse, before any work, an output that would replace or remove an input.

    ``inputs``: ``(what, path)`` pairs (``what`` as the user knows it: "--checkpoint", "the
    model"); None paths are skipped. The output may not be an input file: the same path, a
    symbolic link to it, or the same inode (a hard link, a bind mount). An input folder stands
    for the images in it: an existing image file inside it may not be the output either.
    ``whole_folder``: the output is a folder the run replaces (or empties), which may then hold
    no input at any depth. ``label``: how the message names the output, for an output the
    user did not name (default: the option and the path)."""
    out = Path(output)
    head = label or f"{option} {out}:"
    other = option if label else ("folder" if whole_folder else "file")
    out_real = os.path.realpath(out)
    out_id = _identity(out)
    # many inputs (infer's images) share a few folders: resolve and stat each folder once
    identity = functools.lru_cache(maxsize=4096)(_identity)
    folder_real = functools.lru_cache(maxsize=4096)(os.path.realpath)

    def within(inner: str, folder: str, folder_id) -> bool:
        """``inner`` lies in ``folder`` (by path, or by an ancestor's identity)."""
        if inner.startswith(folder.rstrip(os.sep) + os.sep):
            return True
        return folder_id is not None and any(identity(p) == folder_id for p in Path(inner).parents)

    for what, path in inputs:
        if path is None:
            continue
        name = os.fspath(path)
        real = (os.path.realpath(name) if os.path.islink(name) else
                os.path.join(folder_real(os.path.dirname(name) or "."), os.path.basename(name)))
        in_id = _identity(name) if out_id is not None else None
        if real == out_real or (in_id is not None and in_id == out_id):
            raise UserError(f"{head} is {what} {path}; writing there would replace the input: "
                            f"give another {other}")
        if whole_folder and within(real, out_real, out_id):
            raise UserError(f"{head} holds {what} {path}, which replacing the folder would delete: "
                            "give another folder")
        if (in_id is not None and os.path.isdir(name) and out.is_file()
                and out.suffix.lower() in IMAGE_SUFFIXES and within(out_real, real, in_id)):
            raise UserError(f"{head} is an image of {what} {path}; writing there would replace an "
                            f"input: give another {other}")


@contextlib.contextmanager
def exclusive_folder(folder, lock_name: str, option: str = "--output", what: str = "run"):
    """Hold ``folder`` (made if absent) for this process alone until the block ends: an
    exclusive ``flock`` on ``folder/lock_name``, which holds our pid. The OS releases the lock
    when the process ends however it ends, so a lock file left by a dead process blocks no one.
    A second holder is refused with one line naming the live one. If the block fails and the
    folder was made here and holds nothing else, folder and lock file are removed again.
    Where the filesystem has no locks, the folder is used without one."""
    import fcntl

    folder = Path(folder)
    created = not folder.exists()
    lock_path = folder / lock_name
    while True:
        with write_errors_named(folder):
            folder.mkdir(parents=True, exist_ok=True)   # again if a failed holder removed it
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise UserError(f"{option} {folder}: another {what} is using this folder now "
                            f"({holder}); wait for it to end, or give another {option}") from None
        except OSError:                       # no locks here: go on without
            break
        if _identity(lock_path) == _same_file(fd):
            break                             # else its holder removed the file: lock anew
        os.close(fd)
    succeeded = False
    try:
        with write_errors_named(lock_path, f"the {what} did not start"):
            # one write of a fixed-size record over the last holder's: never seen empty
            os.pwrite(fd, f"{os.getpid()} {_HOST}".ljust(_LOCK_RECORD - 1).encode() + b"\n", 0)
        yield folder
        succeeded = True
    finally:
        if created and not succeeded and [p.name for p in folder.iterdir()] == [lock_name]:
            with contextlib.suppress(OSError):
                lock_path.unlink()
                folder.rmdir()
        os.close(fd)                          # releases the lock


def _same_file(fd: int):
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _lock_holder(fd: int, wait_s: float = 2.0) -> str:
    """"pid N" of the holder of the lock on ``fd`` (it writes it right after taking the lock)."""
    import time

    deadline = time.monotonic() + wait_s
    while True:       # empty, or a dead pid: the new holder has not written its own yet
        text = os.pread(fd, _LOCK_RECORD, 0).decode(errors="replace").split()
        if (text and text[0].isdigit() and _alive(int(text[0]))) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not text:
        return "its pid unknown"
    pid, host = text[0], (text[1] if len(text) > 1 else "")
    return f"pid {pid}" + (f" on {host}" if host and host != _HOST else "")


@contextlib.contextmanager
def swap_lock(path):
    """Hold an exclusive lock that serialises, among this toolkit's processes, every look into
    and replacement of the folder ``path`` by ``atomic_dir`` (a lock on the folder it is in,
    released by the OS if the process dies). Where the filesystem has no locks, no lock."""
    import fcntl

    path = Path(path)
    parent = (Path(os.path.realpath(path)) if path.is_symlink() else path).parent
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:                           # no parent yet: nothing to look at or replace
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:                       # e.g. some network filesystems
            pass
        yield
    finally:
        os.close(fd)                          # releases the lock


@contextlib.contextmanager
def atomic_dir(path, may_replace=None, option: str = "output"):
    """Yield an empty temporary folder next to ``path``; when the block succeeds it becomes
    ``path`` in one rename, so that readers and concurrent writers see the old folder or the new
    one whole, never a mix of two runs. ``path`` may be absent or empty; an existing non-empty
    ``path`` is replaced only if ``may_replace(path)`` returns (it raises UserError to refuse),
    and is then removed. Concurrent runs: the last to finish wins (the check and the swap hold
    ``swap_lock``, so a run never looks into a folder another run is swapping)."""
    path = check_output_dir(path, option, whole=True)
    if path.is_symlink():                     # replace the folder it points to, not the link
        path = Path(os.path.realpath(path))
    anchor = _nearest_existing(path.parent)  # the staging folder is on the same filesystem
    remove_stale_staging(anchor)
    try:
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(path), suffix=".part", dir=anchor))
    except OSError as exc:
        raise UserError(f"{option} {path}: cannot write in {anchor} ({exc.strerror}); the results "
                        f"are put together there and moved into place at the end") from None
    try:
        with write_errors_named(path):
            yield staging
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; give what mkdir would have
            path.parent.mkdir(parents=True, exist_ok=True)
        _swap_in(staging, path, may_replace, option)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder, option: str = "--output"):
    """Yield an empty hidden staging folder inside ``folder`` (made if absent); when the block
    succeeds, every file in it is moved into ``folder`` (replacing files of those names, leaving
    the others), so that a failed run adds nothing half-written to ``folder``. For a set of
    files written into a folder that also holds other things (``atomic_dir`` replaces the
    folder as a whole). Errors name the final paths, never the staging folder."""
    folder = check_output_dir(folder, option)
    created = not folder.exists()
    with write_errors_named(folder):
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(folder)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(folder), suffix=".part", dir=folder))
    moved = False
    try:
        try:
            with write_errors_named(folder):
                yield staging
                for item in sorted(staging.iterdir()):
                    os.replace(item, folder / item.name)
                moved = True
        except UserError as exc:
            raise UserError(str(exc).replace(str(staging), str(folder))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not moved:
            with contextlib.suppress(OSError):
                folder.rmdir()


def _swap_in(staging: Path, path: Path, may_replace, option: str) -> None:
    trash = []                                # old folders, removed once the new one is in place
    try:
        with swap_lock(path):
            for _ in range(100):              # only a process outside this toolkit can interfere
                try:
                    os.rename(staging, path)  # atomic; replaces an absent or empty folder only
                    return
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise UserError(f"{option} {path}: cannot write the results "
                                        f"({write_error_message(None, exc)})") from None
                if may_replace is None:
                    raise UserError(f"{option} {path}: folder is not empty (filled by another run "
                                    f"while this one worked?); nothing was written")
                may_replace(path)
                trash.append(Path(tempfile.mkdtemp(prefix=_staging_prefix(path), suffix=".old",
                                                   dir=path.parent)))
                with contextlib.suppress(FileNotFoundError):   # removed by someone else first
                    os.rename(path, trash[-1] / "old")
            raise UserError(f"{option} {path}: other programs keep replacing this folder; try again")
    finally:
        for folder in trash:                  # after the lock: other runs need not wait for it
            shutil.rmtree(folder, ignore_errors=True)


def sha256_file(path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
