"""The uncompressed model: every method's cells are compared with it, sample by sample."""

from __future__ import annotations

from workbench import protocols
from workbench.families.base import Family, Measurer


class _Baseline(Measurer):
    def __init__(self, backend, plan):
        self.backend, self.plan, self.protocol = backend, plan, protocols.measurer(plan.protocol.name)
        self.batchable = protocols.info(plan.protocol.name).batches

    def measure(self, samples, rates):
        return [{1.0: record} for record in self.protocol.uncompressed(self.backend, samples, self.plan)]


class BaselineFamily(Family):
    name = "baseline"

    def path(self, method, plan):
        return "baseline", None

    def open(self, backend, method, plan, rates, samples):
        backend.set_attention("sdpa")
        return _Baseline(backend, plan)
