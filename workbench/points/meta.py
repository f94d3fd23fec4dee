"""What the text around recorded compression points is, and accuracy against the number of compressions (no
torch): the meta-analysis of decoding cells (seed 003's "which kinds of step are compressible").

Reads every cell of a session whose sample records carry ``compression_points`` (the decoding protocol's: a point
t = the cache was compressed right after generated token t) with ``compression_chars`` (each point's character
offset in the generated text), the generated text (``generated_text``, or the task protocol's ``generated``) and
the task score (``correct`` where recorded, else ``score``). Each point is put in one category by simple rules
over the text around it, tried in this order on the last sentence before the point:

* ``conclusion``: it states a result: "####", "so", "therefore", "thus", "hence", "in total", "the answer";
* ``calculation``: it holds a calculation: a ``<<…>>`` span, "= number", or "number op number";
* ``restatement``: every number in it was already stated earlier in the generated text;
* ``new step``: the point is at a line end, or the text after it opens a step or a question ("Question", "Step",
  "First", "Next", "Then", "Now");
* ``other``: none of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORIES = ("calculation", "conclusion", "restatement", "new step", "other")
BINS = ((0, 0), (1, 2), (3, 5), (6, 10), (11, 20), (21, None))
_CONCLUSION = re.compile(r"####|\b(so|therefore|thus|hence|in total|altogether|the answer)\b", re.IGNORECASE)
_CALCULATION = re.compile(r"<<[^<>]*>>|=\s*\$?-?\d|\d\s*[-+*/x×÷]\s*\$?\d")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_OPENS = re.compile(r"\s*(Question|Step|First|Next|Then|Now)\b")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")


class MetaInputError(ValueError):
    """A session with nothing to analyse: one line naming the file and the field."""


def last_sentence(before: str) -> str:
    """The last sentence (or line) of ``before``, the text up to a point."""
    pieces = [p for p in _SENTENCE_END.split(before.rstrip()) if p.strip()]
    return pieces[-1].strip() if pieces else ""


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def category(text: str, offset: int) -> str:
    """The category of a point at character ``offset`` of ``text`` (the rules of the module docstring)."""
    before, after = text[:offset], text[offset:]
    sentence = last_sentence(before)
    if _CONCLUSION.search(sentence):
        return "conclusion"
    if _CALCULATION.search(sentence):
        return "calculation"
    said = _numbers(sentence)
    earlier = before.rstrip()[: max(0, len(before.rstrip()) - len(sentence))]
    if said and said <= _numbers(earlier):
        return "restatement"
    if before.endswith("\n") or after.lstrip(" ").startswith("\n") or _OPENS.match(after):
        return "new step"
    return "other"


@dataclass
class _Sample:
    method: str
    points: int
    categories: list[str]
    score: float | None
    examples: list[tuple[str, str, str]]  # (category, text before, text after)


def _score(sample: dict) -> float | None:
    if isinstance(sample.get("correct"), bool):
        return float(sample["correct"])
    score = sample.get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


def _samples(cells) -> list[_Sample]:
    out = []
    for cell in cells:
        for s in cell.get("samples") or []:
            points = s.get("compression_points")
            if not isinstance(points, list):
                continue
            text = s.get("generated_text", s.get("generated"))
            chars = s.get("compression_chars")
            cats, examples = [], []
            if isinstance(text, str) and isinstance(chars, list) and len(chars) == len(points):
                for c in chars:
                    if isinstance(c, int) and 0 <= c <= len(text):
                        cats.append(category(text, c))
                        examples.append((cats[-1], text[max(0, c - 60) : c], text[c : c + 30]))
            out.append(_Sample(cell["method"], len(points), cats, _score(s), examples))
    return out


def _bin_name(low: int, high: int | None) -> str:
    return str(low) if high == low else f"{low}+" if high is None else f"{low}-{high}"


def _accuracy(samples: list[_Sample]) -> dict:
    scored = [s.score for s in samples if s.score is not None]
    return {"samples": len(samples), "scored": len(scored), "accuracy": sum(scored) / len(scored) if scored else None}


def analyse(session) -> dict:
    """The meta-analysis of a loaded Session. Raises MetaInputError when no cell records compression points."""
    where = str(session.path or session.plan.name)
    samples = _samples(session.cells.values())
    if not samples:
        raise MetaInputError(f"{where}: field 'cells[].samples[].compression_points': no cell records compression "
                             "points (run a decoding cell first)")
    methods: dict[str, dict] = {}
    for name in dict.fromkeys(s.method for s in samples):
        own = [s for s in samples if s.method == name]
        cats = [c for s in own for c in s.categories]
        methods[name] = {**_accuracy(own), "points": sum(s.points for s in own),
                         "points_per_sample": sum(s.points for s in own) / len(own), "categorised": len(cats),
                         "categories": {c: cats.count(c) for c in CATEGORIES}}
    bins = []
    for low, high in BINS:
        inside = [s for s in samples if s.points >= low and (high is None or s.points <= high)]
        bins.append({"compressions": _bin_name(low, high), **_accuracy(inside),
                     "per_method": {m: _accuracy([s for s in inside if s.method == m]) for m in methods}})
    examples = {c: [] for c in CATEGORIES}
    for s in samples:
        for cat, before, after in s.examples:
            if len(examples[cat]) < 2:
                examples[cat].append({"method": s.method, "before": before, "after": after})
    return {"session": where, "samples": len(samples), "points": sum(s.points for s in samples), "methods": methods,
            "bins": bins, "examples": examples, "categories": list(CATEGORIES)}


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.0f}%" if total else "—"


def _acc(entry: dict) -> str:
    return "—" if entry["accuracy"] is None else f"{entry['accuracy']:.3f}"


def text(report: dict) -> str:
    """The report as plain text, 80 columns wide (the CLI's output and the Analysis view's points pane)."""
    lines = [(f"Compression points: {len(report['methods'])} method(s), {report['samples']} samples, "
              f"{report['points']} points"), "",
             f"{'method':<18} {'points':>6} {'/smpl':>5} {'acc':>5}  {'calc':>4} {'concl':>5} {'restat':>6} {'step':>4} {'other':>5}"]
    for name, m in report["methods"].items():
        c, n = m["categories"], m["categorised"]
        lines.append(f"{name[:18]:<18} {m['points']:>6} {m['points_per_sample']:>5.1f} {_acc(m):>5}  "
                     f"{_share(c['calculation'], n):>4} {_share(c['conclusion'], n):>5} {_share(c['restatement'], n):>6} "
                     f"{_share(c['new step'], n):>4} {_share(c['other'], n):>5}")
    lines += ["", "accuracy by number of compressions (all methods; per method: --json)",
              f"{'compressions':<13} {'samples':>7} {'accuracy':>8}"]
    lines += [f"{b['compressions']:<13} {b['samples']:>7} {_acc(b):>8}" for b in report["bins"] if b["samples"]]
    shown = [(cat, e) for cat, items in report["examples"].items() for e in items[:1]]
    if shown:
        lines += ["", "an example of each category (… text before ▌ text after …)"]
        for cat, e in shown:
            snippet = (e["before"][-34:] + "▌" + e["after"][:20]).replace("\n", "⏎")
            lines.append(f"{cat:<11} …{snippet}…"[:76])
    return "\n".join(lines)
