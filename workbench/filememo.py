"""Remember what was worked out from a file until the file changes (its path, size and modification time).

Validation runs on every keystroke of the Setup screen and preflight before every run: a dataset or a model's
config is read once, and again only when it has been edited.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

_MEMO: dict[tuple, Any] = {}


def identity(spec: Any) -> tuple:
    """A file's resolved path, size and mtime; anything that is not a file (a bundled name, an hf: id) is itself."""
    path = pathlib.Path(str(spec)).expanduser()
    try:
        if path.is_file():
            st = path.stat()
            return (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        pass
    return (str(spec),)


def remembered(key: tuple, compute: Callable[[], Any]) -> Any:
    """compute() once per key (build keys from ``identity`` so an edited file is computed again)."""
    if key not in _MEMO:
        _MEMO[key] = compute()
    return _MEMO[key]
