"""An analysis report as files: JSON (every number), Markdown (tables and the verdict), PNG (the curves with
their bands, r* and its interval marked; matplotlib, Agg). Every file is written atomically: a temporary
file beside the target, then a rename, so a failed write leaves the old file as it was."""

from __future__ import annotations

import json
import os
from pathlib import Path

from workbench.analysis import text
from workbench.atomic_write import write_atomically


class WriteError(OSError):
    """A report file that could not be written; ``str()`` names it."""


def _atomic(target: Path, write) -> Path:
    try:
        return write_atomically(target, write)
    except OSError as err:
        raise WriteError(f"{target}: cannot write ({err.strerror or err})") from None


def json_text(report: dict) -> str:
    return json.dumps(report, indent=1, allow_nan=False, ensure_ascii=False)


def write_json(report: dict, path: str | os.PathLike) -> Path:
    body = json_text(report)
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))


def markdown(report: dict) -> str:
    metric = report["metric"]
    lines = ["# Threshold analysis", ""]
    lines.append("Sessions: " + ", ".join(f"{s['label']} ({s['plan']})" for s in report["sessions"]) + ".  ")
    lines.append(f"Quality: {report['quality']}; α = {report['alpha']:g}.")
    lines += ["", "## Verdict", ""] + [f"- {s}" for s in report["verdict"]]
    lines += ["", "## Thresholds per method", "",
              "| Method | r* [interval] | Davies p | AUC vs baseline | Mean quality | Samples | Why no r* |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, entry in report["methods"].items():
        th = entry["threshold"]
        lines.append(f"| {name} | {text.r_star(th)} | {text.p(th['davies_p'])} | {text.auc(entry['auc'])} | "
                     f"{text.quality(entry['mean'], metric)} | {entry['samples']} | "
                     f"{'' if th['status'] == 'found' else th['reason']} |")
    pairs = report["paired"]
    lines += ["", "## Ranking (paired on the same samples)", "", f"{pairs['test']}; unit: {pairs['unit']}. "
              f"{pairs['ranking_rule']}.", "", "| Rank | Method | Mean quality |", "| --- | --- | --- |"]
    lines += [f"| {r['rank']} | {r['method']} | {text.quality(r['mean'], metric)} |" for r in pairs["ranking"]]
    lines += ["", "| A | B | Pairs | Mean A − B | p | p (Holm) | Better |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in pairs["comparisons"]:
        better = c["better"] or ("not significant" if c["p"] is not None else c["reason"])
        lines.append(f"| {c['a']} | {c['b']} | {c['n_pairs']} | {text.quality(c['mean_diff'], metric)} | "
                     f"{text.p(c['p'])} | {text.p(c['p_holm'])} | {better} |")
    lines += ["", "## Homogeneity", ""]
    for key, title in (("thresholds", "Thresholds"), ("curves", "Curve shapes")):
        t = report["homogeneity"][key]
        lines.append(f"- {title}: " + (f"{text.p(t['p'])}, F = {t['F']:.2f} ({t['test']})" if t["status"] == "tested"
                                      else f"not tested — {t['reason']}"))
    inter = report["interaction"]
    lines += ["", "## Method × task type", "",
              f"- {text.p(inter['p'])} ({inter['test']})" if inter["status"] == "tested" else f"- not tested — {inter['reason']}"]
    if report["left_out"]:
        lines += ["", "## Left out", ""] + [f"- {line}" for line in report["left_out"]]
    libs = ", ".join(f"{k} {v}" for k, v in report["libraries"].items() if v)
    lines += ["", f"workbench {report['workbench_version']}; {libs}.", ""]
    return "\n".join(lines)


def write_markdown(report: dict, path: str | os.PathLike) -> Path:
    body = markdown(report)
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))


def write_plot(report: dict, path: str | os.PathLike) -> Path:
    """Quality vs rate per method: mean and band, r* as a dashed line with its interval shaded."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global figure state, safe in a worker thread

    methods = report["methods"]
    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    colours = matplotlib.colormaps["tab10"]
    for i, (name, entry) in enumerate(methods.items()):
        colour = colours(i % 10)
        pts = entry["curve"]
        xs = [p["rate"] for p in pts]
        ax.plot(xs, [p["mean"] for p in pts], marker="o", color=colour, label=name)
        banded = [p for p in pts if p["ci"]]
        ax.fill_between([p["rate"] for p in banded], [p["ci"][0] for p in banded], [p["ci"][1] for p in banded],
                        color=colour, alpha=0.15, linewidth=0)
        th = entry["threshold"]
        if th["status"] == "found":
            ax.axvline(th["r_star"], color=colour, linestyle="--", linewidth=1)
            ax.axvspan(th["ci"][0], th["ci"][1], color=colour, alpha=0.08)
    ax.set_xlabel("rate (fraction of context tokens kept)")
    ax.set_ylabel(report["quality"].split(" (")[0])
    ax.set_title("Quality vs rate; dashed: r*, shaded: its interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
