"""How a compressed context is scored: the protocols, described without importing torch.

A protocol is a class in a torch module (``measurer``) with the same four operations, which the method
families call:

* ``samples(backend, dataset, plan)`` — the samples of a dataset (token windows, or question/answer samples);
* ``uncompressed(backend, samples, plan)`` — the baseline: [record];
* ``pressed(backend, samples, method, rates, plan)`` — a KV press: [{rate: record}];
* ``compressed_texts(backend, samples, compressor, rates, plan, examples_for)`` — a prompt compressor: [{rate: record}]
  (the samples whose ids are in ``examples_for`` keep their original and compressed texts);
* ``decoded(backend, samples, method, rates, plan, on_curve)`` — a decoding schedule (protocols that decode only).
* ``soft_prefixes(backend, samples, prefixer, rates, plan)`` — a learned soft compressor (``learned.measure``):
  [{rate: record}]; a protocol without it refuses soft compressors (``refuses_soft_prompts``).

A record may be a ``families.SampleFailed`` instead: that sample alone failed (an API request), the rest stand.

The static description here (:class:`ProtocolInfo`) is what validation, the dry run and the runner's
scheduling read: no torch, no dataset read.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class ProtocolInfo:
    name: str
    summary: str
    measurer: str  # "module:Class" implementing the operations above (imports torch)
    # Several samples of one length share a forward pass (results unchanged).
    batches: bool = True
    # One prefill can serve every rate of a press whose scores do not depend on the rate.
    shares_prefill: bool = True
    # Why prompt compressors cannot be measured under it (None: they can).
    refuses_text_compression: str | None = None
    # Why learned soft compressors cannot be measured under it (None: they can).
    refuses_soft_prompts: str | None = None
    # Why a press whose selection is not a per-entry score cannot be measured under it (None: any press).
    needs_scorer_press: str | None = None
    # Why shared prefill is not used (shown as a cell's reason), when shares_prefill is False.
    per_rate_reason: str | None = None
    # What the backend must offer to measure anything under it (see families.base.Family.needs).
    needs: frozenset = frozenset({"prefill", "score"})
    # Compresses while generating (decoding schedules measure under it, and only under it).
    decodes: bool = False
    # Why presses that compress a prefilled context cannot be measured under it (None: they can).
    refuses_prefill_presses: str | None = None


PROTOCOLS: dict[str, ProtocolInfo] = {
    p.name: p
    for p in [
        ProtocolInfo("context-continuation", "prefill the context (compressed), score the next tokens' NLL through it",
                     "workbench.evaluate:ContextContinuation"),
        ProtocolInfo("chunked", "feed the window in chunks, compressing the cache after every chunk (seed 004)",
                     "workbench.evaluate:Chunked", batches=False, shares_prefill=False,
                     refuses_text_compression="prompt compressors need the context-continuation or task protocol",
                     refuses_soft_prompts="soft compressors need the context-continuation or task protocol",
                     needs_scorer_press="the chunked protocol supports score-based presses and presses that compress while decoding",
                     per_rate_reason="the chunked protocol compresses after every chunk"),
        ProtocolInfo("task", "compress the context, ask the question, generate greedily, score the answer",
                     "workbench.task_eval:Task", batches=False, needs=frozenset({"generate"})),
        ProtocolInfo("decoding", "generate greedily while a schedule compresses the cache; task score and "
                     "self-continuation perplexity (seed 003)",
                     "workbench.decoding.protocol:Decoding", batches=False, shares_prefill=False, decodes=True,
                     needs=frozenset({"prefill", "generate"}),
                     refuses_text_compression="prompt compressors shorten the prompt before generation; under the decoding "
                                              "protocol the cache is compressed while generating: use a schedule "
                                              "(interval, random-points, step-boundaries) with a press inside",
                     refuses_soft_prompts="soft compressors replace the prompt before generation; under the decoding protocol "
                                          "the cache is compressed while generating: use a schedule",
                     refuses_prefill_presses="under the decoding protocol the cache is compressed while generating: put the "
                                             "press inside a schedule, e.g. {\"name\": \"interval\", \"params\": "
                                             "{\"press\": \"knorm\"}}",
                     per_rate_reason="decoding compresses at each schedule point, per rate"),
    ]
}
ALIASES = {"context→continuation": "context-continuation", "context->continuation": "context-continuation",
           "context_continuation": "context-continuation"}


def info(name: str) -> ProtocolInfo:
    return PROTOCOLS[name]


@lru_cache(maxsize=None)
def measurer(name: str):
    """The protocol's implementation (imports torch)."""
    module, cls = PROTOCOLS[name].measurer.split(":")
    return getattr(importlib.import_module(module), cls)()
