"""A real session written by the real Session class, without running a model (no tests in this module).

The malformed-input corpus and the session fuzz test mutate this document: every cell of a small
plan (baseline, two presses, one prompt compressor, two rates) done with two samples shaped like
evaluate.py's records, the prompt cells with an Inspect example.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.plan import BASELINE_LABEL, parse_plan
from workbench.session import Session


def plan_doc(model: str) -> dict:
    return {"name": "corpus", "model": model, "datasets": [{"name": "wikitext2", "samples": 2}],
            "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": [0.75, 0.5],
            "methods": ["knorm", "snapkv", {"name": "random", "family": "prompt"}]}


def _record(sample_id: str, method: str, rate: float, family: str) -> dict:
    kept = 1.0 if method == BASELINE_LABEL else rate
    record = {"sample_id": sample_id, "nll_sum": 8 * (4.5 + (1 - kept)), "n_tokens": 8,
              "kept_fraction": kept, "kept_fraction_physical": kept, "kv_tokens_per_layer": 64 * kept,
              "kv_bytes": int(2048 * kept), "kv_bytes_physical": int(2048 * kept),
              "prefill_seconds": 0.01, "scoring_seconds": 0.002, "path": "per-rate"}
    if family == "prompt":
        record.update(compression_seconds=0.003, compressed_tokens=int(64 * kept), own={"words": 40})
        record["example"] = {"original": "the cat sat on the mat", "compressed": "cat sat mat", "dropped": [[0, 4], [12, 19]]}
    return record


def write_session(folder: Path, model: str, name: str = "session.json") -> Path:
    """A finished session of ``plan_doc(model)`` saved at ``folder/name``; returns its path."""
    path = Path(folder) / name
    session = Session(parse_plan(plan_doc(model), source="corpus preset"), path)
    for key, cell in session.cells.items():
        for i in range(cell["samples_total"]):
            session.add_sample(key, _record(f"wikitext2@seed0#{i}:offset{73 * i}", cell["method"], cell["rate"], cell["family"]))
        session.set_status(key, "done")
    session.status = "finished"
    session.save()
    return path


def session_doc(folder: Path, model: str) -> dict:
    return json.loads(write_session(folder, model).read_text())
