"""Setup: the plan as a form — model, datasets, methods, rates and protocol — validated as you type.

The form is turned into a plan document and handed to the engine's ``parse_plan`` on every edit, so
the rules (and their messages naming the field) are the engine's; the field named by a PlanError is
flagged in place. The cell count and forward-pass estimate come from the resolved Plan. Nothing heavy
is imported here: the first frame of the app is this screen.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.lazy import Lazy
from textual.screen import Screen
from textual.widgets import (Button, Checkbox, Footer, Input, Label, RadioButton, RadioSet, Select, Static,
                             TabbedContent, TabPane)

from workbench.datasets import list_datasets
from workbench.models import EMBEDDED_MODELS, ModelLoadError, classify_model_spec
from workbench.plan import Plan, PlanError, load_preset, parse_plan, preset_names
from screens import data
from screens.widgets import ViewBar
from screens.methods_pane import MethodsPane, entries_from_plan, method_value
from screens.setup_forms import DatasetsForm, RatesForm

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
KINDS = {"embedded": "embedded model, works offline", "gguf": "GGUF file (de-quantised once, then cached)",
         "folder": "local Hugging Face folder", "hub": "Hugging Face hub id (cached or online)"}


def _int(text: str):
    """An int when the text is one; else the text, so parse_plan names the field and the bad value."""
    try:
        return int(text.strip())
    except ValueError:
        return text.strip()


def _batch_size(text: str):
    """'auto' (or blank) stays the word; anything else as _int does, for parse_plan to judge."""
    return "auto" if text.strip().lower() in ("", "auto") else _int(text)


def _float(text: str):
    try:
        return float(text.strip())
    except ValueError:
        return text.strip()


def _rates_text(rates: list) -> str:
    return ", ".join(f"{r:g}" for r in rates)


class SetupScreen(Screen):
    DEFAULT_CSS = """
    SetupScreen TabbedContent { height: 1fr; }
    SetupScreen TabPane { padding: 0 1; }
    SetupScreen .row { height: 1; margin-bottom: 1; }
    SetupScreen .row > Label { width: 16; }
    SetupScreen .row > Input { width: 1fr; }
    SetupScreen .row > Select { width: 24; }
    SetupScreen .row > Button { margin-left: 2; }
    SetupScreen .ds-row { height: 1; }
    SetupScreen .ds-row > Check { width: 18; }
    SetupScreen .ds-row > Input { width: 8; margin-right: 1; }
    SetupScreen .ds-row > .desc { width: 1fr; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    SetupScreen .ds-row > .note { width: 18; }
    SetupScreen RadioSet { layout: horizontal; border: none; height: 1; width: auto; padding: 0; background: transparent; }
    SetupScreen RadioSet RadioButton { margin-right: 2; }
    SetupScreen #summary { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    SetupScreen #summary.-invalid { background: $error 25%; color: $text; }
    SetupScreen .note { color: $text-muted; height: auto; margin-bottom: 1; }
    SetupScreen #task-rows { height: auto; }
    """
    BINDINGS = [Binding("ctrl+l", "load_plan", "Load plan"),
                Binding("ctrl+n", "next_tab", "Next tab", show=False)]

    def compose(self) -> ComposeResult:
        yield ViewBar("setup")
        with TabbedContent(id="tabs"):
            with TabPane("Plan & model", id="tab-plan"):
                with VerticalScroll():
                    with Horizontal(classes="row"):
                        yield Label("Preset")
                        yield Select([(n, n) for n in preset_names()], prompt="load a preset…", id="preset", compact=True)
                        yield Button("Load file… ^l", id="load-file", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Plan name")
                        yield Input(id="plan-name", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Model")
                        yield Input(id="model", placeholder=", ".join(EMBEDDED_MODELS) + " | org/name | folder | file.gguf",
                                    compact=True)
                    yield Static("", id="model-kind", classes="note", markup=False)
                    with Horizontal(classes="row"):
                        yield Label("Device / dtype")
                        yield Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, id="device", compact=True)
                        yield Select([(d, d) for d in DTYPES], value="auto", allow_blank=False, id="dtype", compact=True)
                    yield Static("device: probing…", id="device-info", classes="note", markup=False)
            with TabPane("Datasets", id="tab-datasets"):
                yield Lazy(DatasetsForm())
            with TabPane("Methods", id="tab-methods"):
                yield Lazy(MethodsPane(id="methods-pane"))
            with TabPane("Rates & protocol", id="tab-rates"):
                yield Lazy(RatesForm())
        yield Static("", id="summary", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._loaded_version = -1
        self._preset_value = None
        self._ready = False
        self.query_one("#summary", Static).update("checking the plan…")
        self.watch(self.app, "plan_version", lambda _: self.refill(), init=False)
        self.watch(self.app, "device_version", lambda _: self._device_line(), init=False)
        self.call_after_refresh(self._when_ready)

    def _when_ready(self) -> None:
        # The hidden tabs are mounted lazily, after the first frame, so that frame comes quickly; the
        # form is filled and checked once they are all there.
        if not all(self.query(selector) for selector in ("#ds-other-seed", "#question-aware", "#methods")):
            self.set_timer(0.01, self._when_ready)
            return
        self._ready = True
        self.refill()

    def on_screen_resume(self) -> None:
        self.refill()

    # -- plan → form -------------------------------------------------------------------------------

    def refill(self) -> None:
        """Show the app's plan, unless the form already holds it (it is then the form's own)."""
        if not self._ready or self._loaded_version == self.app.plan_version or self.app.plan is None:
            return
        self._loaded_version = self.app.plan_version
        self.fill(self.app.plan)

    def fill(self, plan: Plan) -> None:
        # Each value set below would post a Changed message and re-check the plan; check once at the end.
        with self.prevent(Input.Changed, Checkbox.Changed, Select.Changed, MethodsPane.Changed):
            self._fill(plan)
        self._toggle_rows()
        self.validate()

    def _fill(self, plan: Plan) -> None:
        q = self.query_one
        self._preset_value = plan.name if plan.name in preset_names() else None
        q("#preset", Select).value = self._preset_value if self._preset_value else Select.NULL
        q("#plan-name", Input).value = plan.name
        q("#model", Input).value = plan.model
        q("#device", Select).value = plan.device if plan.device in DEVICES else "auto"
        q("#dtype", Select).value = plan.dtype
        bundled = {i.name for i in list_datasets()}
        other = [d for d in plan.datasets if d.name not in bundled]
        for info in list_datasets():
            spec = next((d for d in plan.datasets if d.name == info.name), None)
            q(f"#ds-{info.name}", Checkbox).value = spec is not None
            if spec is not None:
                q(f"#ds-{info.name}-samples", Input).value = str(spec.samples)
                q(f"#ds-{info.name}-seed", Input).value = str(spec.seed)
        q("#ds-other", Input).value = ", ".join(d.name for d in other)
        if other:
            q("#ds-other-samples", Input).value = str(other[0].samples)
            q("#ds-other-seed", Input).value = str(other[0].seed)
        q("#rates-as-list", RadioButton).value = True
        q("#rates-list", Input).value = _rates_text(plan.rates)
        p = plan.protocol
        q({"chunked": "#proto-chunked", "task": "#proto-task"}.get(p.name, "#proto-cc"), RadioButton).value = True
        q("#context-tokens", Input).value = str(p.context_tokens)
        q("#continuation-tokens", Input).value = str(p.continuation_tokens)
        q("#chunk-size", Input).value = str(p.chunk_size or 128)
        q("#max-new-tokens", Input).value = str(p.max_new_tokens) if getattr(p, "max_new_tokens", None) else ""
        q("#n-shots", Input).value = str(getattr(p, "n_shots", 4))
        q("#depths", Input).value = _rates_text(p.depths) if getattr(p, "depths", None) else ""
        q("#question-aware", Checkbox).value = bool(getattr(p, "question_aware", False))
        q("#shared-prefill", Checkbox).value = plan.shared_prefill
        q("#batch-size", Input).value = str(plan.batch_size)
        q(MethodsPane).set_entries(entries_from_plan(plan))

    # -- form → plan -------------------------------------------------------------------------------

    def form(self) -> tuple[dict, list[tuple[str, str]]]:
        """The plan document, and (field path, widget selector) pairs to flag a PlanError in place."""
        q = self.query_one
        where: list[tuple[str, str]] = [("model", "#model"), ("device", "#device"), ("dtype", "#dtype"), ("name", "#plan-name")]
        datasets = []
        for info in list_datasets():
            if q(f"#ds-{info.name}", Checkbox).value:
                i = len(datasets)
                datasets.append({"name": info.name, "samples": _int(q(f"#ds-{info.name}-samples", Input).value),
                                 "seed": _int(q(f"#ds-{info.name}-seed", Input).value)})
                where += [(f"datasets[{i}].samples", f"#ds-{info.name}-samples"), (f"datasets[{i}].seed", f"#ds-{info.name}-seed"),
                          (f"datasets[{i}]", f"#ds-{info.name}")]
        for spec in (s.strip() for s in q("#ds-other", Input).value.split(",")):
            if spec:
                i = len(datasets)
                datasets.append({"name": spec, "samples": _int(q("#ds-other-samples", Input).value),
                                 "seed": _int(q("#ds-other-seed", Input).value)})
                where += [(f"datasets[{i}].samples", "#ds-other-samples"), (f"datasets[{i}].seed", "#ds-other-seed"),
                          (f"datasets[{i}]", "#ds-other")]
        where.append(("datasets", "#ds-other"))
        if q("#rates-as-sweep", RadioButton).value:
            rates = {"start": _float(q("#sweep-start", Input).value), "stop": _float(q("#sweep-stop", Input).value),
                     "step": _float(q("#sweep-step", Input).value)}
            where.append(("rates", "#rates-sweep-row"))
        else:
            rates = [_float(t) for t in q("#rates-list", Input).value.replace(",", " ").split()]
            where.append(("rates", "#rates-list"))
        chunked, task = q("#proto-chunked", RadioButton).value, q("#proto-task", RadioButton).value
        protocol = {"name": "chunked" if chunked else "task" if task else "context-continuation",
                    "context_tokens": _int(q("#context-tokens", Input).value),
                    "continuation_tokens": _int(q("#continuation-tokens", Input).value)}
        if chunked:
            protocol["chunk_size"] = _int(q("#chunk-size", Input).value)
        if task:
            if q("#max-new-tokens", Input).value.strip():
                protocol["max_new_tokens"] = _int(q("#max-new-tokens", Input).value)
            protocol["n_shots"] = _int(q("#n-shots", Input).value)
            depths = q("#depths", Input).value.replace(",", " ").split()
            if depths:
                protocol["depths"] = [_float(d) for d in depths]
            protocol["question_aware"] = q("#question-aware", Checkbox).value
        where += [("protocol.context_tokens", "#context-tokens"), ("protocol.continuation_tokens", "#continuation-tokens"),
                  ("protocol.chunk_size", "#chunk-size"), ("protocol.max_new_tokens", "#max-new-tokens"),
                  ("protocol.n_shots", "#n-shots"), ("protocol.depths", "#depths"), ("protocol.question_aware", "#question-aware"),
                  ("protocol", "#protocol"), ("methods", "#methods"),
                  ("shared_prefill", "#shared-prefill"), ("batch_size", "#batch-size")]
        doc = {"name": q("#plan-name", Input).value.strip() or "session", "model": q("#model", Input).value.strip(),
               "device": q("#device", Select).value, "dtype": q("#dtype", Select).value, "datasets": datasets,
               "protocol": protocol, "rates": rates, "methods": q(MethodsPane).entries,
               "shared_prefill": q("#shared-prefill", Checkbox).value, "batch_size": _batch_size(q("#batch-size", Input).value)}
        if self.app.plan is not None and self.app.plan.description:
            doc["description"] = self.app.plan.description
        return doc, where

    def validate(self) -> Plan | None:
        """parse_plan on the form: publish the plan (or the error) to the app and flag the field in place."""
        if not self._ready:
            return None
        doc, where = self.form()
        for _, selector in where:
            self.query_one(selector).remove_class("-invalid")
        pane = self.query_one(MethodsPane)
        pane.flag(None, None, None)
        summary = self.query_one("#summary", Static)
        self._model_line(doc["model"])
        try:
            plan = parse_plan(doc, source="setup")
        except PlanError as err:
            field = err.field_path or ""
            self._flag(field, where, pane)
            message = str(err).removeprefix("setup: ")
            summary.update(f"✗ {message}")
            summary.add_class("-invalid")
            self.query_one("#rates-preview", Static).update("")
            self.app.set_plan(None, message)
            return None
        if not plan.methods:
            summary.update("✗ no method chosen: pick at least one on the Methods tab (Space toggles)")
            summary.add_class("-invalid")
            self.app.set_plan(None, "no method chosen")
            return None
        summary.remove_class("-invalid")
        cells, passes = len(plan.cells()), plan.forward_passes()
        samples = sum(d.samples for d in plan.datasets)
        summary.update(f"✓ {plan.name}: {len(plan.methods)} methods × {len(plan.rates)} rates × {len(plan.datasets)} "
                       f"dataset(s) = {cells} cells · {samples} samples per cell · ≈{passes['total']} forward passes "
                       f"— ctrl+r runs it")
        self.query_one("#rates-preview", Static).update(f"→ rates {_rates_text(plan.rates)} (fraction of tokens kept)")
        self.app.set_plan(plan, None)
        return plan

    def _flag(self, field: str, where: list[tuple[str, str]], pane: MethodsPane) -> None:
        if field.startswith("methods["):
            index = int(field[len("methods["):].split("]", 1)[0])
            entries = pane.entries
            if index < len(entries):
                e = entries[index]
                key = field.split("]", 1)[1].lstrip(".").split(".", 1)[0].split("[", 1)[0] or None
                pane.flag(method_value(e["family"], e["name"]), None if key == "params" else key, field)
            return
        match = max((p for p in where if field == p[0] or field.startswith(p[0] + "[") or field.startswith(p[0] + ".")),
                    key=lambda p: len(p[0]), default=None)
        if match:
            self.query_one(match[1]).add_class("-invalid")

    def _model_line(self, model: str) -> None:
        try:
            kind = KINDS[classify_model_spec(model)]
        except ModelLoadError as err:
            kind = str(err)
        self.query_one("#model-kind", Static).update(kind)
        self._device_line()

    def _device_line(self) -> None:
        device, dtype = self.query_one("#device", Select).value, self.query_one("#dtype", Select).value
        self.query_one("#device-info", Static).update(data.describe_device(self.app.device_info, str(device), str(dtype)))

    def _toggle_rows(self) -> None:
        sweep = self.query_one("#rates-as-sweep", RadioButton).value
        self.query_one("#rates-list-row").display = not sweep
        self.query_one("#rates-sweep-row").display = sweep
        self.query_one("#chunk-row").display = self.query_one("#proto-chunked", RadioButton).value
        self.query_one("#task-rows").display = self.query_one("#proto-task", RadioButton).value

    # -- events ------------------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        self.validate()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.validate()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.radio_set.id == "rates-mode" and self.query_one("#rates-as-sweep", RadioButton).value:
            # Switching to a sweep: start from the list's extremes so the preview makes sense at once.
            rates = [r for r in (_float(t) for t in self.query_one("#rates-list", Input).value.replace(",", " ").split())
                     if isinstance(r, float)]
            if len(rates) > 1:
                self.query_one("#sweep-start", Input).value = f"{max(rates):g}"
                self.query_one("#sweep-stop", Input).value = f"{min(rates):g}"
        self._toggle_rows()
        self.validate()

    def on_methods_pane_changed(self, event: MethodsPane.Changed) -> None:
        self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset":
            if event.value is Select.NULL or event.value == self._preset_value:
                return
            self._preset_value = event.value
            try:
                self.app.replace_plan(load_preset(str(event.value)))
            except PlanError as err:
                self.notify(str(err), severity="error")
            return
        self.validate()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "load-file":
            self.action_load_plan()

    def action_load_plan(self) -> None:
        from screens.dialogs import PathModal, session_choices

        self.app.push_screen(PathModal("Load a plan into Setup", "", session_choices(self.app.sessions_dir),
                                       hint="a preset JSON, or a saved session (its plan is reused; nothing runs)",
                                       action="Load"),
                             lambda path: path and self.app.load_plan_file(path))

    def action_next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        ids = [p.id for p in tabs.query(TabPane)]
        tabs.active = ids[(ids.index(tabs.active) + 1) % len(ids)]
