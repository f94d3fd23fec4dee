"""The run flows of the app: start (or resume) a run in the worker, its events, cancel, its outcome.
A mixin of WorkbenchApp, kept apart so the app module holds the wiring.

The worker never touches a widget: its event callback posts :class:`RunEvent` messages (thread-safe),
at most ~10 progress messages a second, and the handlers here, on the main thread, update
:attr:`cells` and :attr:`run_state` and bump the counters the screens watch.
"""

from __future__ import annotations

import gc
import os
import threading
import time

from textual import work
from textual.message import Message
from textual.worker import WorkerState

from workbench import figures, tables
from screens.run_state import RunState


class RunEvent(Message):
    """A runner event, delivered on the main thread. ``run_id`` drops stragglers of an older run."""

    def __init__(self, event, run_id: int):
        super().__init__()
        self.event, self.run_id = event, run_id


def _real_run(target, on_event, cancel, out=None):
    from workbench import runner  # imports no torch itself; torch arrives with the model

    return runner.run(target, on_event, cancel, out=out)


class RunFlows:
    """Needs from the app: plan, plan_error, plan_edited, model_problem, model_checking, run_after_model_check, session, cells, run_state, run_fn, clock,
    progress_interval, default_path(), show_session(), commit_plan(), switch_mode(), push_screen(), notify()."""

    # -- starting ----------------------------------------------------------------------------------

    def resumable(self):
        """The session ctrl+r would resume: the one shown, when cells are left to run and Setup still holds
        its plan (after an edit, ctrl+r runs the edited plan)."""
        session = self.session
        if session is None or self.run_state.active or self.plan is None:
            return None
        counts = figures.cell_counts(session.cells.values())
        if counts.left == 0 and not (counts.failed and session.status == "failed"):  # a failed run re-runs its errors
            return None
        # Where it runs (Setup's Workers fields) is no part of what it measures: a change there still resumes.
        return session if session.plan.result_dict() == self.plan.result_dict() else None

    def action_start_run(self) -> None:
        if self.run_state.active:
            self.notify("a run is already in progress (Escape on the Progress view cancels it)", severity="warning")
            return
        if self.plan is None:
            self.notify(f"the plan is not valid yet: {self.plan_error}", severity="error", timeout=8)
            self.switch_mode("setup")
            return
        if self.model_checking:  # Setup is still finding out whether the model loads here: run once it knows
            self.run_after_model_check = True
            self.notify("checking whether the model can be loaded here; the run starts once it is known")
            return
        if self.model_problem:  # the whole message is on Setup, under the model field: the toast only points there
            self.notify("the model cannot be loaded here: Setup says why", severity="error", timeout=4)
            self.switch_mode("setup")
            return
        session = self.resumable()
        if session is None:
            self.start_fresh()
            return
        from screens.data import short_path
        from screens.dialogs import ChoiceModal

        left = figures.cell_counts(session.cells.values())
        self.push_screen(ChoiceModal(f"{short_path(session.path)} was {session.status}: {tables.counts_text(left)}. "
                                     "Resume it (finished cells are kept), or start a fresh session file?",
                                     [("resume", "Resume", "r"), ("fresh", "Start fresh", "f")]),
                         lambda answer: self.start_run(session) if answer == "resume"
                         else self.start_fresh() if answer == "fresh" else None)

    def model_checked(self) -> None:
        """Setup's model check answered: a ctrl+r pressed while it ran goes ahead now (or is refused)."""
        self.model_checking = False
        if self.run_after_model_check:
            self.run_after_model_check = False
            self.action_start_run()

    def start_fresh(self) -> None:
        from workbench.session import Session

        self.start_run(Session(self.plan, self.default_path(self.plan)))

    def action_resume_run(self) -> None:
        session = self.resumable()
        if session is None:
            why = ("a run is in progress" if self.run_state.active else "no session is open" if self.session is None
                   else "Setup's plan differs from the session's" if self.plan is not None and self.session.plan.result_dict() != self.plan.result_dict()
                   else f"nothing is left to run ({tables.cells_text(self.session.cells.values())})")
            self.notify(f"nothing to resume: {why}", severity="warning")
            return
        session.plan.execution = self.plan.execution  # resumed where Setup now says (this process, or Ray workers)
        self.start_run(session)

    def start_run(self, session) -> None:
        """Run (or resume) ``session`` in the worker; it is saved to its path after every sample.

        The garbage collector's objects are frozen when the run starts, once the model is loaded and after
        each cell: a full collection walks every live object (widgets, torch and transformers modules, the
        model) and held the GIL for 60–230 ms at a time, the longest stalls of the UI during a run. Frozen
        objects are never walked again; they live as long as the app anyway (cyclic garbage pending at a
        freeze is kept too: a few objects, not worth a stall)."""
        from screens.data import short_path

        if session.path is None:
            session.path = self.default_path(session.plan)
        self.commit_plan(session.plan)
        self.show_session(session)
        self._run_id += 1
        self._cancel = threading.Event()
        state = self.run_state = RunState.started(session.cells.values(), self.clock())
        resumed = state.done_at_start
        state.log.append(("info", f"session {short_path(session.path)}" + (f" (resumed: {resumed} samples kept)" if resumed else "")))
        self.tick += 1
        self.switch_mode("run")
        gc.freeze()
        self._run_worker(session, self._cancel, self._run_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def _run_worker(self, session, cancel: threading.Event, run_id: int):
        _lower_priority_of_this_thread()
        return (self.run_fn or _real_run)(session, self._event_poster(run_id), cancel, out=str(session.path))

    def _event_poster(self, run_id: int):
        """The runner's on_event (worker thread): post messages, dropping progress beyond ~10 a second."""
        thinned = ("progress", "api", "worker", "live")
        last: dict = {}  # what is thinned (a kind; a worker's reports: per worker) -> when it last went out

        def on_event(event) -> None:
            # A worker's comings and goings always arrive, and so does the unit it starts measuring (right after
            # it reported the last one: thinning that would leave the line on the unit before); its "measured"
            # reports are progress, thinned like it, each worker's apart.
            if event.kind in thinned and event.data.get("state") not in ("ready", "lost", "starting", "measuring"):
                key = (event.kind, event.data.get("worker")) if event.kind == "worker" else event.kind
                now = time.monotonic()
                if now - last.get(key, 0.0) < self.progress_interval:
                    return
                last[key] = now
            self.post_message(RunEvent(event, run_id))

        return on_event

    # -- events --------------------------------------------------------------------------------------

    def on_run_event(self, message: RunEvent) -> None:
        if message.run_id != self._run_id:
            return
        ev, state, now = message.event, self.run_state, self.clock()
        state.delivered[ev.kind] += 1
        if ev.kind == "progress":
            state.samples(ev.data.get("done", state.done), ev.data.get("total", state.total), now)
            state.cell, state.message = ev.data.get("cell") or state.cell, ev.message
        elif ev.kind == "cell-started":
            # A method announces all its rates' cells at once (one sample serves them all): show the
            # first until it finishes, not the last announced.
            current = self.cells.get(state.cell or "")
            if current is None or current["status"] not in ("pending", "running"):
                state.cell = ev.data.get("cell", ev.message)
        elif ev.kind == "cell-finished":
            gc.freeze()  # what the worker imported and built for this cell (kvpress, caches) stays: never walk it
            cell = ev.data["cell"]
            self.cells[cell["key"]] = cell
            self.results_version += 1
            if cell["status"] in ("error", "unavailable"):
                severity = "error" if cell["status"] == "error" else "warning"
                state.log.append((severity, f"{cell['method']} @ {tables.rate_text(cell)}: {cell['status']}: {tables.why(cell) or ''}"))
        elif ev.kind in ("model-loading", "model-loaded"):
            state.model = ev.message
            state.log.append(("info", ev.message))
            if ev.kind == "model-loaded":
                state.loaded_at = now
                gc.freeze()
                self.notify(ev.message, title="model loaded")
        elif ev.kind == "api":
            state.api = ev.data
        elif ev.kind == "live":  # a decoding cell's KV budget so far: redrawn by the Progress view's timer
            state.live[ev.data.get("method", ev.message)] = ev.data
            state.live_version += 1
            return  # no label changes: the plot timer picks it up
        elif ev.kind == "worker":
            state.workers[ev.data["worker"]] = ev.data
            if ev.data["state"] in ("ready", "lost", "starting"):
                state.log.append(("warning" if ev.data["state"] == "lost" else "info", ev.message))
        elif ev.kind == "run-finished":
            state.end(ev.data.get("status", "finished"), now)
            state.api = ev.data.get("api") or state.api
            stopped = ev.data.get("stopped")
            if stopped:  # the API refused the key, or the budget is reached: say why the run stopped
                state.log.append(("error", f"run stopped: {stopped['reason']}"))
                self.notify(stopped["reason"], title="run stopped", severity="error", timeout=15)
            else:
                state.log.append(("info", f"run {ev.message}"))
        else:  # run-started, log
            state.log.append(("info", ev.message))
        self.tick += 1

    def action_cancel_run(self) -> None:
        if not self.run_state.active:
            self.notify("no run in progress")
            return
        self._cancel.set()
        self.run_state.status = "cancelling"
        self.tick += 1
        self.notify("cancelling after the current sample; finished cells are kept")

    def run_outcome(self, worker, outcome: WorkerState) -> None:
        """The run worker ended: show its session as saved, or the error in a modal and on Progress."""
        from workbench.session import Session, scrub
        from screens.data import short_path

        state, now = self.run_state, self.clock()
        path = short_path(self.session.path) if self.session and self.session.path else None
        if outcome == WorkerState.SUCCESS and isinstance(worker.result, Session):
            self.show_session(worker.result)
            state.end(worker.result.status, state.ended_at if state.ended_at is not None else now)
            state.samples(*figures.sample_counts(worker.result.cells.values()), now)
            counts = tables.cells_text(worker.result.cells.values())
            if state.status == "cancelled":
                self.notify(f"run cancelled: {counts}; kept in {path}", severity="warning", timeout=6)
            else:
                self.notify(f"run {state.status}: {counts}; saved to {path}",
                            severity="warning" if figures.cell_counts(worker.result.cells.values()).failed else "information",
                            timeout=5)
        else:
            err = worker.error
            message = scrub(f"{type(err).__name__}: {err}") if err else "the run stopped"
            state.end("failed", now)
            state.failure = message
            if state.loaded_at is None:
                state.model = f"✗ {self.session.plan.model} could not be loaded" if self.session else "✗ no model loaded"
            state.log.append(("error", message))
            if self.session is not None:
                self.show_session(self.session)  # the worker is done: its session is safe to read
                state.samples(*figures.sample_counts(self.session.cells.values()), now)
            from screens.dialogs import ErrorModal

            self.push_screen(ErrorModal("The run failed", message, path))
        self.tick += 1


def _lower_priority_of_this_thread(niceness: int = 5) -> None:
    """Let the UI thread win the CPU when both want it (Linux schedules each thread with its own nice
    value). On a CPU-only machine torch's compute threads fill every core; keys then waited up to ~120 ms
    for a core. torch creates those threads from this one, after this call, so they inherit the value;
    with the UI idle the run still gets every core, and the headless mode is not affected."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: the run simply keeps its priority
        pass
