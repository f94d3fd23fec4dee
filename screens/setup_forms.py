"""The Datasets and the Rates & protocol tabs of the setup screen: widgets only.

Their values are read and written by SetupScreen (form() / fill()), which owns validation; these tabs
are mounted lazily, after the app's first frame.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, RadioSet, Static

from workbench.datasets import list_datasets
from screens.widgets import Check, Radio


class DatasetsForm(VerticalScroll):
    """The Datasets tab: bundled datasets (checked = in the plan) and other specs."""

    def compose(self) -> ComposeResult:
        yield Static("    dataset         samples  seed", classes="note")
        for info in list_datasets():
            with Horizontal(classes="ds-row"):
                yield Check(info.name, id=f"ds-{info.name}", compact=True)
                yield Input("4", id=f"ds-{info.name}-samples", type="integer", compact=True)
                yield Input("0", id=f"ds-{info.name}-seed", type="integer", compact=True)
                yield Static(f"{info.kind}: {info.description}", classes="desc", markup=False)
        yield Static("", classes="note")
        with Horizontal(classes="row"):
            yield Label("Other datasets")
            yield Input(id="ds-other", placeholder="hf:path[:config][:split], file.txt, file.jsonl (comma-separated)",
                        compact=True)
        with Horizontal(classes="ds-row"):
            yield Static("    samples, seed", classes="note")
            yield Input("4", id="ds-other-samples", type="integer", compact=True)
            yield Input("0", id="ds-other-seed", type="integer", compact=True)


class RatesForm(VerticalScroll):
    """The Rates & protocol tab."""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("Rates as")
            with RadioSet(id="rates-mode", compact=True):
                yield Radio("a list", value=True, id="rates-as-list")
                yield Radio("a sweep", id="rates-as-sweep")
        with Horizontal(classes="row", id="rates-list-row"):
            yield Label("Rates (kept)")
            yield Input(id="rates-list", placeholder="0.75, 0.5, 0.25", compact=True)
        with Horizontal(classes="row", id="rates-sweep-row"):
            yield Label("start/stop/step")
            yield Input("0.9", id="sweep-start", compact=True)
            yield Input("0.1", id="sweep-stop", compact=True)
            yield Input("0.2", id="sweep-step", compact=True)
        yield Static("", id="rates-preview", classes="note", markup=False)
        with Horizontal(classes="row"):
            yield Label("Protocol")
            with RadioSet(id="protocol", compact=True):
                yield Radio("context→continuation", value=True, id="proto-cc")
                yield Radio("chunked", id="proto-chunked")
                yield Radio("task", id="proto-task")
                yield Radio("decoding", id="proto-decoding")
        with Horizontal(classes="row"):
            yield Label("Context tokens")
            yield Input("1024", id="context-tokens", type="integer", compact=True)
        with Horizontal(classes="row"):
            yield Label("Scored tokens")
            yield Input("128", id="continuation-tokens", type="integer", compact=True)
        with Horizontal(classes="row", id="chunk-row"):
            yield Label("Chunk size")
            yield Input("128", id="chunk-size", type="integer", compact=True)
        with Vertical(id="task-rows"):
            yield Static("task: compress the context, ask the question, generate greedily, score the answer "
                         "(GSM8K accuracy, needle retrieval, MeetingBank ROUGE-L, QA F1)", classes="note")
            with Horizontal(classes="row"):
                yield Label("Max new tokens")
                yield Input(id="max-new-tokens", type="integer", placeholder="the task's default", compact=True)
            with Horizontal(classes="row"):
                yield Label("Few-shot (GSM8K)")
                yield Input("4", id="n-shots", type="integer", compact=True)
            with Horizontal(classes="row"):
                yield Label("Needle depths")
                yield Input(id="depths", placeholder="fractions of the context, e.g. 0.1, 0.5, 0.9 (blank: default)",
                            compact=True)
            yield Check("question-aware compressors see the question", False, id="question-aware", compact=True)
        yield Check("one prefill for every rate where results are identical (shared prefill)", True,
                       id="shared-prefill", compact=True)
        with Horizontal(classes="row"):
            yield Label("Batch size")
            yield Input("auto", id="batch-size", compact=True,
                        placeholder="auto (GPU memory; 1 on a CPU) or samples per forward pass")
        with Horizontal(classes="row"):
            yield Label("Workers")
            yield Input(id="workers", compact=True, placeholder="blank: this process; N: Ray workers, one per GPU (ray extra)")
        with Horizontal(classes="row"):
            yield Label("Ray cluster")
            yield Input(id="ray-address", compact=True, placeholder="blank: a local Ray; auto or HOST:PORT: an existing cluster")
        yield Static("rate = fraction of context tokens KEPT (1.0 = uncompressed). Scored tokens are "
                     "predicted through the compressed cache.", classes="note")
