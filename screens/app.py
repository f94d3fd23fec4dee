"""The Textual app: screens as modes, bindings and command palette, the run worker, sessions.

One worker thread drives the same ``runner.run(...)`` as the headless mode; the runner is injected
(``WorkbenchApp(run_fn=...)``) so tests drive the app against a fast fake. The worker never touches a
widget: its event callback posts :class:`RunEvent` messages (thread-safe), at most ~10 progress
messages a second, and handlers on the main thread update :attr:`WorkbenchApp.cells` and bump
counters the screens watch. Importing this module loads textual, never torch: the screens that
plot (plotext) are imported when first shown, torch when the runner loads a model.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from workbench.plan import Plan, PlanError, load_preset
from screens.data import short_path
from screens.session_flows import SessionFlows
from workbench.session import Session, SessionError, scrub

RunFn = Callable[..., Session]  # run(plan_or_session, on_event, cancel, out=None) -> Session


def _real_run(target, on_event, cancel, out=None) -> Session:
    from workbench import runner  # imports no torch itself; torch arrives with the model

    return runner.run(target, on_event, cancel, out=out)


class RunEvent(Message):
    """A runner event, delivered on the main thread. ``run_id`` drops stragglers of an older run."""

    def __init__(self, event, run_id: int):
        super().__init__()
        self.event, self.run_id = event, run_id


class RunState:
    """What the run screen shows; written by the app's handlers on the main thread only."""

    def __init__(self):
        self.status = "idle"  # idle | running | cancelling | finished | cancelled | failed
        self.done = self.total = 0  # samples (over all cells)
        self.elapsed = 0.0  # seconds, as the runner measures them
        self.cell: str | None = None  # key of the cell being computed
        self.message = ""
        self.model = ""
        self.log: deque[tuple[str, str]] = deque(maxlen=200)  # (severity, text)
        self.delivered: Counter[str] = Counter()  # run events handled, by kind (the throttle's effect)

    @property
    def active(self) -> bool:
        return self.status in ("running", "cancelling")

    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first sample)."""
        if not self.done or self.done >= self.total:
            return None
        return self.elapsed / self.done * (self.total - self.done)


def _mode(module: str, cls: str):
    def make() -> Screen:
        import importlib

        return getattr(importlib.import_module(f"screens.{module}"), cls)()

    return make


class WorkbenchApp(SessionFlows, App):
    TITLE = "compression workbench"
    MODES = {"setup": _mode("setup", "SetupScreen"), "run": _mode("run", "RunScreen"),
             "results": _mode("results", "ResultsScreen"), "compare": _mode("compare", "CompareScreen"),
             "inspect": _mode("inspect", "InspectScreen")}
    DEFAULT_MODE = "setup"
    NOTIFICATION_TIMEOUT = 3  # seconds: passing events; a toast must not hide the screen for long
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", key_display="?", show=False),
        Binding("ctrl+r", "start_run", "Run"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+o", "open", "Open"),
        Binding("f2", "view('setup')", "Setup", show=False),
        Binding("f3", "view('run')", "Progress", show=False),
        Binding("f4", "view('results')", "Results", show=False),
        Binding("f5", "view('compare')", "Compare", show=False),
        Binding("f6", "view('inspect')", "Inspect", show=False),
    ]
    CSS = """
    .-invalid { color: $error; }
    .muted { color: $text-muted; }
    #bar, #status, #device, .ptext { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    # Counters the screens watch. `var`, not `reactive`: a reactive of the App repaints the whole screen
    # on every change, which at ten run events a second is most of the main thread's time.
    tick: var[int] = var(0, always_update=True)  # any run event was handled
    results_version: var[int] = var(0)  # a cell finished / a session was opened
    plan_version: var[int] = var(0)  # the plan was replaced from outside the setup screen
    device_version: var[int] = var(0)  # the device probe answered

    def __init__(self, session: Session | str | None = None, *, run_fn: RunFn | None = None,
                 sessions_dir: str | os.PathLike = "sessions", preset: str = "quickstart",
                 device_probe: Callable[[], dict] | None = None, memory_probe: Callable[[], str] | None = None,
                 stamp: Callable[[], str] | None = None, progress_interval: float = 0.1, theme: str | None = None):
        super().__init__()
        from screens import data  # (pure helpers: no Textual widgets, no plotext)

        self.run_fn: RunFn = run_fn or _real_run
        self.sessions_dir = Path(sessions_dir)
        self.device_probe = device_probe or data.probe_device
        self.memory_probe = memory_probe or data.memory_now
        self.stamp = stamp or (lambda: time.strftime("%Y%m%d-%H%M%S"))
        self.progress_interval = progress_interval  # seconds between two progress messages, at least
        self.preset = preset
        self.plan: Plan | None = None  # loaded just after the first frame (see on_mount)
        self.plan_error: str | None = f"loading the preset {preset}…"
        self.session: Session | None = None
        self.cells: dict[str, dict] = {}  # the UI's copy of the session's cells
        self.run_state = RunState()
        self.device_info: dict | None = None
        self._initial = Session.load(session) if isinstance(session, str) else session
        self._cancel = threading.Event()
        self._run_id = 0
        if theme or os.environ.get("WORKBENCH_THEME"):
            self.theme = theme or os.environ["WORKBENCH_THEME"]
        elif not _rich_colour_terminal():
            self.theme = "textual-ansi"  # the 16 colours a plain terminal has, nothing approximated

    # -- start-up ----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._probe_device()
        self.call_after_refresh(self._start)

    def _start(self) -> None:
        # After the first frame: parsing the preset imports the method tables and the model resolver,
        # tens of milliseconds a user would otherwise wait for at a blank terminal.
        try:
            self.replace_plan(load_preset(self.preset))
        except PlanError as err:
            self.plan_error = str(err)
            self.notify(str(err), title="preset not loaded", severity="error", timeout=10)
        if self._initial is not None:
            self.open_session(self._initial)

    @work(thread=True, exclusive=True, exit_on_error=False, group="probe")
    def _probe_device(self) -> dict:
        return self.device_probe()  # nvidia-smi can take a second: never on the first frame's path

    # -- plan and session state ------------------------------------------------------------------

    def set_plan(self, plan: Plan | None, error: str | None) -> None:
        """From the setup screen, as the user edits: the current valid plan, or why there is none."""
        self.plan, self.plan_error = plan, error

    def replace_plan(self, plan: Plan) -> None:
        """A plan from a preset or a file: the setup screen refills its form when shown."""
        self.plan, self.plan_error = plan, None
        self.plan_version += 1

    def show_session(self, session: Session) -> None:
        self.session = session
        self.cells = {k: dict(c) for k, c in session.cells.items()}
        self.results_version += 1

    def clear_run(self) -> None:
        """Forget the last run's progress (a session was opened instead)."""
        self.run_state = RunState()
        self.tick += 1

    def default_path(self, plan: Plan) -> Path:
        return self.sessions_dir / f"{plan.name}-{self.stamp()}.json"

    # -- running -----------------------------------------------------------------------------------

    def action_start_run(self) -> None:
        if self.run_state.active:
            self.notify("a run is already in progress (Escape on the Progress view cancels it)", severity="warning")
            return
        if self.plan is None:
            self.notify(f"the plan is not valid yet: {self.plan_error}", severity="error", timeout=8)
            self.switch_mode("setup")
            return
        self.start_run(Session(self.plan, self.default_path(self.plan)))

    def start_run(self, session: Session) -> None:
        """Run (or resume) ``session`` in the worker; it is saved to its path after every sample.

        The garbage collector's objects are frozen when the run starts, once the model is loaded and after
        each cell: a full collection walks every live object (widgets, torch and transformers modules, the
        model) and held the GIL for 60–230 ms at a time, the longest stalls of the UI during a run. Frozen
        objects are never walked again; they live as long as the app anyway (cyclic garbage pending at a
        freeze is kept too: a few objects, not worth a stall)."""
        if session.path is None:
            session.path = self.default_path(session.plan)
        self.show_session(session)
        self._run_id += 1
        self._cancel = threading.Event()
        state = self.run_state = RunState()
        state.status = "running"
        state.total = sum(c["samples_total"] for c in session.cells.values())
        state.log.append(("info", f"session {short_path(session.path)}"))
        self.tick += 1
        self.switch_mode("run")
        gc.freeze()
        self._run_worker(session, self._cancel, self._run_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run")
    def _run_worker(self, session: Session, cancel: threading.Event, run_id: int) -> Session:
        _lower_priority_of_this_thread()
        return self.run_fn(session, self._event_poster(run_id), cancel, out=str(session.path))

    def _event_poster(self, run_id: int):
        """The runner's on_event (worker thread): post messages, dropping progress beyond ~10 a second."""
        last = [0.0]

        def on_event(event) -> None:
            if event.kind == "progress":
                now = time.monotonic()
                if now - last[0] < self.progress_interval:
                    return
                last[0] = now
            self.post_message(RunEvent(event, run_id))

        return on_event

    def on_run_event(self, message: RunEvent) -> None:
        if message.run_id != self._run_id:
            return
        ev, state = message.event, self.run_state
        state.delivered[ev.kind] += 1
        if ev.kind == "progress":
            state.done, state.total = ev.data.get("done", state.done), ev.data.get("total", state.total)
            state.elapsed = ev.data.get("elapsed", state.elapsed)
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
                detail = cell.get("error") or cell.get("reason") or ""
                severity = "error" if cell["status"] == "error" else "warning"
                state.log.append((severity, f"{cell['method']} @ {cell['rate']}: {cell['status']}: {detail}"))
        elif ev.kind in ("model-loading", "model-loaded"):
            state.model = ev.message
            state.log.append(("info", ev.message))
            if ev.kind == "model-loaded":
                gc.freeze()
                self.notify(ev.message, title="model loaded")
        elif ev.kind == "run-finished":
            state.status = ev.data.get("status", "finished")
            state.elapsed = ev.data.get("elapsed", state.elapsed)
            if state.status != "cancelled":
                state.done = state.total
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

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker outcomes surface: results on success, an error modal on failure."""
        worker = event.worker
        if worker.group == "probe":
            if event.state == WorkerState.SUCCESS:
                self.device_info = worker.result
                self.device_version += 1
            return
        if worker.group != "run" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        state = self.run_state
        path = short_path(self.session.path) if self.session and self.session.path else None
        if event.state == WorkerState.SUCCESS and isinstance(worker.result, Session):
            self.show_session(worker.result)
            state.status = worker.result.status
            failed = len(worker.result.failed_cells())
            kept = sum(1 for c in worker.result.cells.values() if c["status"] == "done")
            if state.status == "cancelled":
                self.notify(f"run cancelled: {kept} finished cells kept in {path}", severity="warning", timeout=6)
            else:
                self.notify(f"run {state.status}: {kept} cells done, {failed} failed; saved to {path}",
                            severity="warning" if failed else "information", timeout=5)
        else:
            err = worker.error
            state.status = "failed"
            message = scrub(f"{type(err).__name__}: {err}") if err else "the run stopped"
            state.log.append(("error", message))
            if self.session is not None:
                self.show_session(self.session)  # the worker is done: its session is safe to read
            self.push_screen(_error_modal("The run failed", message, path))
        self.tick += 1

    # -- navigation, help, quitting --------------------------------------------------------------

    def action_view(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_help(self) -> None:
        from screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if not self.run_state.active:
            self.exit(0)
            return
        from screens.dialogs import ConfirmModal

        def answer(yes: bool | None) -> None:
            if yes:
                self._cancel.set()  # the worker stops after its sample; the session file keeps the rest
                self.exit(0)

        self.push_screen(ConfirmModal(f"A run is in progress. Cancel it and quit? Finished cells stay in "
                                      f"{short_path(self.session.path)}.", "Cancel run and quit", "Keep running"), answer)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("run: start", "run the plan of the Setup view (ctrl+r)", self.action_start_run)
        yield SystemCommand("run: cancel", "stop after the current sample, keeping finished cells (Escape)", self.action_cancel_run)
        yield SystemCommand("session: save", "save the session as JSON (ctrl+s)", self.action_save)
        yield SystemCommand("session: open", "open a saved session: results, or resume (ctrl+o)", self.action_open)
        yield SystemCommand("session: export", "results as CSV, Markdown or JSON (ctrl+e on Results)", self.action_export)
        for mode, text in (("setup", "model, datasets, methods, rates, protocol (F2)"),
                           ("run", "progress and live plots of the run (F3)"),
                           ("results", "sortable table of every cell, plots, export (F4)"),
                           ("compare", "two or more saved sessions on the same axes (F5)"),
                           ("inspect", "what prompt compression dropped, per method (F6)")):
            yield SystemCommand(f"view: {'progress' if mode == 'run' else mode}", text, lambda m=mode: self.switch_mode(m))
        yield SystemCommand("view: help", "key bindings and what each view does (F1 or ?)", self.action_help)
        yield from super().get_system_commands(screen)


def _lower_priority_of_this_thread(niceness: int = 5) -> None:
    """Let the UI thread win the CPU when both want it (Linux schedules each thread with its own nice
    value). On a CPU-only machine torch's compute threads fill every core; keys then waited up to ~120 ms
    for a core. torch creates those threads from this one, after this call, so they inherit the value;
    with the UI idle the run still gets every core, and the headless mode is not affected."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: the run simply keeps its priority
        pass


def _error_modal(title: str, message: str, path: str | None):
    from screens.dialogs import ErrorModal

    return ErrorModal(title, message, path)


def _rich_colour_terminal() -> bool:
    """False on terminals that only promise the 16 ANSI colours (the Linux console, a bare xterm)."""
    if os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return True
    term = os.environ.get("TERM", "")
    return "256" in term or term in ("", "xterm-kitty", "alacritty", "wezterm", "tmux-direct")


def run_app(session_path: str | None = None) -> int:
    """The `workbench [SESSION.json]` entry point: the app on Setup (quickstart loaded) or on a session.

    Returns the exit code: 0, or 2 when the session file cannot be used (said on stderr, no UI)."""
    import sys

    session = None
    if session_path:
        try:
            session = Session.load(session_path)
        except SessionError as err:
            print(f"workbench: {err}", file=sys.stderr)
            return 2
    app = WorkbenchApp(session)
    app.run()
    return app.return_code or 0
