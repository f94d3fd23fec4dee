"""The figures a user reads about a session, each computed here and nowhere else.

Pure functions over cell records (the dicts of ``Session.cells``, or the ``cells`` list of a session
JSON document read raw): how many cells are done / failed / unavailable, how many samples are
accounted for, seconds per sample, a cell's delta against its baseline. The Open dialog, Results,
Progress, the exports and the headless report all read these, so two views of one session cannot
disagree. Formatting lives in :mod:`workbench.tables`. No heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from workbench.plan import BASELINE_LABEL

SETTLED = ("done", "error", "unavailable")  # a resumed run does not run these again (error cells: it does)


@dataclass(frozen=True)
class CellCounts:
    """Cells of a session by outcome. ``failed`` counts status 'error'; ``left`` pending, running and
    cancelled cells (what a resume would run)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    unavailable: int = 0
    left: int = 0

    @property
    def finished(self) -> bool:
        """Nothing left to run (failed and unavailable cells have their outcome)."""
        return self.left == 0


def cell_counts(cells: Iterable[dict]) -> CellCounts:
    total = done = failed = unavailable = left = 0
    for cell in cells:
        total += 1
        status = cell.get("status", "pending")
        if status == "done":
            done += 1
        elif status == "error":
            failed += 1
        elif status == "unavailable":
            unavailable += 1
        else:
            left += 1
    return CellCounts(total, done, failed, unavailable, left)


def sample_counts(cells: Iterable[dict]) -> tuple[int, int]:
    """(samples accounted for, samples in the plan), over all cells. A settled cell counts all its samples
    (a failed or unavailable cell will not measure more), an unsettled one the samples it measured."""
    done = total = 0
    for cell in cells:
        n = cell.get("samples_total") or 0
        total += n
        done += n if cell.get("status") in SETTLED else min(cell.get("samples_done") or 0, n)
    return done, total


def measured_samples(cells: Iterable[dict]) -> int:
    """Samples actually measured (a failed or unavailable cell measured none, or a few): what a run produced."""
    return sum(min(c.get("samples_done") or 0, c.get("samples_total") or 0) for c in cells)


def seconds_per_sample(cell: dict) -> float | None:
    """Seconds of measurement per sample (prefill + scoring + compression), the cost a user pays per request."""
    done = cell.get("samples_done") or 0
    return cell["seconds"] / done if done and cell.get("seconds") else None


def is_baseline(cell: dict) -> bool:
    return cell.get("method") == BASELINE_LABEL


def against_baseline(cell: dict, key: str, figure: str = "ppl") -> Any:
    """A delta figure (``delta_ppl``, ``delta_ppl_pct``, ``delta_score``…): the baseline is its own reference,
    so its delta is 0 once it has the figure itself (the engine leaves it None)."""
    if is_baseline(cell) and cell.get(figure) is not None:
        return 0.0
    return cell.get(key)


def speed_ratio(cell: dict) -> float | None:
    """Generation speed against the baseline's on the same samples (decoding protocol): 1.0 for the baseline."""
    if is_baseline(cell):
        return 1.0 if cell.get("tokens_per_second") else None
    return cell.get("speed_ratio")


def rate_of(cell: dict) -> float | None:
    """The rate a cell is placed at: 1.0 for the baseline (nothing removed), its rate otherwise; None for a
    threshold-driven press (no rate)."""
    return 1.0 if is_baseline(cell) else cell.get("rate")


def plot_x(cell: dict) -> float | None:
    """Where a cell sits on a rate axis: a threshold-driven press at the kept fraction it achieved."""
    x = rate_of(cell)
    return x if x is not None else cell.get("kept_fraction")


def session_cost(cells: Iterable[dict]) -> tuple[float, bool]:
    """(US dollars the session's API answers cost so far, whether any of it is an estimate) from its records."""
    total, estimated = 0.0, False
    for cell in cells:
        for record in cell.get("samples", []):
            if record.get("cost_usd") is not None:
                total += record["cost_usd"]
                estimated = estimated or bool(record.get("cost_estimated"))
    return total, estimated
