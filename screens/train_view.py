"""Train: a learned compressor trained as a job — pick a training plan (a shipped one or a file), start, cancel;
live loss curves (the total and its three terms) and the validation curve, a progress bar with samples/s and
ETA, the learning rates, the last checkpoint, and how the training ended.

Everything here reads the app's LearnedState, which only the main thread writes (screens/learned_flows.py).
Labels follow every batch of events; the plots are redrawn by a timer at most four times a second, and only
when events arrived since the last drawing.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, ProgressBar, RichLog, Select, Static
from textual_plotext import PlotextPlot

from screens import learned_flows
from screens.plots import COLOURS, MARKERS
from screens.run import clock
from screens.widgets import ViewBar

PLOT_INTERVAL = 0.25  # seconds between two redraws of the plots, at least
MAX_POINTS = 400  # points per line drawn: a long training's curve is thinned, not cut
LINES = {"total": "loss", **{t: t.replace("_", " ") for t in learned_flows.TERMS}, "val": "validation loss"}
STYLES = {key: (MARKERS[i], COLOURS[i]) for i, key in enumerate(LINES)}
ICONS = {"starting": "●", "training": "●", "cancelling": "◌", "done": "✓", "cancelled": "■", "failed": "✗"}


def thin(points: list) -> list:
    step = max(1, -(-len(points) // MAX_POINTS))
    return points[::step] + ([points[-1]] if points and (len(points) - 1) % step else [])


def plan_summary(data, checkpoint: int | None = None) -> str:
    """One line: what a training plan trains, a checkpoint first where there is one (80 columns cut the end);
    the fields it has, as the trainer checks them all when it starts."""
    if not isinstance(data, dict):
        return "not a training plan (a JSON object)"
    parts = [str(data.get("name", "(no name)"))]
    if checkpoint is not None:
        parts.append(f"checkpoint at step {checkpoint}: ctrl+t resumes or starts over")
    what = str(data.get("architecture", ""))
    if isinstance(data.get("rate"), (int, float)):
        what += f" at rate {data['rate']:g}"
    if data.get("model"):
        what += f" on {data['model']}"
    return " · ".join(parts + ([what.strip()] if what.strip() else []))


class CurvePlot(PlotextPlot):
    DEFAULT_CSS = "CurvePlot { height: 1fr; width: 1fr; min-height: 6; }"

    def draw(self, title: str, series: dict[str, list[tuple[float, float]]]) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(title)
        self.drawn = {}  # key -> the points drawn (tests read it)
        for key, points in series.items():
            points = thin([(x, y) for x, y in points if isinstance(y, (int, float))])
            if points:
                self.drawn[key] = points
                marker, colour = STYLES[key]
                plt.plot([x for x, _ in points], [y for _, y in points], marker=marker, color=colour)
        xs = [x for points in self.drawn.values() for x, _ in points]
        if xs:  # steps are whole numbers: plotext's own ticks would read 5.8, 10.5
            lo, hi = min(xs), max(xs)
            plt.xticks(sorted({int(round(lo + i * (hi - lo) / 4)) for i in range(5)}))
        plt.xlabel("step")
        self.refresh()


class TrainScreen(Screen):
    DEFAULT_CSS = """
    TrainScreen #pick { height: 1; padding: 0 1; }
    TrainScreen #pick > Select { width: 1fr; }
    TrainScreen #pick > Input { width: 1fr; margin-left: 1; }
    TrainScreen #pick > Button { margin-left: 1; min-width: 10; }
    TrainScreen #plan-info, TrainScreen #status, TrainScreen #details { height: 1; padding: 0 1; }
    TrainScreen #status { background: $boost; }
    TrainScreen #details { color: $text-muted; }
    TrainScreen .progress { height: 1; padding: 0 1; }
    TrainScreen .progress > Label { width: 5; }
    TrainScreen .progress > ProgressBar { width: auto; }
    TrainScreen .progress Bar { width: 24; }
    TrainScreen .progress > .ptext { width: 1fr; padding-left: 1; }
    TrainScreen #plots { height: 1fr; min-height: 8; }
    TrainScreen #legend { height: 1; padding: 0 1; }
    TrainScreen #log { height: 4; border-top: solid $primary 50%; }
    """
    BINDINGS = [
        Binding("ctrl+t", "start", "Train"),
        Binding("escape", "cancel", "Cancel training"),
    ]

    def compose(self) -> ComposeResult:
        yield ViewBar("train")
        self.plans = learned_flows.plan_files(getattr(self.app, "train_plans_dir", None))
        options = [(p.stem, str(p)) for p in self.plans]
        with Horizontal(id="pick"):
            yield Select(options, prompt="shipped plan" if options else "no shipped plans", compact=True, id="plan")
            yield Input(placeholder="or a plan file (.json)", compact=True, id="path")
            yield Button("Train ^t", compact=True, id="start")
        yield Static("Choose a training plan: a shipped one or a file.", id="plan-info", classes="ptext", markup=False)
        yield Static("", id="status", classes="ptext", markup=False)
        with Horizontal(classes="progress"):
            yield Label("step")
            yield ProgressBar(id="bar", show_eta=False)
            yield Static("", id="bar-text", classes="ptext", markup=False)
        yield Static("", id="details", classes="ptext", markup=False)
        with Horizontal(id="plots"):
            yield CurvePlot(id="loss-plot")
            yield CurvePlot(id="val-plot")
        yield Static(self._legend(), id="legend", classes="ptext")
        yield RichLog(id="log", max_lines=200, wrap=True, markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.choice: tuple[dict, str] | None = None  # (plan data, source) of the chosen plan, when it reads
        self.chosen: tuple[str, str] | None = None  # (path, name shown) of the chosen plan
        self._drawn = -1
        self._logged = 0
        self._log_state = None
        self._active = None
        self._texts: dict[str, str] = {}
        self.watch(self.app, "learned_version", lambda _: self.update_labels(), init=False)
        self.set_interval(PLOT_INTERVAL, self._redraw_if_stale)
        self.set_interval(1.0, self.update_labels)
        self.update_labels()
        self.redraw()
        self.query_one("#plan", Select).focus()  # the first thing to do here: keyboard users start on it

    # -- choosing a plan -------------------------------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK:
            self.query_one("#path", Input).value = ""
            self._choose(str(event.value), Path(str(event.value)).stem)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.value.strip():
            self._choose(event.value.strip(), event.value.strip())
        elif self.query_one("#plan", Select).value is Select.BLANK:
            self._choose(None, None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()

    def _choose(self, path: str | None, source: str | None) -> None:
        from workbench import jsonio
        from workbench.learned.grid import is_grid

        info = self.query_one("#plan-info", Static)
        self.choice, self.chosen = None, (path, source) if path else None
        if path is None:
            info.update("Choose a training plan: a shipped one or a file.")
            info.set_class(False, "-invalid")
            return
        try:
            data = jsonio.read_json(path, "training plan")
        except jsonio.InputFileError as err:
            info.update(str(err))
            info.set_class(True, "-invalid")
            return
        if is_grid(data):
            info.update(f"{source}: an ablation grid, not one plan: run it with `workbench train --ablation`")
            info.set_class(True, "-invalid")
            return
        self.choice = (data, path)
        step = learned_flows.latest_checkpoint(str(data.get("name", ""))) if isinstance(data, dict) and data.get("name") else None
        info.update(plan_summary(data, step))
        info.set_class(not isinstance(data, dict), "-invalid")

    # -- start and cancel ------------------------------------------------------------------------------

    def action_start(self) -> None:
        from screens.dialogs import ChoiceModal

        if self.app.learned.active:
            self.app.notify("a training is already running (Escape cancels it)", severity="warning")
            return
        if self.choice is None or not isinstance(self.choice[0], dict):
            self.app.notify("choose a training plan first: a shipped one, or the path of a plan file", severity="warning")
            return
        data, source = self.choice
        step = learned_flows.latest_checkpoint(str(data.get("name", ""))) if data.get("name") else None
        if step is None:
            self.app.start_learned(data, source)
            return
        self.app.push_screen(ChoiceModal(f"{data['name']} has a checkpoint at step {step}. Resume from it, or start over "
                                         "(the checkpoints are replaced as the new training saves)?",
                                         [("resume", "Resume", "r"), ("over", "Start over", "o")]),
                             lambda answer: self.app.start_learned(data, source, restart=answer == "over") if answer else None)

    def action_cancel(self) -> None:
        self.app.action_cancel_learned()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return self.app.learned.active
        return True

    # -- labels ----------------------------------------------------------------------------------------

    def update_labels(self) -> None:
        s = self.app.learned
        now = self.app.clock()
        elapsed = None if s.started_at is None else (s.ended_at or now) - s.started_at
        icon = ICONS.get(s.status, "·")
        if s.status == "idle":
            status = "No training yet: choose a plan; ctrl+t trains it while the app stays usable."
        else:
            resumed = f" · resumed from step {s.resumed_from}" if s.resumed_from else ""
            timing = f" · {clock(elapsed)}" if elapsed is not None else ""
            status = f"{icon} {s.status} {s.run or s.plan}{resumed}{timing}"
            if s.status == "failed" and s.error:
                status += f": {s.error}"
        self._set("#status", status)
        bar = self.query_one("#bar", ProgressBar)
        bar.update(total=max(s.total_steps, 1), progress=min(s.step, s.total_steps or 1) if s.total_steps else 0)
        pace = f" · {s.samples_per_s:.1f} samples/s" if isinstance(s.samples_per_s, (int, float)) else ""
        eta = f" · ETA {clock(s.eta_s)}" if s.active and isinstance(s.eta_s, (int, float)) else ""
        self._set("#bar-text", f"{s.step}/{s.total_steps} steps{pace}{eta}" if s.total_steps else
                  ("loading the model and the data…" if s.active else ""))
        self._set("#details", self._details(s))
        self._write_log(s)
        if s.active != self._active:
            if self._active and self.chosen:  # a training ended: its checkpoint is what the next start resumes
                self._choose(*self.chosen)
            self._active = s.active
            self.refresh_bindings()

    @staticmethod
    def _details(s) -> str:
        """Most telling first, as an 80-column line cuts the end: the checkpoint, validation, rates, sizes."""
        parts = []
        if s.checkpoint:
            parts.append(f"checkpoint step {s.checkpoint[0]}")
        if s.evals and isinstance(s.evals[-1][2], (int, float)):
            parts.append(f"val PPL {s.evals[-1][2]:.2f}")
        if s.lr:
            parts.append("lr " + " · ".join(f"{k} {v:.1e}" for k, v in s.lr.items() if isinstance(v, (int, float))))
        if s.params:
            parts.append("params " + " · ".join(f"{k} {v / 1e6:.2f}M" for k, v in s.params.items() if isinstance(v, (int, float))))
        return " · ".join(parts)

    def _set(self, selector: str, text: str) -> None:
        """A one-line label updated without a layout pass (its size is fixed), and only when its text changes."""
        if self._texts.get(selector) != text:
            self._texts[selector] = text
            self.query_one(selector, Static).update(text, layout=False)

    def _write_log(self, s) -> None:
        log = self.query_one("#log", RichLog)
        if self._log_state is not s:
            log.clear()
            self._log_state, self._logged = s, 0
        styles = {"error": "bold red", "warning": "yellow", "info": ""}
        for severity, text in s.log[self._logged:]:
            log.write(Text(("✗ " if severity == "error" else "! " if severity == "warning" else "  ") + text,
                           style=styles.get(severity, "")))
        self._logged = len(s.log)

    # -- plots -----------------------------------------------------------------------------------------

    @staticmethod
    def _legend() -> Text:
        text = Text()
        for key, label in LINES.items():
            marker, colour = STYLES[key]
            text.append(f"{marker} {label}", style=f"bold color({colour})")
            text.append("  ")
        return text

    def _redraw_if_stale(self) -> None:
        if self._drawn != self.app.learned_version and self.is_current:
            self.redraw()

    def redraw(self) -> None:
        self._drawn = self.app.learned_version
        s = self.app.learned
        series = {"total": [(step, loss) for step, loss, _ in s.steps]}
        for term in learned_flows.TERMS:
            series[term] = [(step, terms.get(term)) for step, _, terms in s.steps]
        self.query_one("#loss-plot", CurvePlot).draw("training loss", series)
        last = f" (PPL {s.evals[-1][2]:.2f})" if s.evals and isinstance(s.evals[-1][2], (int, float)) else ""
        self.query_one("#val-plot", CurvePlot).draw(f"validation loss{last}", {"val": [(st, v) for st, v, _ in s.evals]})
