"""Analysis: where each method of the open session breaks — r* with its interval or why none is supported, the
area under the curve, the paired ranking, the homogeneity and interaction tests, the verdict — and the curves.

The numbers are those of `workbench analyze` on the same session (workbench.analysis, formatted by
workbench.analysis.text). The analysis runs in a thread worker (statsmodels and scipy take a second or two
to import and fit); the worker returns the report and the handler here fills the widgets. It reruns when the
session's results change, never while a run is in progress. ``a`` adds a saved session to the analysis (as
`workbench analyze A B` does: only the cells and samples they share, each session's methods their own lines).
``c`` shows the compression points of the open session's decoding cells instead (`workbench points-meta`: what
the text around each point is, and accuracy against the number of compressions; workbench.points.meta).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Static
from textual.worker import Worker, WorkerState
from textual_plotext import PlotextPlot

from screens.plots import RATE_LABEL, Legend, line_styles
from screens.widgets import ViewBar
from workbench.analysis import text

COLUMNS = ("Method", "r* [interval]", "Davies p", "AUC", "Rank", "Mean")


def analyse(sessions: list) -> dict:
    """In the worker: the report of the sessions, labelled as `workbench analyze` labels its files (the file
    name; a session not saved yet by its plan's name)."""
    from workbench.analysis.analyze import analyze
    from workbench.analysis.data import session_labels

    labels = session_labels([s.path or s.plan.name for s in sessions])
    return analyze(list(zip(labels, sessions)))


def rows(report: dict) -> list[tuple[str, ...]]:
    """The methods table, as the view shows it (a test compares it with the CLI's report)."""
    ranks = {r["method"]: r["rank"] for r in report["paired"]["ranking"]}
    out = []
    for name, entry in report["methods"].items():
        th = entry["threshold"]
        out.append((name, text.r_star(th), text.p(th["davies_p"]), text.auc(entry["auc"]), str(ranks.get(name, "—")),
                    text.quality(entry["mean"], report["metric"])))
    return out


class CurvesPlot(PlotextPlot):
    DEFAULT_CSS = "CurvesPlot { height: 1fr; width: 1fr; min-height: 8; }"

    def draw(self, report: dict | None, styles: dict[str, tuple[str, int]]) -> None:
        plt = self.plt
        plt.clear_figure()
        if not report:
            return
        plt.title("mean quality vs rate; r*: vertical line")
        plt.xlabel(RATE_LABEL)
        for name, entry in report["methods"].items():
            pts = entry["curve"]
            marker, colour = styles[name]
            plt.plot([p["rate"] for p in pts], [p["mean"] for p in pts], marker=marker, color=colour)
            th = entry["threshold"]
            if th["status"] == "found":
                plt.vline(th["r_star"], color=colour)
        self.refresh()


class AnalysisScreen(Screen):
    DEFAULT_CSS = """
    AnalysisScreen #bar { height: 1; padding: 0 1; background: $boost; text-wrap: nowrap; text-overflow: ellipsis; }
    AnalysisScreen DataTable { height: auto; max-height: 50%; }
    AnalysisScreen #below { height: 1fr; }
    AnalysisScreen #tests, AnalysisScreen #points { padding: 0 1; }
    """
    BINDINGS = [Binding("p", "toggle_view", "Curves / verdict"), Binding("c", "points", "Compression points"),
                Binding("a", "add", "Add session"), Binding("d", "drop", "Drop added")]

    def compose(self) -> ComposeResult:
        yield ViewBar("analysis")  # F7 is not on the bar (no room at 80 columns): the line below names the view
        yield Static("", id="bar", markup=False)
        yield DataTable(id="methods", cursor_type="row", zebra_stripes=True)
        with ContentSwitcher(initial="tests", id="below"):
            with VerticalScroll(id="tests"):
                yield Static("", id="verdict", markup=False)
            with Vertical(id="curves"):
                yield CurvesPlot()
                yield Legend()
            with VerticalScroll(id="points"):
                yield Static("", id="points-report", markup=False)
        yield Footer(compact=True)

    def action_toggle_view(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "curves" if switcher.current == "tests" else "tests"

    def action_points(self) -> None:
        """The compression points of the open session (pure Python over its records: no worker needed)."""
        from workbench.points.meta import MetaInputError, analyse, text

        switcher = self.query_one(ContentSwitcher)
        if switcher.current == "points":
            switcher.current = "tests"
            return
        try:
            shown = text(analyse(self.app.session)) if self.app.session is not None else "No session."
        except MetaInputError as err:
            shown = f"No compression points: {err}"
        self.query_one("#points-report", Static).update(shown)
        switcher.current = "points"

    def on_mount(self) -> None:
        self.report: dict | None = None
        self.problem: str | None = None
        self._analysed = None  # (sessions, results_version) the report is of
        self.added: list = []  # saved sessions analysed with the open one (only their shared cells: see the bar)
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        app = self.app
        if app.session is None:
            self._say("No session: run one (ctrl+r) or open one (ctrl+o), then come back.")
            return
        if app.run_state.active:
            self._say("A run is in progress: the analysis waits until it ends.")
            return
        self.reanalyse()

    def sessions(self) -> list:
        current = self.app.session
        return [current, *(s for s in self.added if s.path is None or s.path != current.path)]

    def reanalyse(self) -> None:
        if self.app.session is None or self.app.run_state.active:
            return
        sessions = self.sessions()
        key = (tuple(map(id, sessions)), self.app.results_version)
        if key == self._analysed:
            return
        self._analysed = key
        self._say("analysing… (segmented regressions and paired tests)")
        self.run_worker(lambda: analyse(sessions), thread=True, exclusive=True, exit_on_error=False, group="analysis")

    def action_add(self) -> None:
        from pathlib import Path

        from screens.dialogs import ErrorModal, PathModal, session_choices
        from workbench.session import Session, SessionError

        def chosen(path: str | None) -> None:
            if not path:
                return
            try:
                session = Session.load(Path(path).expanduser())
            except (SessionError, OSError) as err:
                self.app.push_screen(ErrorModal("Could not open the session", str(err), path))
                return
            self.added = [s for s in self.added if s.path != session.path] + [session]
            self.reanalyse()

        self.app.push_screen(PathModal("Analyse with another session (their shared cells)", "",
                                       session_choices(self.app.sessions_dir), action="Add"), chosen)

    def action_drop(self) -> None:
        if self.added:
            self.added.pop()
            self.reanalyse()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "analysis":
            return
        event.stop()  # the app's handler is for runs and probes
        if event.state == WorkerState.SUCCESS:
            self.show(event.worker.result)
        elif event.state == WorkerState.ERROR:
            from workbench.analysis.data import AnalysisInputError

            err = event.worker.error
            self.report = None
            self.problem = str(err) if isinstance(err, AnalysisInputError) else f"the analysis failed: {err!r}"
            self._say(f"Nothing to analyse: {self.problem}" if isinstance(err, AnalysisInputError) else self.problem)

    def _say(self, line: str) -> None:
        self.query_one("#bar", Static).update(f"Analysis: {line}")

    def show(self, report: dict) -> None:
        self.report, self.problem = report, None
        left = f"; {len(report['left_out'])} left out (below)" if report["left_out"] else ""
        quality = report["quality"].split(" (")[0]
        several = f"{len(report['sessions'])} sessions, " if len(report["sessions"]) > 1 else ""
        self._say(f"{several}{len(report['methods'])} methods, {quality} vs baseline on the same samples, "
                  f"α = {report['alpha']:g}{left}; p: curves")
        table = self.query_one(DataTable)
        table.clear()
        for row in rows(report):
            table.add_row(*row)
        lines = Text()
        for sentence in report["verdict"]:
            lines.append("• " + sentence + "\n")
        for line in report["left_out"]:
            lines.append("left out: " + line + "\n", style="dim")
        self.query_one("#verdict", Static).update(lines)
        styles = line_styles(report["methods"])
        self.query_one(CurvesPlot).draw(report, styles)
        self.query_one(Legend).show(styles)
