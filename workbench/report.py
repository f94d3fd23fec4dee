"""A session's results as text: the fixed-width table of the headless mode, Markdown and CSV exports.

The columns and how each value is written are :mod:`workbench.tables`' (the Results screen uses the same),
the figures :mod:`workbench.figures`'. Rows come in the order given: the plan's by default, the order on
screen when the app exports. No heavy imports.
"""

from __future__ import annotations

import csv
import io
from typing import Iterable

from workbench import figures, tables


def _cells(session, cells: Iterable[dict] | None) -> list[dict]:
    return list(session.cells.values()) if cells is None else list(cells)


def by_dataset(cells: list[dict]) -> dict[str, list[dict]]:
    """Cells grouped by dataset, datasets in order of first appearance, rows in the order given."""
    out: dict[str, list[dict]] = {}
    for cell in cells:
        out.setdefault(cell["dataset"], []).append(cell)
    return out


def _notes(cells: list[dict]) -> list[str]:
    """Why cells failed, are unavailable or missed their rate: one line each, under a table."""
    return [f"{c['method']} @ {tables.rate_text(c)}: {c['status']}: {tables.why(c)}" for c in cells if tables.why(c)]


def text_table(session, cells: Iterable[dict] | None = None) -> str:
    """Fixed-width table per dataset, for stdout; the cell counts and the reasons of failed cells under it."""
    cells = _cells(session, cells)
    columns = [c for c in tables.columns_for(cells, extra=("path",)) if c.key != "dataset"]
    right = {c.key for c in columns if c.numeric}
    blocks = []
    for dataset, rows in by_dataset(cells).items():
        texts = [{c.key: c.text(cell) for c in columns} for cell in rows]
        widths = {c.key: max(len(c.label), *(len(t[c.key]) for t in texts)) for c in columns}
        fmt = lambda t: "  ".join(t[c.key].rjust(widths[c.key]) if c.key in right else t[c.key].ljust(widths[c.key])
                                  for c in columns).rstrip()
        header = fmt({c.key: c.label for c in columns})
        title = f"{session.plan.model} · {dataset} · {session.plan.protocol.name}"
        blocks.append("\n".join([title, header, "-" * len(header), *(fmt(t) for t in texts), *_notes(rows)]))
    return "\n\n".join(blocks) + f"\n\n{tables.cells_text(cells)}{_spend(cells)}\n"


def markdown_table(session, cells: Iterable[dict] | None = None) -> str:
    """One Markdown table per dataset with the columns of the Results screen, then why cells failed."""
    cells = _cells(session, cells)
    columns = [c for c in tables.columns_for(cells) if c.key != "dataset"]
    lines = []
    for dataset, rows in by_dataset(cells).items():
        lines += [f"### {session.plan.model} · {dataset}", "", "| " + " | ".join(c.label for c in columns) + " |",
                  "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|"]
        lines += ["| " + " | ".join(c.text(cell).replace("|", "\\|") for c in columns) + " |" for cell in rows]
        notes = _notes(rows)
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    lines.append(tables.cells_text(cells) + _spend(cells))
    return "\n".join(lines) + "\n"


def _spend(cells: list[dict]) -> str:
    """The API spend of these cells, when an API answered them ('~': partly estimated from local token counts)."""
    if not any(c.get("cost_usd") is not None for c in cells):
        return ""
    total, estimated = figures.session_cost(cells)
    return f" · API spend ${total:.4f}" + (" (~ partly estimated: the API reported no usage)" if estimated else "")


EXPORT_KEYS = ("model", "dataset", "method", "name", "family", "rate", "status", "path", "samples_done", "samples_total",
               "nll", "nll_stderr", "ppl", "ppl_stderr", "delta_nll", "delta_ppl", "delta_ppl_pct", "kept_fraction",
               "kept_fraction_physical", "kv_tokens_per_layer", "kv_bytes", "kv_bytes_physical", "prefill_seconds",
               "scoring_seconds", "compression_seconds", "load_seconds", "seconds", "seconds_per_sample", "peak_memory_bytes",
               "score", "score_stderr", "delta_score", "metric", "cost_usd", "cost_estimated", "input_tokens", "output_tokens",
               "reason", "error")
_DELTAS = {"delta_nll": "nll", "delta_ppl": "ppl", "delta_ppl_pct": "ppl", "delta_score": "score"}


def summary(cell: dict) -> dict:
    """The cell without its per-sample list: the stable keys for --json and CSV (the baseline's deltas are 0,
    as every table shows them; ``seconds`` is the cell's total, ``seconds_per_sample`` the table's Time)."""
    out = {k: cell.get(k) for k in EXPORT_KEYS}
    for key, figure in _DELTAS.items():
        out[key] = figures.against_baseline(cell, key, figure)
    out["seconds_per_sample"] = figures.seconds_per_sample(cell)
    return out


def csv_text(session, cells: Iterable[dict] | None = None) -> str:
    """One row per cell with the stable keys, raw numbers (no units), in the order given."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_KEYS)
    writer.writeheader()
    for cell in _cells(session, cells):
        writer.writerow(summary(cell))
    return buf.getvalue()
