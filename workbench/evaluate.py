"""Measure one method on one sample, for all its rates: the unit of work the runner schedules.

Returns one *sample record* per rate: nll_sum (nats), n_tokens, the KV budget after compression
(kv_eval.kv_budget), prefill_seconds and scoring_seconds, and the path that produced it
('baseline', 'shared-prefill' or 'per-rate'). Imports torch (the runner imports this module only
once a model is loaded).

Batches: the baseline and the presses on the shared-prefill path can measure several samples in one
forward pass (``*_batch``). Only samples of the same length go together, so no row is padded and each
row's result is the one it would have alone; a record's timings are its share of the batch's.
"""

from __future__ import annotations

import torch

from workbench import kv_eval
from workbench.methods import presses
from workbench.plan import MethodSpec, ProtocolSpec


def _split(lm, samples, protocol: ProtocolSpec):
    """(B, C+T+1) token ids of samples of one length, and their context and continuation parts."""
    if not isinstance(samples, (list, tuple)):
        samples = [samples]
    ids = torch.tensor([s.input_ids for s in samples], dtype=torch.long, device=lm.model.device)
    return ids, ids[:, : protocol.context_tokens], ids[:, protocol.context_tokens :]


def _record(sample, nll, n, budget, prefill_s, scoring_s, path, batch: int = 1) -> dict:
    record = {
        "sample_id": sample.sample_id,
        "nll_sum": nll,
        "n_tokens": n,
        **budget,
        "prefill_seconds": prefill_s,
        "scoring_seconds": scoring_s,
        "path": path,
    }
    if batch > 1:
        record["batch"] = batch
    return record


def evaluate_baseline(lm, sample, protocol: ProtocolSpec) -> dict:
    """The uncompressed model on this sample (same tokens every method is scored on)."""
    if protocol.name == "chunked":
        ids, _, _ = _split(lm, sample, protocol)
        kv_eval.seed_sample(sample.sample_id)
        nll, n, cache, seconds = kv_eval.chunked_nll(lm.model, ids, protocol.chunk_size)
        budget = kv_eval.kv_budget(lm.model, cache, ids.shape[1] - 1)
        return _record(sample, nll, n, budget, 0.0, seconds, "baseline")
    return evaluate_baseline_batch(lm, [sample], protocol)[0]


def evaluate_baseline_batch(lm, samples: list, protocol: ProtocolSpec) -> list[dict]:
    """evaluate_baseline for samples of one length in one prefill and one continuation pass."""
    model = lm.model
    _, ctx, cont = _split(lm, samples, protocol)
    b = len(samples)
    kv_eval.seed_sample(samples[0].sample_id)
    cache, prefill_s = kv_eval.prefill(model, ctx)
    budget = kv_eval.kv_budget(model, cache, protocol.context_tokens)
    nlls, n, scoring_s = kv_eval.continuation_nlls(model, cache, cont, protocol.context_tokens)
    return [_record(s, nll, n, budget, prefill_s / b, scoring_s / b, "baseline", b) for s, nll in zip(samples, nlls)]


def batchable(method: MethodSpec, rates: list, protocol: ProtocolSpec, shared_allowed: bool) -> bool:
    """True when several samples of one length can share this method's forward passes with unchanged
    results: presses on the shared-prefill path whose scores draw no random numbers (each sample seeds its
    own draw) and need no eager attention (its (B, heads, C, C) weights would not fit); AdaKV's head-wise
    masks stay one sample at a time."""
    from workbench.methods import presses

    if method.family != "kv" or method.name == "adakv" or presses.draws_random_numbers(method.name, method.params):
        return False
    if presses.requirements(method.name, method.params)[0] == "eager":
        return False
    return kv_path(method, protocol, shared_allowed)[0] == "shared-prefill" and len(rates) > 1


def kv_path(method: MethodSpec, protocol: ProtocolSpec, shared_allowed: bool) -> tuple[str, str | None]:
    """('shared-prefill' | 'per-rate', why not shared) for a press under a protocol."""
    if protocol.name == "chunked":
        return "per-rate", "the chunked protocol compresses after every chunk"
    if not shared_allowed:
        return "per-rate", "shared prefill turned off in the plan"
    rates = method.rates or []
    reason = presses.shared_prefill_reason(method.name, method.params)
    if reason is None and rates == [None]:
        reason = "threshold-driven"
    return ("per-rate", reason) if reason else ("shared-prefill", None)


def pressed_caches(lm, seed_id: str, ctx, method: MethodSpec, rates: list, protocol: ProtocolSpec, shared_allowed: bool):
    """The context's cache as the press leaves it, for each rate: one shared prefill where that is exact,
    else one pressed prefill per rate.

    ``ctx`` is (B, C); ``seed_id`` seeds torch before each prefill (random presses draw the same numbers
    on every path). Yields (rate, cache, prefill_seconds, path, start_position, decoding_press): what follows the context
    continues from ``start_position`` and, for decoding presses, runs under ``decoding_press``. Head-wise
    masks are cleared after each rate's consumer is done with the cache.
    """
    model = lm.model
    path, _ = kv_path(method, protocol, shared_allowed)
    try:
        if path == "shared-prefill" and len(rates) > 1:
            press = presses.build_press(method.name, method.params, rates[0])
            inner = method.params["press"]["name"] if method.name in presses.SHARED_WRAPPERS else None
            kv_eval.seed_sample(seed_id)
            shared = kv_eval.shared_prefill(model, ctx, method.name, press, inner)
            for rate in rates:
                cache, select_s = kv_eval.cache_for_rate(model, shared, rate, method.name, method.params)
                # The one prefill is shared by the rates: each carries its share, plus its own selection.
                yield rate, cache, shared.seconds / len(rates) + select_s, "shared-prefill", ctx.shape[1], None
                kv_eval.clear_masks(model)
            return
        decoding = method.name in presses.DECODING_PRESSES
        for rate in rates:
            press = presses.build_press(method.name, method.params, rate)
            kv_eval.seed_sample(seed_id)
            cache, prefill_s = kv_eval.prefill(model, ctx, press)
            start = cache.layers[0].keys.shape[-2] if presses.rerotates_keys(method.name, method.params) else ctx.shape[1]
            yield rate, cache, prefill_s, "per-rate", start, press if decoding else None
            kv_eval.clear_masks(model)
    finally:
        kv_eval.clear_masks(model)


def evaluate_kv(lm, sample, method: MethodSpec, rates: list, protocol: ProtocolSpec, shared_allowed: bool = True) -> dict:
    """One press on one sample at every rate: {rate: sample record}. Raises on failure (the runner records it)."""
    if protocol.name == "chunked":
        ids, _, _ = _split(lm, sample, protocol)
        out: dict = {}
        for rate in rates:
            press = presses.build_press(method.name, method.params, rate)
            kv_eval.seed_sample(sample.sample_id)
            nll, n, cache, seconds = kv_eval.chunked_nll(lm.model, ids, protocol.chunk_size, method.name, press, rate)
            budget = kv_eval.kv_budget(lm.model, cache, ids.shape[1] - 1)
            out[rate] = _record(sample, nll, n, budget, 0.0, seconds, "per-rate")
        return out
    return evaluate_kv_batch(lm, [sample], method, rates, protocol, shared_allowed)[0]


def evaluate_kv_batch(lm, samples: list, method: MethodSpec, rates: list, protocol: ProtocolSpec,
                      shared_allowed: bool = True) -> list[dict]:
    """evaluate_kv for samples of one length (more than one only where ``batchable``): [{rate: record}]."""
    model = lm.model
    _, ctx, cont = _split(lm, samples, protocol)
    b = len(samples)
    out: list[dict] = [{} for _ in samples]
    for rate, cache, prefill_s, path, start, decoding_press in pressed_caches(lm, samples[0].sample_id, ctx, method, rates,
                                                                               protocol, shared_allowed):
        budget = kv_eval.kv_budget(model, cache, protocol.context_tokens)
        nlls, n, scoring_s = kv_eval.continuation_nlls(model, cache, cont, start, press=decoding_press,
                                                       stepwise=decoding_press is not None)
        for record, sample, nll in zip(out, samples, nlls):
            record[rate] = _record(sample, nll, n, budget, prefill_s / b, scoring_s / b, path, b)
    return out


def evaluate_prompt(lm, sample, compressor, rates: list, protocol: ProtocolSpec, keep_example: bool = False) -> dict:
    """A prompt compressor on one sample at every rate: {rate: sample record}.

    The context's text is compressed, re-tokenized with the evaluated model's tokenizer and prefilled;
    the same continuation tokens as the baseline are scored after it (positions follow the compressed
    context). Achieved kept fraction = compressed tokens / context tokens, in the evaluated model's tokens.
    """
    from workbench.datasets import context_text

    model = lm.model
    _, ctx, cont = _split(lm, sample, protocol)
    text = context_text(sample, lm.tokenizer)
    results = compressor.compress_rates(text, rates)
    path = "score-once" if compressor.shares_scores and len(rates) > 1 else "per-rate"
    out = {}
    for rate in rates:
        res = results[rate]
        ids = lm.tokenizer(res.text, add_special_tokens=False)["input_ids"] or ctx[0, :1].tolist()
        compressed = torch.tensor([ids], dtype=torch.long, device=model.device)
        kv_eval.seed_sample(sample.sample_id)
        cache, prefill_s = kv_eval.prefill(model, compressed)
        budget = kv_eval.kv_budget(model, cache, protocol.context_tokens)
        nll, n, scoring_s = kv_eval.continuation_nll(model, cache, cont, len(ids))
        record = _record(sample, nll, n, budget, prefill_s, scoring_s, path)
        record["compression_seconds"] = res.seconds
        record["compressed_tokens"] = len(ids)
        record["own"] = res.own
        kept = len(ids) / protocol.context_tokens
        if compressor.rate_caveat and abs(kept - rate) > 0.05:
            record["note"] = f"kept {kept:.2f} for rate {rate:g}: {compressor.rate_caveat}"
        if res.own.get("rules_exhausted"):
            record["note"] = (f"rules exhausted: content words are never dropped, so it kept "
                              f"{len(ids) / protocol.context_tokens:.2f} instead of {rate:g}")
        if keep_example:
            record["example"] = {"original": text, "compressed": res.text, "dropped": [list(d) for d in res.dropped]}
        out[rate] = record
    return out
