"""Session ⇄ JSON: one document holding the resolved plan and one record per cell.

Writes are atomic (temporary file in the same folder, fsync, rename) and incremental: the runner
saves after every sample, so a killed run loses at most the sample in flight and a rerun resumes
where it stopped. Error messages are scrubbed of secrets (values of *TOKEN*/*KEY*/*SECRET*
environment variables) before they are stored.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from workbench import __version__, metrics
from workbench.plan import BASELINE_LABEL, CellSpec, Plan, PlanError, parse_plan
from workbench.secrets import scrub  # noqa: F401 - re-exported: the session's writers scrub through it

SCHEMA_VERSION = 1
CELL_STATUSES = ("pending", "running", "done", "error", "unavailable", "cancelled")


class SessionError(ValueError):
    """A session file that cannot be used; the message names the file and the field."""


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
        """Write atomically: a reader (or a crash) sees the old file or the new one, never half of one."""
        target = Path(path) if path else self.path
        if target is None:
            raise SessionError("no path to save the session to")
        self.path = target
        self.updated_at = now()
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False, default=_json_default)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Session":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SessionError(f"{path}: no such session file") from None
        except json.JSONDecodeError as err:
            raise SessionError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        return cls.from_dict(data, str(path), path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "session", path: Path | None = None) -> "Session":
        data = migrate(data, source)
        try:
            plan = parse_plan(data["plan"], source=source)
        except PlanError as err:
            raise SessionError(f"{source}: field 'plan': {err}") from None
        session = cls(plan, path, data.get("environment") or {})
        session.created_at = _field(data, "created_at", str, source)
        session.updated_at = data.get("updated_at", session.created_at)
        session.workbench_version = _field(data, "workbench_version", str, source)
        session.status = data.get("status", "pending")
        cells = _field(data, "cells", list, source)
        for i, cell in enumerate(cells):
            where = f"cells[{i}]"
            if not isinstance(cell, dict):
                raise SessionError(f"{source}: field '{where}': expected an object")
            for name, kind in (("key", str), ("status", str), ("samples", list)):
                if not isinstance(cell.get(name), kind):
                    raise SessionError(f"{source}: field '{where}.{name}': expected {kind.__name__}")
            if cell["status"] not in CELL_STATUSES:
                raise SessionError(f"{source}: field '{where}.status': unknown status {cell['status']!r}")
            if cell["key"] not in session.cells:
                raise SessionError(f"{source}: field '{where}.key': {cell['key']!r} is not a cell of the session's plan")
            for j, s in enumerate(cell["samples"]):
                scored = isinstance(s, dict) and isinstance(s.get("n_tokens"), int) and (
                    s["n_tokens"] == 0 or isinstance(s.get("nll_sum"), (int, float)))
                task = isinstance(s, dict) and (s.get("score") is None or isinstance(s.get("score"), (int, float)))
                if not (isinstance(s, dict) and isinstance(s.get("sample_id"), str) and scored and task):
                    raise SessionError(f"{source}: field '{where}.samples[{j}]': needs sample_id, n_tokens with nll_sum, or a score")
            session.cells[cell["key"]].update(cell)
        return session


def _field(data: dict, name: str, kind: type, source: str):
    if not isinstance(data.get(name), kind):
        raise SessionError(f"{source}: field '{name}': expected {kind.__name__}")
    return data[name]


def migrate(data: Any, source: str) -> dict:
    """Bring an older session document to the current schema (there is one schema so far)."""
    if not isinstance(data, dict):
        raise SessionError(f"{source}: a session is a JSON object")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise SessionError(f"{source}: field 'schema_version': missing or not an integer")
    if version > SCHEMA_VERSION:
        raise SessionError(f"{source}: field 'schema_version': {version} is newer than this workbench understands "
                           f"({SCHEMA_VERSION}); upgrade the workbench")
    if "plan" not in data:
        raise SessionError(f"{source}: field 'plan': missing")
    return data


def _json_default(value):
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
