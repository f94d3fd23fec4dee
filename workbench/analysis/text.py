"""How the analysis writes its numbers: the verdict, the Markdown report, the CLI summary and the app's
Analysis view all format through these, so one number reads the same everywhere. No heavy imports."""

from __future__ import annotations

MISSING = "—"


def p(value: float | None) -> str:
    """A p-value: 'p = 0.003', 'p < 0.001'."""
    if value is None:
        return MISSING
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def rate(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def interval(ci) -> str:
    return MISSING if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def r_star(threshold: dict) -> str:
    """'0.42 [0.35, 0.50]' or 'none'."""
    if threshold.get("status") == "found":
        return f"{rate(threshold['r_star'])} {interval(threshold['ci'])}"
    return "none"


def quality(value: float | None, metric: str) -> str:
    """A mean quality: ΔNLL signed to 4 decimals, a Δscore to 3."""
    if value is None:
        return MISSING
    return f"{value:+.4f}" if metric == "ppl" else f"{value:+.3f}"


def auc(entry: dict) -> str:
    return MISSING if entry.get("value") is None else f"{entry['value']:.3f}"


def threshold_line(method: str, threshold: dict, metric: str = "ppl") -> str:
    """One method's finding in words. A breakpoint where quality falls off faster below it (ΔNLL climbs, a score
    drops) is a threshold the method holds down to; one where the fall slows is said as a change of slope."""
    if threshold.get("status") == "found":
        where = f"r* = {rate(threshold['r_star'])} {interval(threshold['ci'])} (Davies {p(threshold['davies_p'])})"
        below, above = threshold["slope_below"], threshold["slope_above"]
        if (below < above) if metric == "ppl" else (below > above):
            return f"{method} holds quality down to {where}"
        return f"{method} changes slope at {where}, losing quality more slowly below it"
    return f"No r* for {method}: {threshold['reason']}"


def ranking(entries: list[dict]) -> str:
    """'1. a, 1. b, 3. c'."""
    return ", ".join(f"{e['rank']}. {e['method']}" for e in entries)
