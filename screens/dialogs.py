"""Modal dialogs: an error, a yes/no confirmation, a choice, a path (save / open / load a plan), an export.

Each dismisses with its answer (``None`` when dismissed with Escape), so callers pass a callback to
``push_screen`` and tests can press keys against them like a user would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, RadioSet, Static
from textual.widgets.option_list import Option

from workbench import tables
from screens.widgets import Radio

DIALOG_CSS = """
.dialog { width: 72; max-width: 100%; height: auto; max-height: 90%; border: thick $error 80%;
          background: $surface; padding: 0 1; }
.dialog.-calm { border: thick $primary 80%; }
.dialog .title { text-style: bold; width: 100%; padding-bottom: 1; }
.dialog .buttons { height: auto; align-horizontal: right; padding-top: 1; }
.dialog .buttons Button { margin-left: 2; }
.dialog Input { width: 100%; }
.dialog .hint { color: $text-muted; }
.dialog .problem { color: $error; }
.dialog OptionList { height: auto; max-height: 10; }
.dialog VerticalScroll { height: auto; max-height: 14; }
"""


class ErrorModal(ModalScreen[None]):
    """A real error: what happened, and where the session is (so nothing is lost)."""

    DEFAULT_CSS = "ErrorModal { align: center middle; }" + DIALOG_CSS
    BINDINGS = [Binding("escape,enter", "dismiss_modal", "Close")]

    def __init__(self, title: str, message: str, path: str | None = None):
        super().__init__()
        self.title_text, self.message, self.path = title, message, path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            with VerticalScroll():
                yield Static(self.message, id="error-message", markup=False)
            if self.path:
                yield Static(f"session: {self.path}", id="error-path", classes="hint", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="error", id="ok", compact=True)

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    """Yes/no before something that cannot be undone (overwrite a file, quit during a run)."""

    DEFAULT_CSS = "ConfirmModal { align: center middle; }" + DIALOG_CSS
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No"):
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -calm"):
            yield Static(self.question, classes="title", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", variant="primary", id="yes", compact=True)
                yield Button(f"{self.no} (n)", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class ChoiceModal(ModalScreen["str | None"]):
    """One of a few answers, each with its key (resume / start fresh); Escape dismisses with None."""

    DEFAULT_CSS = "ChoiceModal { align: center middle; }" + DIALOG_CSS
    BINDINGS = [Binding("escape", "choose(None)", "Cancel")]

    def __init__(self, question: str, choices: list[tuple[str, str, str]]):
        """``choices``: (answer, button label, key)."""
        super().__init__()
        self.question, self.choices = question, choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -calm"):
            yield Static(self.question, classes="title", markup=False)
            with Horizontal(classes="buttons"):
                for i, (answer, label, key) in enumerate(self.choices):
                    yield Button(f"{label} ({key})", variant="primary" if i == 0 else "default", id=f"choice-{answer}",
                                 compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(Button).focus()

    def on_key(self, event) -> None:
        answer = next((a for a, _, key in self.choices if key == event.key), None)
        if answer is not None:
            event.stop()
            self.dismiss(answer)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id.removeprefix("choice-"))

    def action_choose(self, answer: str | None) -> None:
        self.dismiss(answer)


def session_choices(folder: Path, limit: int = 30) -> list[tuple[str, str]]:
    """(label, path) of the JSON files in ``folder``, newest first; the label says name, status, the cell counts
    (the one wording of workbench.tables, as Results and Progress say them) and the date."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:limit]
    out = []
    for path in files:
        status = "?"
        try:  # a broken file still shows (and errors when opened)
            doc = json.loads(path.read_text(encoding="utf-8"))
            status = f"{doc.get('status', '?')}, {tables.cells_text(c for c in doc.get('cells', []) if isinstance(c, dict))}"
        except (OSError, ValueError, AttributeError, TypeError):
            status = "unreadable"
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        out.append((f"{path.name}  [{status}]  {stamp}", str(path)))
    return out


class PathModal(ModalScreen["str | None"]):
    """Ask for a file path, with a list of existing files to pick from (open) or a default (save)."""

    DEFAULT_CSS = "PathModal { align: center middle; }" + DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, default: str = "", choices: list[tuple[str, str]] | None = None,
                 hint: str = "", action: str = "OK"):
        super().__init__()
        self.title_text, self.default, self.choices, self.hint, self.action = title, default, choices or [], hint, action

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -calm"):
            yield Label(self.title_text, classes="title")
            yield Input(self.default, placeholder="path/to/file.json", id="path")
            if self.hint:
                yield Static(self.hint, classes="hint", markup=False)
            yield Static("", id="problem", classes="problem", markup=False)
            if self.choices:
                yield OptionList(*(Option(label, id=path) for label, path in self.choices), id="choices")
            with Horizontal(classes="buttons"):
                yield Button(self.action, variant="primary", id="ok", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self.query_one("#path", Input).value = event.option.id or ""

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._submit(event.option.id or "")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._submit(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit(self.query_one("#path", Input).value)
        else:
            self.dismiss(None)

    def _submit(self, value: str) -> None:
        value = value.strip()
        if not value:
            self.query_one("#problem", Static).update("a path is needed")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


EXPORT_FORMATS = (("csv", "CSV (one row per cell, stable keys)"), ("md", "Markdown tables"),
                  ("json", "JSON (the session document)"))


class ExportModal(ModalScreen["tuple[str, str] | None"]):
    """Choose a format and a path; dismisses with (format, path)."""

    DEFAULT_CSS = "ExportModal { align: center middle; }" + DIALOG_CSS + "ExportModal RadioSet { width: 100%; }"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, stem: str, taken: set[str] = frozenset()):
        super().__init__()
        self.stem = stem  # the path without extension; the extension follows the format
        self.taken = set(taken)  # paths never offered (the live session file): another name is made up

    def default_path(self, fmt: str) -> str:
        """``stem.fmt``, or ``stem-export.fmt`` (-2, -3…) when that is the session's own file or exists already."""
        path, n = f"{self.stem}.{fmt}", 1
        while path in self.taken or (fmt == "json" and Path(path).exists()):
            n += 1
            path = f"{self.stem}-export{'' if n == 2 else f'-{n - 1}'}.{fmt}"
        return path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -calm"):
            yield Label("Export results", classes="title")
            with RadioSet(id="format"):
                for i, (fmt, label) in enumerate(EXPORT_FORMATS):
                    yield Radio(label, value=i == 0, name=fmt)
            yield Input(self.default_path("csv"), id="path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="ok", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()  # Enter exports CSV at once; shift+tab reaches the formats

    def _fmt(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        return pressed.name if pressed is not None and pressed.name else "csv"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        path = self.query_one("#path", Input)
        base = path.value.rsplit(".", 1)[0] if "." in Path(path.value).name else path.value
        if base.removesuffix("-export") == self.stem or base == self.stem:  # still the offered name: offer the format's
            path.value = self.default_path(self._fmt())
        else:  # a name the user typed: keep it, change the extension
            path.value = f"{base}.{self._fmt()}"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._done()
        else:
            self.dismiss(None)

    def _done(self) -> None:
        path = self.query_one("#path", Input).value.strip()
        if path:
            self.dismiss((self._fmt(), path))

    def action_cancel(self) -> None:
        self.dismiss(None)
