"""The method picker of the setup screen: every registered method grouped by family, and an editor
for the highlighted one (label, its own rates, its parameters).

It owns the plan's method entries (the dicts a plan's "methods" list holds) and posts
:class:`MethodsPane.Changed` after every edit; validation is the setup screen's job, through
parse_plan, so the rules live in the engine only. A parameter is typed as JSON (``4``, ``true``,
``{"name": "snapkv"}``); anything that is not JSON is taken as a string (``snapkv``).
"""

from __future__ import annotations

import json

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, SelectionList, Static
from textual.widgets.selection_list import Selection

from workbench.methods import registry
from workbench.plan import Plan, default_label
from screens.widgets import CheckList

FAMILY_TITLES = {"kv": "KV presses (kvpress)", "prompt": "Prompt compressors", "decoding": "Decoding schedules (decoding protocol)",
                 "learned": "Soft compressors (workbench train)"}


def method_value(family: str, name: str) -> str:
    return f"{family}:{name}"


def entries_from_plan(plan: Plan) -> list[dict]:
    """The plan's methods as editable entries; labels and rates only where the plan set them."""
    out = []
    for m in plan.methods:
        entry = {"name": m.name, "family": m.family, "params": dict(m.params)}
        if m.label != default_label(m.name, m.family):
            entry["label"] = m.label
        if m.rates is not None and m.rates != [None]:
            entry["rates"] = list(m.rates)
        out.append(entry)
    return out


def rate_wording(info) -> str:
    """How a method takes the plan's rate (fraction of tokens kept): as it is, or converted at the boundary."""
    if not info.rate_driven and info.rates_when:
        return f"driven by its parameters (no rates), or by the plan's rates with {info.rates_when} true"
    if not info.rate_driven:
        return "driven by its parameters (no rates)"
    if info.rate_param == "rate":
        return "uses the rate as it is (fraction kept)"
    return f"{info.rate_param} = 1 − rate"


def show_value(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def read_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


class MethodsPane(Horizontal):
    DEFAULT_CSS = """
    MethodsPane { height: 1fr; }
    MethodsPane #methods { width: 2fr; min-width: 30; height: 1fr; }
    MethodsPane #editor { width: 3fr; height: 1fr; padding: 0 1; }
    MethodsPane #editor .row { height: 1; margin-bottom: 0; }
    MethodsPane #editor .row Label { width: 22; }
    MethodsPane #editor .row Input { width: 1fr; }
    MethodsPane .method-summary { height: auto; margin-bottom: 1; }
    """

    class Changed(Message):
        """The entries changed (a method toggled or a field edited)."""

    def __init__(self, id: str | None = None):
        super().__init__(id=id)
        self.entries: list[dict] = []
        self.infos = {method_value(i.family, i.name): i for i in registry.all_methods()}
        self.shown: str | None = None  # the value whose editor is on screen
        self._built: dict[str, str] = {}  # input name -> the text it was built with

    def compose(self) -> ComposeResult:
        selections = []
        for family in registry.FAMILIES:
            infos = [i for i in self.infos.values() if i.family == family]
            selections.append(Selection(f"── {FAMILY_TITLES.get(family, family)} ({len(infos)}) ──", f"#{family}", disabled=True))
            for info in infos:
                hub = " ⚠hub" if info.needs_hub else ""
                selections.append(Selection(f"{info.name}{hub}", method_value(info.family, info.name)))
        yield CheckList(*selections, id="methods", compact=True)
        yield VerticalScroll(id="editor")

    # -- entries -----------------------------------------------------------------------------------

    def set_entries(self, entries: list[dict]) -> None:
        self.entries = [dict(e) for e in entries]
        chosen = {method_value(e["family"], e["name"]) for e in self.entries}
        methods = self.query_one("#methods", SelectionList)
        with methods.prevent(SelectionList.SelectedChanged):
            methods.deselect_all()
            for value in chosen:
                methods.select(value)
        self.show_editor(self.shown or (next(iter(sorted(chosen)), None)))

    def entry(self, value: str) -> dict | None:
        family, name = value.split(":", 1)
        return next((e for e in self.entries if e["family"] == family and e["name"] == name), None)

    def index_of(self, value: str) -> int | None:
        family, name = value.split(":", 1)
        return next((i for i, e in enumerate(self.entries) if e["family"] == family and e["name"] == name), None)

    def on_selection_list_selection_toggled(self, event: SelectionList.SelectionToggled) -> None:
        value = event.selection.value
        if value.startswith("#"):
            return
        if value in event.selection_list.selected:
            if self.entry(value) is None:
                family, name = value.split(":", 1)
                self.entries.append({"name": name, "family": family, "params": {}})
        else:
            family, name = value.split(":", 1)
            self.entries = [e for e in self.entries if not (e["family"] == family and e["name"] == name)]
        self.show_editor(value)
        self.post_message(self.Changed())

    def on_selection_list_selection_highlighted(self, event: SelectionList.SelectionHighlighted) -> None:
        value = event.selection.value
        if not value.startswith("#") and value != self.shown:
            self.show_editor(value)

    # -- the editor --------------------------------------------------------------------------------

    def show_editor(self, value: str | None) -> None:
        """Rebuild the editor for one method: cheap (a handful of inputs), so no caching."""
        self.shown = value
        editor = self.query_one("#editor", VerticalScroll)
        editor.remove_children()
        if value is None:
            editor.mount(Static("Highlight a method to see its parameters; Space toggles it into the plan.", classes="muted"))
            return
        info = self.infos[value]
        entry = self.entry(value)
        used = entry is not None
        params = {**{k: v for k, v in info.params.items() if k != info.rate_param}, **((entry or {}).get("params") or {})}
        how = rate_wording(info)
        lines = [f"{info.name} ({info.family}) — {info.summary}", f"{how}; {'in the plan' if used else 'not in the plan (Space adds it)'}"]
        if info.needs_hub:
            lines.append(f"⚠ {info.needs_hub}")
        widgets = [Static("\n".join(lines), classes="method-summary", markup=False)]
        widgets.append(self._row("label", show_value((entry or {}).get("label", "")), default_label(info.name, info.family), value))
        if info.rate_driven:
            rates = (entry or {}).get("rates")
            widgets.append(self._row("rates", ", ".join(f"{r:g}" if isinstance(r, float) else str(r) for r in rates) if rates else "",
                                     "the plan's rates", value))
        for key in params:
            if key in ("label", "rates"):
                continue
            default = info.params.get(key)
            widgets.append(self._row(key, show_value(params[key]), show_value(default), value, param=True))
        editor.mount_all(widgets)

    def _row(self, key: str, text: str, placeholder: str, value: str, param: bool = False) -> Horizontal:
        # The input's name says what it edits, so a late Changed from a replaced editor still lands right.
        name = f"{'param' if param else 'field'}|{value}|{key}"
        self._built[name] = text
        return Horizontal(Label(key), Input(text, placeholder=placeholder, name=name, compact=True), classes="row")

    def on_input_changed(self, event: Input.Changed) -> None:
        if not (event.input.name or "").startswith(("param|", "field|")):
            return
        event.stop()
        if self._built.get(event.input.name) == event.value:
            return  # an input announcing the value it was built with: not an edit
        self._built.pop(event.input.name, None)
        kind, value, key = event.input.name.split("|", 2)
        entry = self.entry(value)
        text = event.value.strip()
        if entry is None:
            if not text:
                return
            family, name = value.split(":", 1)  # editing a method's field puts it in the plan
            entry = {"name": name, "family": family, "params": {}}
            self.entries.append(entry)
            methods = self.query_one("#methods", SelectionList)
            with methods.prevent(SelectionList.SelectedChanged):
                methods.select(value)
        if kind == "param":
            info = self.infos[value]
            params = entry.setdefault("params", {})
            if text:
                params[key] = read_value(text)
            else:
                params[key] = info.params.get(key)
        elif key == "label":
            entry.pop("label", None) if not text else entry.__setitem__("label", text)
        elif key == "rates":
            if not text:
                entry.pop("rates", None)
            else:
                entry["rates"] = [read_value(t) for t in text.replace(",", " ").split()]
        self.post_message(self.Changed())

    def flag(self, value: str | None, key: str | None, message: str | None) -> None:
        """Mark the editor's input for ``key`` of method ``value`` as invalid (clears the others)."""
        for inp in self.query("#editor Input"):
            _, v, k = (inp.name or "||").split("|", 2)
            inp.set_class(message is not None and v == value and (key is None or k == key), "-invalid")
        self.query_one("#methods").set_class(message is not None, "-invalid")
