"""From cell records to what the screens plot, and facts about the machine (device, memory).

Pure functions (no Textual), so the screens stay small and are tested without a terminal. The table's
columns and formatting are the engine's (workbench/tables.py), shared with the exports; the figures are
workbench/figures.py's. The words are the engine's: *rate* = fraction of context tokens kept, *kept* =
the achieved kept fraction.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from typing import Any, Callable

from workbench import figures
from workbench.tables import human_bytes


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
    "dppl": ("ΔPPL", lambda c: figures.against_baseline(c, "delta_ppl")),
    "dpct": ("ΔPPL %", lambda c: figures.against_baseline(c, "delta_ppl_pct")),
    "ppl": ("PPL", lambda c: c.get("ppl")),
    "score": ("task score", lambda c: c.get("score")),
    "dscore": ("Δ task score", lambda c: figures.against_baseline(c, "delta_score", "score")),
    "tokens": ("tokens kept / layer", lambda c: c.get("kv_tokens_per_layer")),
    "bytes": ("MiB kept", lambda c: c["kv_bytes"] / 2**20 if c.get("kv_bytes") is not None else None),
    "kept": ("kept fraction", lambda c: c.get("kept_fraction")),
}


def quality_metric(cells: list[dict]) -> str:
    """ΔPPL, unless the cells carry a task score (QA datasets) and no perplexity."""
    if any(c.get("score") is not None for c in cells) and not any(c.get("ppl") is not None for c in cells):
        return "score"
    return "dppl"


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
        x, y = figures.plot_x(c), read(c)
        if x is None or not isinstance(y, (int, float)) or not math.isfinite(y):
            continue
        if figures.is_baseline(c):
            anchor[c["dataset"]] = (1.0, float(y))
        else:
            lines.setdefault((c["method"], c["dataset"]), []).append((float(x), float(y)))
    out = {}
    for (method, dataset), pts in lines.items():
        if dataset in anchor and all(abs(x - 1.0) > 1e-9 for x, _ in pts):
            pts.append(anchor[dataset])
        out[_label(method, dataset, several)] = sorted(pts)
    return out


def _label(method: str, dataset: str, several: bool) -> str:
    return f"{method} · {dataset}" if several else method


def step_curves(cells: list[dict], live: dict[str, dict] | None = None) -> dict[str, list[tuple[float, float]]]:
    """The KV budget over decoding steps, {line label: [(step, mean tokens per layer), ...]}: the sample being
    decoded now for each method in ``live`` (the run's "live" events), else the last sample each decoding cell
    recorded. Labels match :func:`series`' lines (one colour per method on every plot)."""
    several = len({c["dataset"] for c in cells}) > 1
    out: dict[str, list[tuple[float, float]]] = {}
    for c in cells:
        runs = [s for s in c.get("samples") or [] if s.get("kv_curve")]
        if runs and not figures.is_baseline(c):
            out[_label(c["method"], c["dataset"], several)] = [(r[0], r[1]) for r in runs[-1]["kv_curve"]]
    for method, data in (live or {}).items():
        label = next((_label(method, c["dataset"], several) for c in cells if c.get("key") == data.get("cell")), method)
        out[label] = [(r[0], r[1]) for r in data.get("curve") or []]
    return {label: pts for label, pts in out.items() if pts}


def series_order(cells: list[dict]) -> list[str]:
    """Every line the cells will draw, finished or not, in the order of the cells (a session keeps its cells
    in plan order). Markers and colours are assigned from it, so a method keeps its look for a whole run,
    whichever of its cells finish first."""
    several = len({c["dataset"] for c in cells}) > 1
    out: dict[str, None] = {}
    for c in cells:
        if not figures.is_baseline(c):
            out.setdefault(_label(c["method"], c["dataset"], several))
    return list(out)


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
