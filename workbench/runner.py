"""run(plan, on_event, cancel): the one loop the TUI and the headless mode both drive.

Order of work: load the model once; per dataset, draw the samples, run the baseline, then each
method (grouped so the attention implementation switches as rarely as possible), each method
sample by sample over all its rates (or several samples of one length per forward pass where the
results do not change: ``batch_size``). The session is saved after every sample (batch); a failing method
is recorded on its cells and the others go on; ``cancel`` is checked between samples.

Importing this module loads neither torch nor textual: torch arrives with the first model.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable

from workbench import environment, metrics
from workbench.plan import BASELINE_LABEL, CellSpec, MethodSpec, Plan
from workbench.session import Session, scrub


@dataclass
class Event:
    """Progress report. kind: run-started, model-loading, model-loaded, cell-started, progress,
    cell-finished, log, run-finished. ``data`` is JSON-able."""

    kind: str
    message: str = ""
    data: dict = field(default_factory=dict)


EventHandler = Callable[[Event], None]
# Prompt-compression cells keep the original/compressed text of their first samples (Inspect screen).
EXAMPLES_PER_CELL = 3


class RunAborted(Exception):
    """The run could not start (model or all datasets unusable); the session is saved as 'failed'."""


def run(plan_or_session: Plan | Session, on_event: EventHandler | None = None, cancel: threading.Event | None = None,
        out: str | None = None) -> Session:
    """Run (or resume) a session. Returns the session, saved to ``out`` / its own path when it has one."""
    session = plan_or_session if isinstance(plan_or_session, Session) else Session(plan_or_session, out)
    if out:
        session.path = Path(out)
    return _Run(session, on_event or (lambda e: None), cancel or threading.Event()).execute()


class _Run:
    def __init__(self, session: Session, emit: EventHandler, cancel: threading.Event):
        self.session, self.plan, self.emit, self.cancel = session, session.plan, emit, cancel
        self.batch_size = 1  # set once the model is loaded
        self.started = time.monotonic()

    # -- bookkeeping -------------------------------------------------------------------------------

    def save(self) -> None:
        if self.session.path is not None:
            self.session.save()

    def progress(self, cell_key: str | None = None, message: str = "") -> None:
        cells = self.session.cells.values()
        total = sum(c["samples_total"] for c in cells)
        done = sum(c["samples_total"] if c["status"] in ("done", "error", "unavailable") else c["samples_done"] for c in cells)
        self.emit(Event("progress", message, {"done": done, "total": total, "cell": cell_key,
                                              "elapsed": time.monotonic() - self.started}))

    def finish_cell(self, key: str, status: str, error: str | None = None, reason: str | None = None) -> None:
        self.session.set_status(key, status, error=error, reason=reason)
        self.emit(Event("cell-finished", self.session.cells[key]["status"], {"cell": dict(self.session.cells[key])}))

    # -- the loop ----------------------------------------------------------------------------------

    def execute(self) -> Session:
        from workbench import models

        s = self.session
        s.status = "running"
        s.environment = environment.collect()
        todo = [c for c in s.cells.values() if c["status"] not in ("done", "unavailable")]
        self.emit(Event("run-started", f"{len(todo)} of {len(s.cells)} cells to run", {"cells": len(s.cells), "todo": len(todo)}))
        if not todo:
            s.status = "finished"
            self.save()
            self.emit(Event("run-finished", "nothing left to run", {"status": s.status}))
            return s
        self.save()
        self.emit(Event("model-loading", f"loading {self.plan.model}", {"model": self.plan.model}))
        try:
            lm = models.load_model(self.plan.model, self.plan.device, self.plan.dtype)
        except Exception as err:
            s.status = "failed"
            for c in todo:
                s.set_status(c["key"], "error", error=f"model could not be loaded: {err}")
            self.save()
            raise
        s.environment = environment.collect(lm)
        self.batch_size = self._batch_size(lm)
        s.environment["batch_size"] = self.batch_size
        self.emit(Event("model-loaded", f"{self.plan.model} on {lm.device} ({lm.dtype}) in {lm.load_seconds:.1f}s"
                        + (f", up to {self.batch_size} samples per forward pass" if self.batch_size > 1 else ""), lm.describe()))
        self.save()
        try:
            for ds in self.plan.datasets:
                if self.cancel.is_set():
                    break
                try:
                    samples = self._samples(lm, ds)
                except Exception as err:  # an unusable dataset fails its own cells only
                    for c in s.cells.values():
                        if c["dataset"] == ds.name and c["status"] not in ("done", "unavailable"):
                            self.finish_cell(c["key"], "error", error=f"dataset {ds.name}: {err}")
                    continue
                self.run_baseline(lm, ds.name, samples)
                for method in self._ordered_methods():
                    if self.cancel.is_set():
                        break
                    self.run_method(lm, ds.name, samples, method)
        finally:
            if self.cancel.is_set():
                for c in s.cells.values():
                    if c["status"] == "running":
                        s.set_status(c["key"], "cancelled")
                s.status = "cancelled"
            else:
                s.status = "finished" if s.finished() else "failed"
            self.save()
            self.emit(Event("run-finished", s.status, {"status": s.status, "failed": len(s.failed_cells()),
                                                        "elapsed": time.monotonic() - self.started}))
        return s

    def _batch_size(self, lm) -> int:
        """Samples measured together where that leaves results unchanged (perplexity protocols only)."""
        p = self.plan.protocol
        if p.name == "task":
            return 1
        if self.plan.batch_size != "auto":
            return int(self.plan.batch_size)
        from workbench import kv_eval

        return kv_eval.auto_batch_size(lm.model, p.context_tokens, p.continuation_tokens)

    def _samples(self, lm, ds) -> list:
        """Token windows for the perplexity protocols; question/answer samples for the task protocol."""
        from workbench import datasets, tasks

        p = self.plan.protocol
        if p.name == "task":
            def count_tokens(text: str) -> int:
                return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])

            return tasks.task_samples(ds.name, ds.samples, ds.seed, count_tokens=count_tokens, context_tokens=p.context_tokens,
                                      depths=p.depths, n_shots=p.n_shots)
        return datasets.lm_samples(ds.name, lm.tokenizer, ds.samples, p.context_tokens, p.continuation_tokens, ds.seed)

    def _evaluator(self):
        """The module measuring one sample: perplexity (evaluate) or task score (task_eval); same functions."""
        if self.plan.protocol.name == "task":
            from workbench import task_eval

            return task_eval
        from workbench import evaluate

        return evaluate

    def _ordered_methods(self) -> list[MethodSpec]:
        """sdpa methods first, eager ones together at the end: one switch of attention at most."""
        from workbench.methods import presses

        def needs_eager(m: MethodSpec) -> bool:
            return m.family == "kv" and presses.requirements(m.name, m.params)[0] == "eager"

        return sorted(self.plan.methods, key=needs_eager)

    def _cells(self, dataset: str, label: str, family: str, rates: list) -> dict:
        return {r: CellSpec(self.plan.model, dataset, label, family, r).key for r in rates}

    def run_baseline(self, lm, dataset: str, samples: list) -> None:
        evaluate = self._evaluator()
        key = CellSpec(self.plan.model, dataset, BASELINE_LABEL, "baseline", 1.0).key
        if self.session.cells[key]["status"] == "done":
            return
        lm.set_attention("sdpa")
        batch = None
        if self.plan.protocol.name == "context-continuation":
            def batch(group, rates):
                return [{1.0: r} for r in evaluate.evaluate_baseline_batch(lm, group, self.plan.protocol)]
        self._run_samples(lm, samples, {1.0: key}, "baseline",
                          lambda sample, rates: {1.0: evaluate.evaluate_baseline(lm, sample, self.plan.protocol)}, batch=batch)

    def run_method(self, lm, dataset: str, samples: list, method: MethodSpec) -> None:
        from workbench import evaluate
        from workbench.methods import presses

        measure = self._evaluator()

        rates = method.rates if method.rates is not None else self.plan.rates
        keys = {r: k for r, k in self._cells(dataset, method.label, method.family, rates).items()
                if self.session.cells[k]["status"] not in ("done", "unavailable")}
        if not keys:
            return
        if method.family == "prompt":
            self.run_compressor(lm, samples, method, keys)
            return
        attention, hub = presses.requirements(method.name, method.params)
        if attention == "conflict":
            for k in keys.values():
                self.finish_cell(k, "error", error="its presses need both eager attention and not eager attention")
            return
        lm.set_attention(attention or "sdpa")
        path, why = evaluate.kv_path(method, self.plan.protocol, self.plan.shared_prefill)
        for k in keys.values():
            self.session.cells[k]["reason"] = why

        def evaluate_sample(sample, todo_rates):
            return measure.evaluate_kv(lm, sample, method, todo_rates, self.plan.protocol, self.plan.shared_prefill)

        batch = None
        if measure is evaluate and evaluate.batchable(method, list(keys), self.plan.protocol, self.plan.shared_prefill):
            def batch(group, todo_rates):
                if len(todo_rates) < 2:  # one rate left (a resumed cell): the per-rate path, one sample at a time
                    return [evaluate_sample(sample, todo_rates) for sample in group]
                return evaluate.evaluate_kv_batch(lm, group, method, todo_rates, self.plan.protocol, self.plan.shared_prefill)

        with _hub_guard(hub):
            self._run_samples(lm, samples, keys, method.label, evaluate_sample, hub_reason=hub, batch=batch)

    def run_compressor(self, lm, samples: list, method: MethodSpec, keys: dict) -> None:
        """A prompt compressor: loaded once per method (its load time recorded), then sample by sample."""
        from workbench.methods.prompt import COMPRESSORS, build_compressor

        evaluate = self._evaluator()
        lm.set_attention("sdpa")
        hub = COMPRESSORS[method.name].needs_hub
        try:
            compressor = build_compressor(method.name, method.params)
            p = self.plan.protocol
            if compressor.requires_question and not (p.name == "task" and p.question_aware):
                from workbench.kv_eval import UnsupportedMethod

                raise UnsupportedMethod(f"{method.name} compresses with respect to a question: it needs the task protocol "
                                        "with \"question_aware\": true")
            with _hub_guard(hub):
                compressor.load(lm)
        except Exception as err:
            status, message = classify_failure(err, hub)
            for k in keys.values():
                self.finish_cell(k, status, error=message if status == "error" else None,
                                 reason=message if status == "unavailable" else None)
            self.save()
            return
        for k in keys.values():
            self.session.cells[k]["load_seconds"] = compressor.load_seconds
        first_ids = {s.sample_id for s in samples[:EXAMPLES_PER_CELL]}

        def evaluate_sample(sample, todo_rates):
            return evaluate.evaluate_prompt(lm, sample, compressor, todo_rates, self.plan.protocol,
                                            keep_example=sample.sample_id in first_ids)

        self._run_samples(lm, samples, keys, method.label, evaluate_sample, hub_reason=hub)

    def _groups(self, samples, keys: dict, batch) -> list[tuple[list, list]]:
        """(samples, rates to do) in order: runs of consecutive samples with the same length and the same
        rates still to do, at most ``batch_size`` long when a batch function is given, else single samples."""
        done = {r: self.session.done_samples(k) for r, k in keys.items()}
        groups: list[tuple[list, list]] = []
        for sample in samples:
            todo = [r for r in keys if sample.sample_id not in done[r]]
            if not todo:
                continue
            if (batch is not None and groups and groups[-1][1] == todo and len(groups[-1][0]) < self.batch_size
                    and len(groups[-1][0][0].input_ids) == len(sample.input_ids)):
                groups[-1][0].append(sample)
            else:
                groups.append(([sample], todo))
        return groups

    def _run_samples(self, lm, samples, keys: dict, label: str, evaluate_sample, hub_reason: str | None = None,
                     batch=None) -> None:
        """Evaluate every sample not yet on disk for these cells (one cell per rate), saving after each
        sample, or after each batch of samples when ``batch`` (samples, rates) -> [records] is given."""
        s = self.session
        for k in keys.values():
            self.emit(Event("cell-started", k, {"cell": k}))
        peak = metrics.PeakMemory(lm.device)
        peak.reset()
        for group, todo in self._groups(samples, keys, batch if self.batch_size > 1 else None):
            if self.cancel.is_set():
                return
            try:
                results = batch(group, todo) if len(group) > 1 else [evaluate_sample(group[0], todo)]
            except Exception as err:
                status, message = classify_failure(err, hub_reason)
                for r in todo:
                    self.finish_cell(keys[r], status, error=message if status == "error" else None,
                                     reason=message if status == "unavailable" else None)
                self.save()
                metrics.free_accelerator_memory()
                return
            for records in results:
                for r, record in records.items():
                    s.add_sample(keys[r], record)
                    s.cells[keys[r]]["peak_memory_bytes"] = max(s.cells[keys[r]].get("peak_memory_bytes") or 0, peak.peak())
            self.save()
            self.progress(next(iter(keys.values())), f"{label}: {', '.join(sample.sample_id for sample in group)}")
        for k in keys.values():
            if s.cells[k]["status"] not in ("error", "unavailable"):
                self.finish_cell(k, "done")
        self.save()
        metrics.free_accelerator_memory()


def _hub_guard(hub_reason: str | None):
    """Methods that need hub artefacts run local-cache-only when the hub cannot be reached."""
    from contextlib import nullcontext

    from workbench.models import offline_unless_hub_reachable

    return offline_unless_hub_reachable() if hub_reason else nullcontext()


_HUB_MARKERS = ("huggingface", "hf.co", "hub", "offline", "connection", "resolve", "repository not found", "gated repo",
                "does not appear to have a file", "can't load", "cannot find the requested files", "local cache")


def classify_failure(err: BaseException, hub_reason: str | None) -> tuple[str, str]:
    """('unavailable' | 'error', one-line message without secrets) for an exception raised by a cell."""
    text = f"{type(err).__name__}: {err}".strip()
    first = scrub(text.splitlines()[0] if text else type(err).__name__)[:500]
    chain, seen = [], err
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = " ".join(type(e).__name__ for e in chain)
    if "OutOfMemoryError" in names or "out of memory" in text.lower():
        return "error", f"out of memory: {first}"
    from workbench.kv_eval import UnsupportedMethod

    if any(isinstance(e, UnsupportedMethod) for e in chain):
        return "unavailable", first
    lowered = " ".join(str(e).lower() for e in chain)
    if hub_reason and (any(m in lowered for m in _HUB_MARKERS) or any(n in names for n in ("LocalEntryNotFoundError", "HfHubHTTPError", "OSError", "ConnectError"))):
        return "unavailable", f"{hub_reason}; not reachable here ({first})"
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    if where is not None:
        first += f" (at {where.name}, {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
    return "error", first
