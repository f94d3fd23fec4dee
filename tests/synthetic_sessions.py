"""Sessions with known quality curves, written by the real Session class (no tests in this module).

Each sample has its own difficulty (a baseline NLL drawn between 2.5 and 3.5 nats per token) and its own
sensitivity to compression (a multiplier 1 + 0.3·z on the method's penalty), and every measurement its own
noise (sd 0.08 nats per token): what makes one sample harder than another cancels in the paired ΔNLL, as it
does in real sessions, and what is left is the noise and the samples' differing sensitivity. A method's
penalty at rate r is ``slope_below·(r* − r)`` below its breakpoint r*, plus a gentle ``0.05·(1 − r)``
everywhere; a straight-line method has ``0.6·(1 − r)`` and no breakpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.plan import BASELINE_LABEL, parse_plan
from workbench.session import Session

RATES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
TOKENS = 128  # scored tokens per sample


def kinked(bp: float, steep: float = 1.2):
    return lambda rate: (steep * max(bp - rate, 0.0) + 0.05 * (1 - rate))


def straight(rate: float) -> float:
    return 0.6 * (1 - rate)


def write(path: Path, rng: np.random.Generator, curves: dict[str, object], *, rates=RATES, samples: int = 8,
          datasets=("wikitext2",), task_effect=None, noise: float = 0.08, sensitivity: float = 0.3) -> Path:
    """A finished session at ``path``: methods named by ``curves`` (label -> penalty(rate), or with
    ``task_effect`` label -> {dataset: multiplier}), each at ``rates``, ``samples`` per dataset."""
    methods = list(curves)
    doc = {"name": "synthetic", "model": "smollm2-135m",
           "datasets": [{"name": d, "samples": samples} for d in datasets],
           "protocol": {"context_tokens": 64, "continuation_tokens": TOKENS}, "rates": list(rates), "methods": methods}
    session = Session(parse_plan(doc, source="synthetic"), path)
    base = {d: rng.uniform(2.5, 3.5, samples) for d in datasets}
    sens = {d: 1 + sensitivity * rng.standard_normal(samples) for d in datasets}
    for key, cell in session.cells.items():
        dataset, method, rate = cell["dataset"], cell["method"], cell["rate"]
        for i in range(samples):
            nll = base[dataset][i]
            if method != BASELINE_LABEL:
                effect = (task_effect or {}).get(method, {}).get(dataset, 1.0)
                nll += effect * curves[method](rate) * sens[dataset][i] + noise * rng.standard_normal()
            session.add_sample(key, {"sample_id": f"{dataset}@seed0#{i}:offset{97 * i}", "nll_sum": TOKENS * nll,
                                     "n_tokens": TOKENS, "kept_fraction": 1.0 if method == BASELINE_LABEL else rate,
                                     "prefill_seconds": 0.01, "scoring_seconds": 0.01, "path": "per-rate"})
        session.set_status(key, "done")
    session.status = "finished"
    session.save()
    session.release_lock()
    return Path(path)


def write_scores(path: Path, rng: np.random.Generator, accuracy: dict[str, dict[str, float]], *, rates=(0.5, 0.25),
                 samples: int = 40, baseline: float = 0.8) -> Path:
    """A finished task-protocol session of 0/1 scores (accuracy, exact match): ``accuracy`` is method ->
    {dataset: probability of a correct answer} (the same at every rate), the baseline answers with ``baseline``."""
    datasets = sorted({d for per in accuracy.values() for d in per})
    doc = {"name": "synthetic-task", "model": "smollm2-135m",
           "datasets": [{"name": d, "samples": samples} for d in datasets],
           "protocol": {"name": "task", "max_new_tokens": 8}, "rates": list(rates), "methods": list(accuracy)}
    session = Session(parse_plan(doc, source="synthetic"), path)
    for key, cell in session.cells.items():
        method, dataset = cell["method"], cell["dataset"]
        chance = baseline if method == BASELINE_LABEL else accuracy[method][dataset]
        for i in range(samples):
            session.add_sample(key, {"sample_id": f"{dataset}#{i}", "nll_sum": None, "n_tokens": 0,
                                     "score": float(rng.random() < chance), "metric": "accuracy",
                                     "prefill_seconds": 0.01, "scoring_seconds": 0.01, "path": "per-rate"})
        session.set_status(key, "done")
    session.status = "finished"
    session.save()
    session.release_lock()
    return Path(path)
