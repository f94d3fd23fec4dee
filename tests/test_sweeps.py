"""Rate sweeps: from start towards stop by step, never past stop, stop included when a step lands on it."""

from __future__ import annotations

import pytest

from workbench.plan import MAX_SWEEP_RATES, PlanError, parse_plan


def sweep(start, stop, step):
    return parse_plan({"rates": {"start": start, "stop": stop, "step": step}}).rates


@pytest.mark.parametrize("start,stop,step,rates", [
    (0.5, 0.9, 0.25, [0.5, 0.75]),  # was 0.5, 0.75, 1: past the stop
    (0.9, 0.1, 0.3, [0.9, 0.6, 0.3]),  # was an error about rates[3] = 0.0
    (0.9, 0.1, 0.2, [0.9, 0.7, 0.5, 0.3, 0.1]),  # lands on the stop within floating tolerance
    (0.9, 0.1, 0.1, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]),
    (0.1, 1, 0.1, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    (0.3, 0.3, 0.1, [0.3]),
    (0.25, 1, 0.25, [0.25, 0.5, 0.75, 1.0]),
])
def test_sweeps_never_pass_their_stop(start, stop, step, rates):
    got = sweep(start, stop, step)
    assert got == pytest.approx(rates, abs=1e-12)
    assert got[-1] == stop or (got[-1] - stop) * (start - stop) > 0  # never beyond the stop
    assert len(set(got)) == len(got)


@pytest.mark.parametrize("start,stop,step,field,words", [
    (0.9, 1.5, 0.1, "rates.stop", "got 1.5"),  # what the user typed, not rates[6] = 1.5 after expansion
    (0, 0.5, 0.1, "rates.start", "got 0"),
    (0.9, 0.1, 0, "rates.step", "positive"),
    (0.9, 0.1, 1e-6, "rates.step", f"at most {MAX_SWEEP_RATES:,}"),
    (0.9, 0.1, float("inf"), "rates.step", "positive"),
    ("0.9", 0.1, 0.1, "rates.start", "'0.9'"),
])
def test_sweep_errors_name_what_was_typed(start, stop, step, field, words):
    with pytest.raises(PlanError) as err:
        sweep(start, stop, step)
    assert f"field '{field}'" in str(err.value) and words in str(err.value)


def test_a_method_sweep_names_its_own_field():
    with pytest.raises(PlanError, match=r"field 'methods\[0\]\.rates\.stop'"):
        parse_plan({"methods": [{"name": "knorm", "rates": {"start": 0.5, "stop": 2, "step": 0.5}}]})
