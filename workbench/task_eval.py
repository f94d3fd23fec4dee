"""Task scores (protocol ``task``): compress the context, ask the question, generate greedily, score.

The same three kinds of evaluation as for perplexity — baseline, KV press (shared prefill or per
rate), prompt compressor — with ``workbench.tasks`` providing the samples (GSM8K few-shot,
needle-in-a-haystack, MeetingBank, SQuAD-style QA) and the metrics. The question (the sample's
``prompt_suffix``) is never compressed: a press compresses the context's cache only, a prompt
compressor the context's text only. Question-aware compression is used when the plan asks for it
and the compressor supports it; the record says which.

Sample records carry ``score`` (in [0, 1]), ``metric``, ``generated`` (the answer text), the KV
budget after compression, and timings.
"""

from __future__ import annotations

import torch

from workbench import kv_eval
from workbench.evaluate import pressed_caches
from workbench.plan import MethodSpec, ProtocolSpec


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _eos(lm) -> set[int]:
    ids = {lm.tokenizer.eos_token_id, getattr(lm.model.generation_config, "eos_token_id", None)}
    flat = set()
    for i in ids:
        flat.update(i if isinstance(i, (list, tuple)) else [i])
    return {i for i in flat if i is not None}


def _answer(lm, sample, cache, start: int, max_new: int, press=None) -> tuple[dict, float]:
    from workbench import tasks

    suffix = torch.tensor([_ids(lm, sample.prompt_suffix)], device=lm.model.device)
    tokens, seconds = kv_eval.generate(lm.model, cache, suffix, start, max_new, _eos(lm), press=press)
    text = lm.tokenizer.decode(tokens, skip_special_tokens=True)
    result = tasks.score(sample.task, text, sample.answers)
    return {**result, "generated": text[:500]}, seconds


def _record(sample, result: dict, budget: dict, prefill_s: float, answer_s: float, path: str, context_tokens: int) -> dict:
    return {"sample_id": sample.sample_id, "nll_sum": None, "n_tokens": 0, **result, **budget, "context_tokens": context_tokens,
            "prefill_seconds": prefill_s, "scoring_seconds": answer_s, "path": path, "task_meta": sample.meta}


def max_new_tokens(protocol: ProtocolSpec, sample) -> int:
    from workbench import tasks

    return protocol.max_new_tokens or tasks.generation_budget(sample.task)


def evaluate_baseline(lm, sample, protocol: ProtocolSpec) -> dict:
    ctx_ids = _ids(lm, sample.context)
    ctx = torch.tensor([ctx_ids], device=lm.model.device)
    cache, prefill_s = kv_eval.prefill(lm.model, ctx)
    budget = kv_eval.kv_budget(lm.model, cache, len(ctx_ids))
    result, answer_s = _answer(lm, sample, cache, len(ctx_ids), max_new_tokens(protocol, sample))
    return _record(sample, result, budget, prefill_s, answer_s, "baseline", len(ctx_ids))


def evaluate_kv(lm, sample, method: MethodSpec, rates: list, protocol: ProtocolSpec, shared_allowed: bool = True) -> dict:
    model = lm.model
    ctx_ids = _ids(lm, sample.context)
    ctx = torch.tensor([ctx_ids], device=model.device)
    max_new = max_new_tokens(protocol, sample)
    out = {}
    for rate, cache, prefill_s, path, start, decoding_press in pressed_caches(lm, sample.sample_id, ctx, method, rates, protocol, shared_allowed):
        budget = kv_eval.kv_budget(model, cache, len(ctx_ids))
        result, answer_s = _answer(lm, sample, cache, start, max_new, press=decoding_press)
        out[rate] = _record(sample, result, budget, prefill_s, answer_s, path, len(ctx_ids))
    return out


def evaluate_prompt(lm, sample, compressor, rates: list, protocol: ProtocolSpec, keep_example: bool = False) -> dict:
    model = lm.model
    n_ctx = len(_ids(lm, sample.context))
    aware = bool(protocol.question_aware and compressor.supports_question)
    results = compressor.compress_rates(sample.context, rates, sample.question if aware else None)
    path = "score-once" if compressor.shares_scores and len(rates) > 1 else "per-rate"
    out = {}
    for rate in rates:
        res = results[rate]
        ids = _ids(lm, res.text) or _ids(lm, sample.context)[:1]
        cache, prefill_s = kv_eval.prefill(model, torch.tensor([ids], device=model.device))
        budget = kv_eval.kv_budget(model, cache, n_ctx)
        result, answer_s = _answer(lm, sample, cache, len(ids), max_new_tokens(protocol, sample))
        record = _record(sample, result, budget, prefill_s, answer_s, path, n_ctx)
        record.update({"compression_seconds": res.seconds, "compressed_tokens": len(ids), "own": res.own, "question_aware": aware})
        if keep_example:
            record["example"] = {"original": sample.context, "compressed": res.text, "dropped": [list(d) for d in res.dropped]}
        out[rate] = record
    return out


def evaluate_soft(lm, sample, prefixer, rates: list, protocol: ProtocolSpec) -> dict:
    """A learned soft compressor (``learned.measure.SoftPrefixer``): the context's tokens become k = round(rate × its
    length) soft vectors prefilled as input embeddings; then the uncompressed question and the greedy answer, scored."""
    ctx_ids = _ids(lm, sample.context)
    out = {}
    with prefixer.model() as model:
        ctx = torch.tensor([ctx_ids], device=model.device)
        for rate in rates:
            cache, k, compression_s, prefill_s = prefixer.prefill(model, ctx)
            budget = kv_eval.kv_budget(model, cache, len(ctx_ids))
            result, answer_s = _answer(_Through(lm, model), sample, cache, k, max_new_tokens(protocol, sample))
            record = _record(sample, result, budget, prefill_s, answer_s, "per-rate", len(ctx_ids))
            record.update(prefixer.fields(k, compression_s))
            out[rate] = record
    return out


class _Through:
    """The backend seen through another model object (the LoRA-wrapped one) for ``_answer``."""

    def __init__(self, lm, model):
        self.tokenizer, self.model = lm.tokenizer, model


# ---------------------------------------------------------------------------------------------
# A remote evaluator (workbench.api): the same prompts as text, answered concurrently by the API.


def _remote(backend) -> bool:
    return "prefill" not in backend.capabilities


def _remote_records(backend, items: list[tuple], protocol: ProtocolSpec) -> list:
    """items: (sample, text read in place of the context, context tokens, extra record fields). One record — or a
    SampleFailed, or None when the run stopped before it was sent — per item, in order."""
    from workbench import tasks
    from workbench.api.client import Answer, Failure
    from workbench.families.base import SampleFailed

    limit = backend.spec.max_tokens
    prompts = [(text + sample.prompt_suffix, limit or max_new_tokens(protocol, sample)) for sample, text, _, _ in items]
    out = []
    for (sample, text, n_ctx, extra), outcome in zip(items, backend.answer_all(prompts)):
        if isinstance(outcome, Failure):
            out.append(SampleFailed(f"sample {sample.sample_id}: {outcome.message}"))
            continue
        if not isinstance(outcome, Answer):
            out.append(None)
            continue
        kept = extra.get("compressed_tokens", n_ctx) / n_ctx if n_ctx else 1.0
        record = {"sample_id": sample.sample_id, "nll_sum": None, "n_tokens": 0,
                  **tasks.score(sample.task, outcome.text, sample.answers), "generated": outcome.text[:500],
                  "kept_fraction": kept, "context_tokens": n_ctx, "prefill_seconds": 0.0, "scoring_seconds": outcome.seconds,
                  "path": "api", "task_meta": sample.meta, "input_tokens": outcome.input_tokens,
                  "output_tokens": outcome.output_tokens, "cost_usd": outcome.cost_usd,
                  "cost_estimated": not outcome.usage_reported, "finish_reason": outcome.finish_reason}
        record.update(extra)
        out.append(record)
    return out


def _remote_baseline(backend, samples, protocol: ProtocolSpec) -> list:
    items = [(s, s.context, len(_ids(backend, s.context)), {}) for s in samples]
    return _remote_records(backend, items, protocol)


def _remote_compressed(backend, samples, compressor, rates, protocol: ProtocolSpec, examples_for: set) -> list[dict]:
    """Every sample compressed at every rate here (locally), then all their prompts answered at once."""
    items, slots = [], []
    path = "score-once" if compressor.shares_scores and len(rates) > 1 else "per-rate"
    for sample in samples:
        n_ctx = len(_ids(backend, sample.context))
        aware = bool(protocol.question_aware and compressor.supports_question)
        results = compressor.compress_rates(sample.context, rates, sample.question if aware else None)
        for rate in rates:
            res = results[rate]
            extra = {"compression_seconds": res.seconds, "compressed_tokens": len(_ids(backend, res.text)), "own": res.own,
                     "question_aware": aware, "compression_path": path}
            if sample.sample_id in examples_for:
                extra["example"] = {"original": sample.context, "compressed": res.text, "dropped": [list(d) for d in res.dropped]}
            items.append((sample, res.text, n_ctx, extra))
            slots.append(rate)
    records = _remote_records(backend, items, protocol)
    out: list[dict] = []
    for i, _ in enumerate(samples):
        per_rate = {rate: rec for rate, rec in zip(slots[i * len(rates):(i + 1) * len(rates)],
                                                    records[i * len(rates):(i + 1) * len(rates)]) if rec is not None}
        out.append(per_rate)
    return out


class Task:
    """Protocol ``task``: compress the context, ask the uncompressed question, generate greedily, score."""

    def samples(self, backend, dataset, plan) -> list:
        from workbench import tasks

        p = plan.protocol

        def count_tokens(text: str) -> int:
            return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])

        return tasks.task_samples(dataset.name, dataset.samples, dataset.seed, count_tokens=count_tokens,
                                  context_tokens=p.context_tokens, depths=p.depths, n_shots=p.n_shots)

    def uncompressed(self, backend, samples, plan) -> list[dict]:
        if _remote(backend):
            return [r for r in _remote_baseline(backend, samples, plan.protocol) if r is not None]
        return [evaluate_baseline(backend, s, plan.protocol) for s in samples]

    def pressed(self, backend, samples, method, rates, plan) -> list[dict]:
        return [evaluate_kv(backend, s, method, rates, plan.protocol, plan.shared_prefill) for s in samples]

    def compressed_texts(self, backend, samples, compressor, rates, plan, examples_for: set) -> list[dict]:
        if _remote(backend):
            return _remote_compressed(backend, samples, compressor, rates, plan.protocol, examples_for)
        return [evaluate_prompt(backend, s, compressor, rates, plan.protocol, keep_example=s.sample_id in examples_for)
                for s in samples]

    def soft_prefixes(self, backend, samples, prefixer, rates, plan) -> list[dict]:
        return [evaluate_soft(backend, s, prefixer, rates, plan.protocol) for s in samples]
