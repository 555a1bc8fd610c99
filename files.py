"""
Files and folders that are whole or absent, and run folders that belong to one run: every writer of
the project goes through here.

- atomic_write / write_text_atomic: a file is written beside its place, flushed to disk, then renamed
  over it, so a reader (or a crash) sees the old file or the new, never half of one.
- write_folder: the same for a folder (a model export): filled beside, then moved into place whole.
- RunFolder: a run's folder, created by an atomic mkdir (two runs cannot share a name, even when they
  start at the same moment) or reopened to continue it, and locked for the run's life, so that no other
  process writes into it meanwhile. What an earlier process of the run left half-written (it was
  killed) is removed when the folder is next opened.

No torch, no project imports but cli's errors: every module may use it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Callable

from cli import UsageError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the exclusive mkdir still keeps runs apart
    fcntl = None

TMP_PREFIX = ".tmp-"  # what atomic_write and write_folder stage under, beside the target
LOCK_FILE = ".lock"


def atomic_write(path: str, write: Callable) -> None:
    """Write path through write(f), f a binary file beside it; flushed, fsynced, then renamed into place.
    The folder is created if needed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path: str, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=1, ensure_ascii=False))


def write_folder(path: str, fill: Callable[[str], None]) -> None:
    """Make the folder `path` whole or not at all: fill(tmp) writes its files into a new folder beside it,
    which then replaces `path` (the previous folder, if any, is removed only once the new one is in place).
    An interruption leaves the previous folder as it was, and at most a hidden staging folder that
    remove_stale_temporaries clears."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f"{TMP_PREFIX}{os.path.basename(path)}-")
    try:
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(path):
        old = tempfile.mkdtemp(dir=parent, prefix=f"{TMP_PREFIX}old-{os.path.basename(path)}-")
        os.replace(path, os.path.join(old, "previous"))
    os.replace(tmp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


# What atomic_write and write_folder stage under: .tmp- and mkstemp's 8 characters, after a folder's name.
_STAGED = re.compile(r"\.tmp-(?:old-)?(?:[^/]+-)?[a-z0-9_]{8}")


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the hidden staging files and folders (atomic_write's, write_folder's) that a killed writer left
    in `folder`; call it only where no live writer can be at work (a locked run folder). Returns what was
    removed."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in sorted(os.listdir(folder)):
        if _STAGED.fullmatch(name):
            path = os.path.join(folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            removed.append(path)
    return removed


def check_run_name(name: str, flag: str = "--run-name") -> str:
    """A run name is one path component: it cannot climb out of --out-dir or into a sub-folder."""
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name \
            or name.startswith(TMP_PREFIX) or name == LOCK_FILE:
        raise UsageError(f"{flag} {name!r}: a run name is one folder name (no '/', not '.' or '..'); the folder "
                         "goes under --out-dir")
    if len(name.encode("utf-8", "surrogateescape")) > 200:  # file systems allow 255 bytes; -1, -2 ... and .tmp- fit
        raise UsageError(f"{flag}: a run name of {len(name.encode('utf-8', 'surrogateescape'))} bytes is too long "
                         "(at most 200)")
    return name


_HELD: set[int] = set()  # the lock descriptors this process holds


def drop_inherited_locks() -> None:
    """In a forked child (a tokenising worker): close the run-folder locks inherited from the parent. A lock
    is held while any descriptor of it is open, so a child that outlived a killed parent would keep the
    run locked."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


class RunFolder:
    """A run's folder, held by this process until release(): created exclusively with create(), or reopened
    to continue the run with open(). Either way it is locked (flock on .lock, which the kernel releases when
    the process ends, however it ends), so a second process that tries to use it gets a usage error.

    Used as a context manager around the run's set-up: if the set-up fails (bad data, Ctrl-C) before
    keep() is called, a folder this process created is removed again, so a failed start leaves nothing."""

    def __init__(self, path: str, created: bool):
        self.path, self.created, self.kept = path, created, False
        self._fd: int | None = None

    @classmethod
    def create(cls, out_dir: str, name: str, numbered: bool = False) -> "RunFolder":
        """out_dir/name, which must not exist. numbered (a generated name): name-1, name-2 ... are tried
        when another run took the name first."""
        check_run_name(name)
        try:
            os.makedirs(out_dir, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"--out-dir {out_dir}: not a folder (a file is in the way)") from None
        except OSError as e:
            raise UsageError(f"--out-dir {out_dir}: {e.strerror}") from None
        for i in range(1000 if numbered else 1):
            path = os.path.join(out_dir, name if i == 0 else f"{name}-{i}")
            try:
                os.mkdir(path)  # atomic: of two runs that try the same name, one gets it
            except FileExistsError:
                continue
            except OSError as e:
                raise UsageError(f"{path}: {e.strerror}") from None
            folder = cls(path, created=True)
            folder._lock()
            return folder
        raise UsageError(f"{os.path.join(out_dir, name)} exists (another run's folder; nothing in it was touched): "
                         "choose another --run-name" + ("" if numbered else ", or continue that run with --resume"))

    @classmethod
    def open(cls, path: str) -> "RunFolder":
        """An existing run's folder, to continue the run in it."""
        if not os.path.isdir(path):
            raise UsageError(f"{path}: no such run folder")
        folder = cls(path, created=False)
        folder._lock()
        return folder

    def _lock(self) -> None:
        if fcntl is None:
            return
        path = os.path.join(self.path, LOCK_FILE)
        try:  # never through a link: a copied folder's .lock could point at any file, which we would truncate
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UsageError(f"{path}: {e.strerror}; a run folder's lock is a plain file (remove it if it is a "
                             "link)") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            self._fd = None
            raise UsageError(f"{self.path} is in use by another process (pid {holder}); wait for it to end, or "
                             "choose another --run-name") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        _HELD.add(self._fd)

    def keep(self) -> None:
        """The run has begun: its folder stays, whatever happens next."""
        self.kept = True

    def release(self) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None and self.created and not self.kept:
            shutil.rmtree(self.path, ignore_errors=True)
        self.release()
