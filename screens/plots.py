"""Plot widgets: one plotext figure per widget (textual-plotext's PlotextPlot), quality or KV budget
against rate, one line per method, and one shared legend line under the plots.

Lines differ by marker as well as colour, so they stay apart on a 16-colour terminal and in a
monochrome capture. A method keeps its marker and colour in every plot of a screen (``line_styles``),
which is what lets one legend serve several plots and keeps the plot area free at 80 columns. The plot
follows the app's theme ("auto"). Importing this module loads plotext, so the screens that plot are
imported when first shown, not at start-up.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static
from textual_plotext import PlotextPlot

from screens import data

# The 16 ANSI colours by number (plotext takes 0–255; Rich writes the same code as "color(N)"), so a line
# and its legend entry look alike on every terminal. Not by name: plotext's "yellow" is not ANSI yellow.
COLOURS = (6, 3, 2, 5, 4, 7, 11, 10, 13, 12)  # no red: red means an error in this app
MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%", "=", "~")
RATE_LABEL = "rate (fraction kept)"


def line_styles(order, shown=None) -> dict[str, tuple[str, int]]:
    """label -> (marker, colour) for the labels in ``shown`` (default: all), by their place in ``order`` (every
    line the session will have, data.series_order): a method looks the same in every plot and for the whole
    session, whichever of its cells have finished."""
    order = list(dict.fromkeys(order))
    if shown is not None:
        order += sorted(set(shown) - set(order))
    styles = {label: (MARKERS[i % len(MARKERS)], COLOURS[i % len(COLOURS)]) for i, label in enumerate(order)}
    return styles if shown is None else {label: styles[label] for label in order if label in set(shown)}


class Legend(Static):
    DEFAULT_CSS = "Legend { height: auto; max-height: 3; padding: 0 1; }"

    styles_shown: dict[str, tuple[str, int]] = {}

    def show(self, styles: dict[str, tuple[str, int]]) -> None:
        self.styles_shown = dict(styles)
        text = Text()
        for label, (marker, colour) in styles.items():
            text.append(f"{marker} {label}", style=f"bold color({colour})")
            text.append("   ")
        self.update(text if styles else Text("(no finished cells to plot yet)", style="dim"))


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

    def draw(self, cells: list[dict], metric: str | None = None, limits=None, title: str | None = None,
             styles: dict[str, tuple[str, int]] | None = None) -> None:
        """Plot ``cells``' finished figures. ``limits`` = ((xmin, xmax), (ymin, ymax)) to share axes;
        ``styles`` = line_styles(...) shared with the other plots and the legend (else a legend is drawn)."""
        if metric:
            self.metric = metric
        if title is not None:
            self.title = title
        self.lines = data.series(cells, self.metric)
        plt = self.plt
        plt.clear_figure()
        heading = self.title or f"{data.METRICS[self.metric][0]} vs rate"
        plt.title(heading)  # (an empty plot says so in the legend line: a long title would not fit 40 columns)
        own = styles is None
        styles = styles or line_styles(self.lines)
        for name, pts in sorted(self.lines.items()):
            marker, colour = styles.get(name, ("•", 7))
            plt.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, color=colour, label=name if own else None)
        plt.xlabel(RATE_LABEL)
        if limits:
            (x0, x1), (y0, y1) = limits
            plt.xlim(x0, x1)
            plt.ylim(y0, y1)
        elif self.lines:
            plt.xlim(min([x for pts in self.lines.values() for x, _ in pts] + [0.0]), 1.0)
        self.refresh()


def draw_steps(plot: PlotextPlot, curves: dict[str, list[tuple[float, float]]], styles: dict[str, tuple[str, int]]) -> None:
    """The KV budget over decoding steps (tokens per layer against generated tokens), one line per method."""
    plt = plot.plt
    plt.clear_figure()
    plt.title("KV tokens/layer vs step")
    for name, pts in sorted(curves.items()):
        marker, colour = styles.get(name, ("•", 7))
        plt.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, color=colour)
    plt.xlabel("generated tokens")
    plot.refresh()
