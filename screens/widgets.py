"""Toggles whose state shows without colour: ✓ / ● when on, blank when off.

Textual's checkboxes and selection lists draw the same "X" on and off and tell them apart by colour
alone, which is lost on a monochrome terminal, in a tmux capture or to a colour-blind user.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.text import Text
from textual.strip import Strip
from textual.widgets import Checkbox, RadioButton, SelectionList, Static
from textual.widgets.option_list import OptionDoesNotExist
from textual.widgets._toggle_button import ToggleButton

from screens.views import VIEWS


class Check(Checkbox):
    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 (Textual's name)
        return "✓" if self.value else " "


class Radio(RadioButton):
    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802
        return "●" if self.value else " "


class CheckList(SelectionList):
    """A SelectionList with ✓ marks; options whose value starts with '#' are drawn as headings."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if len(segments) < 3 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip
        if str(selection.value).startswith("#"):
            segments[0:3] = [Segment("   ", segments[3].style if len(segments) > 3 else None)]
        else:
            segments[1] = Segment("✓" if selection.value in self._selected else " ", segments[1].style)
        return Strip(segments, strip.cell_length)


class ViewBar(Static):
    """The top line: every view with its key, the current one in reverse video (visible without colour).

    It replaces Textual's Header: the app's title is less use than knowing where F-keys lead."""

    DEFAULT_CSS = "ViewBar { height: 1; width: 100%; background: $panel; color: $text; }"

    def __init__(self, current: str | None):
        super().__init__()
        self.current = current

    def render(self) -> Text:
        # Every view where the line has room for all of them; else those marked for the bar (80 columns' worth),
        # and the current one where it still fits.
        width = lambda views: len(" workbench ") + sum(len(f" {v.key} {v.name} ") for v in views)  # noqa: E731
        shown = [v for v in VIEWS if v.in_bar]
        if width(VIEWS) <= self.size.width:
            shown = list(VIEWS)
        elif any(v.mode == self.current for v in VIEWS if not v.in_bar):
            with_current = [v for v in VIEWS if v.in_bar or v.mode == self.current]
            shown = with_current if width(with_current) <= self.size.width else shown
        text = Text(" workbench ", style="bold")
        for view in VIEWS:
            here = view.mode == self.current
            if view not in shown:
                continue
            text.append(f" {view.key} ", style="bold reverse" if here else "bold")
            text.append(f"{view.name} ", style="reverse" if here else "")
        return text
