"""Training jobs from the app (command palette ``train: kvzap scorer``, ``train: point classifier``), each as a job
with progress. A mixin of WorkbenchApp, kept apart so the app module holds the wiring.

A job's worker runs the training (``workbench.kvzap.train.train`` or ``workbench.points.train.train``) for the Setup
view's model and never touches a widget: its progress callback posts :class:`TrainProgress` messages (at most ~10 a
second, plus every change of stage), and the handlers here, on the main thread, keep :attr:`train_status` and tell
the user by notifications. One job at a time. A kill or a cancel keeps the work done so far (scored texts, hidden
states); the next training of the same kind resumes from it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from textual import work
from textual.message import Message
from textual.worker import WorkerState


class TrainProgress(Message):
    def __init__(self, stage: str, done: int, total: int, text: str):
        super().__init__()
        self.stage, self.done, self.total, self.text = stage, done, total, text


def _train_kvzap(model: str, on_progress, cancel):
    from workbench.kvzap.train import TrainSettings, train

    return train(TrainSettings(model=model), on_progress=on_progress, cancel=cancel)


def _train_points(model: str, on_progress, cancel):
    from workbench.points.train import TrainSettings, train

    return train(TrainSettings(model=model), on_progress=on_progress, cancel=cancel)


def _kvzap_outcome(record: dict) -> str:
    fit = (record.get("held_out") or {}).get("mean_r2")
    return (f"KVzap scorer saved to {record.get('folder')} in {_minutes(record):.1f} min"
            + (f", held-out R² {fit:.2f} (mean over layers)" if isinstance(fit, (int, float)) else ""))


def _points_outcome(record: dict) -> str:
    test = (record.get("metrics") or {}).get("test") or {}
    f1 = {who: (test.get(who) or {}).get("f1") for who in ("classifier", "never_a_point", "always_a_point")}
    scores = ""
    if all(isinstance(v, (int, float)) for v in f1.values()):
        scores = (f", held-out F1 {f1['classifier']:.3f} (never a point {f1['never_a_point']:.3f}, every token "
                  f"{f1['always_a_point']:.3f})")
    return f"point classifier saved to {record.get('folder')} in {_minutes(record):.1f} min{scores}"


def _minutes(record: dict) -> float:
    return (record.get("seconds") or {}).get("total", 0) / 60


def _is_cancelled(error: BaseException | None) -> bool:
    from workbench.kvzap.store import Cancelled as KVzapCancelled
    from workbench.points.store import Cancelled as PointsCancelled

    return isinstance(error, (KVzapCancelled, PointsCancelled))


@dataclass(frozen=True)
class TrainJob:
    """One kind of training the palette starts: what it is called, how it runs, how its outcome reads."""

    title: str  # the palette command, and the notifications' title
    what: str  # "a KVzap scorer"
    train: Callable  # (model spec, on_progress, cancel) -> record
    outcome: Callable[[dict], str]  # the record -> one line
    kept: str  # what a cancel keeps, for the next run of the same kind


JOBS = {
    "kvzap": TrainJob("train: kvzap scorer", "a KVzap scorer", _train_kvzap, _kvzap_outcome, "scored texts are kept"),
    "points": TrainJob("train: point classifier", "a compression-point classifier (step-boundary labels)", _train_points,
                       _points_outcome, "the texts' hidden states are kept"),
}


class TrainFlows:
    """Needs from the app: plan, progress_interval, notify(), post_message()."""

    train_fn = None  # (model spec, on_progress, cancel) -> record; None: the job's real training (tests inject a fake)
    train_status: str | None = None  # the last progress line of the training job, or its outcome
    _train_cancel: threading.Event | None = None
    _train_job: TrainJob | None = None

    def training_active(self) -> bool:
        return self._train_cancel is not None

    def action_train_kvzap(self) -> None:
        self._start_training(JOBS["kvzap"])

    def action_train_points(self) -> None:
        self._start_training(JOBS["points"])

    def _start_training(self, job: TrainJob) -> None:
        if self.training_active():
            self.notify(f"{self._train_job.what} is already being trained (command palette: train: cancel)",
                        severity="warning")
            return
        model = self.plan.model if self.plan is not None else "smollm2-135m"
        self._train_cancel, self._train_job = threading.Event(), job
        self.train_status = f"training {job.what} for {model}…"
        self.notify(f"{self.train_status} (minutes on a CPU; the app stays usable)", title=job.title)
        self._train_worker(job, model, self._train_cancel)

    def action_cancel_training(self) -> None:
        if self._train_cancel is not None:
            self._train_cancel.set()
            self.notify(f"the training stops after its current text or epoch; {self._train_job.kept}")

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def _train_worker(self, job: TrainJob, model: str, cancel: threading.Event) -> dict:
        last = {"at": 0.0, "stage": None}
        interval = getattr(self, "progress_interval", 0.1)

        def progress(stage, done, total, text):
            now = time.monotonic()
            if stage != last["stage"] or done == total or now - last["at"] >= interval:
                last.update(at=now, stage=stage)
                self.post_message(TrainProgress(stage, done, total, text))

        return (self.train_fn or job.train)(model, progress, cancel)

    def on_train_progress(self, message: TrainProgress) -> None:
        stage_changed = not (self.train_status or "").startswith(f"[{message.stage}")
        self.train_status = f"[{message.stage} {message.done}/{message.total}] {message.text}"
        if stage_changed and message.stage not in ("done",) and self._train_job is not None:
            self.notify(message.text, title=self._train_job.title)

    def train_outcome(self, worker, state) -> None:
        job = self._train_job or JOBS["kvzap"]
        self._train_cancel, self._train_job = None, None
        if state == WorkerState.SUCCESS:
            self.train_status = job.outcome(worker.result or {})
            self.notify(self.train_status, title=f"{job.title} done", timeout=10)
        elif state == WorkerState.ERROR and not _is_cancelled(worker.error):
            self.train_status = f"training failed: {worker.error}"
            self.notify(self.train_status, title=job.title, severity="error", timeout=10)
        else:
            self.train_status = f"training cancelled; {job.kept} for the next one"
            self.notify(self.train_status, title=job.title)
