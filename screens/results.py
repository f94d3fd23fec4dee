"""Results: every cell of the session in a sortable table, a plot view, and exports.

Sorting uses the raw figures (not the formatted text), missing values last. Keys 1–9 sort by that
column (press again to reverse), ``s`` moves the sort to the next column, a click on a header sorts
by it. The table is rebuilt when cells finish, at most a few times a second and only while shown.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Static

from screens import data
from screens.widgets import ViewBar
from screens.plots import Legend, MetricPlot, line_styles

STATUS_STYLE = {"done": "", "error": "bold red", "unavailable": "yellow", "cancelled": "magenta", "running": "cyan",
                "pending": "dim"}
REFRESH_INTERVAL = 0.3


class ResultsScreen(Screen):
    DEFAULT_CSS = """
    ResultsScreen #bar { height: 1; padding: 0 1; background: $boost; }
    ResultsScreen #views { height: 1fr; }
    ResultsScreen DataTable { height: 1fr; }
    ResultsScreen #plots { height: 1fr; }
    ResultsScreen #detail { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """
    BINDINGS = [
        Binding("s", "sort_next", "Sort next"),
        Binding("r", "reverse", "Reverse"),
        Binding("p", "toggle_view", "Plots/table"),
        Binding("ctrl+e", "app.export", "Export"),
        Binding("m", "cycle_metric", "Metric", show=False),
        *(Binding(str(i + 1 if i < 9 else 0), f"sort_column({i})", f"Sort by column {i + 1}", show=False) for i in range(10)),
    ]

    def compose(self) -> ComposeResult:
        yield ViewBar("results")
        yield Static("", id="bar", markup=False)
        with ContentSwitcher(initial="table", id="views"):
            yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="plots"):
                with Horizontal():
                    yield MetricPlot("dppl", id="quality-plot")
                    yield MetricPlot("tokens", id="budget-plot")
                yield Legend()
        yield Static("", id="detail", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sort_key, self.reverse = "rate", True
        self.metric: str | None = None  # None: ΔPPL, or the task score for a task session, until m is pressed
        self._shown = -1
        self.columns: list[data.Column] = []
        self.order: list[dict] = []
        self.set_interval(REFRESH_INTERVAL, self._refresh_if_stale)
        self.refresh_table()

    def on_screen_resume(self) -> None:
        self._refresh_if_stale()

    def _refresh_if_stale(self) -> None:
        if self._shown != self.app.results_version and self.is_current:
            self.refresh_table()

    # -- the table -----------------------------------------------------------------------------------

    def refresh_table(self) -> None:
        self._shown = self.app.results_version
        cells = list(self.app.cells.values())
        session = self.app.session
        bar = self.query_one("#bar", Static)
        if session is None:
            bar.update("No results yet: ctrl+r runs the plan of Setup, ctrl+o opens a saved session.")
        else:
            done = sum(1 for c in cells if c["status"] == "done")
            failed = sum(1 for c in cells if c["status"] == "error")
            arrow = "▼" if self.reverse else "▲"
            bar.update(f"{session.plan.name} · {session.status} · {done}/{len(cells)} done, {failed} failed · "
                       f"sorted by {data.COLUMN_BY_KEY[self.sort_key].label} {arrow} · {data.short_path(session.path)}")
        table = self.query_one(DataTable)
        self.columns = data.columns_for(cells)
        if self.sort_key not in {c.key for c in self.columns}:
            self.sort_key = "rate"
        cursor = table.cursor_row
        table.clear(columns=True)
        for i, col in enumerate(self.columns):
            mark = ("▼" if self.reverse else "▲") if col.key == self.sort_key else ""
            label = Text(f"{col.label}{mark}", justify="right" if col.numeric else "left")
            table.add_column(label, key=col.key)
        self.order = data.sort_cells(cells, self.sort_key, self.reverse)
        for cell in self.order:
            style = STATUS_STYLE.get(cell["status"], "")
            row = []
            for col in self.columns:
                text = col.text(cell)
                if col.key == "status" and len(text) > 60:
                    text = text[:59] + "…"
                row.append(Text(text, style=style, justify="right" if col.numeric else "left"))
            table.add_row(*row, key=cell["key"])
        if self.order:
            table.move_cursor(row=min(cursor, len(self.order) - 1))
        if self.query_one(ContentSwitcher).current == "plots":
            self._draw_plots(cells)

    def _draw_plots(self, cells: list[dict]) -> None:
        metric = self.metric or data.quality_metric(cells)
        styles = line_styles([*data.series(cells, metric), *data.series(cells, "tokens")])
        self.query_one("#quality-plot", MetricPlot).draw(cells, metric, styles=styles)
        self.query_one("#budget-plot", MetricPlot).draw(cells, "tokens", title="KV budget: tokens kept / layer", styles=styles)
        self.query_one(Legend).show(styles)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        cell = self.app.cells.get(event.row_key.value) if event.row_key is not None else None
        detail = self.query_one("#detail", Static)
        if cell is None:
            detail.update("")
            return
        extra = [f"{cell['method']} ({cell.get('name')}, {cell.get('family')}) on {cell['dataset']}"]
        if cell.get("params"):
            extra.append("params " + ", ".join(f"{k}={v['name'] if isinstance(v, dict) and 'name' in v else v}"
                                               for k, v in cell["params"].items()))
        if cell.get("kept_fraction_physical") is not None and cell.get("kept_fraction") is not None \
                and abs(cell["kept_fraction_physical"] - cell["kept_fraction"]) > 1e-6:
            extra.append(f"masked, not removed: memory keeps {cell['kept_fraction_physical']:.2f}")
        if cell.get("path"):
            extra.append(f"path {cell['path']}")
        if cell.get("error") or cell.get("reason"):
            extra.append(cell.get("error") or cell.get("reason"))
        detail.update(" · ".join(extra))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort_column(event.column_index)

    # -- actions -------------------------------------------------------------------------------------

    def action_sort_column(self, index: int) -> None:
        if index >= len(self.columns):
            return
        key = self.columns[index].key
        self.reverse = not self.reverse if key == self.sort_key else False
        self.sort_key = key
        self.refresh_table()

    def action_sort_next(self) -> None:
        keys = [c.key for c in self.columns]
        self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)] if self.sort_key in keys else keys[0]
        self.reverse = False
        self.refresh_table()

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self.refresh_table()

    def action_toggle_view(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "plots" if switcher.current == "table" else "table"
        if switcher.current == "plots":
            self._draw_plots(list(self.app.cells.values()))
        else:
            self.query_one(DataTable).focus()

    def action_cycle_metric(self) -> None:
        order = ("dppl", "dpct", "ppl", "score", "dscore")
        current = self.metric or data.quality_metric(list(self.app.cells.values()))
        self.metric = order[(order.index(current) + 1) % len(order)]
        if self.query_one(ContentSwitcher).current == "plots":
            self._draw_plots(list(self.app.cells.values()))
