"""Protocol ``decoding`` (seed 003): generate under a schedule that compresses the cache, score what came out (torch).

Per sample the prompt — a token window's context, or a task's context and question — is prefilled uncompressed,
then up to ``max_new_tokens`` are generated greedily while the schedule compresses (``loop.decode``). The record
holds the task score where the dataset is a task, and for any text the **self-continuation NLL**: the baseline's
greedy tokens (the uncompressed model's own continuation) teacher-forced through the same schedule compressing, so
a compressed cell is scored on the same tokens as its baseline (ΔPPL) even where accuracy is near zero. The
baseline ("compress never") records the NLL of its own greedy tokens, which its one pass computes.

Also recorded: tokens generated, tokens/s of the free generation (prefill excluded), the KV budget over the steps
(``decoding.curve`` rows, and the per-layer tokens at each point), peak memory, where compression happened
(``compression_points``: t; ``compression_chars``: offsets into ``generated_text``), and the cache's final budget.
"""

from __future__ import annotations

import inspect
import weakref
import zlib

import torch

from workbench import kv_eval, metrics
from workbench.decoding import curve as curves
from workbench.decoding import loop
from workbench.evaluate import token_windows
from workbench.methods import registry
from workbench.task_eval import _eos, _ids


def build_schedule(method, backend):
    """The method's Schedule: its registry entry's builder with the resolved parameters its ``__init__`` takes
    (all of them if it takes ``**kwargs``), plus ``model=`` / ``tokenizer=`` when it asks for them."""
    import importlib

    info = registry.lookup(method.name, method.family)
    module, cls_name = info.builder.split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    sig = {} if cls.__init__ is object.__init__ else inspect.signature(cls.__init__).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())
    kwargs = {k: v for k, v in method.params.items() if takes_all or k in sig}
    for name, value in (("model", backend.model), ("tokenizer", backend.tokenizer)):
        if name in sig:
            kwargs[name] = value
    return cls(**kwargs)


def target_for(method, rate) -> loop.Target:
    info = registry.lookup(method.name, method.family)
    budget = method.params.get(info.rates_unless) if info.rates_unless else None
    return loop.Target(rate=None if budget is not None else rate, budget=budget)


def _press_spec(method) -> dict:
    info = registry.lookup(method.name, method.family)
    return method.params[info.nested[0]]


class Decoding:
    """The protocol's operations (see ``workbench.protocols``): ``samples``, ``uncompressed`` and ``decoded``."""

    def __init__(self):
        # The baseline's greedy tokens per model (weakly: they go with it) and (prompt, budget): the continuation
        # every method is scored on. Lost with the process (a resumed run, a Ray worker): then generated again,
        # greedily, the same.
        self._greedy: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def samples(self, backend, dataset, plan) -> list:
        from workbench import tasks

        if tasks.task_for_dataset(dataset.name) is not None:
            from workbench.task_eval import Task

            return Task().samples(backend, dataset, plan)
        return token_windows(backend, dataset, plan.protocol)

    @staticmethod
    def _prompt(backend, sample, protocol) -> list[int]:
        if hasattr(sample, "prompt_suffix"):  # a task: context then the question, both uncompressed at the start
            return _ids(backend, sample.context) + _ids(backend, sample.prompt_suffix)
        return list(sample.input_ids[: protocol.context_tokens])

    def _key(self, backend, sample, protocol) -> tuple:
        return sample.sample_id, hash(tuple(self._prompt(backend, sample, protocol))), protocol.max_new_tokens

    def _greedy_tokens(self, backend, sample, protocol) -> list[int]:
        memo = self._greedy.setdefault(backend.model, {})
        key = self._key(backend, sample, protocol)
        if key not in memo:
            self._record(backend, sample, protocol, None, None, None)
        return memo[key]

    def uncompressed(self, backend, samples, plan) -> list[dict]:
        return [self._record(backend, s, plan.protocol, None, None, None) for s in samples]

    def decoded(self, backend, samples, method, rates, plan, on_curve=None) -> list[dict]:
        out = []
        for sample in samples:
            forced = self._greedy_tokens(backend, sample, plan.protocol)
            out.append({rate: self._record(backend, sample, plan.protocol, method, rate, forced, on_curve) for rate in rates})
        return out

    def _record(self, backend, sample, protocol, method, rate, forced, on_curve=None) -> dict:
        model, tok = backend.model, backend.tokenizer
        prompt = self._prompt(backend, sample, protocol)
        seed = zlib.crc32(sample.sample_id.encode())
        peak = metrics.PeakMemory(str(model.device))
        peak.reset()
        kv_eval.seed_sample(sample.sample_id)

        described: list[dict] = []  # what the schedule was (a learned one: its classifier), for the record

        def run(tokens):
            schedule = evictor = None
            if method is not None:
                schedule = build_schedule(method, backend)
                described[:] = [schedule.describe()]
                spec = _press_spec(method)
                evictor = loop.Evictor.for_press(model, spec["name"], spec["params"], target_for(method, rate))
            live = (lambda rows: on_curve(sample.sample_id, rate, rows)) if on_curve is not None and tokens is None else None
            return loop.decode(model, tok, prompt, protocol.max_new_tokens, _eos(backend), schedule, evictor, forced=tokens,
                               seed=seed + protocol.seed, on_curve=live, temperature=protocol.temperature)

        free = run(None)
        record = {
            "sample_id": sample.sample_id,
            "path": "decoding",
            "context_tokens": len(prompt),
            "generated_text": free.text,
            "generated_tokens": len(free.tokens),
            "compression_points": free.points,
            "compression_chars": free.chars,
            "kv_curve": free.curve,
            "kv_point_layers": free.point_layers,
            "kv_tokens_mean": curves.mean_tokens(free.curve),  # tokens per layer held, over the steps
            "prefill_seconds": free.prefill_seconds,
            "decode_seconds": free.decode_seconds,
            "tokens_per_second": len(free.tokens) / free.decode_seconds if free.decode_seconds > 0 and free.tokens else None,
        }
        if described and described[0]:
            record["schedule"] = described[0]
        if free.cache is not None:
            record.update(kv_eval.kv_budget(model, free.cache, free.seen))
        if forced is None:  # the baseline: its own greedy tokens, scored as it chose them
            self._greedy.setdefault(model, {})[self._key(backend, sample, protocol)] = list(free.tokens)
            scored, seconds = free, 0.0
        else:
            kv_eval.seed_sample(sample.sample_id)
            scored = run(forced)
            seconds = scored.prefill_seconds + scored.decode_seconds
            record["continuation_points"] = len(scored.points)
        record["nll_sum"] = scored.nll_sum if scored.tokens else None
        record["n_tokens"] = len(scored.tokens)
        record["scoring_seconds"] = free.decode_seconds + seconds
        if hasattr(sample, "task"):
            from workbench import tasks

            record.update(tasks.score(sample.task, free.text, sample.answers))
            record["task_meta"] = sample.meta
        record["peak_memory_bytes"] = peak.peak()
        del free, scored
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        return record
