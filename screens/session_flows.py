"""The session flows of the app: save (confirming before an overwrite), open (results as they are, or
resume an unfinished run), load a plan into Setup, export. A mixin of WorkbenchApp, kept apart so the
app module holds the wiring (modes, bindings, the run worker) and this one the dialogs' sequences.

Each flow is a chain of modal dialogs with callbacks, so it never blocks the event loop and a test
can answer the dialogs with key presses.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from workbench.plan import PlanError, load_preset
from workbench.session import Session, SessionError
from screens.data import short_path
from screens.dialogs import ConfirmModal, ErrorModal, ExportModal, PathModal, session_choices

UNFINISHED = ("pending", "running", "cancelled")


class SessionFlows:
    """Needs from the app: session, plan, plan_error, run_state, sessions_dir, default_path(), show_session(),
    replace_plan(), start_run(), clear_run(), switch_mode(), push_screen(), notify()."""

    def action_save(self) -> None:
        if self.run_state.active:
            self.notify(f"the run writes {short_path(self.session.path)} after every sample; save a copy when it ends")
            return
        session = self.session
        if session is None:
            if self.plan is None:
                self.notify(f"nothing to save: the plan is not valid ({self.plan_error})", severity="error")
                return
            session = Session(self.plan)  # a plan not run yet: saved as pending, resumable later
        default = str(session.path or self.default_path(session.plan))
        self.push_screen(PathModal("Save session as", default, hint="JSON, the engine's session format", action="Save"),
                         lambda path: path and self.save_session(session, path))

    def save_session(self, session: Session, path: str, confirmed: bool = False) -> None:
        target = Path(path).expanduser()
        if target.exists() and not confirmed and target != session.path:
            self.push_screen(ConfirmModal(f"{target} exists. Overwrite it?", "Overwrite", "Keep it"),
                             lambda yes: yes and self.save_session(session, path, confirmed=True))
            return
        try:
            session.save(target)
        except (OSError, SessionError) as err:
            self.push_screen(ErrorModal("Could not save the session", str(err), str(target)))
            return
        if self.session is None:
            self.show_session(session)
        self.notify(f"saved to {short_path(target)}")

    def action_open(self) -> None:
        self.push_screen(PathModal("Open a session", "", session_choices(self.sessions_dir),
                                   hint=f"a session JSON; the list shows {self.sessions_dir}/", action="Open"),
                         lambda path: path and self.open_path(path))

    def open_path(self, path: str) -> None:
        try:
            session = Session.load(Path(path).expanduser())
        except (SessionError, OSError) as err:
            self.push_screen(ErrorModal("Could not open the session", str(err), path))
            return
        self.open_session(session)

    def open_session(self, session: Session) -> None:
        """Show a saved session's results as they are; offer to resume it when cells are left to run."""
        if self.run_state.active:
            self.notify("a run is in progress: cancel it before opening another session", severity="warning")
            return
        self.replace_plan(session.plan)
        self.show_session(session)
        self.clear_run()
        self.switch_mode("results")
        left = [c for c in session.cells.values() if c["status"] in UNFINISHED]
        self.notify(f"opened {short_path(session.path)}")
        if left:
            self.push_screen(ConfirmModal(f"{short_path(session.path)} is unfinished: {len(left)} of "
                                          f"{len(session.cells)} cells still to run. Resume the run now?",
                                          "Resume", "Just look"),
                             lambda yes: yes and self.start_run(session))

    def load_plan_file(self, path: str) -> None:
        """A preset or a saved session's plan into the setup form (nothing runs)."""
        try:
            plan = load_preset(path)
        except PlanError as err:
            self.push_screen(ErrorModal("Could not load that plan", str(err), path))
            return
        self.replace_plan(plan)
        self.notify(f"plan {plan.name} loaded from {path}")

    def action_export(self) -> None:
        if self.session is None:
            self.notify("no results to export yet: run the plan or open a session", severity="warning")
            return
        stem = str(self.session.path.with_suffix("")) if self.session.path else str(self.default_path(self.session.plan).with_suffix(""))
        self.push_screen(ExportModal(stem), lambda answer: answer and self.export(*answer))

    def export(self, fmt: str, path: str, confirmed: bool = False) -> None:
        """Write the results as CSV / Markdown (workbench.report) or JSON (the session document)."""
        from workbench import report

        target = Path(path).expanduser()
        if target.exists() and not confirmed:
            self.push_screen(ConfirmModal(f"{target} exists. Overwrite it?", "Overwrite", "Keep it"),
                             lambda yes: yes and self.export(fmt, path, confirmed=True))
            return
        session = self.session
        if self.run_state.active:
            # The worker is writing the session: tables come from the UI's copies of the cells, and the JSON
            # is the document as last written to disk (the runner writes it atomically after every sample).
            self.notify("exporting the cells finished so far")
            session = SimpleNamespace(plan=self.session.plan, cells=dict(self.cells))
            text = self.session.path.read_text(encoding="utf-8") if fmt == "json" else None
        else:
            text = None
        if text is None:
            text = {"csv": report.csv_text, "md": report.markdown_table,
                    "json": lambda s: json.dumps(s.to_dict(), indent=1, default=str)}[fmt](session)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as err:
            self.push_screen(ErrorModal("Could not export", str(err), str(target)))
            return
        self.notify(f"exported {fmt} to {short_path(target)}")
