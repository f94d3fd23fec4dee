"""Training a KVzap scorer from the app (command palette ``train: kvzap scorer``), as a job with progress.
A mixin of WorkbenchApp, kept apart so the app module holds the wiring.

The worker runs ``workbench.kvzap.train.train`` for the Setup view's model and never touches a widget: its
progress callback posts :class:`TrainProgress` messages (at most ~10 a second, plus every change of stage),
and the handlers here, on the main thread, keep :attr:`train_status` and tell the user by notifications. A kill
or a cancel keeps the texts scored so far; the next training resumes from them.
"""

from __future__ import annotations

import threading
import time

from textual import work
from textual.message import Message
from textual.worker import WorkerState

from workbench.kvzap.store import Cancelled


class TrainProgress(Message):
    def __init__(self, stage: str, done: int, total: int, text: str):
        super().__init__()
        self.stage, self.done, self.total, self.text = stage, done, total, text


def _real_train(model: str, on_progress, cancel):
    from workbench.kvzap.train import TrainSettings, train

    return train(TrainSettings(model=model), on_progress=on_progress, cancel=cancel)


class TrainFlows:
    """Needs from the app: plan, progress_interval, notify(), post_message()."""

    train_fn = None  # (model spec, on_progress, cancel) -> record; None: the real training (tests inject a fake)
    train_status: str | None = None  # the last progress line of the training job, or its outcome
    _train_cancel: threading.Event | None = None

    def training_active(self) -> bool:
        return self._train_cancel is not None

    def action_train_kvzap(self) -> None:
        if self.training_active():
            self.notify("a KVzap scorer is already being trained (command palette: train: cancel)", severity="warning")
            return
        model = self.plan.model if self.plan is not None else "smollm2-135m"
        self._train_cancel = threading.Event()
        self.train_status = f"training a KVzap scorer for {model}…"
        self.notify(f"{self.train_status} (minutes on a CPU; the app stays usable)", title="train: kvzap scorer")
        self._train_worker(model, self._train_cancel)

    def action_cancel_training(self) -> None:
        if self._train_cancel is not None:
            self._train_cancel.set()
            self.notify("the training stops after its current text or epoch; scored texts are kept")

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def _train_worker(self, model: str, cancel: threading.Event) -> dict:
        last = {"at": 0.0, "stage": None}
        interval = getattr(self, "progress_interval", 0.1)

        def progress(stage, done, total, text):
            now = time.monotonic()
            if stage != last["stage"] or done == total or now - last["at"] >= interval:
                last.update(at=now, stage=stage)
                self.post_message(TrainProgress(stage, done, total, text))

        return (self.train_fn or _real_train)(model, progress, cancel)

    def on_train_progress(self, message: TrainProgress) -> None:
        stage_changed = not (self.train_status or "").startswith(f"[{message.stage}")
        self.train_status = f"[{message.stage} {message.done}/{message.total}] {message.text}"
        if stage_changed and message.stage not in ("done",):
            self.notify(message.text, title="train: kvzap scorer")

    def train_outcome(self, worker, state) -> None:
        self._train_cancel = None
        if state == WorkerState.SUCCESS:
            record = worker.result or {}
            fit = (record.get("held_out") or {}).get("mean_r2")
            minutes = (record.get("seconds") or {}).get("total", 0) / 60
            self.train_status = (f"KVzap scorer saved to {record.get('folder')} in {minutes:.1f} min"
                                 + (f", held-out R² {fit:.2f} (mean over layers)" if isinstance(fit, (int, float)) else ""))
            self.notify(self.train_status, title="train: kvzap scorer done", timeout=10)
        elif state == WorkerState.ERROR and not isinstance(worker.error, Cancelled):
            self.train_status = f"training failed: {worker.error}"
            self.notify(self.train_status, title="train: kvzap scorer", severity="error", timeout=10)
        else:
            self.train_status = "training cancelled; scored texts are kept for the next one"
            self.notify(self.train_status, title="train: kvzap scorer")
