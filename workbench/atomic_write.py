"""Writing a file so that a reader, a crash or a kill sees the old file or the new one, never half of one.

The one way the workbench writes its files (sessions, analysis reports, scorer records): a temporary file beside
the target, filled, fsynced, renamed over the target, then the folder fsynced so the rename itself is durable.
The target keeps its mode; a new file gets the umask's. Raises OSError; callers say which file failed and why.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc: threads run beside us), else set
    and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomically(target: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(temporary_path)`` fills the temporary file (any writer: text, bytes, a plotting library)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fchmod(fh.fileno(), mode)  # mkstemp makes 0600 files
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return target


def write_text_atomically(target: str | os.PathLike, text: str) -> Path:
    return write_atomically(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomically(target, data) -> None:
    """``data`` as JSON (indent 1, no NaN) written as above: the records and work files of trained artefacts."""
    import json

    write_text_atomically(target, json.dumps(data, indent=1, allow_nan=False))


def read_json_or_none(path):
    """A JSON file's content, or None when it is missing or unreadable: a trained artefact's own files, where
    "absent or damaged" means "start that step again", not an error to report."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def staging_folder(final) -> Path:
    """An empty folder beside ``final`` to fill before :func:`publish_folder` puts it in ``final``'s place."""
    import shutil

    final = Path(final)
    fresh = final.with_name(f".{final.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    return fresh


def publish_folder(fresh, final) -> Path:
    """The filled ``fresh`` folder renamed into ``final``'s place (the previous one moved aside first, then removed):
    a kill leaves the previous folder or the new one, never half of one (a trained scorer or classifier)."""
    import shutil

    fresh, final = Path(fresh), Path(final)
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(fresh, final)
    shutil.rmtree(old, ignore_errors=True)
    return final
