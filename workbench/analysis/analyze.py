"""The analysis of sessions as one JSON-ready report: every number, the method that produced it, the versions
of the libraries used, and what was left out. The CLI, the writers and the app's Analysis view read this."""

from __future__ import annotations

from importlib import metadata

from workbench import __version__
from workbench.analysis import ALPHA, across, curves, verdict
from workbench.analysis.data import QUALITY, Observations, observations
from workbench.session import Session

REPORT_KIND = "workbench-threshold-analysis"
LIBRARIES = ("numpy", "scipy", "statsmodels", "piecewise-regression", "pandas", "matplotlib")


def library_versions() -> dict[str, str | None]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def analyze(sessions: list[tuple[str, Session]], metric: str | None = None, alpha: float = ALPHA) -> dict:
    """The report of ``sessions`` ((label, Session) pairs). Raises data.AnalysisInputError when there is
    nothing to analyse; a test that lacks rates, samples, methods or task types is reported as not tested,
    with the reason."""
    data = observations(sessions, metric)
    return report_of(data, sessions, alpha)


def report_of(data: Observations, sessions: list[tuple[str, Session]], alpha: float = ALPHA) -> dict:
    methods = {}
    thresholds = {}
    for group in data.groups:
        obs = data.of(group)
        thresholds[group] = curves.threshold(obs, alpha)
        first = obs[0]
        methods[group] = {
            "method": first.method, "session": first.session,
            "datasets": sorted({o.dataset for o in obs}),
            "samples": len({(o.dataset, o.sample_id) for o in obs}),
            "curve": curves.curve(obs, alpha),
            "threshold": thresholds[group],
            "auc": curves.relative_auc(obs, data.metric),
            "mean": sum(o.y for o in obs if not o.anchor) / max(1, sum(1 for o in obs if not o.anchor)),
        }
    report = {
        "kind": REPORT_KIND, "workbench_version": __version__, "libraries": library_versions(), "alpha": alpha,
        "sessions": [{"label": label, "path": str(s.path) if s.path else None, "plan": s.plan.name}
                     for label, s in sessions],
        "metric": data.metric, "quality": QUALITY[data.metric], "score_name": data.score_name,
        "binary": data.binary, "left_out": data.left_out,
        "methods": methods,
        "paired": across.paired(data, alpha),
        "homogeneity": across.homogeneity(data, thresholds, alpha),
        "interaction": across.interaction(data, alpha),
    }
    report["verdict"] = verdict.sentences(report)
    return report
