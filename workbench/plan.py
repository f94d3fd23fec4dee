"""What to run: a validated, fully resolved description of one session's grid.

A plan is model × datasets × methods × rates. It is read from a preset (JSON), checked before
anything heavy loads, and written into the session exactly as resolved, so a session can be
resumed or re-run from the file alone.

Vocabulary (one word per meaning, everywhere in the workbench):
- **rate**: the fraction of context tokens *kept* (1.0 = uncompressed). kvpress's
  ``compression_ratio`` is the fraction *removed*; it is converted at the press boundary only.
- **context tokens**: tokens prefilled (and compressed); **continuation tokens**: tokens scored.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

BASELINE_LABEL = "baseline"
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")  # ASCII digits: '²'.isdigit() is true
MAX_NAME_CHARS = 120
MAX_CELLS = 10_000  # a session keeps every cell in one JSON document, rewritten after every sample


class PlanError(ValueError):
    """Bad input in a plan or preset. ``str()`` names the source file and the field."""

    def __init__(self, message: str, source: str | None = None, field_path: str | None = None):
        self.source = source
        self.field_path = field_path
        self.message = message  # without the file and the field
        where = ""
        if source:
            where += f"{source}: "
        if field_path:
            where += f"field '{field_path}': "
        super().__init__(where + message)


@dataclass
class DatasetSpec:
    name: str
    samples: int = 4
    seed: int = 0


@dataclass
class ProtocolSpec:
    name: str = "context-continuation"
    context_tokens: int = 1024
    continuation_tokens: int = 128
    # chunked only: tokens per forward pass; the cache is compressed after every chunk.
    chunk_size: int | None = None
    # task only: greedy generation budget (None: the task's default), needle depths (fractions of the
    # context), few-shot demonstrations (GSM8K), and whether question-aware compressors see the question.
    max_new_tokens: int | None = None
    depths: list[float] | None = None
    n_shots: int = 4
    question_aware: bool = False
    # decoding only: sampling temperature (0: greedy) and the seed added to each sample's own.
    temperature: float = 0.0
    seed: int = 0

    @property
    def window_tokens(self) -> int:
        """Tokens each sample needs: context + continuation + 1 (the last continuation token's target)."""
        return self.context_tokens + self.continuation_tokens + 1


@dataclass
class MethodSpec:
    """One method of the grid. ``family`` is 'kv' (a kvpress press) or 'prompt' (a text compressor)."""

    name: str
    family: str = "kv"
    label: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # None: the plan's rates. A threshold-driven press (DMS) has rates [None]: its kept fraction is measured.
    rates: list[float | None] | None = None


@dataclass
class ExecutionSpec:
    """Where the units run: ``workers`` Ray actors (one per GPU; CPU processes on a machine without one), on a
    local Ray started for the run (``ray`` None) or an existing cluster (``ray``: "auto" or its address).
    Changes no result, only where and how fast they are measured (``workbench.distributed``)."""

    workers: int | None = None  # None: one per GPU of the cluster (1 on a cluster without GPUs)
    ray: str | None = None


MAX_WORKERS = 1024


@dataclass
class Plan:
    name: str
    model: str
    device: str = "auto"
    dtype: str = "auto"
    datasets: list[DatasetSpec] = field(default_factory=list)
    protocol: ProtocolSpec = field(default_factory=ProtocolSpec)
    methods: list[MethodSpec] = field(default_factory=list)
    rates: list[float] = field(default_factory=lambda: [0.5])
    # Reuse one prefill for every rate of a press where that gives identical results.
    shared_prefill: bool = True
    # Samples per forward pass where results do not change (baseline, shared-prefill presses; samples of
    # one length, never padded): "auto" sizes it to the GPU's free memory and is 1 on a CPU.
    batch_size: int | str = "auto"
    description: str = ""
    # A remote model that answers instead of the local one (task protocol; workbench.api.evaluator), and the
    # most the session may spend on it, in US dollars (None: no cap).
    evaluator: Any = None
    max_cost_usd: float | None = None
    # Measure on Ray workers (None: in this process, as always).
    execution: ExecutionSpec | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.execution is None:  # plans without it read and compare exactly as before it existed
            del data["execution"]
        return data

    def result_dict(self) -> dict:
        """The plan without what changes no result (where it runs): two sessions of equal result_dict are one plan."""
        data = self.to_dict()
        data.pop("execution", None)
        return data

    def baseline_method(self) -> MethodSpec:
        """The uncompressed model as a method of the 'baseline' family: one cell per dataset, at rate 1."""
        return MethodSpec(name=BASELINE_LABEL, family="baseline", label=BASELINE_LABEL, params={}, rates=[1.0])

    def cells(self) -> list["CellSpec"]:
        """Every cell of the grid, the baseline of each dataset first."""
        out: list[CellSpec] = []
        for ds in self.datasets:
            out.append(CellSpec(self.model, ds.name, BASELINE_LABEL, "baseline", 1.0))
            for m in self.methods:
                for rate in m.rates if m.rates is not None else self.rates:
                    out.append(CellSpec(self.model, ds.name, m.label, m.family, rate))
        return out

    def method(self, label: str) -> MethodSpec:
        for m in self.methods:
            if m.label == label:
                return m
        raise KeyError(label)

    def forward_passes(self) -> dict[str, int]:
        """Estimate of model forward passes, for the dry run and the setup screen."""
        n_samples = sum(ds.samples for ds in self.datasets)
        p = self.protocol
        if p.name == "chunked":
            per_eval = math.ceil(p.window_tokens / (p.chunk_size or 1))
        elif p.name == "task":
            per_eval = 2 + (p.max_new_tokens or 32)  # prefill, question, one pass per generated token
        elif p.name == "decoding":
            per_eval = 1 + (p.max_new_tokens or 0)  # a prefill, one pass per generated token
        else:
            per_eval = 2  # one prefill + one continuation pass
        baseline = n_samples * per_eval
        methods = 0
        for m in self.methods:
            rates = m.rates if m.rates is not None else self.rates
            # A decoding schedule generates, then scores the baseline's tokens through the same schedule.
            methods += n_samples * len(rates) * per_eval * (2 if p.name == "decoding" else 1)
        return {"baseline": baseline, "methods": methods, "total": baseline + methods}


@dataclass(frozen=True)
class CellSpec:
    model: str
    dataset: str
    method: str  # the method's label
    family: str
    rate: float | None

    @property
    def key(self) -> str:
        rate = "thr" if self.rate is None else f"{self.rate:g}"
        return f"{self.model}|{self.dataset}|{self.method}|{rate}"


# ---------------------------------------------------------------------------------------------
# Parsing and validation


def _expect(cond: bool, message: str, source: str | None, path: str) -> None:
    if not cond:
        raise PlanError(message, source, path)


def _as_int(value: Any, source, path, minimum: int = 1) -> int:
    _expect(isinstance(value, int) and not isinstance(value, bool), f"expected an integer, got {value!r}", source, path)
    _expect(value >= minimum, f"must be at least {minimum}, got {value}", source, path)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_rate(value: Any, source, path) -> float:
    _expect(_is_number(value), f"a rate is a number in (0, 1] (fraction of tokens kept), got {value!r}", source, path)
    _expect(0 < value <= 1, f"a rate is the fraction of tokens kept and must be in (0, 1], got {value}", source, path)
    return float(value)


# A sweep is a convenience for a list: more rates than this is a typo in 'step', not a plan.
MAX_SWEEP_RATES = 1000
# Smallest sweep step: cells are keyed by the rate to 6 significant digits, so finer steps would collide.
MIN_SWEEP_STEP = 1e-6
_SWEEP_TOLERANCE = 1e-9  # a step that lands on 'stop' within this (in steps) includes it


def _sweep(value: dict, source, path) -> list[float]:
    """Rates from start towards stop by step, never past stop; stop is included when a step lands on it."""
    unknown = set(value) - {"start", "stop", "step"}
    _expect(not unknown, f"unknown key(s) {sorted(unknown, key=str)} in a sweep; allowed: start, stop, step", source, path)
    for key in ("start", "stop", "step"):
        _expect(key in value, f"a sweep needs 'start', 'stop' and 'step'; '{key}' is missing", source, f"{path}.{key}")
    start = _as_rate(value["start"], source, f"{path}.start")
    stop = _as_rate(value["stop"], source, f"{path}.stop")
    step = value["step"]
    _expect(_is_number(step) and math.isfinite(step) and step > 0,
            f"'step' is a positive number (the difference between two rates), got {step!r}", source, f"{path}.step")
    _expect(step >= MIN_SWEEP_STEP, f"'step' must be at least {MIN_SWEEP_STEP:g}, got {step:g}", source, f"{path}.step")
    steps = abs(stop - start) / step
    _expect(steps < MAX_SWEEP_RATES, f"from {start:g} to {stop:g} by {step:g} makes {math.floor(steps + _SWEEP_TOLERANCE) + 1:,} "
            f"rates; a sweep makes at most {MAX_SWEEP_RATES:,}: use a larger step", source, f"{path}.step")
    n = math.floor(steps + _SWEEP_TOLERANCE) + 1
    sign = -1 if stop < start else 1
    rates = [round(start + sign * i * step, 6) for i in range(n)]
    if abs(n - 1 - steps) <= _SWEEP_TOLERANCE * max(1.0, steps):
        rates[-1] = stop  # the last step lands on stop: use stop exactly, not start + n·step's rounding
    return rates


def _parse_rates(value: Any, source, path) -> list[float]:
    if isinstance(value, dict):  # a sweep: {"start": 0.9, "stop": 0.1, "step": 0.1}
        value = _sweep(value, source, path)
    _expect(isinstance(value, list) and value, "expected a non-empty list of rates or a sweep {start, stop, step}", source, path)
    rates = [_as_rate(v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    seen: dict[str, int] = {}
    for i, r in enumerate(rates):
        key = f"{r:g}"  # what names the rate's cell
        if key in seen:
            same = "" if rates[seen[key]] == r else f" ({rates[seen[key]]!r} and {r!r} agree to 6 significant digits)"
            raise PlanError(f"rates must not repeat: {r:g} is also {path}[{seen[key]}]{same}", source, f"{path}[{i}]")
        seen[key] = i
    return rates


def _parse_dataset(value: Any, source, path) -> DatasetSpec:
    from workbench import datasets as ds_mod

    if isinstance(value, str):
        value = {"name": value}
    _expect(isinstance(value, dict), "expected a dataset name or an object with 'name'", source, path)
    unknown = set(value) - {"name", "samples", "seed"}
    _expect(not unknown, f"unknown key(s) {sorted(unknown)}; allowed: name, samples, seed", source, path)
    name = value.get("name")
    _expect(isinstance(name, str) and name, "missing dataset 'name'", source, f"{path}.name")
    try:
        ds_mod.validate_dataset_spec(name)
    except (ValueError, OSError) as err:  # OSError: a path the file system refuses (too long, no permission)
        raise PlanError(str(err), source, f"{path}.name") from None
    samples = _as_int(value.get("samples", 4), source, f"{path}.samples")
    seed = _as_int(value.get("seed", 0), source, f"{path}.seed", minimum=0)
    return DatasetSpec(name=name, samples=samples, seed=seed)


def _parse_protocol(value: Any, source, path) -> ProtocolSpec:
    if value is None:
        return ProtocolSpec()
    if isinstance(value, str):
        value = {"name": value}
    _expect(isinstance(value, dict), "expected a protocol name or object", source, path)
    unknown = set(value) - {"name", "context_tokens", "continuation_tokens", "chunk_size", "max_new_tokens", "depths", "n_shots",
                            "question_aware", "temperature", "seed"}
    _expect(not unknown, f"unknown key(s) {sorted(unknown)}", source, path)
    from workbench.protocols import ALIASES, PROTOCOLS

    name = value.get("name", "context-continuation")
    _expect(isinstance(name, str), f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}", source, f"{path}.name")
    name = ALIASES.get(name, name)
    _expect(name in PROTOCOLS, f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}", source, f"{path}.name")
    spec = ProtocolSpec(
        name=name,
        context_tokens=_as_int(value.get("context_tokens", 1024), source, f"{path}.context_tokens", minimum=8),
        continuation_tokens=_as_int(value.get("continuation_tokens", 128), source, f"{path}.continuation_tokens"),
    )
    if name == "chunked":
        spec.chunk_size = _as_int(value.get("chunk_size", 128), source, f"{path}.chunk_size")
    else:
        _expect(value.get("chunk_size") is None, "chunk_size applies to the 'chunked' protocol only", source, f"{path}.chunk_size")
    task_keys = ("max_new_tokens", "depths", "question_aware")
    if name == "decoding":
        return _parse_decoding(value, spec, source, path)
    for key, unset in (("temperature", 0), ("seed", 0)):
        _expect(value.get(key, unset) == unset, f"{key} applies to the 'decoding' protocol only", source, f"{path}.{key}")
    if name != "task":
        for key in task_keys:
            _expect(value.get(key) in (None, False), f"{key} applies to the 'task' protocol only", source, f"{path}.{key}")
        return spec
    if value.get("max_new_tokens") is not None:
        spec.max_new_tokens = _as_int(value["max_new_tokens"], source, f"{path}.max_new_tokens")
    spec.n_shots = _as_int(value.get("n_shots", 4), source, f"{path}.n_shots", minimum=0)
    depths = value.get("depths")
    if depths is not None:
        _expect(isinstance(depths, list) and depths and all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in depths),
                "depths are fractions of the context in [0, 1]", source, f"{path}.depths")
        spec.depths = [float(d) for d in depths]
    qa = value.get("question_aware", False)
    _expect(isinstance(qa, bool), "expected true or false", source, f"{path}.question_aware")
    spec.question_aware = qa
    return spec


DEFAULT_DECODING_TOKENS = 128


def _parse_decoding(value: dict, spec: ProtocolSpec, source, path) -> ProtocolSpec:
    """The decoding protocol: ``max_new_tokens`` generated (greedily) per sample; on a text dataset the prompt is
    ``context_tokens`` of a window, on a task dataset the task's context and question (``n_shots``, ``depths``)."""
    _expect(value.get("question_aware") in (None, False), "question_aware applies to the 'task' protocol only",
            source, f"{path}.question_aware")
    spec.max_new_tokens = _as_int(value.get("max_new_tokens", DEFAULT_DECODING_TOKENS), source, f"{path}.max_new_tokens")
    # A saved session writes continuation_tokens = max_new_tokens back: that one value is accepted.
    _expect(value.get("continuation_tokens") in (None, spec.max_new_tokens), "the decoding protocol generates "
            "max_new_tokens and scores those: set max_new_tokens instead", source, f"{path}.continuation_tokens")
    spec.continuation_tokens = spec.max_new_tokens  # a text window holds the prompt and as many tokens again
    spec.n_shots = _as_int(value.get("n_shots", 4), source, f"{path}.n_shots", minimum=0)
    depths = value.get("depths")
    if depths is not None:
        _expect(isinstance(depths, list) and depths and all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in depths),
                "depths are fractions of the context in [0, 1]", source, f"{path}.depths")
        spec.depths = [float(d) for d in depths]
    temperature = value.get("temperature", 0.0)
    _expect(_is_number(temperature) and math.isfinite(temperature) and 0 <= temperature <= 100,
            f"a sampling temperature is a number from 0 (greedy) to 100, got {temperature!r}", source, f"{path}.temperature")
    spec.temperature = float(temperature)
    spec.seed = _as_int(value.get("seed", 0), source, f"{path}.seed", minimum=0)
    return spec


def default_label(name: str, family: str) -> str:
    """The method's name; a name both families use (random) gets its family appended."""
    from workbench.methods import registry

    shared = sum(1 for info in registry.all_methods() if info.name == name) > 1
    return f"{name}-{family}" if shared else name


def _parse_method(value: Any, source, path) -> MethodSpec:
    from workbench.methods import registry

    if isinstance(value, str):
        value = {"name": value}
    _expect(isinstance(value, dict), "expected a method name or an object with 'name'", source, path)
    unknown = set(value) - {"name", "family", "label", "params", "rates"}
    _expect(not unknown, f"unknown key(s) {sorted(unknown)}; allowed: name, family, label, params, rates", source, path)
    name = value.get("name")
    _expect(isinstance(name, str) and name, "missing method 'name'", source, f"{path}.name")
    family = value.get("family")
    _expect(family is None or isinstance(family, str), f"expected \"kv\", \"prompt\" or \"decoding\", got {family!r}", source, f"{path}.family")
    try:
        info = registry.lookup(name, family)
    except KeyError as err:
        raise PlanError(err.args[0], source, f"{path}.name") from None
    params = value.get("params", {})
    _expect(isinstance(params, dict), "params must be an object", source, f"{path}.params")
    from workbench import families
    from workbench.methods.info import ParamError

    try:
        params = registry.resolve_params(info, params)
        families.get(info.family).check_params(info, params, "")
    except ParamError as err:
        raise PlanError(str(err), source, f"{path}.params.{err.field}") from None
    except ValueError as err:  # composition: the message starts with the nested field ('.press: …')
        where, _, message = str(err).partition(": ")
        raise PlanError(message, source, f"{path}.params{where}") from None
    rates = value.get("rates")
    if not info.takes_rates(params):
        hint = f" (or set params.{info.rates_when} to true to meet rates)" if info.rates_when else ""
        # [None] is how a saved session writes such a method's rates back (Plan.to_dict): the same plan.
        _expect(rates in (None, [None]), f"{info.name} is driven by its parameters (e.g. a threshold), not by rates{hint}", source,
                f"{path}.rates")
        rates = [None]
    elif rates is not None:
        rates = _parse_rates(rates, source, f"{path}.rates")
    try:  # a method that fixes its own rates (a soft compressor: its trained rate)
        rates = families.get(info.family).method_rates(params, rates)
    except ValueError as err:
        where, _, message = str(err).partition(": ")
        raise PlanError(message, source, f"{path}.params.{where}" if where != "rates" else f"{path}.rates") from None
    label = value.get("label") or default_label(info.name, info.family)
    _expect(isinstance(label, str), f"a label is a string, got {label!r}", source, f"{path}.label")
    _expect(label != BASELINE_LABEL, f"label {label!r} is reserved", source, f"{path}.label")
    return MethodSpec(name=info.name, family=info.family, label=label, params=params, rates=rates)


_TOP_KEYS = {"name", "description", "model", "device", "dtype", "datasets", "protocol", "methods", "rates", "shared_prefill",
             "batch_size", "evaluator", "max_cost_usd", "execution"}


def parse_plan(data: Any, source: str | None = None) -> Plan:
    """Validate a plan or preset document and return it fully resolved. Raises PlanError."""
    _expect(isinstance(data, dict), "a plan (a preset) is a JSON object", source, "(top level)")
    unknown = set(data) - _TOP_KEYS
    # A training plan or an ablation grid of a learned compressor given here: say what it is and what runs it.
    _expect(not (unknown and unknown & {"architecture", "architectures"} and "methods" not in data),
            "this is a training plan (or an ablation grid) of a learned compressor, not a comparison plan: train it "
            "with `workbench train FILE` (a grid: `workbench train --ablation FILE`)", source, "(top level)")
    _expect(not unknown, f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}", source, "(top level)")
    model = data.get("model", "smollm2-135m")
    if isinstance(model, dict):  # {"id": ..., "device": ..., "dtype": ...}
        data = {**data, "device": model.get("device", data.get("device", "auto")), "dtype": model.get("dtype", data.get("dtype", "auto"))}
        model = model.get("id")
    _expect(isinstance(model, str) and model.strip(), "expected a model name, hub id or path", source, "model")
    from workbench.models import ModelLoadError, classify_model_spec

    try:
        classify_model_spec(model)
    except (ModelLoadError, OSError, ValueError) as err:  # OSError/ValueError: a path the file system refuses
        raise PlanError(str(err), source, "model") from None
    device, dtype = data.get("device", "auto"), data.get("dtype", "auto")
    _expect(isinstance(device, str) and DEVICE_PATTERN.fullmatch(device) is not None,
            f"unknown device {device!r} (auto, cpu, cuda, cuda:N, mps)", source, "device")
    _expect(isinstance(dtype, str) and dtype in DTYPES, f"unknown dtype {dtype!r} (auto, float32, float16, bfloat16)", source, "dtype")

    datasets = data.get("datasets", ["wikitext2"])
    _expect(isinstance(datasets, list) and datasets, "expected a non-empty list of datasets", source, "datasets")
    ds_specs = [_parse_dataset(v, source, f"datasets[{i}]") for i, v in enumerate(datasets)]
    _expect(len({d.name for d in ds_specs}) == len(ds_specs), "a dataset is listed twice", source, "datasets")

    protocol = _parse_protocol(data.get("protocol"), source, "protocol")
    rates = _parse_rates(data.get("rates", [0.5]), source, "rates")

    methods = data.get("methods", [])
    _expect(isinstance(methods, list), "expected a list of methods", source, "methods")
    m_specs = [_parse_method(v, source, f"methods[{i}]") for i, v in enumerate(methods)]
    seen: dict[str, int] = {}
    for i, m in enumerate(m_specs):
        _expect(m.label not in seen, f"two methods are labelled {m.label!r}: give one a distinct \"label\"", source, f"methods[{i}].label")
        seen[m.label] = i
    from workbench import families

    for i, m in enumerate(m_specs):
        invalid = families.get(m.family).invalid(m, protocol)
        _expect(invalid is None, invalid or "", source, f"methods[{i}]")
    if protocol.name == "task":
        from workbench import tasks

        for i, ds in enumerate(ds_specs):
            try:  # a local .jsonl or hf: dataset is read to see whether it holds questions and answers
                task = tasks.task_for_dataset(ds.name)
            except (ValueError, OSError) as err:  # DatasetError is a ValueError
                raise PlanError(str(err), source, f"datasets[{i}].name") from None
            _expect(task is not None,
                    f"{ds.name} has no task (task datasets: gsm8k, paulgraham (needle), meetingbank, QA files with context/question/answers)",
                    source, f"datasets[{i}].name")

    shared = data.get("shared_prefill", True)
    _expect(isinstance(shared, bool), "expected true or false", source, "shared_prefill")
    batch_size = data.get("batch_size", "auto")
    _expect(batch_size == "auto" or (isinstance(batch_size, int) and not isinstance(batch_size, bool) and 1 <= batch_size <= 256),
            f"expected \"auto\" or a whole number from 1 to 256, got {batch_size!r}", source, "batch_size")
    evaluator, max_cost = _parse_evaluator(data, protocol, source)
    name = data.get("name") or (Path(source).stem if source else "session")
    _check_name(name, source)
    description = data.get("description", "")
    _expect(isinstance(description, str), f"expected a string, got {description!r}", source, "description")
    plan = Plan(
        name=name,
        description=description,
        model=model.strip(),
        device=device,
        dtype=dtype,
        datasets=ds_specs,
        protocol=protocol,
        methods=m_specs,
        rates=rates,
        shared_prefill=shared,
        batch_size=batch_size,
        evaluator=evaluator,
        max_cost_usd=max_cost,
        execution=parse_execution(data.get("execution"), source, "execution"),
    )
    _expect(plan.execution is None or evaluator is None,
            "workers measure a local model; a plan with an evaluator sends its requests from one process "
            "(its max_concurrency sets how many at once)", source, "execution")
    _check_grid(plan, source)
    return plan


def parse_execution(value: Any, source, path) -> ExecutionSpec | None:
    """{"workers": N, "ray": "auto" | ADDRESS} (either may be left out), or null: this process."""
    if value is None:
        return None
    _expect(isinstance(value, dict), 'expected {"workers": N, "ray": "auto" | ADDRESS} or null', source, path)
    unknown = set(value) - {"workers", "ray"}
    _expect(not unknown, f"unknown key(s) {sorted(unknown)}; allowed: ray, workers", source, path)
    workers = value.get("workers")
    if workers is not None:
        workers = _as_int(workers, source, f"{path}.workers")
        _expect(workers <= MAX_WORKERS, f"at most {MAX_WORKERS} workers, got {workers}", source, f"{path}.workers")
    address = value.get("ray")
    _expect(address is None or (isinstance(address, str) and address.strip() and address.isprintable()),
            'expected "auto" (the cluster this machine belongs to) or a cluster address such as "10.0.0.5:6379"',
            source, f"{path}.ray")
    if address is not None:
        from workbench.ray_cluster import address_problem

        problem = address_problem(address)
        _expect(problem is None, problem or "", source, f"{path}.ray")
    _expect(workers is not None or address is not None, 'give "workers", "ray" or both (null: run in this process)',
            source, path)
    return ExecutionSpec(workers=workers, ray=address.strip() if address else None)


def _parse_evaluator(data: dict, protocol: ProtocolSpec, source):
    """(EvaluatorSpec | None, max_cost_usd | None): the remote model that answers, and the spending cap."""
    from workbench.api.evaluator import EvaluatorError, parse_evaluator, parse_max_cost

    try:
        evaluator = parse_evaluator(data.get("evaluator"))
    except EvaluatorError as err:
        raise PlanError(str(err), source, "evaluator" + (f".{err.field}" if err.field else "")) from None
    try:
        max_cost = parse_max_cost(data.get("max_cost_usd"))
    except EvaluatorError as err:
        raise PlanError(str(err), source, "max_cost_usd") from None
    if evaluator is not None:
        _expect(protocol.name == "task", "an API evaluator answers questions: it needs the task protocol "
                "(\"protocol\": {\"name\": \"task\"}); perplexity needs a local model", source, "evaluator")
        if max_cost is not None:
            from workbench.api.prices import price_for

            _expect(price_for(evaluator) is not None, f"max_cost_usd needs the price of {evaluator.model}, which the "
                    "shipped price table does not list: add evaluator.prices {\"input\": $/M tokens, \"output\": $/M tokens}",
                    source, "evaluator.prices")
    else:
        _expect(max_cost is None, "max_cost_usd caps what an API evaluator spends: this plan has no evaluator",
                source, "max_cost_usd")
    return evaluator, max_cost


def _check_name(name: Any, source) -> None:
    """A plan's name becomes its session's default file name: it must stay one file in one folder."""
    _expect(isinstance(name, str), f"a name is a string, got {name!r}", source, "name")
    _expect(len(name) <= MAX_NAME_CHARS, f"at most {MAX_NAME_CHARS} characters, got {len(name)}", source, "name")
    bad = sorted({c for c in name if c in "/\\" or not c.isprintable()})
    _expect(not bad, f"the name becomes a file name: it cannot contain {', '.join(repr(c) for c in bad)}", source, "name")
    _expect(not name.startswith("."), "the name becomes a file name: it cannot start with '.'", source, "name")


def _check_grid(plan: "Plan", source) -> None:
    cells = plan.cells()
    _expect(len(cells) <= MAX_CELLS, f"the grid has {len(cells):,} cells (datasets × methods × rates); at most {MAX_CELLS:,} "
            "in one session: fewer rates, methods or datasets", source, "rates")
    keys: dict[str, CellSpec] = {}
    for cell in cells:
        # Two cells with one key would share one record: only odd labels or dataset names can do that.
        _expect(cell.key not in keys, f"two cells would share the key {cell.key!r}; give a method a distinct \"label\"",
                source, "methods")
        keys[cell.key] = cell


# ---------------------------------------------------------------------------------------------
# Presets


def preset_names() -> list[str]:
    """Names of the presets shipped with the package."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".json"))


def _preset_dir():
    try:
        return resources.files("workbench.presets")
    except ModuleNotFoundError:  # running from a source tree that was never installed
        return Path(__file__).resolve().parent.parent / "presets"


def load_preset(name_or_path: str) -> Plan:
    """A shipped preset by name, or a JSON file by path. Raises PlanError naming the file and field."""
    from workbench import jsonio

    path = Path(name_or_path)
    try:
        local = name_or_path.endswith(".json") or "/" in name_or_path or path.exists()
    except OSError:  # a name the file system refuses (too long): it is no shipped preset either
        local = True
    try:
        if local:
            data, source = jsonio.read_json(path, "preset file"), str(path)
        else:
            entry = _preset_dir() / f"{name_or_path}.json"
            if not entry.is_file():
                if (_preset_dir() / "train" / f"{name_or_path}.json").is_file():  # presets/train/: training plans
                    raise PlanError(f"{name_or_path!r} is a training preset (a learned compressor's training plan), not a "
                                    f"comparison: run `workbench train {name_or_path}`")
                raise PlanError(f"no preset named {name_or_path!r}; shipped presets: {', '.join(preset_names())}")
            source = f"preset {name_or_path}"
            data = jsonio.parse(entry.read_text(encoding="utf-8"), source)
    except jsonio.InputFileError as err:
        raise PlanError(str(err)) from None
    if isinstance(data, dict) and "plan" in data and "schema_version" in data:
        data = data["plan"]  # a saved session can serve as a preset: its plan is reused
    return parse_plan(data, source=source)
