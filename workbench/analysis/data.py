"""Per-sample observations from sessions: what the analysis fits and tests.

One observation per (method, model, dataset, rate, sample): the quality of that sample against the baseline
on the same sample — ΔNLL = method NLL − baseline NLL in nats per token (metric ``ppl``, lower is better), or
Δscore = method score − baseline score (metric ``score``, higher is better). Pairing on the sample removes
what makes one sample harder than another, which is what lets the workbench compare methods on few samples.

Several sessions: only the (model, dataset, method, rate) cells finished in every session are used, on the
samples every session measured, and each session's method becomes its own group ("snapkv @ a"); what was left
out is said, cell by cell. Cells that are not finished, threshold-driven presses (no rate) and samples without
a baseline are left out with a line saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from workbench.plan import BASELINE_LABEL
from workbench.session import Session, SessionError
from workbench.tasks import task_type

METRICS = ("ppl", "score")
QUALITY = {
    "ppl": "ΔNLL (nats/token, method − baseline on the same sample; lower is better)",
    "score": "Δscore (method − baseline on the same sample; higher is better)",
}


class AnalysisInputError(ValueError):
    """Input the analysis cannot use at all; ``str()`` is one line naming the file and the field."""


@dataclass(frozen=True)
class Obs:
    group: str  # the method label, or "label @ session" when several sessions are analysed
    method: str
    session: str
    model: str
    dataset: str
    task_type: str
    rate: float  # requested fraction of context tokens kept (the Rate column)
    sample_id: str
    y: float  # ΔNLL or Δscore against the baseline on this sample
    raw: float  # the method's own value: NLL per token, or the score
    anchor: bool = False  # the baseline's own sample at rate 1.0 (y = 0): where every curve starts

    @property
    def pair(self) -> tuple:
        """What two methods must share to be compared on the same sample."""
        return self.model, self.dataset, self.rate, self.sample_id


@dataclass
class Observations:
    metric: str
    rows: list[Obs]
    groups: list[str]  # in plan order
    sessions: list[str]
    left_out: list[str] = field(default_factory=list)
    score_name: str | None = None  # accuracy, exact_match, rouge_l, f1 (metric "score")
    binary: bool = False  # every score is 0 or 1 (accuracy, exact match): logistic models apply

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "ppl"

    def of(self, group: str, anchors: bool = True) -> list[Obs]:
        return [o for o in self.rows if o.group == group and (anchors or not o.anchor)]


def session_labels(paths: list[str | Path]) -> list[str]:
    """Short names for sessions: the file stems, with a number added where two are alike."""
    stems = [Path(p).stem for p in paths]
    return [s if stems.count(s) == 1 else f"{s}#{i + 1}" for i, s in enumerate(stems)]


def load_sessions(paths: list[str | Path]) -> list[tuple[str, Session]]:
    """(label, session) for each file; AnalysisInputError naming the file and the field for one that cannot be read."""
    out, seen = [], {}
    for label, path in zip(session_labels(paths), paths):
        where = Path(path).expanduser().resolve()
        if where in seen:  # its samples would count twice as independent evidence in every test
            raise AnalysisInputError(f"{path}: given twice (also as {seen[where]}); name each session once")
        seen[where] = path
        try:
            out.append((label, Session.load(path)))
        except SessionError as err:
            raise AnalysisInputError(str(err)) from None
    return out


def _value(sample: dict, metric: str) -> float | None:
    if metric == "ppl":
        n = sample.get("n_tokens")
        return sample["nll_sum"] / n if n and sample.get("nll_sum") is not None else None
    score = sample.get("score")
    return float(score) if score is not None else None


def detect_metric(sessions: list[tuple[str, Session]]) -> str | None:
    """``ppl`` when a compressed cell has per-sample NLLs, else ``score`` when one has task scores, else None."""
    found = set()
    for _, session in sessions:
        for cell in session.cells.values():
            if cell["method"] != BASELINE_LABEL and cell.get("status") == "done":
                found |= {m for m in METRICS for s in cell["samples"] if _value(s, m) is not None}
    return "ppl" if "ppl" in found else "score" if "score" in found else None


def observations(sessions: list[tuple[str, Session]], metric: str | None = None) -> Observations:
    """The observations of ``sessions`` for ``metric`` (None: detected). Raises AnalysisInputError when there is
    nothing to analyse (naming the file and what is missing)."""
    names = [label for label, _ in sessions]
    where = ", ".join(str(s.path or label) for label, s in sessions)
    metric = metric or detect_metric(sessions)
    if metric is None:
        raise AnalysisInputError(f"{where}: field 'cells[].samples': no finished compressed cell has per-sample "
                                 "values (nll_sum/n_tokens or score) to analyse")
    left: list[str] = []
    several = len(sessions) > 1
    # Finished cells with a rate, by (model, dataset, method, rate), per session.
    per_session: list[dict[tuple, dict]] = []
    for label, session in sessions:
        cells = {}
        for cell in session.cells.values():
            tag = f"{label}: " if several else ""
            what = f"{cell['method']} @ {cell['rate']:g} on {cell['dataset']}" if cell.get("rate") is not None \
                else f"{cell['method']} on {cell['dataset']}"
            if cell.get("status") != "done":
                left.append(f"{tag}{what}: status {cell.get('status')}, not finished")
            elif cell.get("rate") is None and cell["method"] != BASELINE_LABEL:
                left.append(f"{tag}{what}: threshold-driven, no rate to place it on a curve")
            elif not any(_value(s, metric) is not None for s in cell["samples"]):
                left.append(f"{tag}{what}: no per-sample {metric} values")
            else:
                cells[(cell["model"], cell["dataset"], cell["method"], cell["rate"] if cell["method"] != BASELINE_LABEL
                       else 1.0)] = cell
        per_session.append(cells)
    shared = set(per_session[0]).intersection(*per_session[1:]) if per_session else set()
    if several:
        for label, cells in zip(names, per_session):
            for key in sorted(set(cells) - shared, key=str):
                left.append(f"{label}: {key[2]} @ {key[3]:g} on {key[1]}: not in every session")
    rows: list[Obs] = []
    groups: list[str] = []
    types: dict[str, str] = {}
    score_names: set[str] = set()
    for label, (_, session), cells in zip(names, sessions, per_session):
        order = list(session.cells)  # plan order
        for key in sorted(shared, key=lambda k: order.index(cells[k]["key"])):
            model, dataset, method, rate = key
            if method == BASELINE_LABEL:
                continue
            base = cells.get((model, dataset, BASELINE_LABEL, 1.0))
            if (model, dataset, BASELINE_LABEL, 1.0) not in shared:
                left.append(f"{label}: {method} @ {rate:g} on {dataset}: no finished baseline to compare with")
                continue
            # Samples: those every session measured in this cell and in its baseline.
            ids = set.intersection(*({s["sample_id"] for s in c[key]["samples"] if _value(s, metric) is not None}
                                     & {s["sample_id"] for s in c[(model, dataset, BASELINE_LABEL, 1.0)]["samples"]
                                        if _value(s, metric) is not None}
                                     for c in per_session))
            dropped = len(cells[key]["samples"]) - len(ids)
            if dropped:
                why = "not measured in every session" if several else "without a baseline sample"
                left.append(f"{label}: {method} @ {rate:g} on {dataset}: {dropped} sample(s) {why}")
            group = f"{method} @ {label}" if several else method
            if group not in groups:
                groups.append(group)
            kind = types.setdefault(dataset, task_type(dataset))
            base_by_id = {s["sample_id"]: s for s in base["samples"]}
            for sample in cells[key]["samples"]:
                if sample["sample_id"] not in ids:
                    continue
                value, ref = _value(sample, metric), _value(base_by_id[sample["sample_id"]], metric)
                if metric == "score" and sample.get("metric"):
                    score_names.add(sample["metric"])
                rows.append(Obs(group, method, label, model, dataset, kind, float(rate), sample["sample_id"],
                                value - ref, value))
    if not rows:
        raise AnalysisInputError(f"{where}: field 'cells': " + (
            "the sessions share no finished (model, dataset, method, rate) cell with a baseline" if several else
            f"no finished compressed cell with a finished baseline has per-sample {metric} values"))
    # Every curve starts at the baseline: rate 1.0, y = 0 on each sample (unless the method was measured there).
    anchors = []
    for group in groups:
        own = [o for o in rows if o.group == group]
        if any(o.rate == 1.0 for o in own):
            continue
        seen = {}
        for o in own:
            seen.setdefault((o.model, o.dataset, o.sample_id), o)
        for o in seen.values():
            ref = o.raw - o.y
            anchors.append(Obs(group, o.method, o.session, o.model, o.dataset, o.task_type, 1.0, o.sample_id, 0.0, ref,
                               anchor=True))
    rows += anchors
    binary = metric == "score" and all(o.raw in (0.0, 1.0) for o in rows)
    bad = [o for o in rows if not math.isfinite(o.y)]
    if bad:
        raise AnalysisInputError(f"{where}: field 'cells[].samples': {len(bad)} sample value(s) are not finite")
    return Observations(metric, rows, groups, names, left, ", ".join(sorted(score_names)) or None, binary)
