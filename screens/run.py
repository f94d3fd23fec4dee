"""Progress: the run in the worker — bars for the run and the current cell, elapsed time and ETA, device
memory, live plots of quality and KV budget against rate, and a log where failing cells show their error.

Everything here reads the app's RunState and cell copies, which only the main thread writes. Labels
follow every run event (they are cheap) and a one-second timer (the elapsed time and the ETA move between
samples); plots are redrawn by a timer at most four times a second, and only when a cell has finished
since the last drawing. Once a run is over the view says how it ended and what the cells came to.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, RichLog, Static

from workbench import figures, tables
from screens import data
from screens.widgets import ViewBar
from screens.plots import Legend, MetricPlot, draw_steps, line_styles

QUALITY_METRICS = ("dppl", "dpct", "ppl", "score", "dscore")
BUDGET_METRICS = ("tokens", "bytes", "kept", "steps")  # steps: KV budget over decoding steps (decoding protocol)
PLOT_INTERVAL = 0.25  # seconds: at most four redraws a second, however fast cells finish


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


ICONS = {"running": "●", "cancelling": "◌", "finished": "✓", "cancelled": "■", "failed": "✗"}


def status_text(state, elapsed: float | None) -> str:
    """How the run stands or how it ended: '● running', '✓ finished in 1m02s', '✗ failed after 0m13s: …'."""
    icon = ICONS.get(state.status, "·")
    if state.opened:
        return f"{icon} {state.status} (opened from its file)"
    if state.active or elapsed is None:
        return f"{icon} {state.status}"
    after = "in" if state.status == "finished" else "after"
    text = f"{icon} {state.status} {after} {clock(elapsed)}"
    if state.status == "failed" and state.failure:
        text += " (why: below)"
    elif state.status == "cancelled":
        text += " (ctrl+r resumes)"
    return text


def api_text(stats: dict) -> str:
    """A remote evaluator's progress in one line: done, in flight, waiting on a rate limit, spend (and the cap)."""
    cap = f" of ${stats['budget_usd']:.2f}" if stats.get("budget_usd") is not None else ""
    waiting = f" · {stats['waiting']} waiting on rate limit" if stats.get("waiting") else ""
    failed = f" · {stats['failed']} failed" if stats.get("failed") else ""
    return (f"API {stats['done']} done ({stats['cached']} cached) · {stats['in_flight']} in flight{waiting}{failed} · "
            f"${stats['session_usd']:.4f}{cap} spent")


def workers_text(workers: dict) -> str:
    """Ray workers in one line: each one's device, what it measures (or its state) and its last pace."""
    parts = []
    for index in sorted(workers):
        w = workers[index]
        what = w.get("unit") if w["state"] in ("measuring", "measured") else w["state"]
        pace = f" {w['samples_per_s']:.1f}/s" if w.get("samples_per_s") else ""
        parts.append(f"w{index} {w.get('device') or '?'}: {what or ''}{pace}")
    return " · ".join(parts)


class RunScreen(Screen):
    DEFAULT_CSS = """
    RunScreen #status { height: 1; padding: 0 1; background: $boost; }
    RunScreen .progress { height: 1; padding: 0 1; }
    RunScreen .progress > Label { width: 5; }
    RunScreen .progress > ProgressBar { width: auto; }
    RunScreen .progress Bar { width: 24; }
    RunScreen .progress > .ptext { width: 1fr; padding-left: 1; }
    RunScreen #device { height: 1; padding: 0 1; color: $text-muted; }
    RunScreen #plots { height: 1fr; min-height: 8; }
    RunScreen #log { height: 4; border-top: solid $primary 50%; }
    RunScreen.-failed #plots, RunScreen.-failed #legend { display: none; }
    RunScreen.-failed #log { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel run"),
        Binding("ctrl+c", "cancel", "Cancel run", show=False, priority=True),
        Binding("m", "cycle_quality", "Metric"),
        Binding("b", "cycle_budget", "Budget unit"),
    ]

    def compose(self) -> ComposeResult:
        yield ViewBar("run")
        yield Static("", id="status", markup=False)
        with Horizontal(classes="progress"):
            yield Label("run")
            yield ProgressBar(id="run-bar", show_eta=False)
            yield Static("", id="run-text", classes="ptext", markup=False)
        with Horizontal(classes="progress"):
            yield Label("cell")
            yield ProgressBar(id="cell-bar", show_eta=False)
            yield Static("", id="cell-text", classes="ptext", markup=False)
        yield Static("", id="device", markup=False)
        with Horizontal(id="plots"):
            yield MetricPlot("dppl", id="quality-plot")
            yield MetricPlot("tokens", id="budget-plot")
        yield Legend(id="legend")
        yield RichLog(id="log", max_lines=200, wrap=True, markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.quality: str | None = None  # None: ΔPPL, or the task score for a task session, until m is pressed
        self.budget: str | None = None  # None: over decoding steps when the run decodes, else tokens kept / layer
        self._drawn = -1
        self._live_drawn = -1
        self._logged = 0
        self._log_state = None
        self._bindings_active = None
        self._texts: dict[str, str] = {}
        self._memory_text = ""
        self.watch(self.app, "tick", lambda _: self.update_labels(), init=False)
        self.set_interval(PLOT_INTERVAL, self._redraw_if_stale)
        self.set_interval(1.0, self._every_second)
        self.update_labels()
        self._memory()
        self.redraw()

    def _every_second(self) -> None:
        self.update_labels()
        self._memory()

    def on_screen_resume(self) -> None:
        self.update_labels()
        self.redraw()

    # -- labels --------------------------------------------------------------------------------------

    def update_labels(self) -> None:
        app, state, now = self.app, self.app.run_state, self.app.clock()
        session = app.session
        elapsed = state.elapsed(now)
        training = app.train_status if app.training_active() else None  # a training job (command palette)
        if training and not state.active:  # its progress here while no run holds the line
            self._set("#status", f"Training: {training}")
        elif session is None:
            self._set("#status", "No run yet: ctrl+r runs the plan of Setup (F2), ctrl+o opens a session.")
        else:
            self._set("#status", f"{status_text(state, elapsed)} · {session.plan.name} · {data.short_path(session.path)}")
        run_bar = self.query_one("#run-bar", ProgressBar)
        timing = "" if elapsed is None else f" · {clock(elapsed)} elapsed"
        if state.active:  # samples accounted for, as the runner counts them (a failed cell's count as settled)
            run_bar.update(total=max(state.total, 1), progress=state.done)
            self._set("#run-text", f"{state.done}/{state.total} samples{timing} · ETA {clock(state.eta(now))}")
        else:  # over: what the run produced
            measured = figures.measured_samples(app.cells.values())
            run_bar.update(total=max(state.total, 1), progress=measured)
            self._set("#run-text", f"{measured}/{state.total} samples measured{timing}")
        cell = app.cells.get(state.cell or "") if state.cell else None
        live = session.cells.get(state.cell) if session is not None and state.cell else None
        cell_bar = self.query_one("#cell-bar", ProgressBar)
        if cell is not None and live is not None and state.active:
            done, total = live.get("samples_done", 0), live.get("samples_total", 1) or 1  # an int read: safe across threads
            cell_bar.update(total=total, progress=min(done, total))
            self._set("#cell-text", f"{cell['method']} @ {tables.rate_text(cell)} · {cell['dataset']} · {done}/{total}")
        elif state.active:
            cell_bar.update(total=1, progress=0)
            self._set("#cell-text", state.message or state.model)
        else:  # over (or opened): the cells' outcome, the bar showing the cells that have one
            counts = figures.cell_counts(app.cells.values())
            cell_bar.update(total=max(counts.total, 1), progress=counts.total - counts.left)
            self._set("#cell-text", tables.counts_text(counts) if counts.total else "no cells")
        self.set_class(state.status == "failed" and not any(c.get("status") == "done" for c in app.cells.values()), "-failed")
        self._device_line()
        self._write_log()
        if state.active != self._bindings_active:  # "Cancel run" is offered only while a run is active;
            self._bindings_active = state.active  # refreshing recomposes the footer: only on a change
            self.refresh_bindings()

    def _set(self, selector: str, text: str) -> None:
        """Update a one-line label without a layout pass (their size is fixed): run events arrive up to
        ten times a second, and a layout pass re-renders the whole screen, plots included."""
        if self._texts.get(selector) != text:
            self._texts[selector] = text
            self.query_one(selector, Static).update(text, layout=False)

    def _write_log(self) -> None:
        state = self.app.run_state
        log = self.query_one("#log", RichLog)
        if self._log_state is not state:  # a new run: start the log afresh
            log.clear()
            self._log_state, self._logged = state, 0
        entries = list(state.log)[self._logged:]
        self._logged = len(state.log)
        styles = {"error": "bold red", "warning": "yellow", "info": ""}
        for severity, text in entries:
            log.write(Text(("✗ " if severity == "error" else "! " if severity == "warning" else "  ") + text,
                           style=styles.get(severity, "")))

    def _memory(self) -> None:
        self._memory_text = self.app.memory_probe()  # read once a second: a GPU query is not free
        self._device_line()

    def _device_line(self) -> None:
        state = self.app.run_state
        model = state.model
        line = f"{model} · {self._memory_text}" if model else self._memory_text
        if state.api:  # a remote evaluator: requests, rate-limit waits and money, before the local figures
            line = f"{api_text(state.api)} · {line}"
        if state.workers:  # Ray workers: each one's device, unit and pace
            line = f"{workers_text(state.workers)} · {line}"
        self._set("#device", line)

    # -- plots ---------------------------------------------------------------------------------------

    def _redraw_if_stale(self) -> None:
        if self._drawn != self.app.results_version and self.is_current:
            self.redraw()
        elif self._live_drawn != self.app.run_state.live_version and self.is_current:
            self.redraw(only="#budget-plot")

    def redraw(self, only: str | None = None) -> None:
        """Both plots and the legend, or ``only`` one plot (a key that changes one plot redraws one)."""
        if only is None:
            self._drawn = self.app.results_version
        cells = list(self.app.cells.values())
        quality = self.quality or data.quality_metric(cells)
        budget = self._budget(cells)
        self._live_drawn = self.app.run_state.live_version
        steps = data.step_curves(cells, self.app.run_state.live) if budget == "steps" else {}
        budget_lines = steps if budget == "steps" else data.series(cells, budget)
        styles = line_styles(data.series_order(cells), [*data.series(cells, quality), *budget_lines])
        if only in (None, "#quality-plot"):
            self.query_one("#quality-plot", MetricPlot).draw(cells, quality, styles=styles)
        if only in (None, "#budget-plot"):
            plot = self.query_one("#budget-plot", MetricPlot)
            if budget == "steps":
                draw_steps(plot, steps, styles)
            else:
                plot.draw(cells, budget, styles=styles, title=f"KV budget: {data.METRICS[budget][0]}")
        if only is None:
            self.query_one(Legend).show(styles)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "cancel":
            return self.app.run_state.active  # False: not in the footer, the key does nothing
        return True

    def action_cancel(self) -> None:
        self.app.action_cancel_run()

    def action_cycle_quality(self) -> None:
        current = self.quality or data.quality_metric(list(self.app.cells.values()))
        self.quality = QUALITY_METRICS[(QUALITY_METRICS.index(current) + 1) % len(QUALITY_METRICS)]
        self.redraw(only="#quality-plot")

    def _decodes(self, cells: list[dict]) -> bool:
        return bool(self.app.run_state.live) or any(c.get("generated_tokens") is not None for c in cells)

    def _budget(self, cells: list[dict]) -> str:
        if self.budget is not None:
            return self.budget
        return "steps" if self._decodes(cells) else "tokens"

    def action_cycle_budget(self) -> None:
        cells = list(self.app.cells.values())
        current = self._budget(cells)
        # Over decoding steps only where something decodes: elsewhere that plot would stay empty.
        order = BUDGET_METRICS if self._decodes(cells) else tuple(m for m in BUDGET_METRICS if m != "steps")
        self.budget = order[(order.index(current) + 1) % len(order)] if current in order else order[0]
        self.redraw(only="#budget-plot")
