"""Results: every cell of the session in a sortable table, a plot view, and exports.

The columns, their labels and how each value is written are workbench/tables.py's (the Markdown and
text exports use the same). Sorting uses the raw figures (not the formatted text), missing values last;
the sort is the app's (``results_sort``), so the CSV and Markdown exports list rows in the order shown.
Keys 1–9 sort by that column (press again to reverse), ``s`` moves the sort to the next column, a click
on a header sorts by it. Columns are one space apart; when a terminal is too narrow for all of them the
least needed go (ΔPPL % first, never Method, Rate, Status or Family) and the line under the table shows
their values for the highlighted row. The table is rebuilt when cells finish, at most a few times a
second and only while shown.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Static

from workbench import tables
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
        Binding("s", "sort_next", "Sort"),
        Binding("r", "reverse", "Reverse"),
        Binding("p", "toggle_view", "Plots"),
        Binding("ctrl+e", "app.export", "Export"),
        Binding("m", "cycle_metric", "Metric", show=False),
        *(Binding(str(i + 1 if i < 9 else 0), f"sort_column({i})", f"Sort by column {i + 1}", show=False) for i in range(10)),
    ]

    def compose(self) -> ComposeResult:
        yield ViewBar("results")
        yield Static("", id="bar", markup=False)
        with ContentSwitcher(initial="table", id="views"):
            yield DataTable(id="table", cursor_type="row", zebra_stripes=True, cell_padding=0)
            with Vertical(id="plots"):
                with Horizontal():
                    yield MetricPlot("dppl", id="quality-plot")
                    yield MetricPlot("tokens", id="budget-plot")
                yield Legend()
        yield Static("", id="detail", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.metric: str | None = None  # None: ΔPPL, or the task score for a task session, until m is pressed
        self._shown = -1
        self._width = 0
        self.columns: list[tables.Column] = []
        self.dropped: list[tables.Column] = []  # columns the width left out: their values go in the detail line
        self.order: list[dict] = []
        self.set_interval(REFRESH_INTERVAL, self._refresh_if_stale)
        self.refresh_table()

    def on_screen_resume(self) -> None:
        self._refresh_if_stale()

    def _refresh_if_stale(self) -> None:
        if (self._shown != self.app.results_version or self._width != self.size.width) and self.is_current:
            self.refresh_table()

    def on_resize(self) -> None:
        self._refresh_if_stale()

    @property
    def sort_key(self) -> str:
        return self.app.results_sort[0]

    @property
    def reverse(self) -> bool:
        return self.app.results_sort[1]

    def _sort(self, key: str, reverse: bool) -> None:
        self.app.results_sort = (key, reverse)
        self.refresh_table()

    # -- the table -----------------------------------------------------------------------------------

    def refresh_table(self) -> None:
        self._shown, self._width = self.app.results_version, self.size.width
        cells = list(self.app.cells.values())
        session = self.app.session
        bar = self.query_one("#bar", Static)
        columns = tables.columns_for(cells)
        if self.sort_key not in {c.key for c in columns}:
            self.app.results_sort = ("rate", True)
        arrow = "▼" if self.reverse else "▲"
        if session is None:
            bar.update("No results yet: ctrl+r runs the plan of Setup, ctrl+o opens a saved session.")
        else:
            bar.update(f"{tables.cells_text(cells)} · sorted by {tables.COLUMN_BY_KEY[self.sort_key].label} {arrow} · "
                       f"{session.plan.name} · {data.short_path(session.path)}")
        self.order = tables.sort_cells(cells, self.sort_key, self.reverse)
        labels = {c.key: f" {c.label}{arrow if c.key == self.sort_key else ''}" for c in columns}
        texts = [{c.key: " " + c.text(cell) for c in columns} for cell in self.order]
        widths = {c.key: max([len(labels[c.key])] + [len(t[c.key]) for t in texts]) for c in columns}
        room = (self.size.width or 80) - 2  # the vertical scrollbar
        self.columns, self.dropped = tables.fit(columns, widths, room, gap=0)
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)
        for col in self.columns:
            table.add_column(Text(labels[col.key], justify="right" if col.numeric else "left"), key=col.key)
        for cell, text in zip(self.order, texts):
            style = STATUS_STYLE.get(cell["status"], "")
            table.add_row(*(Text(text[col.key], style=style, justify="right" if col.numeric else "left") for col in self.columns),
                          key=cell["key"])
        if self.order:
            table.move_cursor(row=min(cursor, len(self.order) - 1))
        if self.query_one(ContentSwitcher).current == "plots":
            self._draw_plots(cells)

    def _draw_plots(self, cells: list[dict]) -> None:
        metric = self.metric or data.quality_metric(cells)
        styles = line_styles(data.series_order(cells), [*data.series(cells, metric), *data.series(cells, "tokens")])
        self.query_one("#quality-plot", MetricPlot).draw(cells, metric, styles=styles)
        self.query_one("#budget-plot", MetricPlot).draw(cells, "tokens", title="KV budget: tokens kept / layer", styles=styles)
        self.query_one(Legend).show(styles)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        cell = self.app.cells.get(event.row_key.value) if event.row_key is not None else None
        detail = self.query_one("#detail", Static)
        if cell is None:
            detail.update("")
            return
        extra = [f"{tables.method_text(cell)} on {cell['dataset']}"]
        extra += [f"{col.label} {col.text(cell)}" for col in self.dropped]
        if cell.get("params"):
            extra.append("params " + ", ".join(f"{k}={v['name'] if isinstance(v, dict) and 'name' in v else v}"
                                               for k, v in cell["params"].items()))
        if cell.get("kept_fraction_physical") is not None and cell.get("kept_fraction") is not None \
                and abs(cell["kept_fraction_physical"] - cell["kept_fraction"]) > 1e-6:
            extra.append(f"masked, not removed: memory keeps {cell['kept_fraction_physical']:.2f}")
        if cell.get("path"):
            extra.append(f"path {cell['path']}")
        if tables.why(cell):
            extra.append(tables.why(cell))
        detail.update(" · ".join(extra))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort_column(event.column_index)

    # -- actions -------------------------------------------------------------------------------------

    def action_sort_column(self, index: int) -> None:
        if index >= len(self.columns):
            return
        key = self.columns[index].key
        self._sort(key, not self.reverse if key == self.sort_key else False)

    def action_sort_next(self) -> None:
        keys = [c.key for c in self.columns]
        self._sort(keys[(keys.index(self.sort_key) + 1) % len(keys)] if self.sort_key in keys else keys[0], False)

    def action_reverse(self) -> None:
        self._sort(self.sort_key, not self.reverse)

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
