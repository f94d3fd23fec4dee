"""Decoding schedules (seed 003): the cache is compressed *while* the model generates, at a schedule's points,
by a score-based press, to a rate of the tokens seen or a fixed budget. Measured by the ``decoding`` protocol only."""

from __future__ import annotations

from workbench import protocols
from workbench.families.base import Family, Measurer


class _Schedule(Measurer):
    def __init__(self, backend, method, plan):
        self.backend, self.method, self.plan = backend, method, plan
        self.protocol = protocols.measurer(plan.protocol.name)
        from workbench.methods import presses

        spec = method.params[self._press_key(method)]
        self.hub_reason = presses.resolve(spec["name"], spec["params"]).hub_reason

    @staticmethod
    def _press_key(method) -> str:
        from workbench.methods import registry

        return registry.lookup(method.name, method.family).nested[0]

    def measure(self, samples, rates):
        on_curve = None
        if self.live is not None:
            label, live = self.method.label, self.live

            def on_curve(sample_id, rate, rows):
                live({"method": label, "sample_id": sample_id, "rate": rate, "curve": rows})

        return self.protocol.decoded(self.backend, samples, self.method, rates, self.plan, on_curve=on_curve)


class DecodingFamily(Family):
    name = "decoding"
    reports_live = True  # each sample's KV budget curve while it decodes

    def needs(self, plan):
        return super().needs(plan) | {"prefill"}  # it compresses a local cache

    def check_params(self, info, params, where):
        from workbench.methods import schedules

        schedules.check_press(params, where)

    def invalid(self, method, protocol):
        if not protocols.info(protocol.name).decodes:
            return (f"{method.name} compresses while the model generates: it needs the decoding protocol "
                    "(\"protocol\": {\"name\": \"decoding\"})")
        return None

    def hub_reason(self, method):
        from workbench.methods import presses

        spec = method.params[_Schedule._press_key(method)]
        return presses.resolve(spec["name"], spec["params"]).hub_reason

    def path(self, method, plan):
        return "decoding", None

    def open(self, backend, method, plan, rates, samples):
        backend.set_attention("sdpa")
        return _Schedule(backend, method, plan)
