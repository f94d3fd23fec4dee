"""Inspect: what a prompt compressor dropped — the original text of one sample with the dropped spans
struck out and dimmed, one panel per method, side by side, at one rate.

Prompt-compression cells keep ``examples``: [{"sample_id", "original", "compressed", "dropped":
[[start, end], ...]}] with character spans of the original (end exclusive). Sessions without such
cells show an explanation instead.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, HorizontalScroll, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Select, Static

from workbench import tables
from screens.widgets import ViewBar

DROPPED_STYLE = "strike dim red"  # struck out where the terminal can, dimmed and red where it cannot
EMPTY = ("No prompt-compression cells in this session.\n\n"
         "Cells of prompt compressors (family 'prompt': random, naive, selective-context, llmlingua-2, …) keep the "
         "original and the compressed text of their first samples; this view shows, per method, which spans of the "
         "original they dropped. Add one on Setup → Methods → Prompt compressors and run, or open a session that has one.")


def prompt_cells(cells: list[dict]) -> list[dict]:
    return [c for c in cells if c.get("family") == "prompt" and c.get("examples")]


def nothing_to_show(cells: list[dict]) -> str:
    """Why there is no text to show: no prompt-compression cell at all, or which ones have none and why."""
    prompt = [c for c in cells if c.get("family") == "prompt"]
    if not prompt:
        return EMPTY
    lines = ["No prompt-compression cell has text to show:", ""]
    for c in prompt:
        why = tables.why(c)
        state = {"unavailable": "unavailable here", "error": "failed", "pending": "not run yet",
                 "cancelled": "cancelled before a sample", "running": "running"}.get(c["status"], c["status"])
        lines.append(f"  {c['method']} @ {tables.rate_text(c)}: {state}" + (f" — {why}" if why else ""))
    lines += ["", "Unavailable cells say what they need; run the others (ctrl+r) or open a session that has them."]
    return "\n".join(lines)


def marked(original: str, dropped: list) -> Text:
    """The original with each dropped [start, end) span styled; overlapping or out-of-range spans are clipped."""
    text = Text(original)
    for span in dropped:
        start, end = max(0, int(span[0])), min(len(original), int(span[1]))
        if end > start:
            text.stylize(DROPPED_STYLE, start, end)
    return text


def kept_chars(original: str, dropped: list) -> float:
    gone = sum(max(0, min(len(original), e) - max(0, s)) for s, e in dropped)
    return 1 - gone / len(original) if original else 1.0


class InspectScreen(Screen):
    DEFAULT_CSS = """
    InspectScreen #bar { height: 1; padding: 0 1; background: $boost; }
    InspectScreen #choices { height: 1; padding: 0 1; }
    InspectScreen #choices Label { width: auto; padding-right: 1; }
    InspectScreen #choices Select { width: 30; margin-right: 2; }
    InspectScreen #panels { height: 1fr; }
    InspectScreen .panel { width: 1fr; min-width: 36; height: 1fr; border: round $primary 60%; padding: 0 1; }
    InspectScreen #empty { padding: 1 2; }
    """
    BINDINGS = [Binding("left_square_bracket", "step(-1)", "Prev sample", key_display="["),
                Binding("right_square_bracket", "step(1)", "Next sample", key_display="]")]

    def compose(self) -> ComposeResult:
        yield ViewBar("inspect")
        yield Static("", id="bar", markup=False)
        with Horizontal(id="choices"):
            yield Label("sample")
            yield Select([], id="sample", allow_blank=True, prompt="first", compact=True)
            yield Label("rate")
            yield Select([], id="rate", allow_blank=True, prompt="all rates", compact=True)
        yield HorizontalScroll(id="panels")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._shown = -1
        self._samples: list[str] = []
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        if self._shown == self.app.results_version:
            return
        self._shown = self.app.results_version
        cells = prompt_cells(list(self.app.cells.values()))
        samples = self._samples = sorted({e["sample_id"] for c in cells for e in c["examples"]})
        rates = sorted({c["rate"] for c in cells if c.get("rate") is not None}, reverse=True)
        self.query_one("#choices").display = bool(cells)
        sample, rate = self.query_one("#sample", Select), self.query_one("#rate", Select)
        with sample.prevent(Select.Changed), rate.prevent(Select.Changed):
            sample.set_options([(s, s) for s in samples])
            rate.set_options([(tables.rate(r), r) for r in rates])
            if samples:
                sample.value = samples[0]
            if rates:
                rate.value = rates[0]
        self.show()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.show()

    def action_step(self, delta: int) -> None:
        sample = self.query_one("#sample", Select)
        values = self._samples
        if values:
            i = values.index(sample.value) if sample.value in values else 0
            sample.value = values[(i + delta) % len(values)]

    def show(self) -> None:
        panels = self.query_one("#panels", HorizontalScroll)
        panels.remove_children()
        every = list(self.app.cells.values())
        cells = prompt_cells(every)
        bar = self.query_one("#bar", Static)
        if not cells:
            bar.update("Inspect: what prompt compression dropped")
            panels.mount(Static(nothing_to_show(every), id="empty", markup=False))
            return
        sample_id, rate = self.query_one("#sample", Select).value, self.query_one("#rate", Select).value
        if sample_id is Select.NULL:  # the blank entry: the first sample
            sample_id = self._samples[0]
        chosen = [c for c in cells if c.get("rate") == rate or rate is Select.NULL]
        where = "all rates" if rate is Select.NULL else f"rate {tables.rate(rate)}"
        position = f"sample {self._samples.index(sample_id) + 1}/{len(self._samples)}" if sample_id in self._samples else sample_id
        bar.update(f"struck out: what {len(chosen)} method(s) dropped at {where} · {position} ([ ] next)")
        widgets = []
        for cell in chosen:
            example = next((e for e in cell["examples"] if e["sample_id"] == sample_id), None)
            title = f"{cell['method']} @ {tables.rate_text(cell)}"
            if example is None:
                body, subtitle = Text("(no example kept for this sample)", style="dim"), ""
            else:
                body = marked(example["original"], example.get("dropped") or [])
                subtitle = f"kept {kept_chars(example['original'], example.get('dropped') or []):.0%} of characters"
            widgets.append(self._panel(title, subtitle, body))
        panels.mount_all(widgets)

    @staticmethod
    def _panel(title: str, subtitle: str, body: Text) -> VerticalScroll:
        panel = VerticalScroll(Static(body), classes="panel")
        panel.border_title, panel.border_subtitle = title, subtitle
        return panel
