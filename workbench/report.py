"""Comparison tables of a session: seed 004's layout (Method, Rate, PPL, ΔPPL, ΔPPL%, …) as text,
Markdown or CSV rows, shared by the headless mode and the exports of the TUI. No heavy imports."""

from __future__ import annotations

import csv
import io
import math

from workbench.plan import BASELINE_LABEL

COLUMNS = ("Method", "Rate", "PPL", "ΔPPL", "ΔPPL %", "Score", "ΔScore", "Kept", "KV bytes", "Time", "Path", "Status")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _num(value, fmt: str, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, ("+" if signed else "") + fmt)


def cell_row(cell: dict) -> dict:
    """One row of the comparison, values formatted for a terminal."""
    baseline = cell["method"] == BASELINE_LABEL
    rate = cell.get("rate")
    if baseline:
        rate_text = "1.00"
    elif rate is None:
        thr = (cell.get("params") or {}).get("threshold")
        rate_text = f"thr {thr:g}" if isinstance(thr, (int, float)) else "—"
    else:
        rate_text = f"{rate:.2f}"
    status = cell["status"]
    if status in ("error", "unavailable"):
        status = f"{status}: {cell.get('error') or cell.get('reason') or ''}".strip()
    elif status != "done" and cell.get("samples_total"):
        status = f"{status} {cell.get('samples_done', 0)}/{cell['samples_total']}"
    return {
        "Method": cell["method"],
        "Rate": rate_text,
        "PPL": _num(cell.get("ppl"), ".3f"),
        "ΔPPL": "+0.000" if baseline and cell.get("ppl") is not None else _num(cell.get("delta_ppl"), ".3f", True),
        "ΔPPL %": "+0.00%" if baseline and cell.get("ppl") is not None else (
            _num(cell.get("delta_ppl_pct"), ".2f", True) + "%" if cell.get("delta_ppl_pct") is not None else "—"),
        "Score": _num(cell.get("score"), ".3f"),
        "ΔScore": "+0.000" if baseline and cell.get("score") is not None else _num(cell.get("delta_score"), ".3f", True),
        "Kept": _num(cell.get("kept_fraction"), ".3f"),
        "KV bytes": human_bytes(cell.get("kv_bytes")),
        "Time": f"{cell['seconds']:.1f}s" if cell.get("seconds") else "—",
        "Path": cell.get("path") or "—",
        "Status": status,
    }


def rows_by_dataset(session) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for cell in session.cells.values():
        out.setdefault(cell["dataset"], []).append(cell)
    return out


def text_table(session, max_status: int = 60) -> str:
    """Fixed-width table per dataset, for stdout."""
    blocks = []
    for dataset, cells in rows_by_dataset(session).items():
        rows = [cell_row(c) for c in cells]
        columns = [c for c in COLUMNS if c not in _empty_columns(rows)]
        for r in rows:
            if len(r["Status"]) > max_status:
                r["Status"] = r["Status"][: max_status - 1] + "…"
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
        right = {"PPL", "ΔPPL", "ΔPPL %", "Kept", "KV bytes", "Time"}
        right |= {"Score", "ΔScore"}
        fmt = lambda r: "  ".join(r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c]) for c in columns).rstrip()
        header = fmt({c: c for c in columns})
        title = f"{session.plan.model} · {dataset} · {session.plan.protocol.name}"
        blocks.append("\n".join([title, header, "-" * len(header), *(fmt(r) for r in rows)]))
    return "\n\n".join(blocks) + "\n"


def _empty_columns(rows: list[dict]) -> set[str]:
    """Perplexity columns of a task session, score columns of a perplexity session: left out of text tables."""
    return {c for c in ("PPL", "ΔPPL", "ΔPPL %", "Score", "ΔScore") if all(r[c] in ("—", "+0.000", "+0.00%") for r in rows)}


def markdown_table(session) -> str:
    lines = []
    for dataset, cells in rows_by_dataset(session).items():
        lines += [f"### {session.plan.model} · {dataset}", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(cell_row(c)[col].replace("|", "\\|") for col in COLUMNS) + " |" for c in cells]
        lines.append("")
    return "\n".join(lines)


EXPORT_KEYS = ("model", "dataset", "method", "name", "family", "rate", "status", "path", "samples_done", "samples_total",
               "nll", "nll_stderr", "ppl", "ppl_stderr", "delta_nll", "delta_ppl", "delta_ppl_pct", "kept_fraction",
               "kept_fraction_physical", "kv_tokens_per_layer", "kv_bytes", "kv_bytes_physical", "prefill_seconds",
               "scoring_seconds", "compression_seconds", "load_seconds", "seconds", "peak_memory_bytes", "score", "score_stderr",
               "delta_score", "metric", "reason", "error")


def summary(cell: dict) -> dict:
    """The cell without its per-sample list: the stable keys for --json and CSV."""
    return {k: cell.get(k) for k in EXPORT_KEYS}


def csv_text(session) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_KEYS)
    writer.writeheader()
    for cell in session.cells.values():
        writer.writerow(summary(cell))
    return buf.getvalue()
