"""Running an ablation grid: one training per GPU at a time, the rest queued, each run's lines and outcome collected.

Every run is its own process, ``python -m workbench train CONFIG.json``: a GPU's memory and a crash stay with
one run, and a failed run does not stop the others. Where it runs:

- one process per GPU (``CUDA_VISIBLE_DEVICES=i``), as many at once as there are GPUs;
- through Ray when asked (``ray=True`` or an address): one actor per GPU of the cluster, each starting the same
  command on its node with the GPU Ray gave it (the run's plan travels as JSON, its record comes back);
- on a machine without a GPU one run at a time, or ``cpu_workers`` at once (each with its share of the cores).

A run is done when its process exits 0 and its run record (``<data dir>/learned/<run>/record.json``) was
written by that run; otherwise it failed, with the last line it printed as the reason. Cancelling sends each
running process SIGINT (the training stops at its next step and keeps its last checkpoint: the next run of
the grid resumes it). Imports neither torch nor Ray at import time.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.learned.grid import AblationRun

TAIL_LINES = 20  # lines of a run's output kept for its outcome
STOP_GRACE = 30.0  # seconds a cancelled run has to reach its step boundary and save, before it is killed


def record_path(run_name: str) -> Path:
    """Where ``workbench train`` leaves a run's record (the learned family's store layout)."""
    from workbench.models.spec import data_root

    return data_root() / "learned" / run_name / "record.json"


def train_command() -> list[str]:
    """The command a run is, before its plan's path: this Python's ``workbench train``."""
    return [sys.executable, "-m", "workbench", "train"]


@dataclass
class Outcome:
    run: str
    slot: str  # where it ran: cuda:0, cpu0, ray:1 …
    status: str  # done | failed | cancelled
    seconds: float
    returncode: int | None = None
    error: str | None = None
    record: dict | None = None
    lines: list[str] = field(default_factory=list)  # the last TAIL_LINES lines it printed


class RunProcess:
    """One run's process: started at once, its output read by a thread, polled without blocking.

    Used by the local launcher and inside a Ray actor alike."""

    def __init__(self, run_name: str, config: dict, workdir: str, command: list[str] | None = None, env: dict | None = None):
        """``command``: the argv the plan's path is appended to (default :func:`train_command`)."""
        from workbench.atomic_write import write_text_atomically

        self.run_name = run_name
        folder = Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / f"{run_name}.json"
        write_text_atomically(config_path, json.dumps(config, indent=2) + "\n")
        self.started_at = time.time()
        self.started = time.monotonic()
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.tail: deque = deque(maxlen=TAIL_LINES)
        self.stopping = False
        self.proc = subprocess.Popen([*(command or train_command()), str(config_path)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, bufsize=1,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.proc.stdout.close()

    def poll(self) -> tuple[list[str], dict | None]:
        """(lines printed since the last poll, the result once the process has exited and its output is read)."""
        done = self.proc.poll() is not None and not self.reader.is_alive()
        new = []
        while True:
            try:
                new.append(self.lines.get_nowait())
            except queue.Empty:
                break
        self.tail.extend(new)
        return new, (self._result() if done else None)

    def _result(self) -> dict:
        rc = self.proc.returncode
        record, path = None, record_path(self.run_name)
        try:
            if path.stat().st_mtime >= self.started_at - 1:  # a record of an earlier run of this name is no outcome
                record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        last = next((line for line in reversed(self.tail) if line.strip()), "")
        if rc == 0 and record is not None:  # (a run that finished as it was being stopped is done all the same)
            status, error = "done", None
        elif self.stopping:
            status, error = "cancelled", None
        elif rc == 0:
            status, error = "failed", f"exited 0 but wrote no run record at {path}"
        else:
            status, error = "failed", f"exit code {rc}" + (f": {last}" if last else "")
        return {"status": status, "returncode": rc, "error": error, "record": record,
                "seconds": time.monotonic() - self.started, "lines": list(self.tail)}

    def stop(self) -> None:
        """SIGINT: the training stops at its next step boundary and keeps its checkpoint; killed after STOP_GRACE."""
        if self.proc.poll() is not None:
            return
        self.stopping = True
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            return
        threading.Thread(target=self._kill_after, daemon=True).start()

    def _kill_after(self) -> None:
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


class LocalLauncher:
    """A subprocess per run on this machine; a slot 'cuda:i' shows the run GPU i alone, a CPU slot no GPU."""

    def __init__(self, workdir: str, command: list[str] | None = None, threads_per_cpu_run: int | None = None):
        self.workdir, self.command, self.threads = workdir, command, threads_per_cpu_run

    def start(self, run: AblationRun, slot: str) -> RunProcess:
        if slot.startswith("cuda:"):
            env = {"CUDA_VISIBLE_DEVICES": slot.split(":", 1)[1]}
        else:  # several CPU runs share the cores instead of each starting a thread per core
            env = {"CUDA_VISIBLE_DEVICES": ""} | ({"OMP_NUM_THREADS": str(self.threads)} if self.threads else {})
        return RunProcess(run.name, run.config, self.workdir, self.command, env)


def gpu_slots() -> list[str]:
    """'cuda:i' for each GPU this process may use (CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [f"cuda:{d.strip()}" for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [f"cuda:{i}" for i, line in enumerate(line for line in out.splitlines() if line.startswith("GPU "))]


def local_slots(gpus: int | None = None, cpu_workers: int | None = None) -> list[str]:
    """The slots runs go to: the GPUs present (or the first ``gpus``), else ``cpu_workers`` CPU slots (default 1)."""
    found = [] if gpus == 0 else gpu_slots()
    if found:
        return found[:gpus] if gpus else found
    return [f"cpu{i}" for i in range(max(cpu_workers or 1, 1))]


def schedule(runs: list[AblationRun], slots: list[str], launcher, on_line: Callable[[str, str], None] | None = None,
             on_start: Callable[[AblationRun, str], None] | None = None, on_outcome: Callable[[AblationRun, Outcome], None] | None = None, cancel: threading.Event | None = None,
             poll_seconds: float = 0.2) -> list[Outcome]:
    """Run ``runs`` in order, at most one per slot at a time; returns their outcomes in the grid's order.

    ``launcher.start(run, slot)`` gives an object with ``poll() -> (new lines, result | None)`` and ``stop()``.
    A launcher that fails to start a run fails that run alone. After ``cancel`` is set, no run is started and
    the running ones are stopped; the runs never started are 'cancelled' too."""
    waiting, free = deque(runs), list(slots)
    running: dict[str, tuple[AblationRun, object, float]] = {}
    outcomes: dict[str, Outcome] = {}
    stopped = False

    def settle(run: AblationRun, slot: str, result: dict) -> None:
        outcome = Outcome(run.name, slot, result["status"], result.get("seconds", 0.0), result.get("returncode"),
                          result.get("error"), result.get("record"), result.get("lines", []))
        outcomes[run.name] = outcome
        if on_outcome:
            on_outcome(run, outcome)

    while waiting or running:
        if cancel is not None and cancel.is_set() and not stopped:
            stopped = True
            for run, handle, _ in running.values():
                handle.stop()
            while waiting:
                settle(waiting.popleft(), "-", {"status": "cancelled", "error": "not started"})
        while waiting and free and not stopped:
            run, slot = waiting.popleft(), free.pop(0)
            try:
                running[slot] = (run, launcher.start(run, slot), time.monotonic())
                if on_start:
                    on_start(run, slot)
            except Exception as err:  # noqa: BLE001 (a run that cannot start fails alone)
                settle(run, slot, {"status": "failed", "error": f"could not start: {err}"})
                free.append(slot)
        for slot in list(running):
            run, handle, began = running[slot]
            try:
                lines, result = handle.poll()
            except Exception as err:  # noqa: BLE001 (a lost Ray actor, say)
                lines, result = [], {"status": "failed", "error": f"lost its worker: {err}",
                                     "seconds": time.monotonic() - began}
            for line in lines:
                if on_line:
                    on_line(run.name, line)
            if result is not None:
                del running[slot]
                free.append(slot)
                settle(run, slot, result)
        if running:
            time.sleep(poll_seconds)
    return [outcomes[r.name] for r in runs]


def final_figures(record: dict | None) -> dict:
    """The figures the summary shows from a run record: its last training loss and its last evaluation."""
    if not record:
        return {}
    curves = record.get("curves") or {}
    steps = [e for e in curves.get("train", []) if isinstance(e, dict)] if isinstance(curves, dict) else []
    evals = [e for e in curves.get("val", []) if isinstance(e, dict)] if isinstance(curves, dict) else []
    out = {}
    if steps and isinstance(steps[-1].get("loss"), (int, float)):
        out["loss"] = steps[-1]["loss"]
    if evals:
        out.update({k: evals[-1][k] for k in ("val_loss", "val_ppl") if isinstance(evals[-1].get(k), (int, float))})
    return out


def summary_table(runs: list[AblationRun], outcomes: list[Outcome]) -> str:
    """One line per run: what it trained, where, how it ended, its final figures (or why it failed)."""
    header = ("run", "arch", "rate", "M", "slot", "status", "time", "loss", "val PPL", "note")
    rows = []
    for run, out in zip(runs, outcomes):
        figs = final_figures(out.record)
        rows.append((run.name, run.architecture, f"{run.rate:.4g}", "" if run.soft_tokens is None else str(run.soft_tokens),
                     out.slot, out.status, f"{out.seconds / 60:.1f}m" if out.seconds else "-",
                     f"{figs['loss']:.3f}" if "loss" in figs else "-", f"{figs['val_ppl']:.2f}" if "val_ppl" in figs else "-",
                     (out.error or "")[:80]))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "failed", "cancelled")}
    lines.append(f"{counts['done']} of {len(outcomes)} runs done, {counts['failed']} failed, {counts['cancelled']} cancelled")
    return "\n".join(lines)
