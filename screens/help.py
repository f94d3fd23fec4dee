"""Help: what each view does and every key binding, read from the bindings themselves so it cannot
drift from what the keys do."""

from __future__ import annotations

import importlib

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from screens.widgets import ViewBar

VIEWS = (
    ("Setup", "F2", "setup", "SetupScreen",
     "The plan: model (embedded smollm2-135m, a hub id, a folder or a .gguf; device, dtype, memory), datasets and "
     "samples, methods of both families with their parameters, rates (a list or a sweep), the protocol. Checked as "
     "you type: the bar at the bottom shows the cell count and forward passes, or the field that is wrong."),
    ("Progress", "F3", "run", "RunScreen",
     "The run in a worker thread: progress of the run and of the current cell, ETA, device memory, live plots of "
     "ΔPPL and of the KV budget against rate (one line per method). Escape cancels after the current sample; "
     "finished cells are kept in the session file."),
    ("Results", "F4", "results", "ResultsScreen",
     "Every cell: method, rate, achieved kept fraction, PPL, ΔPPL, ΔPPL %, KV bytes, seconds per sample, task "
     "score, family, status. Sort by column, switch to plots, export CSV / Markdown / JSON."),
    ("Compare", "F5", "compare", "CompareScreen",
     "Two or more saved sessions: one plot each on the same axes, and a table with a column per session; the "
     "best value of a row is green, the worst red."),
    ("Inspect", "F6", "inspect", "InspectScreen",
     "For prompt-compression cells: the original text of one sample with what each method dropped struck out."),
)

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
            for name, key, module, cls, text in VIEWS:
                screen = getattr(importlib.import_module(f"screens.{module}"), cls)
                yield Static(Text.assemble((f"{name} ({key})", "bold underline"), "\n", text))
                if screen.BINDINGS:
                    yield Static(bindings_table("", screen.BINDINGS))
        yield Footer(compact=True)
