"""Session ⇄ JSON: one document holding the resolved plan and one record per cell.

Writes are atomic (temporary file in the same folder, fsync, rename; the file keeps its mode) and
incremental: the runner saves after every sample, so a killed run loses at most the sample in
flight and a rerun resumes where it stopped. One process writes a session file at a time
(``session_lock``): a save takes the file's lock and holds it while the session is running; the CLI
takes it explicitly for a whole run. Loading validates the whole document (``session_schema``).
Error messages are scrubbed of secrets (values of *TOKEN*/*KEY*/*SECRET* environment variables)
before they are stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from workbench import __version__, jsonio, metrics, session_schema
from workbench.atomic_write import write_text_atomically
from workbench.plan import BASELINE_LABEL, CellSpec, Plan, PlanError, parse_plan
from workbench.secrets import scrub
from workbench.session_lock import SessionLock, SessionLocked, acquire_session_lock
from workbench.session_schema import CELL_STATUSES, SCHEMA_VERSION, SessionError

__all__ = ["CELL_STATUSES", "SCHEMA_VERSION", "Session", "SessionError", "SessionLocked", "check_target", "new_cell",
           "now", "scrub"]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_cell(spec: CellSpec, plan: Plan, samples_total: int) -> dict:
    if spec.method == BASELINE_LABEL:
        name, params = "baseline", {}
    else:
        m = plan.method(spec.method)
        name, params = m.name, m.params
    return {
        "key": spec.key,
        "model": spec.model,
        "dataset": spec.dataset,
        "method": spec.method,
        "name": name,
        "family": spec.family,
        "params": params,
        "rate": spec.rate,
        "status": "pending",
        "path": None,
        "reason": None,
        "error": None,
        "samples_total": samples_total,
        "samples_done": 0,
        "samples": [],
        "peak_memory_bytes": None,
        "load_seconds": None,
        "seconds": 0.0,
        "examples": [],
    }


class Session:
    def __init__(self, plan: Plan, path: str | os.PathLike | None = None, environment: dict | None = None):
        self.plan = plan
        self.path = Path(path) if path else None
        self.created_at = now()
        self.updated_at = self.created_at
        self.workbench_version = __version__
        self.environment: dict = environment or {}
        self.status = "pending"
        self.cells: dict[str, dict] = {}
        for spec in plan.cells():
            ds = next(d for d in plan.datasets if d.name == spec.dataset)
            self.cells[spec.key] = new_cell(spec, plan, ds.samples)

    # -- cell bookkeeping ------------------------------------------------------------------------

    def baseline_cell(self, model: str, dataset: str) -> dict:
        return self.cells[CellSpec(model, dataset, BASELINE_LABEL, "baseline", 1.0).key]

    def done_samples(self, key: str) -> set[str]:
        return {s["sample_id"] for s in self.cells[key]["samples"]}

    def add_sample(self, key: str, record: dict) -> None:
        cell = self.cells[key]
        record = dict(record)
        example = record.pop("example", None)
        if example is not None:  # what the compressor dropped, kept for a few samples (the Inspect screen)
            examples = [e for e in cell.setdefault("examples", []) if e["sample_id"] != record["sample_id"]]
            cell["examples"] = examples + [{"sample_id": record["sample_id"], **example}]
        if record.get("note") and not cell.get("reason"):
            cell["reason"] = record["note"]
        cell["samples"] = [s for s in cell["samples"] if s["sample_id"] != record["sample_id"]] + [record]
        cell["samples_done"] = len(cell["samples"])
        cell["path"] = record.get("path", cell["path"])
        if cell["status"] == "pending":
            cell["status"] = "running"
        self.refresh(key)

    def set_status(self, key: str, status: str, error: str | None = None, reason: str | None = None) -> None:
        assert status in CELL_STATUSES, status
        cell = self.cells[key]
        cell["status"] = status
        cell["error"] = scrub(error) if error else None
        if reason is not None:
            cell["reason"] = scrub(reason)
        self.refresh(key)

    def refresh(self, key: str) -> None:
        """Recompute the cell's figures from its samples (deltas against its dataset's baseline)."""
        cell = self.cells[key]
        baseline = None
        if cell["method"] != BASELINE_LABEL:
            baseline = {s["sample_id"]: s for s in self.baseline_cell(cell["model"], cell["dataset"])["samples"]}
        figures = metrics.aggregate(cell["samples"], baseline)
        for name in metrics.CELL_METRICS:
            if name != "peak_memory_bytes":
                cell[name] = figures.get(name)
        cell["tokens_scored"] = figures.get("tokens_scored", 0)
        kept, rate = cell.get("kept_fraction"), cell.get("rate")
        if (cell["family"] == "prompt" and kept is not None and rate is not None and abs(kept - rate) > 0.05
                and not cell.get("reason")):
            # Say it rather than let a table suggest the rate was met.
            cell["reason"] = (f"achieved kept fraction {kept:.3f} is off the requested {rate:g} by more than 0.05 "
                              f"(counted in the evaluated model's tokens)")
        cell["seconds"] = cell["seconds"] or 0.0

    def end_run(self, cancelled: bool) -> None:
        """A run is over: when it was cancelled (or stopped), the cells it left running are cancelled — resumable —
        and so is the session; otherwise the session is finished, or failed when a cell failed or is left."""
        if cancelled:
            for c in self.cells.values():
                if c["status"] == "running":
                    self.set_status(c["key"], "cancelled")
            self.status = "cancelled"
        else:
            self.status = "finished" if self.finished() else "failed"

    def finished(self) -> bool:
        return all(c["status"] in ("done", "error", "unavailable") for c in self.cells.values())

    def failed_cells(self) -> list[dict]:
        return [c for c in self.cells.values() if c["status"] == "error"]

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        for key in self.cells:
            self.refresh(key)
        return {
            "schema_version": SCHEMA_VERSION,
            "workbench_version": self.workbench_version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "environment": self.environment,
            "plan": self.plan.to_dict(),
            "cells": list(self.cells.values()),
        }

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically: a reader (or a crash) sees the old file or the new one, never half of one.

        Takes the file's lock first (SessionLocked if another process writes it) and keeps it while the
        session is running, or until ``release_lock`` when it was taken with ``acquire_lock``."""
        target = Path(path) if path else self.path
        if target is None:
            raise SessionError("no path to save the session to")
        self._lock_for(target)
        self.path = target
        self.updated_at = now()
        try:
            _write_atomically(target, json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_json_default))
        finally:
            if not self._lock_explicit and self.status != "running":
                self.release_lock()
        return target

    # -- the writer's lock -----------------------------------------------------------------------

    _lock: SessionLock | None = None
    _lock_explicit = False

    def acquire_lock(self, path: str | os.PathLike | None = None) -> None:
        """Hold the lock of ``path`` (default: the session's path) until ``release_lock``.

        Raises SessionLocked naming the holder's pid, or SessionError when the folder cannot be written."""
        target = Path(path) if path else self.path
        if target is None:
            raise SessionError("no path to lock the session at")
        self._lock_for(target)
        self._lock_explicit = True

    def release_lock(self) -> None:
        lock, self._lock, self._lock_explicit = self._lock, None, False
        if lock is not None:
            lock.release(owner=self)

    def _lock_for(self, target: Path) -> None:
        try:  # the lock file lives beside the session: its folder first (save() has always made it)
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise SessionError(f"{target}: cannot make its folder {target.parent} ({err.strerror or err})") from None
        lock = acquire_session_lock(target, owner=self)
        if self._lock is not lock:
            self.release_lock()
            self._lock = lock

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Session":
        """The session saved at ``path``, validated in full. Raises SessionError naming the file and field."""
        path = Path(path)
        try:
            data = jsonio.read_json(path, "session file")
        except jsonio.InputFileError as err:
            raise SessionError(str(err)) from None
        return cls.from_dict(data, str(path), path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "session", path: Path | None = None) -> "Session":
        """A session from its JSON document; raises SessionError (only) for anything it cannot use."""
        try:
            jsonio.check_tree(data, source)
        except jsonio.InputFileError as err:
            raise SessionError(str(err)) from None
        data = migrate(data, source)
        try:
            plan = parse_plan(data["plan"], source=source)
        except PlanError as err:
            field = "plan" if err.field_path in (None, "(top level)") else f"plan.{err.field_path}"
            raise SessionError(f"{source}: field '{field}': {err.message}") from None
        session = cls(plan, path, data.get("environment") or {})
        session_schema.check_cells(data["cells"], session.cells, source)
        session.created_at = data["created_at"]
        session.updated_at = data.get("updated_at") or session.created_at
        session.workbench_version = data["workbench_version"]
        session.status = data.get("status", "pending")
        for cell in data["cells"]:
            session.cells[cell["key"]].update(cell)
        for key in session.cells:  # figures come from the samples, never from what the file says they were
            session.refresh(key)
        return session


def migrate(data: Any, source: str) -> dict:
    """Check the document's top level and bring an older schema to the current one (one schema so far)."""
    session_schema.check_header(data, source)
    return data


def check_target(path: str | os.PathLike) -> None:
    """Refuse a session path that cannot be written: a folder, or a parent that is a file or read-only.

    Raises SessionError naming the path. (Whether an existing file may be replaced is the caller's rule.)"""
    target = Path(path)
    try:
        if target.is_dir():
            raise SessionError(f"{target}: is a folder; a session is written to a file (e.g. {target / 'session.json'})")
        folder = target.parent
        while not folder.exists():  # save() creates missing folders: the nearest existing one must allow it
            folder = folder.parent
    except OSError as err:
        raise SessionError(f"{target}: cannot be used as a session file ({err.strerror or err})") from None
    if not folder.is_dir():
        raise SessionError(f"{target}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SessionError(f"{target}: cannot write in the folder {folder} (permission denied)")


def _write_atomically(target: Path, text: str) -> None:
    try:
        write_text_atomically(target, text)
    except OSError as err:
        raise SessionError(f"{target}: cannot write the session ({err.strerror or err})") from None


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
