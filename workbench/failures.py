"""A cell's failure in one line: 'error' or 'unavailable' (the hub out of reach, a method this setup cannot run)."""

from __future__ import annotations

import traceback

from workbench.families.base import UnsupportedMethod
from workbench.session import scrub

_HUB_MARKERS = ("huggingface", "hf.co", "hub", "offline", "connection", "resolve", "repository not found", "gated repo",
                "does not appear to have a file", "can't load", "cannot find the requested files", "local cache")


def classify_failure(err: BaseException, hub_reason: str | None) -> tuple[str, str]:
    """('unavailable' | 'error', one-line message without secrets) for an exception raised by a cell."""
    text = f"{type(err).__name__}: {err}".strip()
    first = scrub(text.splitlines()[0] if text else type(err).__name__)[:500]
    chain, seen = [], err
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = " ".join(type(e).__name__ for e in chain)
    if "OutOfMemoryError" in names or "out of memory" in text.lower():
        return "error", f"out of memory: {first}"
    if any(isinstance(e, UnsupportedMethod) for e in chain):
        return "unavailable", scrub(str(chain[[isinstance(e, UnsupportedMethod) for e in chain].index(True)]))[:500]
    lowered = " ".join(str(e).lower() for e in chain)
    if hub_reason and (any(m in lowered for m in _HUB_MARKERS) or any(n in names for n in ("LocalEntryNotFoundError", "HfHubHTTPError", "OSError", "ConnectError"))):
        return "unavailable", f"{hub_reason}; not reachable here ({first})"
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    if where is not None:
        first += f" (at {where.name}, {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
    return "error", first
