"""One Ray worker: the plan's model loaded once, its methods opened on demand, the runner's units measured.

The worker runs the very family and measurer code the single-process runner runs (``families.get(...).open``,
``Measurer.measure``) on the units ``schedule.units`` made, so a unit's records are the records the runner would
have made. It never writes the session: it returns the records and the driver (``workbench.distributed``)
records them. Ray is imported only by :func:`connect` and :func:`worker_class`, never at import time.
"""

from __future__ import annotations

import os
import socket
import time

from workbench.ray_cluster import (  # noqa: F401  (this module's callers)
    RAY_MISSING,
    RayUnreachable,
    connect,
    is_worker_lost,
    ray_available,
)


class Worker:
    """What runs inside one actor (plain Python: tests and the benchmark can also run it in-process)."""

    def __init__(self, plan_data: dict, index: int, backend_loader):
        """``backend_loader(plan)``: the run's (``runner.load_backend``), sent by reference."""
        from workbench.plan import parse_plan

        self.index = index
        self.plan = parse_plan(plan_data, source="the plan sent to a worker")
        if self.plan.device.startswith("cuda:"):  # Ray shows each worker its own GPU alone, as cuda:0
            self.plan.device = "cuda"
        self.backend = backend_loader(self.plan)
        self.samples: dict[str, list] = {}  # dataset name -> samples (drawn the way the runner draws them)
        self.current = None  # (dataset, method label, rates) of the open measurer
        self.measurer = None
        self.peak = None

    def info(self) -> dict:
        """Who this worker is and what it measures with (JSON-able)."""
        from workbench import environment, schedule

        b = self.backend
        return {"worker": self.index, "pid": os.getpid(), "node": socket.gethostname(), "device": str(b.device),
                "dtype": str(b.dtype), "load_seconds": b.load_seconds, "describe": b.describe(),
                "environment": environment.collect(b), "batch_size": schedule.batch_size(self.plan, b),
                "capabilities": sorted(getattr(b, "capabilities", ()))}

    def sample_index(self, dataset: str) -> list[tuple[str, int]]:
        """(sample id, input length in tokens) of the dataset's samples, in the runner's order."""
        return [(s.sample_id, len(getattr(s, "input_ids", ()))) for s in self._samples(dataset)]

    def _samples(self, dataset: str) -> list:
        if dataset not in self.samples:
            from workbench import protocols

            spec = next(d for d in self.plan.datasets if d.name == dataset)
            self.samples[dataset] = protocols.measurer(self.plan.protocol.name).samples(self.backend, spec, self.plan)
        return self.samples[dataset]

    def _method(self, label: str):
        return self.plan.baseline_method() if label == self.plan.baseline_method().label else self.plan.method(label)

    def open(self, dataset: str, label: str, rates: tuple) -> dict:
        """Make the method ready for these rates (the cells still to do), as the runner does before its units.

        Returns {"batchable", "load_seconds", "hub_reason"}, or {"error": (status, message)} when it cannot open."""
        from workbench import families, metrics
        from workbench.failures import classify_failure

        key = (dataset, label, tuple(rates))
        if key == self.current:
            return self._opened()
        method = self._method(label)
        family = families.get(method.family)
        self.current, self.measurer = None, None
        try:
            self.measurer = family.open(self.backend, method, self.plan, list(rates), self._samples(dataset))
        except Exception as err:  # classified here, where the exception's chain is whole
            return {"error": classify_failure(err, family.hub_reason(method))}
        self.current = key
        self.peak = metrics.PeakMemory(self.backend.device)
        self.peak.reset()
        return self._opened()

    def _opened(self) -> dict:
        m = self.measurer
        return {"batchable": m.batchable, "load_seconds": m.load_seconds, "hub_reason": m.hub_reason}

    def measure(self, unit, all_rates: tuple, live=None) -> dict:
        """Measure one ``schedule.Unit`` of a method opened for ``all_rates``. ``live``: the driver's live queue (a
        ``ray.util.queue.Queue``), which receives what the measurer reports while a sample is measured.

        Returns {"records": [{rate: record | SampleFailed}], "seconds", "peak_memory_bytes", "worker"} or
        {"error": (status, message)}: the unit failed on its own (its cells fail, as in the runner)."""
        from workbench import metrics
        from workbench.failures import classify_failure

        opened = self.open(unit.dataset, unit.method, all_rates)
        if "error" in opened:
            return {"error": opened["error"], "worker": self.index}
        self.measurer.live = self._poster(live, unit) if live is not None else None
        by_id = {s.sample_id: s for s in self._samples(unit.dataset)}
        start = time.perf_counter()
        try:
            with self.measurer.guard():
                records = self.measurer.measure([by_id[i] for i in unit.sample_ids], list(unit.rates))
        except Exception as err:
            error = classify_failure(err, self.measurer.hub_reason)
            self.current, self.measurer = None, None  # reopened for the next unit, as a fresh method
            metrics.free_accelerator_memory()
            return {"error": error, "worker": self.index}
        return {"records": records, "seconds": time.perf_counter() - start, "peak_memory_bytes": self.peak.peak(),
                "worker": self.index}


    def _poster(self, queue, unit):
        """``Measurer.live`` for this unit: the data, with its cell's key and this worker's index, put on the
        driver's queue. Live figures are best-effort: a full queue or one already gone drops them, never the unit."""
        from workbench.plan import CellSpec

        method = self._method(unit.method)

        def post(data: dict) -> None:
            key = CellSpec(self.plan.model, unit.dataset, method.label, method.family, data.get("rate")).key
            try:
                queue.put_nowait({**data, "cell": key, "worker": self.index})
            except Exception:  # noqa: BLE001 - ray.util.queue.Full, or the queue's actor ended with the run
                pass

        return post


def worker_class(ray, gpus: bool, cpus: int = 1):
    """The Ray actor class: one GPU each where the cluster has GPUs, else ``cpus`` CPUs each (Ray gives the actor as
    many torch threads: OMP_NUM_THREADS)."""
    options = {"num_gpus": 1} if gpus else {"num_cpus": cpus}
    # Units are retried by the driver on another actor: Ray restarts none by itself (max_restarts=0).
    return ray.remote(max_restarts=0, **options)(Worker)
