"""Training a learned compressor from the app (the Train view, command palette ``train: learned compressor``).
A mixin of WorkbenchApp, kept apart so the app module holds the wiring.

The worker runs the training (``workbench.learned.train.train``, or the injected ``learned_train_fn``) and never
touches a widget: its event callback keeps every event (each step is a point of the loss curve) and posts them
in batches, :class:`LearnedEvents`, at most ~10 a second (a step held back is sent when its interval is over,
whether or not another comes) and at once for the rare events (start, evaluation, checkpoint, done). The handlers here, on the main thread, fold them into :class:`LearnedState`, which the Train
view reads. A cancel stops the training at its next step; its last checkpoint is kept and the next start of
the same plan resumes from it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from textual import work
from textual.message import Message
from textual.worker import WorkerState

TERMS = ("teacher_forcing", "generation", "contrastive")


def real_learned_train(data: dict, source: str, on_event, cancel: threading.Event, restart: bool) -> dict:
    """The training plan ``data`` (read from ``source``) trained by the engine; returns the run record."""
    from workbench.learned.config import parse_train_config
    from workbench.learned.train import train

    return train(parse_train_config(data, source), on_event=on_event, cancel=cancel, restart=restart)


def latest_checkpoint(run_name: str) -> int | None:
    """The step of the newest checkpoint of a run in the user data directory, or None: the Train view says before
    the start that the training resumes."""
    from workbench.learned import store

    found = store.checkpoints(store.run_dir(run_name))
    return found[-1][0] if found else None


def is_cancelled(error: BaseException) -> bool:
    from workbench.learned.store import Cancelled

    return isinstance(error, Cancelled)


@dataclass
class LearnedState:
    """What the Train view shows; written by the app's handlers on the main thread only."""

    status: str = "idle"  # idle | starting | training | cancelling | done | cancelled | failed
    plan: str = ""  # where the plan came from (a shipped name or a path)
    run: str = ""
    total_steps: int = 0
    step: int = 0
    resumed_from: int | None = None
    params: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)  # (step, loss, {term: value})
    evals: list = field(default_factory=list)  # (step, val_loss, val_ppl)
    lr: dict = field(default_factory=dict)
    samples_per_s: float | None = None
    eta_s: float | None = None
    checkpoint: tuple | None = None  # (step, path)
    record: dict | None = None
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    log: list = field(default_factory=list)  # (severity, text)

    @property
    def active(self) -> bool:
        return self.status in ("starting", "training", "cancelling")

    def apply(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "start":
            self.status = "training" if self.status == "starting" else self.status
            self.run, self.total_steps = str(event.get("run", "")), int(event.get("total_steps") or 0)
            self.resumed_from, self.params = event.get("resumed_from"), dict(event.get("params") or {})
            self.step = self.resumed_from or 0
            where = f"resumed from the checkpoint at step {self.resumed_from}" if self.resumed_from else "from scratch"
            self.log.append(("info", f"{self.run}: {self.total_steps} steps, {where}"))
        elif kind == "step":
            self.step, self.total_steps = int(event["step"]), int(event.get("total_steps") or self.total_steps)
            self.steps.append((self.step, event.get("loss"), dict(event.get("terms") or {})))
            self.lr = dict(event.get("lr") or self.lr)
            self.samples_per_s, self.eta_s = event.get("samples_per_s"), event.get("eta_s")
        elif kind == "eval":
            self.evals.append((int(event["step"]), event.get("val_loss"), event.get("val_ppl")))
            self.log.append(("info", f"step {event['step']}: validation loss {_num(event.get('val_loss'))}, "
                                     f"PPL {_num(event.get('val_ppl'), '.2f')}"
                                     + (f", answer F1 {_num(event['val_f1'], '.3f')}" if "val_f1" in event else "")))
        elif kind == "checkpoint":
            self.checkpoint = (int(event["step"]), str(event.get("path", "")))
            self.log.append(("info", f"checkpoint at step {event['step']}: {event.get('path', '')}"))
        elif kind == "done":
            self.record = event.get("record")
        elif kind == "error":  # a problem the training reports and goes on from (a bad batch, a skipped evaluation)
            self.log.append(("error", str(event.get("message") or event)))


def _num(value, fmt: str = ".4f") -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "—"


class LearnedEvents(Message):
    """Training events in the order they came, delivered on the main thread; ``run_id`` drops an older run's."""

    def __init__(self, events: list[dict], run_id: int):
        super().__init__()
        self.events, self.run_id = events, run_id


class LearnedTrainFlows:
    """Needs from the app: learned_version (a counter the Train view watches), progress_interval, clock, notify(), post_message(), push_screen(), switch_mode()."""

    learned_train_fn = None  # (plan data, source, on_event, cancel, restart) -> record; None: real_learned_train
    _learned: LearnedState | None = None
    _learned_cancel: threading.Event | None = None
    _learned_run_id = 0

    @property
    def learned(self) -> LearnedState:
        if self._learned is None:
            self._learned = LearnedState()
        return self._learned

    def action_train_learned(self) -> None:
        self.switch_mode("train")

    def start_learned(self, data: dict, source: str, restart: bool = False) -> bool:
        """Train the plan ``data`` in the worker. False (and a warning) when a training is already running."""
        if self.learned.active:
            self.notify("a training is already running (Escape on the Train view cancels it)", severity="warning")
            return False
        self._learned_run_id += 1
        self._learned_cancel = threading.Event()
        self._learned = LearnedState(status="starting", plan=source, run=str(data.get("name", "")), started_at=self.clock())
        self.learned_version += 1
        self._learned_worker(data, source, restart, self._learned_cancel, self._learned_run_id)
        return True

    def action_cancel_learned(self) -> None:
        if self._learned_cancel is not None and self.learned.active:
            self._learned_cancel.set()
            self.learned.status = "cancelling"
            self.learned_version += 1
            self.notify("the training stops at its next step; its last checkpoint is kept")

    @work(thread=True, exclusive=True, exit_on_error=False, group="learned")
    def _learned_worker(self, data: dict, source: str, restart: bool, cancel: threading.Event, run_id: int) -> dict:
        interval = getattr(self, "progress_interval", 0.1)
        pending: list[dict] = []
        state = {"last": 0.0, "timer": None}
        lock = threading.Lock()  # the training may report from threads of its own (a data loader)

        def flush() -> None:  # with the lock held
            if state["timer"] is not None:
                state["timer"].cancel()
                state["timer"] = None
            if pending:
                state["last"] = time.monotonic()
                self.post_message(LearnedEvents(pending[:], run_id))
                pending.clear()

        def flush_later() -> None:
            with lock:
                state["timer"] = None
                flush()

        def on_event(event: dict) -> None:
            with lock:
                pending.append(dict(event))
                wait = state["last"] + interval - time.monotonic()
                if event.get("kind") != "step" or wait <= 0:
                    flush()
                elif state["timer"] is None:  # a step held back is shown even when the next one is slow to come
                    state["timer"] = threading.Timer(wait, flush_later)
                    state["timer"].daemon = True
                    state["timer"].start()

        try:
            return (self.learned_train_fn or real_learned_train)(data, source, on_event, cancel, restart)
        finally:
            with lock:  # the steps since the last message: the curve ends where the training ended
                flush()

    def on_learned_events(self, message: LearnedEvents) -> None:
        if message.run_id != self._learned_run_id:
            return
        for event in message.events:
            try:
                self.learned.apply(event)
            except (KeyError, TypeError, ValueError) as err:  # a malformed event is told, never the app's end
                self.learned.log.append(("error", f"an event of the training could not be read ({err!r}): {event!r}"[:300]))
        self.learned_version += 1

    def learned_outcome(self, worker, state) -> None:
        """The worker ended (on the main thread, after its last LearnedEvents): say how, once."""
        s = self.learned
        cancel, self._learned_cancel = self._learned_cancel, None
        s.ended_at = self.clock()
        kept = f"; its checkpoint at step {s.checkpoint[0]} is kept and the next start resumes from it" if s.checkpoint else ""
        if state == WorkerState.SUCCESS:
            s.status, s.record = "done", worker.result or s.record
            folder = (s.record or {}).get("folder") or (s.checkpoint[1] if s.checkpoint else "")
            text = f"{s.run or 'the training'} finished: {s.step} steps" + (
                f", validation PPL {_num(s.evals[-1][2], '.2f')}" if s.evals else "") + (f", saved in {folder}" if folder else "")
            s.log.append(("info", text))
            self.notify(text, title="train: learned compressor done", timeout=10)
        elif state == WorkerState.CANCELLED or (cancel is not None and cancel.is_set() and is_cancelled(worker.error)):
            s.status = "cancelled"
            s.log.append(("warning", f"cancelled at step {s.step}{kept}"))
            self.notify(f"training cancelled at step {s.step}{kept}", title="train: learned compressor")
        else:
            s.status, s.error = "failed", str(worker.error) or type(worker.error).__name__
            s.log.append(("error", f"failed at step {s.step}: {s.error}"))
            self.notify(f"training failed: {s.error}", title="train: learned compressor", severity="error", timeout=10)
        self.learned_version += 1


def plan_files(folder: Path | None = None) -> list[Path]:
    """The shipped training plans (``presets/train/*.json``), ablation grids left out (they run from the CLI)."""
    from workbench import jsonio
    from workbench.learned.grid import is_grid, train_preset_dir

    folder = folder or train_preset_dir()
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            if not is_grid(jsonio.read_json(path)):
                found.append(path)
        except jsonio.InputFileError:
            found.append(path)  # listed: choosing it says what is wrong with it
    return found
