"""From cell records to what the screens show: table columns, sort keys, plot series, device facts.

Pure functions (no Textual), so the screens stay small and the formatting is tested without a
terminal. Figures come from the engine's cell records (see workbench/session.py); the words are the
engine's: *rate* = fraction of context tokens kept, *kept* = the achieved kept fraction.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable

from workbench.plan import BASELINE_LABEL
from workbench.report import human_bytes


def _num(value: Any, fmt: str, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, ("+" if signed else "") + fmt)


def rate_text(cell: dict) -> str:
    if cell["method"] == BASELINE_LABEL:
        return "1.00"
    if cell.get("rate") is None:
        thr = (cell.get("params") or {}).get("threshold")
        return f"thr {thr:g}" if isinstance(thr, (int, float)) else "thr"
    return f"{cell['rate']:.2f}"


def latency(cell: dict) -> float | None:
    """Seconds per sample (prefill + scoring), the cost a user pays per request."""
    done = cell.get("samples_done") or 0
    return cell["seconds"] / done if done and cell.get("seconds") else None


def status_text(cell: dict) -> str:
    """Short: the status and, while unfinished, samples done/total (the message is in the detail line)."""
    status = cell.get("status", "pending")
    if status in ("pending", "running", "cancelled") and cell.get("samples_total"):
        return f"{status} {cell.get('samples_done', 0)}/{cell['samples_total']}"
    return status


def _baseline_zero(cell: dict, key: str, figure: str = "ppl"):
    # The baseline is its own reference: its delta is 0 by definition once it has the figure.
    if cell["method"] == BASELINE_LABEL and cell.get(figure) is not None:
        return 0.0
    return cell.get(key)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[dict], Any]  # the raw value: what sorting uses
    text: Callable[[dict], str]  # what the table shows
    numeric: bool = True


COLUMNS: tuple[Column, ...] = (
    Column("dataset", "Dataset", lambda c: c["dataset"], lambda c: c["dataset"], False),
    Column("method", "Method", lambda c: c["method"], lambda c: c["method"], False),
    Column("rate", "Rate", lambda c: 1.0 if c["method"] == BASELINE_LABEL else c.get("rate"), rate_text),
    Column("kept", "Kept", lambda c: c.get("kept_fraction"), lambda c: _num(c.get("kept_fraction"), ".3f")),
    Column("ppl", "PPL", lambda c: c.get("ppl"), lambda c: _num(c.get("ppl"), ".3f")),
    Column("dppl", "ΔPPL", lambda c: _baseline_zero(c, "delta_ppl"), lambda c: _num(_baseline_zero(c, "delta_ppl"), ".3f", True)),
    Column("dpct", "ΔPPL%", lambda c: _baseline_zero(c, "delta_ppl_pct"),
           lambda c: _num(_baseline_zero(c, "delta_ppl_pct"), ".1f", True) + ("%" if _baseline_zero(c, "delta_ppl_pct") is not None else "")),
    Column("kv", "KV bytes", lambda c: c.get("kv_bytes"), lambda c: human_bytes(c.get("kv_bytes")) if c.get("kv_bytes") is not None else "—"),
    Column("latency", "s/sample", latency, lambda c: _num(latency(c), ".2f")),
    Column("status", "Status", lambda c: c.get("status", ""), status_text, False),
    Column("score", "Score", lambda c: c.get("score"), lambda c: _num(c.get("score"), ".3f")),
    Column("dscore", "ΔScore", lambda c: _baseline_zero(c, "delta_score", "score"),
           lambda c: _num(_baseline_zero(c, "delta_score", "score"), ".3f", True)),
    Column("family", "Family", lambda c: c.get("family") or "", lambda c: c.get("family") or "", False),
)
COLUMN_BY_KEY = {c.key: c for c in COLUMNS}


PPL_COLUMNS, SCORE_COLUMNS = {"ppl", "dppl", "dpct"}, {"score", "dscore"}


def columns_for(cells: list[dict]) -> list[Column]:
    """The columns worth their width at 80 columns: Dataset only with several datasets; the perplexity
    columns only when a cell has a perplexity, the task-score ones only when a cell has a score (as the
    engine's text tables do). A session with neither (nothing finished yet) shows the perplexity ones."""
    several = len({c["dataset"] for c in cells}) > 1
    has_ppl = any(c.get("ppl") is not None for c in cells)
    has_score = any(c.get("score") is not None for c in cells)
    hidden = set() if several else {"dataset"}
    if has_score and not has_ppl:
        hidden |= PPL_COLUMNS
    if not has_score:
        hidden |= SCORE_COLUMNS
    return [c for c in COLUMNS if c.key not in hidden]


def sort_cells(cells: list[dict], column: str, reverse: bool = False) -> list[dict]:
    """Sorted by a column's raw value; missing values last in either direction (the usual spreadsheet rule)."""
    col = COLUMN_BY_KEY[column]
    present = [c for c in cells if col.value(c) is not None]
    missing = [c for c in cells if col.value(c) is None]
    return sorted(present, key=col.value, reverse=reverse) + missing


def short_path(path) -> str:
    """A session path as the user would type it: relative to the working directory when inside it."""
    if path is None:
        return "not saved"
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:
        return str(path)


# -- plot series ---------------------------------------------------------------------------------

# Metric name -> (axis label, how to read it from a cell). "budget" metrics describe the KV cache kept.
METRICS: dict[str, tuple[str, Callable[[dict], Any]]] = {
    "dppl": ("ΔPPL", lambda c: _baseline_zero(c, "delta_ppl")),
    "dpct": ("ΔPPL %", lambda c: _baseline_zero(c, "delta_ppl_pct")),
    "ppl": ("PPL", lambda c: c.get("ppl")),
    "score": ("task score", lambda c: c.get("score")),
    "dscore": ("Δ task score", lambda c: _baseline_zero(c, "delta_score", "score")),
    "tokens": ("tokens kept / layer", lambda c: c.get("kv_tokens_per_layer")),
    "bytes": ("MiB kept", lambda c: c["kv_bytes"] / 2**20 if c.get("kv_bytes") is not None else None),
    "kept": ("kept fraction", lambda c: c.get("kept_fraction")),
}


def quality_metric(cells: list[dict]) -> str:
    """ΔPPL, unless the cells carry a task score (QA datasets) and no perplexity."""
    if any(c.get("score") is not None for c in cells) and not any(c.get("ppl") is not None for c in cells):
        return "score"
    return "dppl"


def x_of(cell: dict) -> float | None:
    """A threshold-driven press has no rate: it is placed at the kept fraction it achieved."""
    if cell["method"] == BASELINE_LABEL:
        return 1.0
    return cell.get("rate") if cell.get("rate") is not None else cell.get("kept_fraction")


def series(cells: list[dict], metric: str) -> dict[str, list[tuple[float, float]]]:
    """{line label: [(rate, value), ...] sorted by rate}, finished cells only; one line per method
    (per method and dataset when there are several datasets).

    Every line starts from its dataset's baseline point at rate 1.0 (compression off), so a line shows
    how far a method falls from the uncompressed model as the rate drops."""
    read = METRICS[metric][1]
    several = len({c["dataset"] for c in cells}) > 1
    anchor: dict[str, tuple[float, float]] = {}
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for c in cells:
        if c.get("status") != "done":
            continue
        x, y = x_of(c), read(c)
        if x is None or not isinstance(y, (int, float)) or not math.isfinite(y):
            continue
        if c["method"] == BASELINE_LABEL:
            anchor[c["dataset"]] = (1.0, float(y))
        else:
            lines.setdefault((c["method"], c["dataset"]), []).append((float(x), float(y)))
    out = {}
    for (method, dataset), pts in lines.items():
        if dataset in anchor and all(abs(x - 1.0) > 1e-9 for x, _ in pts):
            pts.append(anchor[dataset])
        out[f"{method} · {dataset}" if several else method] = sorted(pts)
    return out


def bounds(all_series: list[dict[str, list[tuple[float, float]]]]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Shared (xlim, ylim) over several plots, so side-by-side plots are read on the same axes."""
    xs = [x for s in all_series for pts in s.values() for x, _ in pts]
    ys = [y for s in all_series for pts in s.values() for _, y in pts]
    if not xs:
        return None
    lo, hi = min(ys), max(ys)
    pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
    return (min(xs + [0.0]), 1.0), (lo - pad, hi + pad)


# -- device facts --------------------------------------------------------------------------------


def probe_device() -> dict:
    """What 'auto' will pick and the memory it has, without importing torch (seconds) on the UI's path.

    A GPU is detected through nvidia-smi; that mirrors models.resolve_device_dtype (cuda + bfloat16 with
    a GPU, cpu + float32 without). Memory in bytes."""
    info: dict = {"device": "cpu", "dtype": "float32", "name": "CPU", "memory_bytes": _meminfo("MemTotal"),
                  "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5).stdout.strip().splitlines()
        except (OSError, subprocess.SubprocessError):
            out = []
        if out and "," in out[0]:
            name, mib = out[0].rsplit(",", 1)
            info.update(device="cuda", dtype="bfloat16", name=name.strip(), gpus=len(out),
                        memory_bytes=int(float(mib)) * 2**20)
    return info


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def describe_device(info: dict | None, device: str, dtype: str) -> str:
    """One line for the setup screen: what the plan's device/dtype resolve to here."""
    if info is None:
        return "device: probing…"
    dev = info["device"] if device == "auto" else device
    dt = (info["dtype"] if dev == info["device"] else ("bfloat16" if dev.startswith("cuda") else "float32")) if dtype == "auto" else dtype
    mem = human_bytes(info.get("memory_bytes")) if info.get("memory_bytes") else "?"
    where = f"{info['name']}, {mem}" + (f", {info['cpus']} CPU cores" if info["device"] == "cpu" and info.get("cpus") else "")
    warn = "  (no GPU found here!)" if dev.startswith("cuda") and info["device"] != "cuda" else ""
    return f"runs on {dev} · {dt} · {where}{warn}"


def memory_now() -> str:
    """Device memory in use now: the GPU's allocation once torch drives one, else this process's RSS."""
    torch = sys.modules.get("torch")  # only if a run already imported it: never import torch here
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                used, total = torch.cuda.memory_allocated(), torch.cuda.get_device_properties(0).total_memory
                peak = torch.cuda.max_memory_allocated()
                return f"GPU {human_bytes(used)} used, peak {human_bytes(peak)} of {human_bytes(total)}"
        except Exception:  # a half-initialised CUDA context must not break the screen
            pass
    rss = None
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return f"RAM {human_bytes(rss)} (process)" if rss else "memory: n/a"
