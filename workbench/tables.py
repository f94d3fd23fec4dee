"""One table of a session's cells: the columns, how each value is written, which columns a session needs,
the order of rows, and the one wording of cell counts.

The Results screen, the Markdown and text exports and the headless report all build their tables from
:data:`COLUMNS`, so a column has one label, one unit and one way of writing its value everywhere (the
figures themselves come from :mod:`workbench.figures`). No textual or rich import: the engine and the
UI share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from workbench import figures

MISSING = "—"


def human_bytes(n: float | None) -> str:
    """Bytes with a binary unit: '512 B', '45.0 MiB', '1.4 GiB'."""
    if n is None:
        return MISSING
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def number(value: Any, fmt: str, signed: bool = False, suffix: str = "") -> str:
    """A finite number formatted, anything else (None, NaN, a string) as '—'."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return MISSING
    return format(value, ("+" if signed else "") + fmt) + suffix


def rate(value: float | None) -> str:
    """A rate (fraction of context tokens kept) as every view writes it: two decimals, three where two would
    round it (0.125 stays 0.125, not 0.12)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(round(value, 2) - value) > 1e-9:
        return number(value, ".3f")
    return number(value, ".2f")


def rates(values: Iterable[float]) -> str:
    """A list of rates as a user types them: '0.75, 0.5, 0.25'."""
    return ", ".join(f"{r:g}" for r in values)


def rate_text(cell: dict) -> str:
    """The Rate column: the baseline at 1.00; a threshold-driven press (no rate) as 'thr' and its threshold."""
    x = figures.rate_of(cell)
    if x is not None:
        return rate(x)
    params = cell.get("params") or {}
    budget = params.get("budget")  # a decoding schedule with a fixed budget of tokens per layer
    if isinstance(budget, int) and not isinstance(budget, bool):
        return f"{budget} tok"
    thr = params.get("threshold")
    return f"thr {thr:g}" if isinstance(thr, (int, float)) and not isinstance(thr, bool) else "thr"


def status_text(cell: dict) -> str:
    """The status word and, while unfinished, samples done/total (why a cell failed is said apart: it is long)."""
    status = cell.get("status", "pending")
    if status in ("pending", "running", "cancelled") and cell.get("samples_total"):
        return f"{status} {cell.get('samples_done', 0)}/{cell['samples_total']}"
    return status


def why(cell: dict) -> str | None:
    """Why a cell failed, is unavailable, or missed its rate: the engine's message, or None."""
    return cell.get("error") or cell.get("reason") or None


def method_text(cell: dict) -> str:
    """What a method label stands for: 'snapkv (KV press)', 'knorm-half = knorm (KV press)', or for the
    baseline 'baseline (uncompressed reference)'."""
    if figures.is_baseline(cell):
        return f"{cell['method']} (uncompressed reference)"
    family = {"kv": "KV press", "prompt": "prompt compressor", "decoding": "decoding schedule", "learned": "soft compressor"}.get(cell.get("family") or "", cell.get("family") or "method")
    name = cell.get("name")
    return f"{cell['method']} = {name} ({family})" if name and name != cell["method"] else f"{cell['method']} ({family})"


# How a figure is written wherever it appears (a table cell, Compare's columns): format, signed, suffix.
VALUE_FORMATS: dict[str, tuple[str, bool, str]] = {
    "kept": (".3f", False, ""), "ppl": (".3f", False, ""), "dppl": (".3f", True, ""), "dpct": (".1f", True, "%"),
    "score": (".3f", False, ""), "dscore": (".3f", True, ""), "tokens": (".1f", False, ""), "time": (".2f", False, "s"),
    "cost": (".4f", False, ""), "gen": (".1f", False, ""), "points": (".1f", False, ""), "tps": (".1f", False, ""),
    "speed": (".2f", False, "×"),
}


def value_text(key: str, value: Any, signed: bool | None = None) -> str:
    """``value`` of the figure ``key`` as every view writes it; ``signed`` forces a sign (a difference)."""
    fmt, sign, suffix = VALUE_FORMATS.get(key, (".3f", False, ""))
    return number(value, fmt, sign if signed is None else signed, suffix)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[dict], Any]  # the raw value: what sorting uses
    text: Callable[[dict], str]  # how every table writes it
    numeric: bool = True
    keep: int = 0  # when a table is too narrow, columns with the lowest ``keep`` go first (0: never dropped)


def _delta(key: str, figure: str = "ppl") -> Callable[[dict], Any]:
    return lambda c: figures.against_baseline(c, key, figure)


COLUMNS: tuple[Column, ...] = (
    Column("dataset", "Dataset", lambda c: c["dataset"], lambda c: c["dataset"], False),
    Column("method", "Method", lambda c: c["method"], lambda c: c["method"], False),
    Column("rate", "Rate", figures.rate_of, rate_text),
    Column("kept", "Kept", lambda c: c.get("kept_fraction"), lambda c: value_text("kept", c.get("kept_fraction")), keep=4),
    Column("ppl", "PPL", lambda c: c.get("ppl"), lambda c: value_text("ppl", c.get("ppl")), keep=5),
    Column("dppl", "ΔPPL", _delta("delta_ppl"), lambda c: value_text("dppl", _delta("delta_ppl")(c))),
    Column("dpct", "ΔPPL %", _delta("delta_ppl_pct"), lambda c: value_text("dpct", _delta("delta_ppl_pct")(c)), keep=1),
    Column("score", "Score", lambda c: c.get("score"), lambda c: value_text("score", c.get("score"))),
    Column("dscore", "ΔScore", _delta("delta_score", "score"), lambda c: value_text("dscore", _delta("delta_score", "score")(c))),
    Column("kv", "KV bytes", lambda c: c.get("kv_bytes"), lambda c: human_bytes(c.get("kv_bytes")), keep=2),
    Column("cost", "Cost $", lambda c: c.get("cost_usd"),
           lambda c: value_text("cost", c.get("cost_usd")) + ("~" if c.get("cost_estimated") else ""), keep=2),
    Column("gen", "Gen", lambda c: c.get("generated_tokens"), lambda c: value_text("gen", c.get("generated_tokens")), keep=2),
    Column("points", "Points", lambda c: c.get("compressions"), lambda c: value_text("points", c.get("compressions")), keep=3),
    Column("tps", "Tok/s", lambda c: c.get("tokens_per_second"), lambda c: value_text("tps", c.get("tokens_per_second")), keep=2),
    Column("speed", "Speed", figures.speed_ratio, lambda c: value_text("speed", figures.speed_ratio(c)), keep=1),
    Column("compress", "Compress s", lambda c: c.get("compression_seconds"),
           lambda c: value_text("time", c.get("compression_seconds")), keep=2),
    Column("params", "Params", lambda c: c.get("compressor_params"),
           lambda c: f"{c['compressor_params']:,}" if isinstance(c.get("compressor_params"), int) else MISSING, keep=2),
    Column("time", "Time/sample", figures.seconds_per_sample, lambda c: value_text("time", figures.seconds_per_sample(c)), keep=3),
    Column("status", "Status", lambda c: c.get("status", ""), status_text, False),
    Column("family", "Family", lambda c: c.get("family") or "", lambda c: c.get("family") or "", False),
    Column("path", "Path", lambda c: c.get("path") or "", lambda c: c.get("path") or MISSING, False),
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}
PPL_COLUMNS, SCORE_COLUMNS = frozenset({"ppl", "dppl", "dpct"}), frozenset({"score", "dscore"})
DECODING_COLUMNS = frozenset({"gen", "points", "tps", "speed"})


def columns_for(cells: list[dict], extra: Iterable[str] = ()) -> list[Column]:
    """The columns a session needs: Dataset and Family only when there are several; the perplexity columns
    only when a cell has a perplexity, the task-score ones only when a cell has a score (a session with
    neither yet shows the perplexity ones). ``extra``: optional columns to add (``path``)."""
    datasets = {c["dataset"] for c in cells}
    families = {c.get("family") for c in cells if not figures.is_baseline(c)}
    has_ppl = any(c.get("ppl") is not None for c in cells)
    has_score = any(c.get("score") is not None for c in cells)
    hidden = {"path"} - set(extra)
    if len(datasets) < 2:
        hidden.add("dataset")
    if len(families) < 2:
        hidden.add("family")
    if has_score and not has_ppl:
        hidden |= PPL_COLUMNS
    if not has_score:
        hidden |= SCORE_COLUMNS
    if not any(c.get("generated_tokens") is not None for c in cells):  # only the decoding protocol generates
        hidden |= DECODING_COLUMNS
    if not any(c.get("cost_usd") is not None for c in cells):  # only an API evaluator's cells cost money
        hidden.add("cost")
    if not any(c.get("compressor_params") is not None for c in cells):  # only learned compressors have parameters
        hidden |= {"compress", "params"}
    return [c for c in COLUMNS if c.key not in hidden]


def fit(columns: list[Column], widths: dict[str, int], room: int, gap: int = 1) -> tuple[list[Column], list[Column]]:
    """(columns shown, columns left out) so the row fits ``room`` characters: droppable columns go, lowest
    ``keep`` first, until it does. ``widths`` = the widest text of each column, its label included."""
    shown = list(columns)
    droppable = sorted((c for c in columns if c.keep), key=lambda c: c.keep)
    dropped = []
    while sum(widths[c.key] + gap for c in shown) > room and droppable:
        column = droppable.pop(0)
        shown.remove(column)
        dropped.append(column)
    return shown, dropped


def sort_cells(cells: Iterable[dict], column: str, reverse: bool = False) -> list[dict]:
    """Sorted by a column's raw value; missing values last in either direction (the usual spreadsheet rule).
    Ties keep the order given (the plan's)."""
    col = COLUMN_BY_KEY[column]
    cells = list(cells)
    present = [c for c in cells if col.value(c) is not None]
    missing = [c for c in cells if col.value(c) is None]
    return sorted(present, key=col.value, reverse=reverse) + missing


def counts_text(counts: figures.CellCounts) -> str:
    """The one wording of a session's cell counts: '13/19 cells done, 3 failed, 3 unavailable'."""
    parts = [f"{counts.done}/{counts.total} cells done"]
    for n, word in ((counts.failed, "failed"), (counts.unavailable, "unavailable"), (counts.left, "to run")):
        if n:
            parts.append(f"{n} {word}")
    return ", ".join(parts)


def cells_text(cells: Iterable[dict]) -> str:
    return counts_text(figures.cell_counts(cells))
