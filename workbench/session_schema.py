"""What a session document must hold, checked in full on load, before anything is written.

A session file is edited by hand, truncated, merged or produced by another version; whatever it
holds, loading it either gives a session every face can use (report, resume, the TUI's screens,
save) or raises ``SessionError`` with "FILE: field 'cells[3].samples[1].n_tokens': what is wrong".
The cells' figures (ppl, deltas, …) are not checked here: the session recomputes them from the
per-sample records, which are.
"""

from __future__ import annotations

import json
import math
from typing import Any

SCHEMA_VERSION = 1
KNOWN_SCHEMA_VERSIONS = (1,)
CELL_STATUSES = ("pending", "running", "done", "error", "unavailable", "cancelled")
SESSION_STATUSES = ("pending", "running", "finished", "failed", "cancelled")
# A cell key names model, dataset, method and rate; these fields must say the same as the plan.
IDENTITY_FIELDS = ("model", "dataset", "method", "name", "family", "rate")

# Bounds that keep every figure computable: exp(NLL per token) overflows a float above ~709 nats.
MAX_NLL_PER_TOKEN = 700.0
MAX_TOKENS = 10**9
MAX_QUANTITY = 1e15  # bytes, KV entries, kept fractions: far above any real value, far below overflow
MAX_SECONDS = 1e9
_QUANTITIES = ("kept_fraction", "kept_fraction_physical", "kv_tokens_per_layer", "kv_bytes", "kv_bytes_physical")
_SECONDS = ("prefill_seconds", "scoring_seconds", "compression_seconds", "decode_seconds")
_TEXTS = ("path", "note", "metric")


class SessionError(ValueError):
    """A session file that cannot be used; the message names the file and the field."""


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str):
        raise SessionError(f"{self.source}: field '{where}': {message}")

    def number(self, value: Any, where: str, low: float, high: float, optional: bool = True) -> None:
        if value is None and optional:
            return
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)):
            self.fail(where, f"expected a number, got {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(where, f"{value} is not a finite number")
        if not low <= value <= high:
            self.fail(where, f"{_show(value)} is outside [{low:g}, {high:g}]")

    def integer(self, value: Any, where: str, low: int, high: int | None = None, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not (isinstance(value, int) and not isinstance(value, bool)):
            self.fail(where, f"expected a whole number, got {_show(value)}")
        if value < low or (high is not None and value > high):
            self.fail(where, f"{_show(value)} is outside [{low}, {high if high is not None else '∞'}]")

    def text(self, value: Any, where: str, optional: bool = True) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            self.fail(where, f"expected a string{' or null' if optional else ''}, got {_show(value)}")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    except ValueError:  # an integer too long to print
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "…"


def check_header(data: Any, source: str) -> None:
    """The document's top level (schema version, dates, status, environment), before its plan is parsed."""
    c = _Checker(source)
    if not isinstance(data, dict):
        raise SessionError(f"{source}: a session is a JSON object")
    version = data.get("schema_version")
    if not (isinstance(version, int) and not isinstance(version, bool)):
        c.fail("schema_version", f"missing or not a whole number, got {_show(version)}")
    if version > SCHEMA_VERSION:
        c.fail("schema_version", f"{version} is newer than this workbench understands ({SCHEMA_VERSION}); upgrade the workbench")
    if version not in KNOWN_SCHEMA_VERSIONS:
        c.fail("schema_version", f"{version} is no schema version of the workbench (known: "
               f"{', '.join(map(str, KNOWN_SCHEMA_VERSIONS))})")
    for name in ("workbench_version", "created_at"):
        c.text(data.get(name), name, optional=False)
    c.text(data.get("updated_at"), "updated_at")
    status = data.get("status", "pending")
    if status not in SESSION_STATUSES:
        c.fail("status", f"unknown status {_show(status)} (one of {', '.join(SESSION_STATUSES)})")
    if not isinstance(data.get("environment", {}), (dict, type(None))):
        c.fail("environment", f"expected an object, got {_show(data['environment'])}")
    if "plan" not in data:
        c.fail("plan", "missing")
    if not isinstance(data.get("cells"), list):
        c.fail("cells", f"expected a list, got {_show(data.get('cells'))}")


def check_cells(cells: list, expected: dict[str, dict], source: str) -> None:
    """Every cell record against the cell the plan defines under its key (``expected``: new cells)."""
    c = _Checker(source)
    seen: dict[str, int] = {}
    for i, cell in enumerate(cells):
        where = f"cells[{i}]"
        if not isinstance(cell, dict):
            c.fail(where, f"expected an object, got {_show(cell)}")
        key = cell.get("key")
        if not isinstance(key, str):
            c.fail(f"{where}.key", f"expected a string, got {_show(key)}")
        if key not in expected:
            c.fail(f"{where}.key", f"{_show(key)} is not a cell of the session's plan")
        if key in seen:
            c.fail(f"{where}.key", f"{_show(key)} is also cells[{seen[key]}]: one record per cell")
        seen[key] = i
        _check_cell(c, cell, expected[key], where)


def _check_cell(c: _Checker, cell: dict, plan_cell: dict, where: str) -> None:
    for name in IDENTITY_FIELDS:
        if name in cell and (cell[name] != plan_cell[name] or type(cell[name]) is bool):
            c.fail(f"{where}.{name}", f"{_show(cell[name])} disagrees with the plan's cell {plan_cell['key']!r} "
                   f"({_show(plan_cell[name])})")
    if "params" in cell and _canonical(cell["params"]) != _canonical(plan_cell["params"]):
        c.fail(f"{where}.params", "disagree with the method's parameters in the plan")
    status = cell.get("status")
    if status not in CELL_STATUSES:
        c.fail(f"{where}.status", f"unknown status {_show(status)} (one of {', '.join(CELL_STATUSES)})")
    for name in ("path", "reason", "error"):
        c.text(cell.get(name), f"{where}.{name}")
    total = plan_cell["samples_total"]
    if "samples_total" in cell and (cell["samples_total"] != total or type(cell["samples_total"]) is not int):
        c.fail(f"{where}.samples_total", f"{_show(cell['samples_total'])} disagrees with the plan ({total} samples)")
    samples = cell.get("samples")
    if not isinstance(samples, list):
        c.fail(f"{where}.samples", f"expected a list, got {_show(samples)}")
    if len(samples) > total:
        c.fail(f"{where}.samples", f"{len(samples)} records for a cell of {total} samples")
    if "samples_done" in cell and (cell["samples_done"] != len(samples) or type(cell["samples_done"]) is not int):
        c.fail(f"{where}.samples_done", f"{_show(cell['samples_done'])} disagrees with the {len(samples)} sample records")
    c.integer(cell.get("peak_memory_bytes"), f"{where}.peak_memory_bytes", 0, 2**63, optional=True)
    c.number(cell.get("load_seconds"), f"{where}.load_seconds", 0, MAX_SECONDS)
    ids: dict[str, int] = {}
    for j, sample in enumerate(samples):
        at = f"{where}.samples[{j}]"
        _check_sample(c, sample, at)
        sid = sample["sample_id"]
        if sid in ids:
            c.fail(f"{at}.sample_id", f"{_show(sid)} is also samples[{ids[sid]}]: one record per sample")
        ids[sid] = j
    _check_examples(c, cell.get("examples", []), f"{where}.examples")


def _check_sample(c: _Checker, s: Any, at: str) -> None:
    if not isinstance(s, dict):
        c.fail(at, f"expected an object, got {_show(s)}")
    if not (isinstance(s.get("sample_id"), str) and s["sample_id"]):
        c.fail(f"{at}.sample_id", f"expected a non-empty string, got {_show(s.get('sample_id'))}")
    c.integer(s.get("n_tokens"), f"{at}.n_tokens", 0, MAX_TOKENS)
    n = s["n_tokens"]
    if n:
        c.number(s.get("nll_sum"), f"{at}.nll_sum", -MAX_QUANTITY, MAX_QUANTITY, optional=False)
        if not -1e-6 <= s["nll_sum"] / n <= MAX_NLL_PER_TOKEN:
            c.fail(f"{at}.nll_sum", f"{_show(s['nll_sum'])} over {n} tokens is a mean NLL of {s['nll_sum'] / n:.4g} nats per "
                   f"token; a real one lies in [0, {MAX_NLL_PER_TOKEN:g}]")
    else:
        c.number(s.get("nll_sum"), f"{at}.nll_sum", -MAX_QUANTITY, MAX_QUANTITY)
    c.number(s.get("score"), f"{at}.score", 0.0, 1.0)
    if not n and s.get("score") is None and s.get("nll_sum") is not None:
        c.fail(f"{at}.n_tokens", "0 scored tokens but an nll_sum: the record is neither scored nor a task result")
    for name in _QUANTITIES:
        c.number(s.get(name), f"{at}.{name}", 0, MAX_QUANTITY)
    for name in _SECONDS:
        c.number(s.get(name), f"{at}.{name}", 0, MAX_SECONDS)
    for name in _TEXTS:
        c.text(s.get(name), f"{at}.{name}")
    c.integer(s.get("batch"), f"{at}.batch", 1, 1 << 20, optional=True)
    _check_decoding(c, s, at)


def _check_decoding(c: _Checker, s: dict, at: str) -> None:
    """The decoding protocol's fields, which the cell figures add up (metrics._decoding) and points-meta reads."""
    c.integer(s.get("generated_tokens"), f"{at}.generated_tokens", 0, MAX_TOKENS, optional=True)
    for name in ("kv_tokens_mean", "tokens_per_second"):
        c.number(s.get(name), f"{at}.{name}", 0, MAX_QUANTITY)
    c.text(s.get("generated_text"), f"{at}.generated_text")
    for name in ("compression_points", "compression_chars"):
        value = s.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            c.fail(f"{at}.{name}", f"expected a list of positions, got {_show(value)}")
        for k, item in enumerate(value):
            c.integer(item, f"{at}.{name}[{k}]", 0, MAX_TOKENS if name == "compression_points" else None)


def _check_examples(c: _Checker, examples: Any, where: str) -> None:
    if not isinstance(examples, list):
        c.fail(where, f"expected a list, got {_show(examples)}")
    for k, e in enumerate(examples):
        at = f"{where}[{k}]"
        if not isinstance(e, dict):
            c.fail(at, f"expected an object, got {_show(e)}")
        for name in ("sample_id", "original"):
            c.text(e.get(name), f"{at}.{name}", optional=False)
        c.text(e.get("compressed"), f"{at}.compressed")
        dropped = e.get("dropped", [])
        if not isinstance(dropped, list):
            c.fail(f"{at}.dropped", f"expected a list of [start, end] character spans, got {_show(dropped)}")
        for m, span in enumerate(dropped):
            if not (isinstance(span, list) and len(span) == 2
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
                c.fail(f"{at}.dropped[{m}]", f"expected a [start, end] pair of whole numbers, got {_show(span)}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
