"""Compare: two or more saved sessions side by side — one plot each on the same axes, and a table
with a column per session where rows that differ are highlighted (best green, worst red).

Rows are matched on (dataset, method label, rate), not on the model, so one plan run on two models
(or two devices) lines up. The current session joins the comparison when it has been saved.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from workbench import figures, tables
from workbench.session import Session, SessionError
from screens import data
from screens.widgets import ViewBar
from screens.plots import Legend, MetricPlot, line_styles

METRIC_ORDER = ("dppl", "dpct", "ppl", "score", "dscore", "kept", "tokens")
TOLERANCE = 1e-9  # relative: values this close are "the same" (JSON round-trips are exact anyway)


def row_key(cell: dict) -> tuple:
    return cell["dataset"], cell["method"], figures.rate_of(cell)


def letter(i: int) -> str:
    """Sessions are columns A, B, C… (their file names are too long for a column header at 80 columns)."""
    return chr(ord("A") + i) if i < 26 else f"S{i + 1}"


def shorten(name: str, width: int) -> str:
    """A session name cut in the middle, where names of one plan differ least: 'quickstart…0-101500'."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return name[:head] + "…" + name[len(name) - (width - 1 - head):]


def comparison(sessions: list[Session], metric: str) -> list[tuple[tuple, list]]:
    """[((dataset, method, rate), [value per session or None]), ...] in plan order of the first session."""
    read = data.METRICS[metric][1]
    rows: dict[tuple, list] = {}
    for i, s in enumerate(sessions):
        for cell in s.cells.values():
            values = rows.setdefault(row_key(cell), [None] * len(sessions))
            y = read(cell) if cell.get("status") == "done" else None
            values[i] = y
    return list(rows.items())


class CompareScreen(Screen):
    DEFAULT_CSS = """
    CompareScreen #bar { height: 1; padding: 0 1; background: $boost; }
    CompareScreen #plots { height: 1fr; min-height: 8; }
    CompareScreen DataTable { height: 1fr; }
    """
    BINDINGS = [
        Binding("a", "add", "Add session"),
        Binding("d", "drop", "Drop last"),
        Binding("m", "cycle_metric", "Metric"),
    ]

    def compose(self) -> ComposeResult:
        yield ViewBar("compare")
        yield Static("", id="bar", markup=False)
        yield Horizontal(id="plots")
        yield Legend()
        yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sessions: list[Session] = []
        self.metric: str | None = None  # None: chosen from the first session (ΔPPL, or its task score)
        self._seen = None
        self.on_screen_resume()

    def on_screen_resume(self) -> None:
        current = self.app.session
        # The open session joins once it is on disk (the comparison is of saved sessions).
        if current is not None and current.path is not None and current is not self._seen and not self.app.run_state.active:
            self._seen = current
            if all(s.path != current.path for s in self.sessions):
                self.sessions.insert(0, current)
        self.refresh_view()

    def add_session(self, session: Session) -> None:
        self.sessions = [s for s in self.sessions if s.path is None or s.path != session.path] + [session]
        self.refresh_view()

    def action_add(self) -> None:
        from screens.dialogs import PathModal, session_choices

        def chosen(path: str | None) -> None:
            if not path:
                return
            try:
                self.add_session(Session.load(Path(path).expanduser()))
            except (SessionError, OSError) as err:
                from screens.dialogs import ErrorModal

                self.app.push_screen(ErrorModal("Could not open the session", str(err), path))

        self.app.push_screen(PathModal("Add a session to the comparison", "", session_choices(self.app.sessions_dir),
                                       action="Add"), chosen)

    def action_drop(self) -> None:
        if self.sessions:
            self.sessions.pop()
            self.refresh_view()

    def action_cycle_metric(self) -> None:
        self.metric = METRIC_ORDER[(METRIC_ORDER.index(self._metric()) + 1) % len(METRIC_ORDER)]
        self.refresh_view()

    def _metric(self) -> str:
        if self.metric:
            return self.metric
        return data.quality_metric(list(self.sessions[0].cells.values())) if self.sessions else "dppl"

    def _session_label(self, session: Session) -> str:
        return session.path.stem if session.path else session.plan.name

    def refresh_view(self) -> None:
        metric = self._metric()
        label = data.METRICS[metric][0]
        names = [self._session_label(s) for s in self.sessions]
        letters = [letter(i) for i in range(len(names))]
        bar = self.query_one("#bar", Static)
        head = f"{label}, same axes: " if len(names) > 1 else "Compare needs two or more saved sessions (now: "
        room = max(12, ((self.size.width or 80) - 2 - len(head)) // max(len(names), 1) - 5)
        named = "  ".join(f"{k}: {shorten(n, room)}" for k, n in zip(letters, names))
        if len(self.sessions) < 2:
            bar.update(f"{head}{named}): press a to add one." if names else
                       "Compare needs two or more saved sessions: press a to add one.")
        else:
            bar.update(f"{head}{named}")
        plot_room = max(12, (self.size.width or 80) // max(len(names), 1) - 12)
        self._plots([f"{k}: {shorten(n, plot_room)}" for k, n in zip(letters, names)], metric)
        self._table(letters, metric)

    def _plots(self, names: list[str], metric: str) -> None:
        box = self.query_one("#plots", Horizontal)
        box.remove_children()
        cells = [list(s.cells.values()) for s in self.sessions]
        every = [data.series(c, metric) for c in cells]
        limits = data.bounds(every)  # the same axes for every session: differences read at a glance
        styles = line_styles([label for c in cells for label in data.series_order(c)], [label for s in every for label in s])
        plots = [MetricPlot(metric, title=name) for name in names]
        box.mount_all(plots)
        for plot, c in zip(plots, cells):
            plot.draw(c, metric, limits=limits, styles=styles)
        self.query_one(Legend).show(styles)

    def _table(self, names: list[str], metric: str) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        label = data.METRICS[metric][0]
        rows = comparison(self.sessions, metric)
        several = len({dataset for (dataset, _, _), _ in rows}) > 1  # one dataset: no column for it
        table.add_columns(*(["Dataset"] if several else []), "Method", "Rate", *(f"{label} {n}" for n in names))
        if len(names) == 2:
            table.add_column(f"Δ {names[1]}−{names[0]}")
        for (dataset, method, rate), values in rows:
            present = [v for v in values if isinstance(v, (int, float))]
            differs = len(present) > 1 and max(present) - min(present) > TOLERANCE * max(1.0, max(abs(v) for v in present))
            lower_better = metric in ("dppl", "dpct", "ppl")
            best = (min(present) if lower_better else max(present)) if differs else None
            worst = (max(present) if lower_better else min(present)) if differs else None
            row = [*([dataset] if several else []), method, "thr" if rate is None else tables.rate(rate)]
            for v in values:
                if not isinstance(v, (int, float)):
                    row.append(Text("—", style="dim", justify="right"))
                    continue
                style = "bold green" if v == best else "bold red" if v == worst else ""
                row.append(Text(tables.value_text(metric, v), style=style, justify="right"))
            if len(names) == 2:
                a, b = values
                diff = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
                row.append(Text(tables.value_text(metric, diff, signed=True), style="bold yellow" if differs else "dim",
                                justify="right"))
            table.add_row(*row)
