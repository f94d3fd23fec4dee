"""The runner's loop over Ray workers: units measured by actors, records recorded by this process alone.

A plan with an ``execution`` block runs here instead of in ``runner._Run``'s loop. The units are the runner's
(``schedule.units``: shared prefill, equal-length batches), and each worker measures them with the runner's own
family code (``workbench.ray_worker.Worker``); only the dispatch differs. The driver keeps the one Session: it
adds every returned record, saves after every unit (atomic, incremental, resumable as always), emits the same
events plus a ``worker`` event per unit, and owns cancellation. A worker lost mid-unit (killed, out of memory,
its node gone) has its unit measured again on another worker, up to ``MAX_ATTEMPTS`` times; a unit that fails
on its own fails its cells as in the single-process run.

Importing this module loads no Ray: :mod:`workbench.ray_worker` imports it when a run starts.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field

from workbench import families, schedule
from workbench.events import Event
from workbench.families.base import SampleFailed, UnsupportedMethod
from workbench.plan import CellSpec, MethodSpec, PlanError

MAX_ATTEMPTS = 3  # times one unit is handed out before its cells fail (each loss of a worker counts once)
LIVE_QUEUE_SIZE = 1000  # live reports waiting for the driver; beyond, workers drop theirs (the plot skips a frame)


@dataclass
class _Group:
    """One method's cells on one dataset, with its units in flight or queued."""

    dataset: str
    method: MethodSpec
    keys: dict  # rate -> cell key (the cells still to do)
    remaining: int = 0  # units not yet recorded
    failed: dict = field(default_factory=dict)  # cell key -> why samples failed on their own
    aborted: bool = False  # a unit failed: the method stops here, as in the runner

    @property
    def rates(self) -> tuple:
        return tuple(self.keys)


@dataclass
class _Job:
    group: _Group
    unit: schedule.Unit
    attempts: int = 0
    sent: float = 0.0


@dataclass
class _Slot:
    index: int
    actor: object
    info: dict | None = None


class DistributedRun:
    """The runner's ``_Run`` (its session, events, cancel and cell bookkeeping) with the units measured on Ray
    actors (see the module docstring)."""

    def __init__(self, run):
        self.run = run
        self.session, self.plan, self.cancel, self.emit = run.session, run.plan, run.cancel, run.emit
        self.stopped = None
        self.started = time.monotonic()

    def execute(self):
        s = self.session
        todo = [c for c in s.cells.values() if c["status"] not in ("done", "unavailable")]
        self.emit(Event("run-started", f"{len(todo)} of {len(s.cells)} cells to run", {"cells": len(s.cells), "todo": len(todo)}))
        if not todo:
            s.status = "finished" if s.finished() else s.status
            self.run.save()
            self.emit(Event("run-finished", "nothing left to run", {"status": s.status}))
            return s
        from workbench import ray_worker

        if not ray_worker.ray_available():
            raise PlanError(ray_worker.RAY_MISSING)
        ex = self.plan.execution
        try:
            ray, started_here = ray_worker.connect(ex.ray, ex.workers)
        except ray_worker.RayUnreachable as err:
            raise PlanError(str(err)) from None
        self.local_ray = started_here
        self.ray, self.slots, self.queue, self.in_flight, self.starting = ray, [], deque(), {}, {}
        self.units_done, self.overhead, self.live = 0, 0.0, None
        try:
            self._start_workers(ray_worker)
            self.live = self._live_queue()
            s.status = "running"
            self.run.save()
            try:
                self._dispatch_plan()
            finally:
                self._finish()
        finally:
            for slot in self.slots:
                ray.kill(slot.actor)
            if self.live is not None:
                self.live.shutdown(force=True)
            if started_here:
                ray.shutdown()
        return s

    # -- workers -------------------------------------------------------------------------------------

    def _start_workers(self, ray_worker) -> None:
        from workbench.models import ModelLoadError

        ray, ex = self.ray, self.plan.execution
        gpus = int(ray.cluster_resources().get("GPU", 0))
        use_gpus = gpus > 0 and self.plan.device != "cpu"
        n = ex.workers or max(gpus, 1)
        if use_gpus and n > gpus:
            raise PlanError(f"{n} workers asked for, but the Ray cluster has {gpus} GPU{'s' * (gpus != 1)}: one worker "
                            "per GPU (or device \"cpu\" for CPU workers)", "--workers")
        where = f"the Ray cluster at {ex.ray}" if ex.ray else "a local Ray"
        # CPU workers of a Ray started for this run share this machine's cores: cores // N each (one worker computes
        # with the threads of the single-process run, so its records are the same to the bit). On a cluster, one.
        cpus = max(1, (os.cpu_count() or 1) // n) if self.local_ray and not use_gpus else 1
        each = "one GPU" if use_gpus else f"{cpus} CPU{'s' * (cpus != 1)}"
        self.emit(Event("model-loading", f"loading {self.plan.model} on {n} worker{'s' * (n != 1)} ({each} each) on {where}",
                        {"model": self.plan.model, "workers": n}))
        self.worker_cls = ray_worker.worker_class(ray, use_gpus, cpus)
        self.restarts_left = n  # replacements for lost workers, all together
        self.slots = [_Slot(i, self.worker_cls.remote(self.plan.to_dict(), i, self.run.backend_loader)) for i in range(n)]
        try:
            infos = ray.get([slot.actor.info.remote() for slot in self.slots])
        except Exception as err:  # the model failed to load in a worker: as the single-process run, nothing written
            cause = getattr(err, "cause", None) or err
            if isinstance(cause, ModelLoadError):
                raise cause from None
            raise ModelLoadError(f"a worker could not load {self.plan.model}: {str(cause).strip().splitlines()[-1][:500]}") from None
        for slot, info in zip(self.slots, infos):
            slot.info = info
        first = infos[0]
        self.capabilities = frozenset(first["capabilities"])
        self.batch_size = min(info["batch_size"] for info in infos)  # the units' size: the same for every worker
        env = dict(first["environment"])
        env["batch_size"] = self.batch_size
        env["workers"] = [{k: info[k] for k in ("worker", "node", "device", "dtype", "load_seconds")} for info in infos]
        self.session.environment = env
        self.emit(Event("model-loaded", f"{self.plan.model} on {n} workers ({', '.join(sorted({i['device'] for i in infos}))}, "
                        f"{first['dtype']}) in {max(i['load_seconds'] for i in infos):.1f}s"
                        + (f", up to {self.batch_size} samples per forward pass" if self.batch_size > 1 else ""),
                        {**first["describe"], "workers": env["workers"]}))
        for info in infos:
            self._worker_event(info["worker"], "ready")

    def _replace(self, slot: _Slot, why: str) -> None:
        """Drop a lost worker; start another in its place while the run's replacements last. A worker is found lost
        once per call it had pending (a unit and an open, say): the first replaces it."""
        if slot not in self.slots:
            return
        self._worker_event(slot.index, "lost", why)
        self.slots.remove(slot)
        if self.restarts_left > 0:
            self.restarts_left -= 1
            index = max([s.index for s in self.slots] + [slot.index]) + 1
            fresh = _Slot(index, self.worker_cls.remote(self.plan.to_dict(), index, self.run.backend_loader))
            self.slots.append(fresh)
            # Units go to it once it has loaded the model and said who it is (awaited with the units in flight).
            self.starting[fresh.actor.info.remote()] = fresh
            self._worker_event(index, "starting")

    def _started(self, ref) -> None:
        """A replacement worker answered: ready for units, or lost before it could take one."""
        slot = self.starting.pop(ref)
        try:
            slot.info = self.ray.get(ref)
        except Exception as err:
            if not self._lost(err):
                raise
            self._replace(slot, (str(err).strip().splitlines() or [type(err).__name__])[0][:300])
            return
        self._worker_event(slot.index, "ready")

    def _worker_event(self, index: int, state: str, detail: str = "", unit: schedule.Unit | None = None,
                      seconds: float | None = None) -> None:
        info = next((s.info for s in self.slots if s.index == index), None) or {}
        data = {"worker": index, "state": state, "device": info.get("device"), "node": info.get("node"),
                "pid": info.get("pid"), "unit": f"{unit.method} {', '.join(unit.sample_ids)}" if unit else None,
                "samples_per_s": len(unit.sample_ids) * len(unit.rates) / seconds if unit and seconds else None}
        text = f"worker {index} ({data['device']} on {data['node']}): {state}"
        if unit is not None:
            text += f" {data['unit']}" + (f" ({data['samples_per_s']:.2f} samples/s)" if data["samples_per_s"] else "")
        self.emit(Event("worker", text + (f": {detail}" if detail else ""), data))

    # -- live figures ------------------------------------------------------------------------------

    def _live_queue(self):
        """A queue the workers put their measurers' live figures on (a decoding cell's KV budget so far), when a
        method of the plan reports any; None otherwise (no actor started for nothing). It takes no CPU of its own."""
        methods = [self.plan.baseline_method(), *self.plan.methods]
        if not any(families.get(m.family).reports_live for m in methods):
            return None
        from ray.util.queue import Queue

        return Queue(maxsize=LIVE_QUEUE_SIZE, actor_options={"num_cpus": 0})

    def _drain_live(self) -> None:
        """Emit what the workers reported since the last look, as the single-process run's "live" events (the
        latest of each sample only: each report holds the whole curve so far)."""
        if self.live is None:
            return
        try:
            n = self.live.qsize()
            items = self.live.get_nowait_batch(n) if n else []
        except Exception:  # noqa: BLE001 - best-effort, as the workers' side: a lost queue costs the live plot only
            return
        latest = {(d.get("cell"), d.get("sample_id")): d for d in items}
        for data in latest.values():
            self.emit(Event("live", data.get("method", ""), data))

    # -- dispatch ------------------------------------------------------------------------------------

    def _dispatch_plan(self) -> None:
        for ds in self.plan.datasets:
            index = None
            for method in self.run._ordered_methods():
                if self.cancel.is_set():
                    return
                group = self._group(ds.name, method)
                if group is None:
                    continue
                if index is None:
                    index = self._sample_index(ds.name)
                    if index is None:
                        break
                self._open(group, index)
                self._pump(drain=False)
        self._pump(drain=True)

    def _sample_index(self, dataset: str):
        """[(sample id, input length)] as the workers draw them, or None (the dataset's cells failed)."""
        try:
            if not self.slots:
                raise _CallFailed(RuntimeError("no worker left: every worker was lost"))
            return self._await(self._idle_or_first().actor.sample_index.remote(dataset))
        except _CallFailed as failed:  # an unusable dataset fails its own cells only
            err = failed.error
            cause = getattr(err, "cause", None) or err
            for c in self.session.cells.values():
                if c["dataset"] == dataset and c["status"] not in ("done", "unavailable"):
                    self.run.finish_cell(c["key"], "error", error=f"dataset {dataset}: {cause}")
            return None

    def _idle_or_first(self) -> _Slot:
        busy = {slot.index for slot, _ in self.in_flight.values()}
        return next((s for s in self.slots if s.index not in busy and s.info is not None), self.slots[0])

    def _group(self, dataset: str, method: MethodSpec) -> _Group | None:
        """The method's cells still to do on this dataset, checked as the runner checks them (None: nothing to run)."""
        s, family = self.session, families.get(method.family)
        rates = method.rates if method.rates is not None else self.plan.rates
        keys = {r: CellSpec(self.plan.model, dataset, method.label, method.family, r).key for r in rates}
        keys = {r: k for r, k in keys.items() if s.cells[k]["status"] not in ("done", "unavailable")}
        if not keys:
            return None
        missing = family.needs(self.plan) - self.capabilities
        why = family.unavailable(method, self.plan) or (f"the model offers no {', '.join(sorted(missing))}" if missing else None)
        if why:
            self.run.fail_cells(keys.values(), UnsupportedMethod(why))
            return None
        _, why_not_faster = family.path(method, self.plan)
        for k in keys.values():
            if why_not_faster:
                s.cells[k]["reason"] = why_not_faster
        return _Group(dataset, method, keys)

    def _open(self, group: _Group, index: list) -> None:
        """Open the method on one worker (to learn whether it batches), then queue its units."""
        s = self.session
        if not self.slots:
            return self._fail(group.keys.values(), "error", "no worker left: every worker was lost")
        slot = self._idle_or_first()
        try:
            opened = self._await(slot.actor.open.remote(group.dataset, group.method.label, group.rates))
        except _CallFailed as failed:
            err = failed.error
            if not self._lost(err):
                raise err from None
            self._replace(slot, str(err).splitlines()[0])
            if not self.slots:
                return self._fail(group.keys.values(), "error", f"no worker left: {str(err).splitlines()[0]}")
            return self._open(group, index)
        if "error" in opened:
            return self._fail(group.keys.values(), *opened["error"])
        for k in group.keys.values():
            if opened["load_seconds"] is not None:
                s.cells[k]["load_seconds"] = opened["load_seconds"]
            if s.cells[k]["status"] == "error":  # an earlier run's failure is retried: its message goes with it
                s.set_status(k, "running")
            self.emit(Event("cell-started", k, {"cell": k}))
        group.failed = {k: [] for k in group.keys.values()}
        done = {r: s.done_samples(k) for r, k in group.keys.items()}
        shapes = [_Shape(i, n) for i, n in index]
        batch = self.batch_size if opened["batchable"] else 1
        units = schedule.units(self.plan.model, group.dataset, group.method.label, group.method.family, shapes, done, batch)
        group.remaining = len(units)
        self.queue.extend(_Job(group, u) for u in units)
        if not units:
            self._close(group)

    def _pump(self, drain: bool) -> None:
        """Hand queued units to idle workers and record what comes back. Without ``drain``, return once fewer units
        are queued than there are workers (the next method's units join the queue before any worker idles)."""
        ray = self.ray
        while True:
            busy = {slot.index for slot, _ in self.in_flight.values()}
            for slot in [s for s in self.slots if s.index not in busy and s.info is not None]:
                job = self._next_job()
                if job is None:
                    break
                job.attempts += 1
                job.sent = time.perf_counter()
                self.in_flight[slot.actor.measure.remote(job.unit, job.group.rates, self.live)] = (slot, job)
                self._worker_event(slot.index, "measuring", unit=job.unit)
            waiting_for_a_worker = bool(self.starting and self.queue and not self.cancel.is_set())
            if not self.in_flight and not waiting_for_a_worker:
                if self.queue and not self.cancel.is_set() and not self.slots:
                    self._fail_queue("no worker left: every worker was lost")
                return
            if not drain and len(self.queue) < len(self.slots) and not self.cancel.is_set():
                return
            ready, _ = ray.wait([*self.in_flight, *self.starting], num_returns=1, timeout=0.5)
            self._drain_live()
            for ref in ready:
                self._answered(ref)
                if self.stopped:
                    return

    def _answered(self, ref) -> None:
        """A replacement worker said who it is, or a unit came back (recorded, or retried if its worker was lost)."""
        if ref in self.starting:
            self._started(ref)
            return
        slot, job = self.in_flight.pop(ref)
        try:
            result = self.ray.get(ref)
        except Exception as err:
            if not self._lost(err):
                raise
            self._retry(slot, job, err)
            return
        self._record(slot, job, result)

    def _await(self, ref):
        """``ray.get(ref)`` of a call to a worker that may be measuring a unit first (an actor answers in turn): the
        units in flight that come back meanwhile are recorded and the live figures go out, as while pumping. The
        call's own failure comes as :class:`_CallFailed` (what recording raises is not the call's)."""
        while True:
            ready, _ = self.ray.wait([ref, *self.in_flight, *self.starting], num_returns=1, timeout=0.5)
            self._drain_live()
            for done in ready:
                if done == ref:
                    try:
                        return self.ray.get(ref)
                    except Exception as err:
                        raise _CallFailed(err) from err
                self._answered(done)

    def _next_job(self) -> _Job | None:
        while self.queue and not self.cancel.is_set():
            job = self.queue.popleft()
            if not job.group.aborted:
                return job
        return None

    def _lost(self, err: BaseException) -> bool:
        from workbench.ray_worker import is_worker_lost

        return is_worker_lost(err)

    def _retry(self, slot: _Slot, job: _Job, err: BaseException) -> None:
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        self._replace(slot, why)
        if job.attempts >= MAX_ATTEMPTS:
            self._fail([job.group.keys[r] for r in job.unit.rates], "error",
                       f"the worker measuring {', '.join(job.unit.sample_ids)} was lost {job.attempts} times (last: {why})")
            job.group.aborted = True
            return
        self.emit(Event("log", f"worker {slot.index} lost while measuring {', '.join(job.unit.sample_ids)}; "
                        f"measuring them again on another worker ({why})"))
        self.queue.appendleft(job)

    def _record(self, slot: _Slot, job: _Job, result: dict) -> None:
        s, group, unit = self.session, job.group, job.unit
        if "error" in result:
            self._worker_event(slot.index, "idle")
            if not group.aborted:
                self._fail([group.keys[r] for r in unit.rates], *result["error"])
                group.aborted = True
            return
        self.units_done += 1
        self.overhead += max(time.perf_counter() - job.sent - result["seconds"], 0.0)
        for records in result["records"]:
            for r, record in records.items():
                key = group.keys[r]
                if isinstance(record, SampleFailed):
                    group.failed[key].append(str(record))
                    continue
                s.add_sample(key, record)
                s.cells[key]["peak_memory_bytes"] = max(s.cells[key].get("peak_memory_bytes") or 0, result["peak_memory_bytes"])
        self.run.save()
        self._worker_event(slot.index, "measured", unit=unit, seconds=result["seconds"])
        self.run.progress(next(iter(group.keys.values())), f"{unit.method}: {', '.join(unit.sample_ids)}")
        group.remaining -= 1
        if group.remaining == 0 and not group.aborted:
            self._close(group)

    def _close(self, group: _Group) -> None:
        """Every unit of the group recorded: its cells are done, or in error where samples failed on their own."""
        s = self.session
        for k in group.keys.values():
            if group.failed[k] and s.cells[k]["status"] not in ("error", "unavailable"):
                self.run.finish_cell(k, "error", error=f"{len(group.failed[k])} of {s.cells[k]['samples_total']} samples failed "
                                 f"(kept the rest; resume to retry them): {group.failed[k][0]}")
            elif s.cells[k]["status"] not in ("error", "unavailable"):
                self.run.finish_cell(k, "done")
        self.run.save()

    def _fail(self, keys, status: str, message: str) -> None:
        for k in keys:
            self.run.finish_cell(k, status, error=message if status == "error" else None,
                             reason=message if status == "unavailable" else None)
        self.run.save()

    def _fail_queue(self, why: str) -> None:
        while self.queue:
            job = self.queue.popleft()
            if not job.group.aborted:
                job.group.aborted = True
                self._fail(job.group.keys.values(), "error", why)

    def _finish(self) -> None:
        s = self.session
        s.end_run(cancelled=self.cancel.is_set())
        self.run.save()
        self.emit(Event("run-finished", s.status, {
            "status": s.status, "failed": len(s.failed_cells()), "stopped": None, "api": None,
            "elapsed": time.monotonic() - self.started, "workers": len(self.slots), "units": self.units_done,
            "overhead_seconds_per_unit": self.overhead / self.units_done if self.units_done else None}))


class _CallFailed(Exception):
    """A call to a worker raised ``error`` (apart from what recording other units raised meanwhile)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Shape:
    """What ``schedule.units`` reads of a sample: its id and its length (the tokens stay with the workers)."""

    sample_id: str
    length: int

    @property
    def input_ids(self) -> range:
        return range(self.length)

