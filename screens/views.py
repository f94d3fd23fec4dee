"""The views of the app, written down once: the modes, their F-keys, the view bar, the command palette's
``view: …`` commands and the help page are all built from :data:`VIEWS`. Nothing here imports a screen:
a screen's module is imported when the view is first shown.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    mode: str  # the app's mode name ("help" is a pushed screen, not a mode)
    name: str  # as the view bar, the help page and the palette say it
    key: str  # the function key that shows it
    module: str  # screens.<module> holds ...
    cls: str  # ... this Screen class
    summary: str  # one line: the palette's help text
    text: str  # a paragraph: the help page
    in_bar: bool = True  # listed on the view bar (at 80 columns the bar has room for six views and Help)

    @property
    def command(self) -> str:
        return f"view: {self.name.lower()}"

    @property
    def binding_key(self) -> str:
        return self.key.lower()


VIEWS: tuple[View, ...] = (
    View("setup", "Setup", "F2", "setup", "SetupScreen", "model, datasets, methods, rates, protocol",
         "The plan: model (embedded smollm2-135m, a hub id, a folder or a .gguf; device, dtype, memory, and whether it "
         "is available here), datasets and samples, methods of both families with their parameters, rates (a list or "
         "a sweep), the protocol. Checked as you type: the bar at the bottom shows the cell count and forward passes, "
         "or the field that is wrong."),
    View("run", "Progress", "F3", "run", "RunScreen", "progress and live plots of the run",
         "The run in a worker thread: progress of the run and of the current cell, elapsed time and ETA, device "
         "memory, live plots of ΔPPL and of the KV budget against rate (one line per method). Escape cancels after the "
         "current sample; finished cells are kept in the session file, and ctrl+r offers to resume."),
    View("results", "Results", "F4", "results", "ResultsScreen", "sortable table of every cell, plots, export",
         "Every cell: method, rate, achieved kept fraction, PPL, ΔPPL, ΔPPL %, KV bytes, seconds per sample, task "
         "score, status, family. Sort by column, switch to plots, export CSV / Markdown (in the order shown) or JSON."),
    View("compare", "Compare", "F5", "compare", "CompareScreen", "two or more saved sessions on the same axes",
         "Two or more saved sessions: one plot each on the same axes, and a table with a column per session; the "
         "best value of a row is green, the worst red."),
    View("inspect", "Inspect", "F6", "inspect", "InspectScreen", "what prompt compression dropped, per method",
         "For prompt-compression cells: the original text of one sample with what each method dropped struck out."),
    View("analysis", "Analysis", "F7", "analysis", "AnalysisScreen", "where each method breaks: r*, ranking, tests, verdict",
         "The threshold analysis of the open session, as `workbench analyze` writes it: per method the kept rate r* "
         "below which quality falls off, with its interval (or why no breakpoint is supported), the area under the "
         "quality-vs-rate curve relative to the baseline, the rank from paired tests on the same samples; whether "
         "the thresholds and the curves differ, the method × task-type interaction, and the verdict.", in_bar=False),
    View("train", "Train", "F8", "train_view", "TrainScreen", "train a learned compressor: live loss and validation curves",
         "A learned compressor trained as a job: choose a training plan (a shipped one or a file) and ctrl+t trains it in "
         "a worker; the loss curves (the total and its teacher-forcing, generation and contrastive terms), the validation "
         "curve, steps with samples/s and ETA, the learning rates, the last checkpoint. A plan with a checkpoint resumes "
         "from it (or starts over, if you say so); Escape stops at the next step and keeps the checkpoint.", in_bar=False),
    View("help", "Help", "F1", "help", "HelpScreen", "key bindings and what each view does (F1 or ?)", ""),
)
MODES = tuple(v for v in VIEWS if v.mode != "help")
VIEW_BY_MODE = {v.mode: v for v in VIEWS}
