"""The analysis on sessions with known answers, written through the real session writer (tests/synthetic_sessions.py):
r* recovered inside its interval, no breakpoint claimed on straight lines, an interaction found where it is built
in and not where it is not, thresholds told apart — each over seeded draws, at the analysis's α = 0.05."""

from __future__ import annotations

import numpy as np
import pytest

import synthetic_sessions as synth
from workbench.analysis import across, curves
from workbench.analysis.analyze import analyze
from workbench.analysis.data import load_sessions, observations

DRAWS = 50
pytestmark = pytest.mark.slow  # 50 seeded draws a test: 20–40 s for the module on a 2-core machine


def _threshold(path, method):
    data = observations(load_sessions([path]))
    return curves.threshold(data.of(method))


def test_a_known_breakpoint_is_found_inside_its_interval_in_at_least_90_percent_of_draws(tmp_path):
    rng = np.random.default_rng(11)
    covered, found, misses = 0, 0, []
    for i in range(DRAWS):
        bp = float(rng.uniform(0.3, 0.7))
        path = synth.write(tmp_path / f"kink{i}.json", rng, {"snapkv": synth.kinked(bp)})
        th = _threshold(path, "snapkv")
        found += th["status"] == "found"
        if th["status"] == "found" and th["ci"][0] <= bp <= th["ci"][1]:
            covered += 1
        else:
            misses.append((round(bp, 3), th["r_star"], th["ci"], th["reason"]))
    assert covered >= 0.9 * DRAWS, (covered, misses)
    assert found >= 0.9 * DRAWS


def test_a_straight_line_gets_no_breakpoint_in_at_least_90_percent_of_draws(tmp_path):
    rng = np.random.default_rng(12)
    declined = []
    for i in range(DRAWS):
        th = _threshold(synth.write(tmp_path / f"line{i}.json", rng, {"knorm": synth.straight}), "knorm")
        declined.append(th["status"] == "declined" and th["reason"].startswith("no breakpoint supported"))
    assert sum(declined) >= 0.9 * DRAWS, sum(declined)


def _interaction(tmp_path, rng, i, effect):
    path = synth.write(tmp_path / f"inter{i}.json", rng, {"snapkv": synth.kinked(0.4), "knorm": synth.kinked(0.6)},
                       rates=[0.25, 0.5, 0.75], datasets=("wikitext2", "gsm8k"), task_effect=effect)
    return across.interaction(observations(load_sessions([path])))


def test_a_built_in_method_by_task_interaction_is_detected_and_a_null_one_is_not(tmp_path):
    """knorm hurts twice as much on GSM8K (reasoning) as on WikiText-2 (language modelling): found in ≥ 90% of
    draws; the same methods with the same effect on both task types: found in at most 10% (α = 0.05)."""
    rng = np.random.default_rng(13)
    n = 30
    built_in = [_interaction(tmp_path, rng, i, {"knorm": {"gsm8k": 2.0}}) for i in range(n)]
    null = [_interaction(tmp_path, rng, n + i, None) for i in range(n)]
    assert all(r["status"] == "tested" and r["task_types"] == ["language modelling", "reasoning"] for r in built_in + null)
    assert sum(r["significant"] for r in built_in) >= 0.9 * n
    assert sum(r["significant"] for r in null) <= 0.1 * n


def test_thresholds_that_differ_are_told_apart_and_equal_ones_mostly_not(tmp_path):
    rng = np.random.default_rng(14)
    n = 10
    apart, alike = 0, 0
    for i in range(n):
        p = synth.write(tmp_path / f"h{i}.json", rng, {"snapkv": synth.kinked(0.35), "knorm": synth.kinked(0.65)})
        hom = analyze(load_sessions([p]))["homogeneity"]["thresholds"]
        apart += hom["status"] == "tested" and hom["differ"]
        q = synth.write(tmp_path / f"s{i}.json", rng, {"snapkv": synth.kinked(0.5), "knorm": synth.kinked(0.5)})
        hom = analyze(load_sessions([q]))["homogeneity"]["thresholds"]
        alike += hom["status"] == "tested" and hom["differ"]
    assert apart >= 0.9 * n
    assert alike <= 0.2 * n


def test_binary_scores_get_a_logistic_interaction_test_that_finds_a_built_in_one_and_not_a_null_one(tmp_path):
    """0/1 scores (accuracy): knorm fails the needle (retrieval) far more than GSM8K (reasoning) → found; effects
    additive in log-odds (0.7/0.5 against 0.5/0.3: no interaction on the logistic scale) → not found."""
    rng = np.random.default_rng(15)
    n = 10
    built_in, null = [], []
    for i in range(n):
        p = synth.write_scores(tmp_path / f"b{i}.json", rng, {"snapkv": {"gsm8k": 0.7, "paulgraham": 0.7},
                                                              "knorm": {"gsm8k": 0.7, "paulgraham": 0.25}})
        built_in.append(across.interaction(observations(load_sessions([p]))))
        q = synth.write_scores(tmp_path / f"n{i}.json", rng, {"snapkv": {"gsm8k": 0.7, "paulgraham": 0.5},
                                                              "knorm": {"gsm8k": 0.5, "paulgraham": 0.3}})
        null.append(across.interaction(observations(load_sessions([q]))))
    assert all(r["test"].startswith("logistic GLM") for r in built_in + null)
    assert sum(r["significant"] for r in built_in) >= 0.9 * n
    assert sum(r["significant"] for r in null) <= 0.1 * n
