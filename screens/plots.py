"""Plot widgets: one plotext figure per widget (textual-plotext's PlotextPlot), quality or KV budget
against rate, one line per method.

Lines differ by marker as well as colour, so they stay apart on a 16-colour terminal and in a
monochrome capture. The plot follows the app's theme ("auto"). Importing this module loads plotext,
so the screens that plot are imported when first shown, not at start-up.
"""

from __future__ import annotations

from textual_plotext import PlotextPlot

from workbench.screens import data

# Basic ANSI colour names: they survive terminals without true colour.
COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "white", "cyan+", "magenta+", "green+")
MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%", "=", "~")
RATE_LABEL = "rate (fraction kept)"


class MetricPlot(PlotextPlot):
    """A metric against rate. ``draw`` replaces the figure; the widget repaints on its next frame."""

    DEFAULT_CSS = """
    MetricPlot { height: 1fr; width: 1fr; min-height: 6; }
    """

    def __init__(self, metric: str, *, title: str | None = None, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.metric = metric
        self.title = title
        self.lines: dict[str, list[tuple[float, float]]] = {}

    def draw(self, cells: list[dict], metric: str | None = None, limits=None, title: str | None = None) -> None:
        """Plot ``cells``' finished figures. ``limits`` = ((xmin, xmax), (ymin, ymax)) to share axes."""
        if metric:
            self.metric = metric
        if title is not None:
            self.title = title
        self.lines = data.series(cells, self.metric)
        self._draw(limits)

    def _draw(self, limits) -> None:
        plt = self.plt
        plt.clear_figure()
        label = data.METRICS[self.metric][0]
        heading = self.title or f"{label} vs rate"
        if not self.lines:
            heading += " — no finished cells yet"
        plt.title(heading)
        for i, (name, pts) in enumerate(sorted(self.lines.items())):
            xs, ys = [x for x, _ in pts], [y for _, y in pts]
            plt.plot(xs, ys, label=name, marker=MARKERS[i % len(MARKERS)], color=COLOURS[i % len(COLOURS)])
        plt.xlabel(RATE_LABEL)
        if limits:
            (x0, x1), (y0, y1) = limits
            plt.xlim(x0, x1)
            plt.ylim(y0, y1)
        elif self.lines:
            xs = [x for pts in self.lines.values() for x, _ in pts]
            plt.xlim(min(xs + [0.0]), 1.0)
        self.refresh()
