"""The perplexity protocols: ``context-continuation`` and ``chunked`` (torch).

Each operation returns one *sample record* per rate: nll_sum (nats), n_tokens, the KV budget after
compression (kv_eval.kv_budget), prefill_seconds and scoring_seconds, and the path that produced it
('baseline', 'shared-prefill', 'per-rate' or 'score-once'). What a press needs is read from its traits
(``presses.resolve``), never from its name. Imported once a model is loaded.

Batches: the baseline and the presses on the shared-prefill path can measure several samples in one
forward pass. Only samples of the same length go together, so no row is padded and each row's result
is the one it would have alone; a record's timings are its share of the batch's.
"""

from __future__ import annotations

import torch

from workbench import kv_eval
from workbench.families.kv import kv_path
from workbench.methods import presses
from workbench.methods.press_build import build_press
from workbench.plan import MethodSpec, ProtocolSpec


def _split(lm, samples, context_tokens: int):
    """(B, C+T+1) token ids of samples of one length, and their context and continuation parts."""
    if not isinstance(samples, (list, tuple)):
        samples = [samples]
    ids = torch.tensor([s.input_ids for s in samples], dtype=torch.long, device=lm.model.device)
    return ids, ids[:, :context_tokens], ids[:, context_tokens:]


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


def token_windows(lm, dataset, protocol: ProtocolSpec) -> list:
    """The dataset's samples for the perplexity protocols: windows of context + continuation + 1 tokens."""
    from workbench import datasets

    return datasets.lm_samples(dataset.name, lm.tokenizer, dataset.samples, protocol.context_tokens,
                               protocol.continuation_tokens, dataset.seed)


# ---------------------------------------------------------------------------------------------
# context → continuation


def evaluate_baseline(lm, sample, protocol: ProtocolSpec) -> dict:
    """The uncompressed model on this sample (same tokens every method is scored on)."""
    return evaluate_baseline_batch(lm, [sample], protocol)[0]


def evaluate_baseline_batch(lm, samples: list, protocol: ProtocolSpec) -> list[dict]:
    """evaluate_baseline for samples of one length in one prefill and one continuation pass."""
    model = lm.model
    _, ctx, cont = _split(lm, samples, protocol.context_tokens)
    b = len(samples)
    kv_eval.seed_sample(samples[0].sample_id)
    cache, prefill_s = kv_eval.prefill(model, ctx, room=cont.shape[1] - 1)
    budget = kv_eval.kv_budget(model, cache, protocol.context_tokens)
    nlls, n, scoring_s = kv_eval.continuation_nlls(model, cache, cont, protocol.context_tokens)
    return [_record(s, nll, n, budget, prefill_s / b, scoring_s / b, "baseline", b) for s, nll in zip(samples, nlls)]


def pressed_caches(lm, seed_id: str, ctx, method: MethodSpec, rates: list, protocol: ProtocolSpec, shared_allowed: bool,
                   extras: dict | None = None, room: int = 0):
    """The context's cache as the press leaves it, for each rate: one shared prefill where that is exact,
    else one pressed prefill per rate.

    ``ctx`` is (B, C); ``seed_id`` seeds torch before each prefill (random presses draw the same numbers
    on every path). Yields (rate, cache, prefill_seconds, path, start_position, decoding_press): what follows the context
    continues from ``start_position`` and, for decoding presses, runs under ``decoding_press``. Head-wise
    masks are cleared after each rate's consumer is done with the cache. ``extras``, if given, receives
    {rate: fields for the record} (a rate-matched threshold, the scorer a press used). ``room``: positions the
    shared path reserves behind each rate's kept entries for what follows (kv_room; a pressed prefill's press
    replaces the cache's tensors, so the per-rate path reserves none).
    """
    model = lm.model
    resolved = presses.resolve(method.name, method.params)
    path, _ = kv_path(method, protocol, shared_allowed)
    try:
        if path == "shared-prefill" and len(rates) > 1:
            press = build_press(method.name, method.params, rates[0])
            kv_eval.seed_sample(seed_id)
            shared = kv_eval.shared_prefill(model, ctx, resolved, press)
            for rate in rates:
                if extras is not None:
                    extras[rate] = _scorer_field(press)
                cache, select_s = kv_eval.cache_for_rate(model, shared, rate, resolved, room)
                # The one prefill is shared by the rates: each carries its share, plus its own selection.
                yield rate, cache, shared.seconds / len(rates) + select_s, "shared-prefill", ctx.shape[1], None
                kv_eval.clear_masks(model)
            return
        for rate in rates:
            press = build_press(method.name, method.params, rate)
            kv_eval.seed_sample(seed_id)
            fields = _match_rate(model, press, ctx, rate, resolved)
            cache, prefill_s = kv_eval.prefill(model, ctx, press)
            fields.update(_scorer_field(press))
            if extras is not None:
                extras[rate] = fields
            start = cache.layers[0].keys.shape[-2] if resolved.rerotates_keys else ctx.shape[1]
            yield rate, cache, prefill_s + fields.pop("match_seconds", 0.0), "per-rate", start, press if resolved.traits.decoding else None
            kv_eval.clear_masks(model)
    finally:
        kv_eval.clear_masks(model)


def evaluate_kv(lm, sample, method: MethodSpec, rates: list, protocol: ProtocolSpec, shared_allowed: bool = True) -> dict:
    """One press on one sample at every rate: {rate: sample record}. Raises on failure (the runner records it)."""
    return evaluate_kv_batch(lm, [sample], method, rates, protocol, shared_allowed)[0]


def evaluate_kv_batch(lm, samples: list, method: MethodSpec, rates: list, protocol: ProtocolSpec,
                      shared_allowed: bool = True) -> list[dict]:
    """evaluate_kv for samples of one length (more than one only where ``families.kv.batchable``): [{rate: record}]."""
    model = lm.model
    _, ctx, cont = _split(lm, samples, protocol.context_tokens)
    b = len(samples)
    out: list[dict] = [{} for _ in samples]
    extras: dict = {}
    for rate, cache, prefill_s, path, start, decoding_press in pressed_caches(lm, samples[0].sample_id, ctx, method, rates,
                                                                               protocol, shared_allowed, extras,
                                                                               room=cont.shape[1] - 1):
        budget = kv_eval.kv_budget(model, cache, protocol.context_tokens)
        nlls, n, scoring_s = kv_eval.continuation_nlls(model, cache, cont, start, press=decoding_press,
                                                       stepwise=decoding_press is not None)
        for record, sample, nll in zip(out, samples, nlls):
            record[rate] = {**_record(sample, nll, n, budget, prefill_s / b, scoring_s / b, path, b), **extras.get(rate, {})}
    return out


def _match_rate(model, press, ids, rate, resolved) -> dict:
    """For a rate-matched threshold press (``resolved.matched_threshold``): set its threshold for this sample so it
    keeps ``rate`` (see threshold_match). Returns the record's fields: the threshold and the seconds it took."""
    if not resolved.matched_threshold or rate is None:
        return {}
    import time

    from workbench import threshold_match

    start = time.perf_counter()
    threshold = threshold_match.match_threshold(model, press, ids, rate, resolved.matched_threshold)
    return {"threshold": threshold, "match_seconds": time.perf_counter() - start}


def _scorer_field(press) -> dict:
    from workbench.threshold_match import scorer_used

    used = scorer_used(press)
    return {"scorer": used} if used else {}


def evaluate_prompt(lm, sample, compressor, rates: list, protocol: ProtocolSpec, keep_example: bool = False) -> dict:
    """A prompt compressor on one sample at every rate: {rate: sample record}.

    The context's text is compressed, re-tokenized with the evaluated model's tokenizer and prefilled;
    the same continuation tokens as the baseline are scored after it (positions follow the compressed
    context). Achieved kept fraction = compressed tokens / context tokens, in the evaluated model's tokens.
    """
    from workbench.datasets import context_text

    model = lm.model
    _, ctx, cont = _split(lm, sample, protocol.context_tokens)
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
        record.update(compressed_text_fields(compressor, res, len(ids), rate, protocol.context_tokens))
        if keep_example:
            record["example"] = {"original": text, "compressed": res.text, "dropped": [list(d) for d in res.dropped]}
        out[rate] = record
    return out


def evaluate_prompt_batch(lm, samples: list, compressor, rates: list, protocol: ProtocolSpec,
                          examples_for: set) -> list[dict]:
    """evaluate_prompt for several samples: the compressor takes them together (``compress_many``: batched
    scoring where its model allows), and at each rate the compressed contexts, of different lengths, are
    prefilled in length-sorted right-padded batches (``padded_prefill``): each row's NLL is its single-sample
    NLL up to float rounding (1e-5 in float32, tested), its timings its share of the batch's."""
    from workbench.datasets import context_text
    from workbench.padded_prefill import padded_nlls

    if len(samples) == 1:
        return [evaluate_prompt(lm, samples[0], compressor, rates, protocol,
                                keep_example=samples[0].sample_id in examples_for)]
    _, ctx, cont = _split(lm, samples, protocol.context_tokens)
    texts = [context_text(s, lm.tokenizer) for s in samples]
    results = compressor.compress_many(texts, rates)
    path = "score-once" if compressor.shares_scores and len(rates) > 1 else "per-rate"
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    out: list[dict] = [{} for _ in samples]
    for rate in rates:
        contexts = [lm.tokenizer(r[rate].text, add_special_tokens=False)["input_ids"] or ctx[i, :1].tolist()
                    for i, r in enumerate(results)]
        rows = padded_nlls(lm.model, contexts, cont.tolist(), batch_size=len(samples), pad_id=pad,
                           context_tokens=protocol.context_tokens)
        for i, (sample, row) in enumerate(zip(samples, rows)):
            res = results[i][rate]
            record = _record(sample, row.nll_sum, row.n_tokens, row.budget, row.prefill_seconds, row.scoring_seconds,
                             path, row.batch)
            record.update(compressed_text_fields(compressor, res, len(contexts[i]), rate, protocol.context_tokens))
            if sample.sample_id in examples_for:
                record["example"] = {"original": texts[i], "compressed": res.text,
                                     "dropped": [list(d) for d in res.dropped]}
            out[i][rate] = record
    return out


def compressed_text_fields(compressor, res, compressed_tokens: int, rate: float, context_tokens: int) -> dict:
    """What a prompt-compression record adds: latency, size, the compressor's own figures, and a note when it
    missed the rate (no figure in the note: the cell shows its recorded kept fraction beside it)."""
    fields = {"compression_seconds": res.seconds, "compressed_tokens": compressed_tokens, "own": res.own}
    kept = compressed_tokens / context_tokens
    if compressor.rate_caveat and abs(kept - rate) > 0.05:
        fields["note"] = f"misses the rate: {compressor.rate_caveat}"
    if res.own.get("rules_exhausted"):
        fields["note"] = "rules exhausted: content words are never dropped, so it keeps more than the rate asks"
    return fields


def evaluate_soft_batch(lm, samples: list, prefixer, rates: list, protocol: ProtocolSpec) -> list[dict]:
    """A learned soft compressor (``learned.measure.SoftPrefixer``) on samples of one length: the C context tokens
    become k soft vectors prefilled as input embeddings, then the same T continuation tokens as every other method are
    scored after them (positions from k). [{rate: record}]; its one rate is the trained one."""
    _, ctx, cont = _split(lm, samples, protocol.context_tokens)
    b = len(samples)
    out: list[dict] = [{} for _ in samples]
    with prefixer.model() as model:
        for rate in rates:
            kv_eval.seed_sample(samples[0].sample_id)
            cache, k, compression_s, prefill_s = prefixer.prefill(model, ctx)
            budget = kv_eval.kv_budget(model, cache, protocol.context_tokens)
            nlls, n, scoring_s = kv_eval.continuation_nlls(model, cache, cont, k)
            for record, sample, nll in zip(out, samples, nlls):
                record[rate] = {**_record(sample, nll, n, budget, prefill_s / b, scoring_s / b, "per-rate", b),
                                **prefixer.fields(k, compression_s / b)}
    return out


class ContextContinuation:
    """Protocol ``context-continuation``: prefill the (compressed) context, score the continuation through it."""

    def samples(self, backend, dataset, plan) -> list:
        return token_windows(backend, dataset, plan.protocol)

    def uncompressed(self, backend, samples, plan) -> list[dict]:
        return evaluate_baseline_batch(backend, samples, plan.protocol)

    def pressed(self, backend, samples, method, rates, plan) -> list[dict]:
        return evaluate_kv_batch(backend, samples, method, rates, plan.protocol, plan.shared_prefill)

    def compressed_texts(self, backend, samples, compressor, rates, plan, examples_for: set) -> list[dict]:
        return evaluate_prompt_batch(backend, samples, compressor, rates, plan.protocol, examples_for)

    def soft_prefixes(self, backend, samples, prefixer, rates, plan) -> list[dict]:
        return evaluate_soft_batch(backend, samples, prefixer, rates, plan.protocol)


# ---------------------------------------------------------------------------------------------
# chunked


class Chunked:
    """Protocol ``chunked`` (seed 004): the window is fed in chunks, the cache compressed after every chunk."""

    def samples(self, backend, dataset, plan) -> list:
        return token_windows(backend, dataset, plan.protocol)

    def uncompressed(self, backend, samples, plan) -> list[dict]:
        return [self.baseline(backend, s, plan.protocol) for s in samples]

    def pressed(self, backend, samples, method, rates, plan) -> list[dict]:
        return [self.press(backend, s, method, rates, plan.protocol) for s in samples]

    @staticmethod
    def baseline(lm, sample, protocol: ProtocolSpec) -> dict:
        ids, _, _ = _split(lm, sample, protocol.context_tokens)
        kv_eval.seed_sample(sample.sample_id)
        nll, n, cache, seconds = kv_eval.chunked_nll(lm.model, ids, protocol.chunk_size)
        budget = kv_eval.kv_budget(lm.model, cache, ids.shape[1] - 1)
        return _record(sample, nll, n, budget, 0.0, seconds, "baseline")

    @staticmethod
    def press(lm, sample, method: MethodSpec, rates: list, protocol: ProtocolSpec) -> dict:
        ids, _, _ = _split(lm, sample, protocol.context_tokens)
        resolved = presses.resolve(method.name, method.params)
        out: dict = {}
        for rate in rates:
            press = build_press(method.name, method.params, rate)
            kv_eval.seed_sample(sample.sample_id)
            # The cache ends up holding the window's first N-1 tokens: the threshold is matched on those.
            fields = _match_rate(lm.model, press, ids[:, :-1], rate, resolved)
            nll, n, cache, seconds = kv_eval.chunked_nll(lm.model, ids, protocol.chunk_size, resolved, press, rate)
            budget = kv_eval.kv_budget(lm.model, cache, ids.shape[1] - 1)
            fields.update(_scorer_field(press))
            out[rate] = {**_record(sample, nll, n, budget, fields.pop("match_seconds", 0.0), seconds, "per-rate"), **fields}
        return out
