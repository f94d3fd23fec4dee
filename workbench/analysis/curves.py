"""One method's quality-vs-rate curve: per-rate means with confidence intervals, the breakpoint r* with its
interval (or the reason none is supported), and the area under the curve relative to the baseline.

r* is the kept rate where the curve's slope changes: a segmented (piecewise-linear) regression of the
per-sample quality on the rate, y = a + b·rate + c·max(r* − rate, 0), so below r* the slope is b − c.

- **Is there a breakpoint?** piecewise-regression's Davies test (H0: no change of slope). The library's test
  takes its candidate breakpoints from the 3rd to the 3rd-last x value and fails on repeated x values, so it
  runs on the per-rate means (one point per rate): it needs 6 distinct rates, the baseline's 1.0 included.
- **Where?** piecewise-regression's Muggeo fit on every sample, started from the best point of a profile of the
  residual sum of squares over candidate breakpoints (Muggeo's iteration alone stops in local minima when
  the rates are few).
- **How sure?** The interval inverts the F-test of the profile: every r* whose fit is not worse than the best
  at the level α, RSS(r*) ≤ RSS_min·(1 + F(1−α; 1, n−4)/(n−4)). The library's delta-method interval (kept
  in the report) covered the true breakpoint in 42 of 50 simulated sessions of 8 samples per rate, the
  profile's in 48 (benchmarks/bench_analysis.py prints the table; tests/test_analysis_synthetic.py holds ≥ 90%).
- A breakpoint is *supported* when the Davies test rejects at α and the interval lies strictly inside the
  measured rates; otherwise the report says which of the two failed.
"""

from __future__ import annotations

import math
import warnings

from workbench.analysis import ALPHA, text
from workbench.analysis.data import Obs

MIN_RATES = 6  # distinct rates (the baseline's 1.0 included) the Davies test needs
MIN_PER_RATE = 2  # samples at every rate, for a variance
GRID = 161  # candidate breakpoints in the profile (a step of 0.005 over rates 0.2–1.0)


def libraries():
    """numpy, statsmodels.api, scipy.stats, piecewise_regression — matplotlib set to Agg first, since
    piecewise_regression imports pyplot (a worker thread of the app must not open a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import piecewise_regression
    import statsmodels.api as sm
    from scipy import stats

    return np, sm, stats, piecewise_regression


def by_rate(obs: list[Obs]) -> dict[float, list[Obs]]:
    out: dict[float, list[Obs]] = {}
    for o in sorted(obs, key=lambda o: o.rate):
        out.setdefault(o.rate, []).append(o)
    return out


def curve(obs: list[Obs], alpha: float = ALPHA) -> list[dict]:
    """Per rate (ascending): samples, mean quality, its (1−α) t-interval (a band of width 0 at the baseline's
    anchor, where y = 0 by definition; None with one sample)."""
    np, _, stats, _ = libraries()
    points = []
    for rate, group in by_rate(obs).items():
        y = np.array([o.y for o in group])
        mean = float(y.mean())
        if len(y) > 1 and float(y.std()) > 0:
            lo, hi = stats.t.interval(1 - alpha, len(y) - 1, loc=mean, scale=stats.sem(y))
            ci = [float(lo), float(hi)]
        else:
            ci = [mean, mean] if len(y) > 1 else None
        points.append({"rate": rate, "n": len(y), "mean": mean, "ci": ci, "anchor": all(o.anchor for o in group)})
    return points


def relative_auc(obs: list[Obs], metric: str) -> dict:
    """Area under quality-relative-to-baseline vs rate, divided by the rate range: 1.0 = the baseline's quality
    at every rate measured, lower = quality lost. ppl: exp(−mean ΔNLL) = baseline PPL / method PPL per rate;
    score: mean score / mean baseline score per rate."""
    np, _, _, _ = libraries()
    from scipy.integrate import trapezoid

    rates, ratios = [], []
    for rate, group in by_rate(obs).items():
        if metric == "ppl":
            ratio = math.exp(-float(np.mean([o.y for o in group])))
        else:
            ref = float(np.mean([o.raw - o.y for o in group]))
            if ref == 0:
                return {"value": None, "reason": "the baseline scores 0: no ratio to it", "range": None}
            ratio = float(np.mean([o.raw for o in group])) / ref
        rates.append(rate)
        ratios.append(ratio)
    if len(rates) < 2:
        return {"value": None, "reason": f"one rate ({rates[0]:g}): no area", "range": None}
    area = float(trapezoid(ratios, rates)) / (rates[-1] - rates[0])
    return {"value": area, "range": [rates[0], rates[-1]], "reason": None,
            "how": "trapezoid of " + ("baseline PPL / method PPL" if metric == "ppl" else "score / baseline score")
                   + " over the rates, divided by the rate range"}


def _hinge(np, x, psi):
    return np.clip(psi - x, 0.0, None)


def threshold(obs: list[Obs], alpha: float = ALPHA) -> dict:
    """r* of one method: {"status": "found"|"declined", "r_star", "ci", "reason", "davies_p", ...}."""
    np, sm, stats, pr = libraries()
    groups = by_rate(obs)
    rates = list(groups)
    out: dict = {"status": "declined", "r_star": None, "ci": None, "davies_p": None, "reason": None,
                 "rates": rates, "method": "Davies test on per-rate means (piecewise-regression); Muggeo fit "
                 "(piecewise-regression) from the best point of an RSS profile; interval by inverting the profile's F-test"}
    if len(rates) < MIN_RATES:
        shown = ", ".join(f"{r:g}" for r in rates if r != 1.0) + (" and the baseline's 1.0" if 1.0 in rates else "")
        out["reason"] = f"{len(rates)} rates ({shown}): locating a breakpoint needs at least {MIN_RATES}"
        return out
    thin = [r for r, g in groups.items() if len(g) < MIN_PER_RATE and not all(o.anchor for o in g)]
    if thin:
        out["reason"] = (f"fewer than {MIN_PER_RATE} samples at rate(s) {', '.join(f'{r:g}' for r in thin)}: "
                         "no variance to judge a breakpoint by")
        return out
    x = np.array([o.rate for o in obs], dtype=float)
    y = np.array([o.y for o in obs], dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    ux = np.array(rates, dtype=float)
    means = np.array([np.mean([o.y for o in groups[r]]) for r in rates])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        davies = float(pr.davies_test(ux, means))
        grid = np.linspace(ux[0], ux[-1], GRID)[1:-1]
        ones = np.ones_like(x)
        rss = np.array([sm.OLS(y, np.column_stack([ones, x, _hinge(np, x, psi)])).fit().ssr for psi in grid])
        best = int(rss.argmin())
        psi, rss_min = float(grid[best]), float(rss[best])
        muggeo = pr.Muggeo(x, y, start_values=[psi], n_breakpoints=1, max_iterations=30, tolerance=1e-5, verbose=False,
                           min_distance_between_breakpoints=0.01, min_distance_to_edge=0.02)
    out["davies_p"] = davies if math.isfinite(davies) else None
    if muggeo.converged and muggeo.best_fit.residual_sum_squares <= rss_min + 1e-12:
        est = muggeo.best_fit.estimates["breakpoint1"]
        psi, rss_min = float(est["estimate"]), float(muggeo.best_fit.residual_sum_squares)
        out["muggeo"] = {"estimate": psi, "delta_method_ci": [float(v) for v in est["confidence_interval"]]}
    n = len(y)
    df = n - 4  # intercept, slope, change of slope, breakpoint
    limit = rss_min * (1 + float(stats.f.ppf(1 - alpha, 1, df)) / df) if rss_min > 0 else 0.0
    inside = grid[rss <= limit]
    lo, hi = (float(inside.min()), float(inside.max())) if len(inside) else (psi, psi)
    lo, hi = min(lo, psi), max(hi, psi)
    fit = sm.OLS(y, np.column_stack([np.ones_like(x), x, _hinge(np, x, psi)])).fit()
    b, c = float(fit.params[1]), float(fit.params[2])
    out.update(estimate=psi, interval=[lo, hi], slope_above=b, slope_below=b - c, n=n, rss=rss_min)
    edge = lo <= grid[0] or hi >= grid[-1]
    if out["davies_p"] is None or davies >= alpha:
        out["reason"] = (f"no breakpoint supported: the Davies test finds no change of slope "
                         f"({text.p(out['davies_p'])}, α = {alpha:g}); a straight line fits")
    elif edge:
        out["reason"] = (f"no breakpoint supported: the slope changes (Davies {text.p(davies)}) but the interval "
                         f"[{lo:.2f}, {hi:.2f}] reaches the edge of the measured rates ({ux[0]:g}–{ux[-1]:g})")
    else:
        out.update(status="found", r_star=psi, ci=[lo, hi])
    return out
