"""run(plan, on_event, cancel): the one loop the TUI and the headless mode both drive.

The runner only schedules: it loads the backend once, draws each dataset's samples through the plan's
protocol, and for the baseline and each method asks the method's family to make it ready (``open``),
then hands it work units (``schedule.units``) and records what comes back — one Session writer,
saved after every unit, progress events, cancellation between units, and failure isolation (a failing
method fails its own cells; the others go on). What a method needs and how it is measured belong to its
family (``workbench.families``) and protocol (``workbench.protocols``), never to this loop.

Importing this module loads neither torch nor textual: torch arrives with the first model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from workbench import environment, families, figures, metrics, protocols, schedule
from workbench.events import Event, EventHandler
from workbench.failures import classify_failure
from workbench.families.base import SampleFailed, UnsupportedMethod
from workbench.plan import CellSpec, MethodSpec, Plan
from workbench.session import Session


BackendLoader = Callable[[Plan], object]


def load_backend(plan: Plan, use_cache: bool = True):
    """The local transformers model the plan names, or — when the plan has an evaluator — that model behind the
    remote API that answers (``workbench.api.backend``). ``use_cache``: the API's response cache."""
    if plan.evaluator is not None:
        from workbench.api.backend import load_api_backend

        return load_api_backend(plan, use_cache=use_cache)
    from workbench import models

    return models.load_model(plan.model, plan.device, plan.dtype)


def run(plan_or_session: Plan | Session, on_event: EventHandler | None = None, cancel: threading.Event | None = None,
        out: str | None = None, backend_loader: BackendLoader = load_backend) -> Session:
    """Run (or resume) a session. Returns the session, saved to ``out`` / its own path when it has one.

    ``backend_loader(plan)`` returns what the families measure with (a ``models.LoadedModel``)."""
    session = plan_or_session if isinstance(plan_or_session, Session) else Session(plan_or_session, out)
    if out:
        session.path = Path(out)
    if session.plan.execution is not None:  # Ray workers measure the units; this process alone writes the session
        from workbench.distributed import DistributedRun

        return DistributedRun(_Run(session, on_event or (lambda e: None), cancel or threading.Event(), backend_loader)).execute()
    return _Run(session, on_event or (lambda e: None), cancel or threading.Event(), backend_loader).execute()


class _Run:
    def __init__(self, session: Session, emit: EventHandler, cancel: threading.Event, backend_loader: BackendLoader):
        self.session, self.plan, self.emit, self.cancel = session, session.plan, emit, cancel
        self.backend_loader = backend_loader
        self.batch_size = 1  # set once the backend is loaded
        self.concurrent = False  # a backend that answers several samples at once (an API): units of that many
        self.stopped: dict | None = None  # the backend asked the run to stop: {"reason", "kind": refused | budget}
        self.started = time.monotonic()

    # -- bookkeeping -------------------------------------------------------------------------------

    def save(self) -> None:
        if self.session.path is not None:
            self.session.save()

    def progress(self, cell_key: str | None = None, message: str = "") -> None:
        done, total = figures.sample_counts(self.session.cells.values())
        self.emit(Event("progress", message, {"done": done, "total": total, "cell": cell_key,
                                              "elapsed": time.monotonic() - self.started}))

    def finish_cell(self, key: str, status: str, error: str | None = None, reason: str | None = None) -> None:
        self.session.set_status(key, status, error=error, reason=reason)
        self.emit(Event("cell-finished", self.session.cells[key]["status"], {"cell": dict(self.session.cells[key])}))

    def fail_cells(self, keys, err: BaseException, hub_reason: str | None = None) -> None:
        status, message = classify_failure(err, hub_reason)
        for k in keys:
            self.finish_cell(k, status, error=message if status == "error" else None,
                             reason=message if status == "unavailable" else None)
        self.save()

    # -- the loop ----------------------------------------------------------------------------------

    def execute(self) -> Session:
        s = self.session
        todo = [c for c in s.cells.values() if c["status"] not in ("done", "unavailable")]
        self.emit(Event("run-started", f"{len(todo)} of {len(s.cells)} cells to run", {"cells": len(s.cells), "todo": len(todo)}))
        if not todo:  # a finished session is re-reported as it is, environment and all
            s.status = "finished" if s.finished() else s.status
            self.save()
            self.emit(Event("run-finished", "nothing left to run", {"status": s.status}))
            return s
        s.status = "running"
        self.emit(Event("model-loading", f"loading {self.plan.model}", {"model": self.plan.model}))
        # Nothing is written before the backend loads: a model that cannot load leaves no session behind
        # (and an existing one untouched), so fixing the model and running again starts cleanly.
        backend = self.backend_loader(self.plan)
        s.environment = environment.collect(backend)
        self.concurrent = getattr(backend, "concurrency", 1) > 1
        if hasattr(backend, "attach"):  # a remote evaluator: the session's spend so far, live activity, cancel
            backend.attach(figures.session_cost(s.cells.values())[0], self._activity, self.cancel)
        self.batch_size = self._batch_size(backend)
        s.environment["batch_size"] = self.batch_size
        self.emit(Event("model-loaded", f"{self.plan.model} on {backend.device} ({backend.dtype}) in {backend.load_seconds:.1f}s"
                        + (f", up to {self.batch_size} samples per forward pass" if self.batch_size > 1 else ""), backend.describe()))
        self.save()
        protocol = protocols.measurer(self.plan.protocol.name)
        try:
            for ds in self.plan.datasets:
                if self.cancel.is_set():
                    break
                try:
                    samples = protocol.samples(backend, ds, self.plan)
                except Exception as err:  # an unusable dataset fails its own cells only
                    for c in s.cells.values():
                        if c["dataset"] == ds.name and c["status"] not in ("done", "unavailable"):
                            self.finish_cell(c["key"], "error", error=f"dataset {ds.name}: {err}")
                    continue
                for method in self._ordered_methods():
                    if self.cancel.is_set():
                        break
                    self.run_method(backend, ds.name, samples, method)
        finally:
            s.end_run(cancelled=self.cancel.is_set())
            self.save()
            api = backend.activity() if hasattr(backend, "activity") else None  # the remote evaluator's last counters
            if hasattr(backend, "close"):
                backend.close()
            self.emit(Event("run-finished", self.stopped["reason"] if self.stopped else s.status,
                            {"status": s.status, "failed": len(s.failed_cells()), "stopped": self.stopped, "api": api,
                             "elapsed": time.monotonic() - self.started}))
        return s

    def _activity(self, stats: dict) -> None:
        """A remote evaluator's counters (requests done, in flight, waiting on a rate limit, money spent)."""
        waiting = f", {stats['waiting']} waiting on a rate limit" if stats.get("waiting") else ""
        self.emit(Event("api", f"{stats['done']} requests done ({stats['cached']} from the cache), {stats['in_flight']} in "
                        f"flight{waiting}, ${stats['spent_usd']:.4f} spent", stats))

    def _batch_size(self, backend) -> int:
        return schedule.batch_size(self.plan, backend, self.concurrent)

    def _ordered_methods(self) -> list[MethodSpec]:
        """The baseline first (every cell is compared with it), then the methods that need eager attention
        together at the end: one switch of attention at most."""
        methods = sorted(self.plan.methods, key=lambda m: families.get(m.family).attention(m) == "eager")
        return [self.plan.baseline_method(), *methods]

    def run_method(self, backend, dataset: str, samples: list, method: MethodSpec) -> None:
        """The method's cells on this dataset that are not done: open the method, then measure unit by unit."""
        s = self.session
        family = families.get(method.family)
        rates = method.rates if method.rates is not None else self.plan.rates
        keys = {r: CellSpec(self.plan.model, dataset, method.label, method.family, r).key for r in rates}
        keys = {r: k for r, k in keys.items() if s.cells[k]["status"] not in ("done", "unavailable")}
        if not keys:
            return
        missing = family.needs(self.plan) - getattr(backend, "capabilities", frozenset())
        why = family.unavailable(method, self.plan) or (
            (backend.why_not(missing) if hasattr(backend, "why_not") else f"the evaluator offers no {', '.join(sorted(missing))}")
            if missing else None)
        if why:
            self.fail_cells(keys.values(), UnsupportedMethod(why))
            return
        path, why_not_faster = family.path(method, self.plan)
        for k in keys.values():
            if why_not_faster:
                s.cells[k]["reason"] = why_not_faster
        try:
            measurer = family.open(backend, method, self.plan, list(keys), samples)
        except Exception as err:
            self.fail_cells(keys.values(), err, family.hub_reason(method))
            return
        # A sample's live figures (a decoding cell's KV budget so far) go out as events; the app thins them.
        measurer.live = lambda data: self.emit(Event("live", method.label, {**data, "cell": keys.get(data.get("rate"))}))
        if measurer.load_seconds is not None:
            for k in keys.values():
                s.cells[k]["load_seconds"] = measurer.load_seconds
        by_id = {sample.sample_id: sample for sample in samples}
        done = {r: s.done_samples(k) for r, k in keys.items()}
        batch = self.batch_size if measurer.batchable or self.concurrent else 1
        with measurer.guard():
            self._measure_units(backend, measurer, keys, schedule.units(self.plan.model, dataset, method.label, method.family,
                                                                          samples, done, batch), by_id)

    def _measure_units(self, backend, measurer, keys: dict, units: list, by_id: dict) -> None:
        """Measure every unit, saving after each; a failure fails the cells it touched and stops the method."""
        s = self.session
        for k in keys.values():
            if s.cells[k]["status"] == "error":  # an earlier run's failure is retried: its message goes with it
                s.set_status(k, "running")
            self.emit(Event("cell-started", k, {"cell": k}))
        peak = metrics.PeakMemory(backend.device)
        peak.reset()
        failed: dict[str, list[str]] = {k: [] for k in keys.values()}  # per cell: why samples failed on their own
        for unit in units:
            if self.cancel.is_set():
                return
            group = [by_id[i] for i in unit.sample_ids]
            try:
                results = measurer.measure(group, list(unit.rates))
            except Exception as err:
                self.fail_cells([keys[r] for r in unit.rates], err, measurer.hub_reason)
                metrics.free_accelerator_memory()
                return
            for records in results:
                for r, record in records.items():
                    if isinstance(record, SampleFailed):
                        failed[keys[r]].append(str(record))
                        continue
                    s.add_sample(keys[r], record)
                    s.cells[keys[r]]["peak_memory_bytes"] = max(s.cells[keys[r]].get("peak_memory_bytes") or 0, peak.peak())
            self.save()
            self.progress(next(iter(keys.values())), f"{unit.method}: {', '.join(unit.sample_ids)}")
            stopped = getattr(backend, "stopped", None)
            if stopped:  # the API refused the key, or the budget is reached: stop cleanly, resumable
                self.stopped = stopped
                self.cancel.set()
                return
        for k in keys.values():
            if failed[k] and s.cells[k]["status"] not in ("error", "unavailable"):
                # The other samples are kept; a resumed run measures only the missing ones.
                self.finish_cell(k, "error", error=f"{len(failed[k])} of {s.cells[k]['samples_total']} samples failed "
                                 f"(kept the rest; resume to retry them): {failed[k][0]}")
            elif s.cells[k]["status"] not in ("error", "unavailable"):
                self.finish_cell(k, "done")
        self.save()
        metrics.free_accelerator_memory()


__all__ = ["Event", "EventHandler", "classify_failure", "load_backend", "run"]
