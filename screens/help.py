"""Help: what each view does (screens/views.py) and every key binding, read from the bindings themselves
(the running app's and each screen's) so it cannot drift from what the keys do."""

from __future__ import annotations

import importlib

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from screens.views import MODES
from screens.widgets import ViewBar

WORDS = ("rate = fraction of context tokens KEPT (1.0 = uncompressed; kvpress's compression_ratio = 1 − rate). "
         "Kept = the fraction the cache really holds afterwards, measured. ΔPPL = PPL − baseline PPL on the same tokens.")


def _key(binding: Binding) -> str:
    return binding.key_display or ", ".join(k.replace("ctrl+", "^").replace("question_mark", "?")
                                            for k in binding.key.split(","))


def bindings_table(title: str, bindings) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    seen = set()
    for b in bindings:
        b = b if isinstance(b, Binding) else Binding(*b)
        if b.description and (b.key, b.description) not in seen:
            seen.add((b.key, b.description))
            table.add_row(_key(b), b.description)
    return table


class HelpScreen(Screen):
    DEFAULT_CSS = "HelpScreen VerticalScroll { padding: 0 2; } HelpScreen Static { margin-bottom: 1; }"
    BINDINGS = [Binding("escape,q,f1,question_mark", "app.pop_screen", "Close help")]

    def compose(self) -> ComposeResult:
        yield ViewBar("help")
        with VerticalScroll():
            yield Static(Text("The compression workbench: KV-cache presses and prompt compressors measured on the same "
                              "model and tokens. No mouse needed; ctrl+p opens the command palette (run: …, "
                              "session: …, view: …).", style="bold"))
            yield Static(WORDS)
            yield Static(bindings_table("Everywhere", [*type(self.app).BINDINGS,  # the app's own, without importing it
                                                       Binding("ctrl+p", "command_palette", "Command palette"),
                                                       Binding("ctrl+q", "quit", "Quit (asks first during a run)")]))
            for view in MODES:
                screen = getattr(importlib.import_module(f"screens.{view.module}"), view.cls)
                yield Static(Text.assemble((f"{view.name} ({view.key})", "bold underline"), "\n", view.text))
                if screen.BINDINGS:
                    yield Static(bindings_table("", screen.BINDINGS))
        yield Footer(compact=True)
