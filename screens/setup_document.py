"""Setup's form read into a plan document for the engine's parse_plan, with where each field is on screen:
(field path, widget selector, the label the screen shows), so a PlanError is flagged in place and named
as the user sees it. Values that are not numbers stay text, so parse_plan names the field and the value."""

from __future__ import annotations

from textual.widgets import Checkbox, Input, RadioButton, Select


def to_int(text: str):
    """An int when the text is one; else the text, so parse_plan names the field and the bad value."""
    try:
        return int(text.strip())
    except ValueError:
        return text.strip()


def to_batch_size(text: str):
    """'auto' (or blank) stays the word; anything else as _int does, for parse_plan to judge."""
    return "auto" if text.strip().lower() in ("", "auto") else to_int(text)


def to_float(text: str):
    try:
        return float(text.strip())
    except ValueError:
        return text.strip()


def form_document(screen) -> tuple[dict, list[tuple[str, str, str]]]:
    """The plan document, and (field path, widget selector, label on screen) for each field, to flag a
    PlanError in place and name the field as the screen does."""
    from workbench.datasets import list_datasets
    from screens.methods_pane import MethodsPane

    q = screen.query_one
    where: list[tuple[str, str, str]] = [("model", "#model", "Model"), ("device", "#device", "Device"),
                                         ("dtype", "#dtype", "Dtype"), ("name", "#plan-name", "Plan name")]
    datasets = []
    for info in list_datasets():
        if q(f"#ds-{info.name}", Checkbox).value:
            datasets.append({"name": info.name, "samples": to_int(q(f"#ds-{info.name}-samples", Input).value),
                             "seed": to_int(q(f"#ds-{info.name}-seed", Input).value)})
            where += _dataset_fields(len(datasets) - 1, f"#ds-{info.name}")
    for spec in (s.strip() for s in q("#ds-other", Input).value.split(",")):
        if spec:
            datasets.append({"name": spec, "samples": to_int(q("#ds-other-samples", Input).value),
                             "seed": to_int(q("#ds-other-seed", Input).value)})
            where += _dataset_fields(len(datasets) - 1, "#ds-other", other=True)
    where.append(("datasets", "#ds-other", "Datasets tab"))
    if q("#rates-as-sweep", RadioButton).value:
        rates = {"start": to_float(q("#sweep-start", Input).value), "stop": to_float(q("#sweep-stop", Input).value),
                 "step": to_float(q("#sweep-step", Input).value)}
        where.append(("rates", "#rates-sweep-row", "Rates start/stop/step"))
    else:
        rates = [to_float(t) for t in q("#rates-list", Input).value.replace(",", " ").split()]
        where.append(("rates", "#rates-list", "Rates (kept)"))
    chunked, task = q("#proto-chunked", RadioButton).value, q("#proto-task", RadioButton).value
    decoding = q("#proto-decoding", RadioButton).value
    protocol = {"name": "chunked" if chunked else "task" if task else "decoding" if decoding else "context-continuation",
                "context_tokens": to_int(q("#context-tokens", Input).value),
                "continuation_tokens": to_int(q("#continuation-tokens", Input).value)}
    if chunked:
        protocol["chunk_size"] = to_int(q("#chunk-size", Input).value)
    if decoding:  # it generates max_new_tokens (and scores those): no continuation of its own
        del protocol["continuation_tokens"]
        if q("#max-new-tokens", Input).value.strip():
            protocol["max_new_tokens"] = to_int(q("#max-new-tokens", Input).value)
        protocol["n_shots"] = to_int(q("#n-shots", Input).value)
        depths = q("#depths", Input).value.replace(",", " ").split()
        if depths:
            protocol["depths"] = [to_float(d) for d in depths]
    if task:
        if q("#max-new-tokens", Input).value.strip():
            protocol["max_new_tokens"] = to_int(q("#max-new-tokens", Input).value)
        protocol["n_shots"] = to_int(q("#n-shots", Input).value)
        depths = q("#depths", Input).value.replace(",", " ").split()
        if depths:
            protocol["depths"] = [to_float(d) for d in depths]
        protocol["question_aware"] = q("#question-aware", Checkbox).value
    where += [("protocol.context_tokens", "#context-tokens", "Context tokens"),
              ("protocol.continuation_tokens", "#continuation-tokens", "Scored tokens"),
              ("protocol.chunk_size", "#chunk-size", "Chunk size"), ("protocol.max_new_tokens", "#max-new-tokens", "Max new tokens"),
              ("protocol.n_shots", "#n-shots", "Few-shot (GSM8K)"), ("protocol.depths", "#depths", "Needle depths"),
              ("protocol.question_aware", "#question-aware", "question-aware"), ("protocol", "#protocol", "Protocol"),
              ("methods", "#methods", "Methods tab"), ("shared_prefill", "#shared-prefill", "shared prefill"),
              ("batch_size", "#batch-size", "Batch size")]
    doc = {"name": q("#plan-name", Input).value.strip() or "session", "model": q("#model", Input).value.strip(),
           "device": q("#device", Select).value, "dtype": q("#dtype", Select).value, "datasets": datasets,
           "protocol": protocol, "rates": rates, "methods": q(MethodsPane).entries,
           "shared_prefill": q("#shared-prefill", Checkbox).value, "batch_size": to_batch_size(q("#batch-size", Input).value)}
    workers, address = q("#workers", Input).value.strip(), q("#ray-address", Input).value.strip()
    if workers or address:  # where the units run (Ray workers); blank: this process, as always
        doc["execution"] = {"workers": to_int(workers) if workers else None, "ray": address or None}
    where += [("execution.workers", "#workers", "Workers"), ("execution.ray", "#ray-address", "Ray cluster"),
              ("execution", "#workers", "Workers")]
    if screen.app.plan is not None and screen.app.plan.description:
        doc["description"] = screen.app.plan.description
    where += _evaluator(screen, doc)
    return doc, where


def _evaluator(screen, doc: dict) -> list[tuple[str, str, str]]:
    """The evaluator block (and max_cost_usd) from the evaluator rows, with the settings the form does not show."""
    q = screen.query_one
    provider = q("#evaluator", Select).value
    if provider != "local":
        block = {**getattr(screen, "evaluator_extra", {}), "provider": provider, "model": q("#api-model", Input).value.strip()}
        for key, selector in (("base_url", "#api-base-url"), ("api_key_env", "#api-key-env")):
            if q(selector, Input).value.strip():
                block[key] = q(selector, Input).value.strip()
        doc["evaluator"] = block
        if q("#max-cost", Input).value.strip():
            doc["max_cost_usd"] = to_float(q("#max-cost", Input).value)
    return [("evaluator.provider", "#evaluator", "Answered by"), ("evaluator.model", "#api-model", "API model"),
            ("evaluator.base_url", "#api-base-url", "API base URL"), ("evaluator.api_key_env", "#api-key-env", "Key variable"),
            ("evaluator.prices", "#max-cost", "Max cost (the model has no price)"), ("max_cost_usd", "#max-cost", "Max cost"),
            ("evaluator", "#evaluator", "Answered by")]


def _dataset_fields(i: int, row: str, other: bool = False) -> list[tuple[str, str, str]]:
    inputs = ("#ds-other-samples", "#ds-other-seed") if other else (f"{row}-samples", f"{row}-seed")
    return [(f"datasets[{i}].samples", inputs[0], "samples"), (f"datasets[{i}].seed", inputs[1], "seed"),
            (f"datasets[{i}]", row, "Datasets tab")]
