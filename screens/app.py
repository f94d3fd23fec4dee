"""The Textual app: screens as modes, bindings and command palette, start-up, worker outcomes.

One worker thread drives the same ``runner.run(...)`` as the headless mode (screens/run_flows.py); the
runner is injected (``WorkbenchApp(run_fn=...)``) so tests drive the app against a fast fake, and so are
the machine's figures (device probe, memory line, model check, clock), so tests and snapshots do not
depend on the machine. Importing this module loads textual and nothing of the engine but its small
pure modules: the first frame comes before the plan, the session or a method table is imported.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from screens.run_flows import RunEvent, RunFlows  # noqa: F401  (RunEvent: the message tests post)
from screens.run_state import RunState
from screens.session_flows import SessionFlows
from screens.train_flows import TrainFlows
from screens.learned_flows import LearnedTrainFlows
from screens import views

if TYPE_CHECKING:
    from workbench.plan import Plan
    from workbench.session import Session

AFTER_FIRST_FRAME = 0.1  # seconds after the first frame is composed: the time its writing out takes, roughly
RunFn = Callable[..., "Session"]  # run(plan_or_session, on_event, cancel, out=None) -> Session


def _mode(module: str, cls: str):
    def make() -> Screen:
        import importlib

        return getattr(importlib.import_module(f"screens.{module}"), cls)()

    return make


class WorkbenchApp(RunFlows, SessionFlows, TrainFlows, LearnedTrainFlows, App):
    TITLE = "compression workbench"
    MODES = {v.mode: _mode(v.module, v.cls) for v in views.MODES}
    DEFAULT_MODE = "setup"
    NOTIFICATION_TIMEOUT = 3  # seconds: passing events; a toast must not hide the screen for long
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", key_display="?", show=False),
        Binding("ctrl+r", "start_run", "Run"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+o", "open", "Open"),
        *(Binding(v.binding_key, f"view('{v.mode}')", v.name, show=False) for v in views.MODES),
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
    learned_version: var[int] = var(0, always_update=True)  # a learned compressor's training moved (the Train view)

    def __init__(self, session: "Session | str | None" = None, *, run_fn: RunFn | None = None,
                 sessions_dir: str | os.PathLike = "sessions", preset: str = "quickstart",
                 device_probe: Callable[[], dict] | None = None, memory_probe: Callable[[], str] | None = None,
                 model_check: Callable[[str], object] | None = None, clock: Callable[[], float] | None = None,
                 stamp: Callable[[], str] | None = None, progress_interval: float = 0.1, theme: str | None = None,
                 learned_train_fn: Callable[..., dict] | None = None, train_plans_dir: str | os.PathLike | None = None):
        super().__init__()
        self.run_fn = run_fn
        self.learned_train_fn = learned_train_fn  # None: workbench.learned.train, imported in the worker
        self.train_plans_dir = Path(train_plans_dir) if train_plans_dir else None  # None: the shipped presets/train/
        self.sessions_dir = Path(sessions_dir)
        self.device_probe = device_probe  # None: screens.data.probe_device, imported in the probe's thread
        self.memory_probe = memory_probe or _memory_now
        self.model_check = model_check  # None: workbench.model_check.check_model, in a worker
        self.clock = clock or time.monotonic
        self.stamp = stamp or (lambda: time.strftime("%Y%m%d-%H%M%S"))
        self.progress_interval = progress_interval  # seconds between two progress messages, at least
        self.preset = preset
        self.plan: Plan | None = None  # loaded just after the first frame (see on_mount)
        self.plan_error: str | None = f"loading the preset {preset}…"
        self.committed_plan: Plan | None = None  # the plan as loaded, run or saved: Setup edits differ from it
        self.plan_edited = False  # Setup holds edits that no file has (opening a session asks first)
        self.model_problem: str | None = None  # Setup's model check: why the model cannot be loaded here
        self.model_checking = False  # Setup's model check is under way (ctrl+r then waits for it)
        self.run_after_model_check = False
        self.session: Session | None = None
        self.cells: dict[str, dict] = {}  # the UI's copy of the session's cells
        self.results_sort: tuple[str, bool] = ("rate", True)  # Results' sort (column key, descending): exports follow it
        self.run_state = RunState()
        self.device_info: dict | None = None
        self._initial = session
        self._cancel = threading.Event()
        self._run_id = 0
        if theme or os.environ.get("WORKBENCH_THEME"):
            self.theme = theme or os.environ["WORKBENCH_THEME"]
        elif not _rich_colour_terminal():
            self.theme = "textual-ansi"  # the 16 colours a plain terminal has, nothing approximated

    # -- start-up ----------------------------------------------------------------------------------

    def on_mount(self) -> None:
        # The preset and the device probe wait until the first frame is out: parsing the preset imports the
        # method tables and the model resolver, and work on the main thread right after the first frame is
        # composed keeps Textual's writer thread from sending it to the terminal (it waits for the GIL).
        if self.is_headless:  # no terminal to write to (tests): nothing to wait for
            self.call_after_refresh(self._start)
        else:
            self.call_after_refresh(self.set_timer, AFTER_FIRST_FRAME, self._start)

    def _start(self) -> None:
        from workbench.plan import PlanError, load_preset

        self._probe_device()
        try:
            self.replace_plan(load_preset(self.preset))
        except PlanError as err:
            self.plan_error = str(err)
            self.notify(str(err), title="preset not loaded", severity="error", timeout=10)
        if self._initial is not None:
            from workbench.session import Session

            initial = Session.load(self._initial) if isinstance(self._initial, (str, os.PathLike)) else self._initial
            self.open_session(initial, confirmed=True)

    @work(thread=True, exclusive=True, exit_on_error=False, group="probe")
    def _probe_device(self) -> dict:
        from screens import data

        return (self.device_probe or data.probe_device)()  # nvidia-smi can take a second: never on the UI's path

    # -- plan and session state ------------------------------------------------------------------

    def set_plan(self, plan: "Plan | None", error: str | None) -> None:
        """From the setup screen, as the user edits: the current valid plan, or why there is none."""
        self.plan, self.plan_error = plan, error
        committed = self.committed_plan
        self.plan_edited = plan is None or committed is None or plan.to_dict() != committed.to_dict()

    def replace_plan(self, plan: "Plan") -> None:
        """A plan from a preset or a file: the setup screen refills its form when shown."""
        self.plan, self.plan_error, self.committed_plan, self.plan_edited = plan, None, plan, False
        self.plan_version += 1

    def commit_plan(self, plan: "Plan") -> None:
        """The plan is in a file now (a run's session, a saved session): Setup's form holds no unsaved edits."""
        self.committed_plan = plan
        if self.plan is not None and plan.to_dict() == self.plan.to_dict():
            self.plan_edited = False

    def show_session(self, session: "Session") -> None:
        self.session = session
        self.cells = {k: dict(c) for k, c in session.cells.items()}
        self.results_version += 1

    def default_path(self, plan: "Plan") -> Path:
        return self.sessions_dir / f"{plan.name}-{self.stamp()}.json"

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker outcomes surface: results on success, an error modal on failure."""
        worker = event.worker
        if worker.group == "probe":
            if event.state == WorkerState.SUCCESS:
                self.device_info = worker.result
                self.device_version += 1
            return
        if worker.group == "run" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.run_outcome(worker, event.state)
        if worker.group == "train" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.train_outcome(worker, event.state)
        if worker.group == "learned" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self.learned_outcome(worker, event.state)

    # -- navigation, help, quitting --------------------------------------------------------------

    def action_view(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_help(self) -> None:
        from screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        if self._learned_cancel is not None:  # a learned training stops at its next step and keeps its checkpoint
            self._learned_cancel.set()
        if not self.run_state.active:
            self.exit(0)
            return
        from screens.dialogs import ConfirmModal
        from screens.data import short_path

        def answer(yes: bool | None) -> None:
            if yes:
                self._cancel.set()  # the worker stops after its sample; the session file keeps the rest
                self.exit(0)

        self.push_screen(ConfirmModal(f"A run is in progress. Cancel it and quit? Finished cells stay in "
                                      f"{short_path(self.session.path)}.", "Cancel run and quit", "Keep running"), answer)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("run: start", "run the plan of the Setup view (ctrl+r)", self.action_start_run)
        yield SystemCommand("run: resume", "run what a cancelled or unfinished session has left", self.action_resume_run)
        yield SystemCommand("run: cancel", "stop after the current sample, keeping finished cells (Escape)", self.action_cancel_run)
        yield SystemCommand("session: save", "save the session as JSON (ctrl+s)", self.action_save)
        yield SystemCommand("session: open", "open a saved session: results, or resume (ctrl+o)", self.action_open)
        yield SystemCommand("session: export", "results as CSV, Markdown or JSON (ctrl+e on Results)", self.action_export)
        yield SystemCommand("train: kvzap scorer", "train the KVzap scorer for the Setup model, as a job (minutes on a CPU)",
                            self.action_train_kvzap)
        yield SystemCommand("train: point classifier", "train the compression-point classifier (learned-points schedule) "
                            "for the Setup model on GSM8K step boundaries, as a job (minutes on a CPU)", self.action_train_points)
        if self.training_active():
            yield SystemCommand("train: cancel", f"stop the training of {self._train_job.what} ({self._train_job.kept})",
                                self.action_cancel_training)
        yield SystemCommand("train: learned compressor", "train a learned soft compressor from a training plan, with live "
                            "curves (the Train view, F8)", self.action_train_learned)
        if self.learned.active:
            yield SystemCommand("train: cancel learned", "stop the learned compressor's training at its next step, keeping "
                                "its checkpoint", self.action_cancel_learned)
        for view in views.MODES:
            yield SystemCommand(view.command, f"{view.summary} ({view.key})", lambda m=view.mode: self.switch_mode(m))
        help_view = views.VIEW_BY_MODE["help"]
        yield SystemCommand(help_view.command, help_view.summary, self.action_help)
        yield from super().get_system_commands(screen)


def _memory_now() -> str:
    from screens.data import memory_now

    return memory_now()


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
        from workbench.session import Session, SessionError

        try:
            session = Session.load(session_path)
        except SessionError as err:
            print(f"workbench: {err}", file=sys.stderr)
            return 2
    app = WorkbenchApp(session)
    app.run()
    return app.return_code or 0
