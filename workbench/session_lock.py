"""One writer per session file: an exclusive lock on '.NAME.lock' beside it, holding the writer's pid.

Two runs writing one session file would each save their own copy after every sample, and the file
would flip between them. The lock is ``fcntl.flock`` on a lock file next to the session (not on the
session itself, which every save replaces by a rename); the kernel drops it when the holder exits,
even on SIGKILL, so a stale lock file never blocks anyone: only a live holder does. Within one
process a lock is shared by path (the app's runs are exclusive workers, one at a time) and goes when
the last session holding it lets go.

Where fcntl does not exist (Windows) there is no lock: writes stay atomic, concurrency is unchecked.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from pathlib import Path

from workbench.session_schema import SessionError

_HELD: dict[str, "SessionLock"] = {}
_HELD_GUARD = threading.Lock()


class SessionLocked(SessionError):
    """Another process writes this session file; the message names it and its pid."""


def lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


class SessionLock:
    """The lock of one session file. ``acquire_session_lock`` creates and shares them."""

    def __init__(self, target: Path):
        self.target = target
        self.path = lock_path(target)
        self.fd: int | None = None
        self.owners: weakref.WeakSet = weakref.WeakSet()  # the sessions of this process that hold it

    @property
    def held(self) -> bool:
        return self.fd is not None

    def _acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: nothing to hold
            return
        folder = self.target.parent
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except (FileNotFoundError, NotADirectoryError):
                raise SessionError(f"{self.target}: its folder {folder} does not exist or is not a folder") from None
            except PermissionError:
                raise SessionError(f"{self.target}: cannot write in the folder {folder} (permission denied)") from None
            except OSError as err:
                raise SessionError(f"{self.target}: cannot write in the folder {folder} ({err.strerror or err})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_pid(fd)
                os.close(fd)
                raise SessionLocked(
                    f"{self.target}: another workbench is writing this session (pid {holder or 'unknown'}, lock file "
                    f"{self.path.name}); wait for it to finish, or write elsewhere with --out") from None
            # A holder releasing at this moment unlinks the file we opened: lock the file that is there now.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except OSError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return
            os.close(fd)

    def release(self, owner: object | None = None) -> None:
        """Let go for ``owner``; the lock itself goes when no owner is left (at once without an owner)."""
        with _HELD_GUARD:
            if owner is not None:
                self.owners.discard(owner)
                if len(self.owners):
                    return
            if _HELD.get(str(self.target)) is self:
                del _HELD[str(self.target)]
            fd, self.fd = self.fd, None
        if fd is None:
            return
        try:  # unlink while still holding it, so nobody locks a file that is about to vanish unnoticed
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def acquire_session_lock(target: str | os.PathLike, owner: object | None = None) -> SessionLock:
    """The lock of ``target`` for this process, acquired now unless this process holds it already.

    Raises SessionLocked when another process holds it, SessionError when its folder cannot be written."""
    resolved = Path(os.path.abspath(Path(target).expanduser()))
    try:
        resolved = resolved.parent.resolve() / resolved.name  # the real folder: one lock per real file
    except OSError:
        pass
    with _HELD_GUARD:
        lock = _HELD.get(str(resolved))
        if lock is None:
            lock = SessionLock(resolved)
            lock._acquire()
            _HELD[str(resolved)] = lock
        if owner is not None:
            lock.owners.add(owner)
        return lock


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()
