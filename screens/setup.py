"""Setup: the plan as a form — model, datasets, methods, rates and protocol — validated as you type.

The form is turned into a plan document and handed to the engine's ``parse_plan`` on every edit, so
the rules are the engine's; the field named by a PlanError is flagged in place and named in Setup's
words (screens/plan_fields.py). Whether the model can be loaded here is checked in a worker thread
(workbench/model_check.py) and shown under the field. The cell count and forward-pass estimate come
from the resolved Plan. The first frame of the app is this screen: it shows the first tab only, and
the engine's tables (presets, datasets, methods) are imported and the other tabs built just after.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import (Button, Checkbox, Footer, Input, Label, RadioButton, RadioSet, Select, Static,
                             TabbedContent, TabPane, Tabs)
from textual.worker import Worker, WorkerState

from workbench import tables
from workbench.api.evaluator import PROVIDERS
from screens import plan_fields
from screens.setup_document import form_document, to_float
from screens.widgets import ViewBar

if TYPE_CHECKING:
    from workbench.plan import Plan

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MODEL_CHECK_DELAY = 0.3  # seconds without typing before the model is checked


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
    SetupScreen RadioSet RadioButton { width: auto; margin-right: 2; }
    SetupScreen #protocol RadioButton { margin-right: 0; }  /* four protocols fit 80 columns */
    SetupScreen #summary { height: auto; max-height: 3; padding: 0 1; background: $boost; }
    SetupScreen #summary.-invalid { background: $error 25%; color: $text; }
    SetupScreen .note { color: $text-muted; height: auto; margin-bottom: 1; }
    SetupScreen #task-rows { height: auto; }
    SetupScreen .row > Label.inline { width: auto; }
    SetupScreen .row > #max-cost { width: 10; }
    """
    BINDINGS = [Binding("ctrl+l", "load_plan", "Load plan"),
                Binding("ctrl+n", "next_tab", "Next tab", show=False, priority=True)]

    def compose(self) -> ComposeResult:
        yield ViewBar("setup")
        with TabbedContent(id="tabs"):
            with TabPane("Plan & model", id="tab-plan"):
                with VerticalScroll():
                    with Horizontal(classes="row"):
                        yield Label("Preset")
                        yield Select([], prompt="load a preset…", id="preset", compact=True)
                        yield Button("Load file… ^l", id="load-file", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Plan name")
                        yield Input(id="plan-name", compact=True)
                    with Horizontal(classes="row"):
                        yield Label("Model")
                        yield Input(id="model", compact=True)
                    yield Static("", id="model-kind", classes="note", markup=False)
                    with Horizontal(classes="row"):
                        yield Label("Device / dtype")
                        yield Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, id="device", compact=True)
                        yield Select([(d, d) for d in DTYPES], value="auto", allow_blank=False, id="dtype", compact=True)
                    yield Static("device: probing…", id="device-info", classes="note", markup=False)
                    # Who answers (task protocol): the local model, or a remote API (workbench.api).
                    with Horizontal(classes="row"):
                        yield Label("Answered by")
                        yield Select([("local model", "local"), *((p, p) for p in PROVIDERS)], value="local",
                                     allow_blank=False, id="evaluator", compact=True)
                        yield Input(placeholder="API model, e.g. gpt-4o-mini", id="api-model", compact=True)
                    with Horizontal(classes="row api-row"):
                        yield Label("API base URL")
                        yield Input(id="api-base-url", compact=True)
                    with Horizontal(classes="row api-row"):
                        yield Label("Key variable")
                        yield Input(id="api-key-env", compact=True)
                        yield Label(" Max cost $", classes="inline")
                        yield Input(placeholder="no cap", id="max-cost", compact=True)
            yield TabPane("Datasets", id="tab-datasets")
            yield TabPane("Methods", id="tab-methods")
            yield TabPane("Rates & protocol", id="tab-rates")
        yield Static("", id="summary", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._loaded_version = -1
        self._preset_value = None
        self._ready = False  # the hidden tabs are built
        self._filled = False  # the form holds a plan: before that, checking it would only report empty fields
        self._model_spec: str | None = None  # the spec the model line is about
        self._model_checks: dict[str, object] = {}  # hub ids checked (the slow ones): spec -> ModelCheck
        self.query_one("#summary", Static).update(self.app.plan_error or "loading the plan…")
        self.watch(self.app, "plan_version", lambda _: self.refill(), init=False)
        self.watch(self.app, "device_version", lambda _: self._device_line(), init=False)
        if self.app.is_headless:
            self.call_after_refresh(self._build_hidden_tabs)
        else:  # after the first frame is out (see WorkbenchApp.on_mount)
            self.call_after_refresh(self.set_timer, 0.1, self._build_hidden_tabs)

    def _build_hidden_tabs(self) -> None:
        # After the first frame is on the terminal: the engine's tables (presets, datasets, the method
        # registry) are imported here, and the three hidden tabs built (a hundred widgets).
        from workbench.models import EMBEDDED_MODELS
        from workbench.plan import preset_names
        from screens.methods_pane import MethodsPane
        from screens.setup_forms import DatasetsForm, RatesForm

        self.query_one("#preset", Select).set_options([(n, n) for n in preset_names()])
        self.query_one("#model", Input).placeholder = ", ".join(EMBEDDED_MODELS) + " | org/name | folder | file.gguf"
        self.query_one("#tab-datasets", TabPane).mount(DatasetsForm())
        self.query_one("#tab-methods", TabPane).mount(MethodsPane(id="methods-pane"))
        self.query_one("#tab-rates", TabPane).mount(RatesForm())
        self.call_after_refresh(self._when_ready)

    def _when_ready(self) -> None:
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
        if not self._ready or self._loaded_version == self.app.plan_version:
            return
        if self.app.plan is None:  # the preset could not be loaded: the form is the user's to fill
            if self.app.plan_error and not self._filled and self.app.plan_version:
                self._filled = True
                self.validate()
            return
        self._loaded_version = self.app.plan_version
        self.fill(self.app.plan)

    def fill(self, plan: "Plan") -> None:
        from screens.methods_pane import MethodsPane, entries_from_plan

        # Each value set below would post a Changed message and re-check the plan; check once at the end.
        with self.prevent(Input.Changed, Checkbox.Changed, Select.Changed, MethodsPane.Changed):
            self._fill(plan)
        # Outside the block: the method editor's inputs are built here, and a widget built inside a prevent
        # block keeps the block open until it is mounted; Textual's stack of prevented messages is shared by
        # every task, so meanwhile an edit anywhere (an Input.Changed) was dropped.
        self.query_one(MethodsPane).set_entries(entries_from_plan(plan))
        self._filled = True
        self._toggle_rows()
        self.validate()

    def _fill(self, plan: "Plan") -> None:
        from workbench.datasets import list_datasets
        from workbench.plan import preset_names
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
        q("#rates-list", Input).value = tables.rates(plan.rates)
        p = plan.protocol
        q({"chunked": "#proto-chunked", "task": "#proto-task", "decoding": "#proto-decoding"}.get(p.name, "#proto-cc"),
          RadioButton).value = True
        q("#context-tokens", Input).value = str(p.context_tokens)
        q("#continuation-tokens", Input).value = str(p.continuation_tokens)
        q("#chunk-size", Input).value = str(p.chunk_size or 128)
        q("#max-new-tokens", Input).value = str(p.max_new_tokens) if getattr(p, "max_new_tokens", None) else ""
        q("#n-shots", Input).value = str(getattr(p, "n_shots", 4))
        q("#depths", Input).value = tables.rates(p.depths) if getattr(p, "depths", None) else ""
        q("#question-aware", Checkbox).value = bool(getattr(p, "question_aware", False))
        q("#shared-prefill", Checkbox).value = plan.shared_prefill
        self._fill_evaluator(plan)
        q("#batch-size", Input).value = str(plan.batch_size)
        ex = plan.execution
        q("#workers", Input).value = str(ex.workers) if ex is not None and ex.workers is not None else ""
        q("#ray-address", Input).value = ex.ray or "" if ex is not None else ""

    def _fill_evaluator(self, plan: "Plan") -> None:
        """The evaluator rows; a base URL or key variable equal to the provider's default shows as the placeholder."""
        q, e = self.query_one, plan.evaluator
        self.evaluator_extra = {}  # settings the form does not show (concurrency, retries, prices…): kept as loaded
        q("#evaluator", Select).value = e.provider if e is not None else "local"
        q("#api-model", Input).value = e.model if e is not None else ""
        default = PROVIDERS[e.provider] if e is not None else None
        q("#api-base-url", Input).value = e.base_url if e is not None and e.base_url != default.base_url else ""
        q("#api-key-env", Input).value = e.api_key_env or "" if e is not None and e.api_key_env != default.api_key_env else ""
        q("#max-cost", Input).value = f"{plan.max_cost_usd:g}" if plan.max_cost_usd is not None else ""
        if e is not None:
            shown = {"provider", "model", "base_url", "api_key_env"}
            self.evaluator_extra = {k: v for k, v in e.to_dict().items() if k not in shown}
        self._evaluator_placeholders()

    def _evaluator_placeholders(self) -> None:
        provider = PROVIDERS.get(str(self.query_one("#evaluator", Select).value))
        self.query_one("#api-base-url", Input).placeholder = (provider.base_url or "required, e.g. http://127.0.0.1:8000/v1"
                                                             if provider else "")
        self.query_one("#api-key-env", Input).placeholder = (provider.api_key_env or "none" if provider else "")

    # -- form → plan -------------------------------------------------------------------------------

    def form(self) -> tuple[dict, list[tuple[str, str, str]]]:
        """The plan document, and (field path, widget selector, label on screen) for each field."""
        return form_document(self)

    def validate(self) -> "Plan | None":
        """parse_plan on the form: publish the plan (or the error) to the app and flag the field in place."""
        if not (self._ready and self._filled):
            return None
        from workbench.plan import PlanError, parse_plan
        from screens.methods_pane import MethodsPane

        doc, where = self.form()
        for _, selector, _ in where:
            self.query_one(selector).remove_class("-invalid")
        pane = self.query_one(MethodsPane)
        pane.flag(None, None, None)
        self._model_line(doc["model"])
        try:
            plan = parse_plan(doc, source="setup")
        except PlanError as err:
            self._flag(err.field_path or "", where, pane)
            message = plan_fields.message(err, doc, {path: label for path, _, label in where})
            self._summary(f"✗ {message}", invalid=True)
            self.query_one("#rates-preview", Static).update("")
            self.app.set_plan(None, message)
            return None
        if not plan.methods:
            self._summary("✗ no method chosen: pick at least one on the Methods tab (Space toggles)", invalid=True)
            self.app.set_plan(None, "no method chosen")
            return None
        self.query_one("#rates-preview", Static).update(f"→ rates {tables.rates(plan.rates)} (fraction of tokens kept)")
        self.app.set_plan(plan, None)
        self._plan_summary()
        return plan

    def _plan_summary(self) -> None:
        """The bar under the form for a valid plan: what it runs, or why its model cannot be loaded here."""
        plan = self.app.plan
        if plan is None:
            return
        if self.app.model_problem:
            self._summary(f"✗ model: {self.app.model_problem}", invalid=True)
            return
        cells, passes = len(plan.cells()), plan.forward_passes()
        samples = sum(d.samples for d in plan.datasets)
        checking = " (checking the model…)" if self.app.model_checking else ""
        work = f"≈{passes['total']} forward passes"
        if plan.evaluator is not None:  # an API answers: what it will cost instead of forward passes
            from workbench.api.estimate import estimate

            est = estimate(plan)
            work = f"API {est.text()}" + (f" (cap ${plan.max_cost_usd:g})" if plan.max_cost_usd is not None else "")
        self._summary(f"✓ {plan.name}: {len(plan.methods)} methods × {len(plan.rates)} rates × {len(plan.datasets)} "
                      f"dataset(s) = {cells} cells · {samples} samples per cell · {work} — ctrl+r runs it{checking}")

    def _summary(self, text: str, invalid: bool = False) -> None:
        summary = self.query_one("#summary", Static)
        summary.update(text)
        summary.set_class(invalid, "-invalid")

    def _flag(self, field: str, where: list[tuple[str, str, str]], pane) -> None:
        from screens.methods_pane import method_value

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

    # -- is the model available here? ----------------------------------------------------------------

    def _model_line(self, spec: str) -> None:
        """Check the model in a worker once typing pauses; until then the line says it is checking."""
        if spec == self._model_spec:
            return
        self._model_spec = spec
        if spec in self._model_checks:
            self._show_model_check(spec, self._model_checks[spec])
            self.app.model_checked()
            return
        self.app.model_problem = None
        self.app.model_checking = True
        self.query_one("#model-kind", Static).update(f"checking whether {spec or 'the model'} can be loaded here…")
        self._check_model(spec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model-check")
    def _check_model(self, spec: str):
        from workbench.model_check import check_model

        time.sleep(MODEL_CHECK_DELAY)  # typing on: a newer check replaces this one, whose answer is then ignored
        return spec, (self.app.model_check or check_model)(spec)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "model-check" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        event.stop()
        if event.state == WorkerState.ERROR:  # the check itself broke: say so, do not block a run on it
            self.app.model_checking = False
            self.query_one("#model-kind", Static).update(f"(could not check the model: {event.worker.error})")
            self._plan_summary()
            self.app.model_checked()
            return
        spec, check = event.worker.result
        if check.kind == "hub":
            self._model_checks[spec] = check  # a hub answer took seconds; folders and files are re-checked
        if spec == self._model_spec:
            self._show_model_check(spec, check)
            self.app.model_checked()

    def _show_model_check(self, spec: str, check) -> None:
        self.app.model_checking = False
        self.app.model_problem = None if check.ok else check.message
        self.query_one("#model-kind", Static).update(("✓ " if check.ok else "✗ ") + check.message)
        self.query_one("#model", Input).set_class(not check.ok, "-invalid")
        self._plan_summary()

    def _device_line(self) -> None:
        from screens.data import describe_device

        device, dtype = self.query_one("#device", Select).value, self.query_one("#dtype", Select).value
        self.query_one("#device-info", Static).update(describe_device(self.app.device_info, str(device), str(dtype)))

    def _toggle_rows(self) -> None:
        sweep = self.query_one("#rates-as-sweep", RadioButton).value
        self.query_one("#rates-list-row").display = not sweep
        self.query_one("#rates-sweep-row").display = sweep
        self.query_one("#chunk-row").display = self.query_one("#proto-chunked", RadioButton).value
        # The decoding protocol generates too: max new tokens, few-shot and depths apply to it.
        self.query_one("#task-rows").display = (self.query_one("#proto-task", RadioButton).value
                                                or self.query_one("#proto-decoding", RadioButton).value)
        self._toggle_api_rows()

    def _toggle_api_rows(self) -> None:
        remote = self.query_one("#evaluator", Select).value != "local"
        self.query_one("#api-model").display = remote
        for row in self.query(".api-row"):
            row.display = remote

    # -- events ------------------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        self.validate()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self.validate()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.radio_set.id == "rates-mode" and self.query_one("#rates-as-sweep", RadioButton).value:
            # Switching to a sweep: start from the list's extremes so the preview makes sense at once.
            rates = [r for r in (to_float(t) for t in self.query_one("#rates-list", Input).value.replace(",", " ").split())
                     if isinstance(r, float)]
            if len(rates) > 1:
                self.query_one("#sweep-start", Input).value = f"{max(rates):g}"
                self.query_one("#sweep-stop", Input).value = f"{min(rates):g}"
        self._toggle_rows()
        self.validate()

    def on_methods_pane_changed(self, event) -> None:
        self.validate()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "preset":
            if event.value is Select.NULL or event.value == self._preset_value:
                return
            from workbench.plan import PlanError, load_preset

            self._preset_value = event.value
            try:
                self.app.replace_plan(load_preset(str(event.value)))
            except PlanError as err:
                self.notify(str(err), severity="error")
            return
        if event.select.id == "evaluator":
            self._evaluator_placeholders()
            self._toggle_api_rows()
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
        """The next tab, with the focus on the tab strip: a focused widget left in the hidden tab would pull
        the view back to its tab (TabbedContent follows the focus)."""
        tabs = self.query_one(TabbedContent)
        ids = [p.id for p in tabs.query(TabPane)]
        self.query_one(Tabs).focus()
        tabs.active = ids[(ids.index(tabs.active) + 1) % len(ids)]
