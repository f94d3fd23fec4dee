"""Tests across methods: paired comparisons and a ranking, homogeneity of thresholds and of curves, and the
method × task-type interaction. Each returns a dict with ``status`` "tested" or "not tested" and, when not
tested, ``reason``: what is missing (rates, samples, methods, task types), said in words.
"""

from __future__ import annotations

import itertools
import warnings

from workbench.analysis import ALPHA
from workbench.analysis.curves import GRID, by_rate, libraries
from workbench.analysis.data import Observations

MIN_PAIRS = 6  # the exact Wilcoxon test cannot reach p < 0.05 (two-sided) with fewer


def _not_tested(reason: str, **extra) -> dict:
    return {"status": "not tested", "reason": reason, **extra}


def paired(data: Observations, alpha: float = ALPHA) -> dict:
    """Every pair of methods on the (model, dataset, rate, sample) they share: Wilcoxon signed-rank on the
    per-sample differences, Holm-corrected over all pairs; then a ranking where a method's rank is 1 + the
    number of methods significantly better than it (methods not significantly apart share ranks)."""
    np, _, stats, _ = libraries()
    from statsmodels.stats.multitest import multipletests

    values = {g: {o.pair: o.y for o in data.of(g, anchors=False)} for g in data.groups}
    comparisons = []
    for a, b in itertools.combinations(data.groups, 2):
        keys = sorted(set(values[a]) & set(values[b]), key=str)
        d = np.array([values[a][k] - values[b][k] for k in keys])
        row = {"a": a, "b": b, "n_pairs": len(keys), "mean_diff": float(d.mean()) if len(d) else None,
               "rates": sorted({k[2] for k in keys}), "statistic": None, "p": None, "p_holm": None,
               "significant": False, "better": None, "reason": None}
        nonzero = int(np.count_nonzero(d))
        if nonzero < MIN_PAIRS:
            row["reason"] = (f"{len(keys)} shared (rate, sample) pairs, {nonzero} with a difference: the paired test "
                             f"needs at least {MIN_PAIRS}")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = stats.wilcoxon(d)
            row.update(statistic=float(res.statistic), p=float(res.pvalue))
        comparisons.append(row)
    tested = [r for r in comparisons if r["p"] is not None]
    if tested:
        reject, corrected, _, _ = multipletests([r["p"] for r in tested], alpha=alpha, method="holm")
        for r, rej, pc in zip(tested, reject, corrected):
            r["p_holm"] = float(pc)
            r["significant"] = bool(rej)
            if rej:
                a_better = (r["mean_diff"] < 0) == data.lower_is_better
                r["better"] = r["a"] if a_better else r["b"]
    means = {g: float(np.mean([o.y for o in data.of(g, anchors=False)])) for g in data.groups}
    beaten = {g: sum(1 for r in comparisons if r["significant"] and g in (r["a"], r["b"]) and r["better"] != g)
              for g in data.groups}
    ranking = sorted(({"method": g, "rank": 1 + beaten[g], "mean": means[g]} for g in data.groups),
                     key=lambda r: (r["rank"], r["mean"] if data.lower_is_better else -r["mean"]))
    return {"status": "tested" if tested else "not tested",
            "reason": None if tested else "no pair of methods shares enough samples for the paired test",
            "test": "Wilcoxon signed-rank (scipy) on per-sample differences, Holm correction (statsmodels)",
            "unit": "(rate, sample) pairs both methods measured", "alpha": alpha,
            "comparisons": comparisons, "ranking": ranking,
            "ranking_rule": "rank = 1 + methods significantly better; ties where no significant difference; "
                            "order within a rank by mean quality over the method's cells"}


def _design(np, rows, groups, psis):
    """Columns per group: intercept, rate, hinge max(ψ_g − rate, 0), and Muggeo's V column I(rate < ψ_g) that
    makes the breakpoint a counted parameter (for a shared ψ, one V column with each group's hinge slope)."""
    x = np.array([o.rate for o in rows])
    cols = []
    for g in groups:
        ind = np.array([o.group == g for o in rows], dtype=float)
        cols += [ind, ind * x, ind * np.clip(psis[g] - x, 0.0, None)]
    return x, np.column_stack(cols)


def homogeneity(data: Observations, thresholds: dict[str, dict], alpha: float = ALPHA) -> dict:
    """Do the methods share one breakpoint? Per-method breakpoints against one shared breakpoint (each method
    keeping its own intercept and slopes), an F-test (statsmodels compare_f_test) on Muggeo's linearisation,
    over the methods whose breakpoint is supported. Plus: do the whole curves differ in shape (method × rate
    in a two-way ANOVA on the rates every method has)?"""
    np, sm, _, _ = libraries()
    out = {"thresholds": None, "curves": _curve_shapes(data, alpha)}
    found = [g for g in data.groups if thresholds[g]["status"] == "found"]
    if len(found) < 2:
        which = f"only {found[0]} has" if found else "no method has"
        out["thresholds"] = _not_tested(f"{which} a supported breakpoint, comparing thresholds needs at least 2")
        return out
    rows = [o for g in found for o in data.of(g)]
    y = np.array([o.y for o in rows])
    own = {g: thresholds[g]["r_star"] for g in found}
    lo = max(min(o.rate for o in data.of(g)) for g in found)
    hi = min(max(o.rate for o in data.of(g)) for g in found)
    grid = np.linspace(lo, hi, GRID)[1:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rss = [sm.OLS(y, _design(np, rows, found, {g: psi for g in found})[1]).fit().ssr for psi in grid]
        shared = float(grid[int(np.argmin(rss))])
        x, base = _design(np, rows, found, {g: shared for g in found})
        fit0 = sm.OLS(y, base).fit()
        slopes = {g: fit0.params[3 * i + 2] for i, g in enumerate(found)}
        v = np.array([slopes[o.group] * (o.rate < shared) for o in rows], dtype=float)
        restricted = sm.OLS(y, np.column_stack([base, v])).fit()
        x, sep = _design(np, rows, found, own)
        vs = np.column_stack([np.array([(o.group == g) * (o.rate < own[g]) for o in rows], dtype=float) for g in found])
        full = sm.OLS(y, np.column_stack([sep, vs])).fit()
        f, p, df = full.compare_f_test(restricted)
    values = [own[g] for g in found]
    out["thresholds"] = {
        "status": "tested", "methods": found, "F": float(f), "p": float(p), "df": [float(df), float(full.df_resid)],
        "shared_r_star": shared, "r_star": own, "spread": max(values) - min(values),
        "differ": bool(p < alpha),
        "test": "F-test (statsmodels compare_f_test): one shared breakpoint against one per method, each method "
                "with its own intercept and slopes; breakpoints counted through Muggeo's linearisation",
    }
    return out


def _curve_shapes(data: Observations, alpha: float) -> dict:
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm
    import pandas as pd

    if len(data.groups) < 2:
        return _not_tested(f"{len(data.groups)} method: comparing curves needs at least 2")
    rate_sets = [set(by_rate(data.of(g, anchors=False))) for g in data.groups]
    common = sorted(set.intersection(*rate_sets))
    if len(common) < 2:
        return _not_tested("the methods share fewer than 2 rates: no curve shapes to compare")
    rows = [o for g in data.groups for o in data.of(g, anchors=False) if o.rate in common]
    frame = pd.DataFrame({"y": [o.y for o in rows], "method": [o.group for o in rows],
                          "rate": [f"{o.rate:g}" for o in rows]})
    cells = frame.groupby(["method", "rate"]).size()
    if cells.min() < 2:
        return _not_tested("fewer than 2 samples in some (method, rate) cell: no within-cell variance")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = anova_lm(ols("y ~ C(method) * C(rate)", data=frame).fit(), typ=2)
    row = table.loc["C(method):C(rate)"]
    main = table.loc["C(method)"]
    return {"status": "tested", "rates": common, "F": float(row["F"]), "p": float(row["PR(>F)"]),
            "df": [float(row["df"]), float(table.loc["Residual", "df"])], "differ": bool(row["PR(>F)"] < alpha),
            "method_p": float(main["PR(>F)"]),
            "test": "two-way ANOVA (statsmodels anova_lm, type II): quality ~ method × rate on the shared rates; "
                    "p is the interaction (curves of different shape), method_p the methods' levels"}


def interaction(data: Observations, alpha: float = ALPHA) -> dict:
    """Method × task type: does the method matter differently on language modelling, reasoning, QA, …?
    ppl and graded scores: two-way ANOVA of the per-sample quality, quality ~ method × task type + rate.
    Binary scores (accuracy, exact match): logistic GLM of the score with and without the interaction term,
    a likelihood-ratio test."""
    import pandas as pd
    from statsmodels.formula.api import glm, ols
    from statsmodels.stats.anova import anova_lm

    rows = [o for o in data.rows if not o.anchor]
    types = sorted({o.task_type for o in rows})
    datasets = sorted({o.dataset for o in rows})
    if len(types) < 2:
        return _not_tested(f"one task type ({types[0]}: {', '.join(datasets)}): the method × task-type test needs "
                           "datasets of at least 2 task types", task_types=types)
    if len(data.groups) < 2:
        return _not_tested("one method: the method × task-type test needs at least 2", task_types=types)
    missing = [g for g in data.groups if len({o.task_type for o in data.of(g, anchors=False)}) < len(types)]
    if missing:
        return _not_tested(f"{', '.join(missing)} not measured on every task type ({', '.join(types)})", task_types=types)
    frame = pd.DataFrame({"y": [o.y for o in rows], "raw": [o.raw for o in rows], "method": [o.group for o in rows],
                          "task": [o.task_type for o in rows], "rate": [f"{o.rate:g}" for o in rows]})
    if frame.groupby(["method", "task"]).size().min() < 2:
        return _not_tested("fewer than 2 samples in some (method, task type) cell", task_types=types)
    np, _, stats, _ = libraries()
    rate_term = " + C(rate)" if frame["rate"].nunique() > 1 else ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if data.binary:
            import statsmodels.api as sm

            full = glm(f"raw ~ C(method) * C(task){rate_term}", data=frame, family=sm.families.Binomial()).fit()
            reduced = glm(f"raw ~ C(method) + C(task){rate_term}", data=frame, family=sm.families.Binomial()).fit()
            lr = 2 * (full.llf - reduced.llf)
            df = full.df_model - reduced.df_model
            p = float(stats.chi2.sf(lr, df))
            result = {"statistic": float(lr), "df": [float(df)], "p": p,
                      "test": "logistic GLM (statsmodels) score ~ method × task type + rate, likelihood-ratio test "
                              "of the interaction"}
        else:
            table = anova_lm(ols(f"y ~ C(method) * C(task){rate_term}", data=frame).fit(), typ=2)
            row = table.loc["C(method):C(task)"]
            p = float(row["PR(>F)"])
            result = {"statistic": float(row["F"]), "df": [float(row["df"]), float(table.loc["Residual", "df"])], "p": p,
                      "test": "two-way ANOVA (statsmodels anova_lm, type II): quality ~ method × task type + rate"}
    if not np.isfinite(result["p"]):
        return _not_tested("the model could not be estimated (a cell without variation)", task_types=types)
    return {"status": "tested", "task_types": types, "datasets": {d: next(o.task_type for o in rows if o.dataset == d)
                                                                  for d in datasets},
            "significant": bool(result["p"] < alpha), **result}
