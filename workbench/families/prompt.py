"""Prompt compressors: the context's text is compressed, then the evaluated model reads the shorter text.

A compressor is loaded once per method (its load time recorded on the cells), then measured sample by
sample; the protocol scores the compressed context exactly as it scores the baseline's.
"""

from __future__ import annotations

from workbench import protocols
from workbench.families.base import Family, Measurer, UnsupportedMethod

# Prompt-compression cells keep the original/compressed text of their first samples (Inspect screen).
EXAMPLES_PER_CELL = 3


class _Compressor(Measurer):
    # Several samples per unit: the compressor takes them together (compress_many) and the perplexity protocol
    # prefills their compressed contexts in padded batches (each row's NLL its own to float rounding).
    batchable = True

    def __init__(self, backend, compressor, plan, hub_reason, samples):
        self.backend, self.compressor, self.plan = backend, compressor, plan
        self.protocol = protocols.measurer(plan.protocol.name)
        self.hub_reason = hub_reason
        # The dataset's first samples keep their original and compressed texts (resumed runs included).
        self.examples_for = {s.sample_id for s in samples[:EXAMPLES_PER_CELL]}

    def measure(self, samples, rates):
        return self.protocol.compressed_texts(self.backend, samples, self.compressor, rates, self.plan, self.examples_for)


class PromptFamily(Family):
    name = "prompt"

    def invalid(self, method, protocol):
        return protocols.info(protocol.name).refuses_text_compression

    def hub_reason(self, method):
        from workbench.methods.prompt import COMPRESSORS

        return COMPRESSORS[method.name].needs_hub

    def path(self, method, plan):
        return "per-rate", None

    def open(self, backend, method, plan, rates, samples):
        from workbench.methods.prompt import build_compressor

        backend.set_attention("sdpa")
        hub = self.hub_reason(method)
        compressor = build_compressor(method.name, method.params)
        p = plan.protocol
        if compressor.requires_question and not p.question_aware:  # only the task protocol can set it
            raise UnsupportedMethod(f"{method.name} compresses with respect to a question: it needs the task protocol "
                                    "with \"question_aware\": true")
        measurer = _Compressor(backend, compressor, plan, hub, samples)
        with measurer.guard():
            compressor.load(backend)
        measurer.load_seconds = compressor.load_seconds
        return measurer
