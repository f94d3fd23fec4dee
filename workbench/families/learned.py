"""Learned soft compressors: the context's input embeddings are compressed into k soft vectors, prefilled as
input embeddings, and the protocol scores the same continuation (or answers the same question) after them.

The compressor (and its LoRA adapters, put on the shared model only while measuring) is loaded once per
method; its load time, compression latency and parameter count go on the cells.
"""

from __future__ import annotations

from workbench import protocols
from workbench.families.base import Family, Measurer, UnsupportedMethod


class _Soft(Measurer):
    def __init__(self, backend, prefixer, plan):
        self.backend, self.prefixer, self.plan = backend, prefixer, plan
        self.protocol = protocols.measurer(plan.protocol.name)
        # Windows of one length go through the compressor and the model together (each row alone, no padding).
        self.batchable = protocols.info(plan.protocol.name).batches

    def measure(self, samples, rates):
        return self.protocol.soft_prefixes(self.backend, samples, self.prefixer, rates, self.plan)


class LearnedFamily(Family):
    name = "learned"

    def method_rates(self, params, rates):
        from workbench.methods.learned import rates_for

        return rates_for(params, rates)

    def unavailable(self, method, plan):
        if plan.evaluator is not None:
            return (f"a soft compressor feeds input embeddings to a local model; the API evaluator {plan.evaluator.label()} "
                    "only reads text")
        return protocols.info(plan.protocol.name).refuses_soft_prompts

    def path(self, method, plan):
        return "per-rate", None

    def open(self, backend, method, plan, rates, samples):
        from workbench.learned.measure import SoftPrefixer

        backend.set_attention("sdpa")
        if not hasattr(protocols.measurer(plan.protocol.name), "soft_prefixes"):
            raise UnsupportedMethod(f"the {plan.protocol.name} protocol cannot measure a soft compressor")
        prefixer = SoftPrefixer(backend, method.params["checkpoint"], untrained=method.params.get("untrained", False))
        measurer = _Soft(backend, prefixer, plan)
        measurer.load_seconds = prefixer.load_seconds
        return measurer
