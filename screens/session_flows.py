"""The session flows of the app: save (confirming before an overwrite), open (asking first when Setup holds
unsaved edits; results as they are, or resume an unfinished run), load a plan into Setup, export. A mixin
of WorkbenchApp, kept apart so the app module holds the wiring and this one the dialogs' sequences.

Each flow is a chain of modal dialogs with callbacks, so it never blocks the event loop and a test
can answer the dialogs with key presses.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from screens.data import short_path


class SessionFlows:
    """Needs from the app: session, plan, plan_error, plan_edited, run_state, sessions_dir, results_sort,
    default_path(), show_session(), replace_plan(), commit_plan(), start_run(), switch_mode(), push_screen(),
    notify()."""

    def action_save(self) -> None:
        from workbench.session import Session
        from screens.dialogs import PathModal

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

    def save_session(self, session, path: str, confirmed: bool = False) -> None:
        from workbench.session import SessionError
        from screens.dialogs import ConfirmModal, ErrorModal

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
        self.commit_plan(session.plan)
        self.notify(f"saved to {short_path(target)}")

    def action_open(self) -> None:
        from screens.dialogs import PathModal, session_choices

        self.push_screen(PathModal("Open a session", "", session_choices(self.sessions_dir),
                                   hint=f"a session JSON; the list shows {self.sessions_dir}/", action="Open"),
                         lambda path: path and self.open_path(path))

    def open_path(self, path: str) -> None:
        from workbench.session import Session, SessionError
        from screens.dialogs import ErrorModal

        try:
            session = Session.load(Path(path).expanduser())
        except (SessionError, OSError) as err:
            self.push_screen(ErrorModal("Could not open the session", str(err), path))
            return
        self.open_session(session)

    def open_session(self, session, confirmed: bool = False) -> None:
        """Show a saved session's results as they are; offer to resume it when cells are left to run. Setup's
        form then holds the session's plan: unsaved edits there are only replaced once the user agrees."""
        from workbench import figures, tables
        from screens.dialogs import ConfirmModal
        from screens.run_state import RunState

        if self.run_state.active:
            self.notify("a run is in progress: cancel it before opening another session", severity="warning")
            return
        if self.plan_edited and not confirmed:
            name = self.plan.name if self.plan is not None else "the plan"
            self.push_screen(ConfirmModal(f"Setup holds edits to {name} that are in no file yet. Opening "
                                          f"{short_path(session.path)} replaces them with its plan. Open it anyway?",
                                          "Open, drop my edits", "Keep editing"),
                             lambda yes: self.open_session(session, confirmed=True) if yes else self.switch_mode("setup"))
            return
        self.replace_plan(session.plan)
        self.show_session(session)
        self.run_state = RunState.of_session(session)
        self.tick += 1
        self.switch_mode("results")
        counts = figures.cell_counts(session.cells.values())
        self.notify(f"opened {short_path(session.path)}: {tables.counts_text(counts)}")
        if counts.left:
            self.push_screen(ConfirmModal(f"{short_path(session.path)} is unfinished: {tables.counts_text(counts)}. "
                                          "Resume the run now?", "Resume", "Just look"),
                             lambda yes: yes and self.start_run(session))

    def load_plan_file(self, path: str) -> None:
        """A preset or a saved session's plan into the setup form (nothing runs)."""
        from workbench.plan import PlanError, load_preset
        from screens.dialogs import ErrorModal

        try:
            plan = load_preset(path)
        except PlanError as err:
            self.push_screen(ErrorModal("Could not load that plan", str(err), path))
            return
        self.replace_plan(plan)
        self.notify(f"plan {plan.name} loaded from {path}")

    def export_cells(self) -> list[dict]:
        """The cells in the order Results shows them (its sort), for the CSV and Markdown exports."""
        from workbench import tables

        key, reverse = self.results_sort
        return tables.sort_cells(self.cells.values(), key if key in tables.COLUMN_BY_KEY else "rate", reverse)

    def action_export(self) -> None:
        from screens.dialogs import ExportModal

        if self.session is None:
            self.notify("no results to export yet: run the plan or open a session", severity="warning")
            return
        path = self.session.path or self.default_path(self.session.plan)
        self.push_screen(ExportModal(str(path.with_suffix("")), taken={str(path)}),
                         lambda answer: answer and self.export(*answer))

    def export(self, fmt: str, path: str, confirmed: bool = False) -> None:
        """Write the results as CSV / Markdown (workbench.report, rows in Results' order) or JSON (the session
        document). Never over the live session file, and never over another file without asking."""
        from workbench import report
        from screens.dialogs import ConfirmModal, ErrorModal

        target = Path(path).expanduser()
        if self.session.path is not None and target.resolve() == Path(self.session.path).resolve():
            self.push_screen(ErrorModal("Not exported", f"{target} is this session's own file (the run keeps it up to "
                                        "date, ctrl+s saves a copy): choose another name.", str(target)))
            return
        if target.exists() and not confirmed:
            self.push_screen(ConfirmModal(f"{target} exists. Overwrite it?", "Overwrite", "Keep it"),
                             lambda yes: yes and self.export(fmt, path, confirmed=True))
            return
        cells = self.export_cells()
        if fmt == "json":
            if self.run_state.active:
                # The worker is writing the session: the JSON is the document as last written to disk (the
                # runner writes it atomically after every sample).
                self.notify("exporting the cells finished so far")
                text = self.session.path.read_text(encoding="utf-8")
            else:
                text = json.dumps(self.session.to_dict(), indent=1, default=str)
        else:
            session = SimpleNamespace(plan=self.session.plan)  # tables come from the UI's copies of the cells
            text = {"csv": report.csv_text, "md": report.markdown_table}[fmt](session, cells)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as err:
            self.push_screen(ErrorModal("Could not export", str(err), str(target)))
            return
        self.notify(f"exported {fmt} to {short_path(target)}")
