"""Reading the JSON documents a user hands in (presets, sessions) without ever raising a traceback.

Every failure is an ``InputFileError`` whose message names the file and, where there is one, the
field: a missing file, a folder, an unreadable or non-UTF-8 file, invalid JSON, nesting deeper than
any real document, and numbers JSON does not have (NaN, Infinity, 1e999: Python's parser accepts
them, and a session holding one could never be written back).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Real presets nest about 6 levels, sessions about 8 (a sample's task_meta); far deeper is damage.
MAX_DEPTH = 64


class InputFileError(ValueError):
    """A JSON input that cannot be used; ``str()`` is one line naming the file (and the field)."""


def field_name(parts: list) -> str:
    """'a.b[3].c' from ['a', 'b', 3, 'c']."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def read_json(path: str | Path, what: str = "file") -> Any:
    """The parsed document at ``path``, checked with ``check_tree``. Raises InputFileError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a folder, not {_article(what)} {what}") from None
    except PermissionError:
        raise InputFileError(f"{path}: cannot be read (permission denied)") from None
    except (OSError, ValueError) as err:  # a name too long, an embedded NUL, an I/O error
        raise InputFileError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputFileError(f"{path}: not UTF-8 text (byte {err.start} is {raw[err.start]:#04x}); "
                             f"{_article(what)} {what} is a UTF-8 JSON document") from None
    data = parse(text, str(path))
    check_tree(data, str(path))
    return data


def parse(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputFileError(f"{source}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise InputFileError(f"{source}: not a usable JSON document (nested more than {MAX_DEPTH} levels deep)") from None
    except ValueError as err:  # e.g. an integer of more than 4,300 digits
        raise InputFileError(f"{source}: not valid JSON ({err})") from None


def check_tree(data: Any, source: str) -> None:
    """Refuse non-finite numbers and absurd nesting anywhere in ``data`` (iteratively: no recursion limit)."""
    stack: list[tuple[Any, list]] = [(data, [])]
    while stack:
        value, parts = stack.pop()
        if len(parts) > MAX_DEPTH:
            raise InputFileError(f"{source}: field '{field_name(parts[:8])}…': nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, float) and not math.isfinite(value):
            raise InputFileError(f"{source}: field '{field_name(parts)}': {value} is not a finite number")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InputFileError(f"{source}: field '{field_name(parts)}': key {key!r} is not a string")
                stack.append((item, parts + [key]))
        elif isinstance(value, (list, tuple)):
            stack.extend((item, parts + [i]) for i, item in enumerate(value))
        elif not (value is None or isinstance(value, (str, int, float, bool))):
            raise InputFileError(f"{source}: field '{field_name(parts)}': a {type(value).__name__} is not JSON")
