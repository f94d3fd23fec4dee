"""KV-cache presses (kvpress): the context is prefilled under a press and scored through what it kept.

What a press needs is read from its traits (``methods.presses``), never from its name: whether one
prefill can serve all its rates (``path``), whether samples can share a forward pass (``batchable``),
which attention it needs, whether the protocol can measure it at all.
"""

from __future__ import annotations

from workbench import protocols
from workbench.families.base import Family, Measurer, UnsupportedMethod
from workbench.methods import presses


def kv_path(method, protocol, shared_allowed: bool) -> tuple[str, str | None]:
    """('shared-prefill' | 'per-rate', why not shared) for a press under a protocol (a ProtocolSpec)."""
    info = protocols.info(protocol.name)
    if not info.shares_prefill:
        return "per-rate", info.per_rate_reason
    if not shared_allowed:
        return "per-rate", "shared prefill turned off in the plan"
    reason = presses.resolve(method.name, method.params).per_rate_reason
    if reason is None and (method.rates or []) == [None]:
        reason = "threshold-driven"
    return ("per-rate", reason) if reason else ("shared-prefill", None)


def batchable(method, rates: list, protocol, shared_allowed: bool) -> bool:
    """True when several samples of one length can share this press's forward passes with unchanged results:
    presses on the shared-prefill path whose scores draw no random numbers (each sample seeds its own draw),
    that need no eager attention (its (B, heads, C, C) weights would not fit) and remove entries rather than
    mask them per head."""
    r = presses.resolve(method.name, method.params)
    if r.random or r.traits.headwise_mask or r.attention == "eager" or not protocols.info(protocol.name).batches:
        return False
    return kv_path(method, protocol, shared_allowed)[0] == "shared-prefill" and len(rates) > 1


class _Press(Measurer):
    def __init__(self, backend, method, plan):
        self.backend, self.method, self.plan = backend, method, plan
        self.protocol = protocols.measurer(plan.protocol.name)
        self.hub_reason = presses.resolve(method.name, method.params).hub_reason

    def measure(self, samples, rates):
        if len(samples) > 1 and len(rates) < 2:  # one rate left (a resumed cell): per-rate, one sample at a time
            return [r for s in samples for r in self.measure([s], rates)]
        return self.protocol.pressed(self.backend, samples, self.method, rates, self.plan)


class KVFamily(Family):
    name = "kv"

    def check_params(self, info, params, where):
        presses.check_composition(info.name, params, where)

    def invalid(self, method, protocol):
        return protocols.info(protocol.name).refuses_prefill_presses

    def hub_reason(self, method):
        return presses.resolve(method.name, method.params).hub_reason

    def attention(self, method):
        return presses.resolve(method.name, method.params).attention

    def path(self, method, plan):
        return kv_path(method, plan.protocol, plan.shared_prefill)

    def needs(self, plan):
        return super().needs(plan) | {"prefill"}  # a press compresses a cache the backend prefilled

    def unavailable(self, method, plan):
        if plan.evaluator is not None:
            return (f"KV presses need a local cache; the API evaluator {plan.evaluator.label()} only answers prompts "
                    "(to measure a press through an API: workbench serve --press NAME --rate R, then evaluate against it)")
        why = protocols.info(plan.protocol.name).needs_scorer_press
        r = presses.resolve(method.name, method.params)
        if why and not (r.traits.scorer or r.traits.decoding):
            return why
        return None

    def open(self, backend, method, plan, rates, samples):
        attention = self.attention(method)
        if attention == "conflict":
            raise RuntimeError("its presses need both eager attention and not eager attention")
        backend.set_attention(attention or "sdpa")
        m = _Press(backend, method, plan)
        m.batchable = batchable(method, rates, plan.protocol, plan.shared_prefill)
        return m


__all__ = ["KVFamily", "UnsupportedMethod", "batchable", "kv_path"]
