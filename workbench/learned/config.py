"""A training plan for a learned soft compressor: a JSON file (``presets/train/*.json``) → :class:`TrainConfig`.

No torch here: ``workbench train`` validates a plan (one clear line naming the file and the field, exit 2) before
anything heavy loads. Units: ``rate`` is the fraction of context positions kept (k = round(rate × C) soft vectors);
token counts are in the evaluated model's tokens; ``steps`` are optimiser steps (each of ``batch_size`` ×
``grad_accum`` windows).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any



class PlanError(ValueError):
    """Bad input in a training plan: ``str()`` names the source file and the field, as ``workbench.plan.PlanError``
    does for comparison plans (a class of its own: the plan module's imports reach this package)."""

    def __init__(self, message: str, source: str | None = None, field_path: str | None = None):
        self.source, self.field_path, self.message = source, field_path, message
        where = (f"{source}: " if source else "") + (f"field '{field_path}': " if field_path else "")
        super().__init__(where + message)

ARCHITECTURE_NAMES = ("cross-attention", "conv", "pooling", "gist")  # architectures.ARCHITECTURES, without torch
LOSS_TERMS = ("teacher_forcing", "generation", "contrastive", "distillation")
DEFAULT_WEIGHTS = {"teacher_forcing": 0.5, "generation": 0.3, "contrastive": 0.2, "distillation": 0.0}


@dataclass(frozen=True)
class LoraSpec:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class TrainConfig:
    name: str
    model: str = "smollm2-135m"
    architecture: str = "cross-attention"
    rate: float = 0.125
    context_tokens: int = 256
    continuation_tokens: int = 64
    dataset: str = "wikitext2"
    # "lm": windows of the text, loss on the continuation; "qa": the context compressed, then the question as tokens,
    # loss on the answer (seed 002's SQuAD setting). A plan that names none gets "qa" on a question-answering set.
    objective: str = "lm"
    # Held-out windows: the first ``held_out`` windows datasets.lm_samples draws with ``held_out_seed`` (an
    # evaluation plan on this dataset with these window lengths, that seed and at most that many samples reads
    # only held-out windows). Training draws from every other window.
    held_out: int = 32
    held_out_seed: int = 0
    eval_windows: int = 8  # validation loss on the first N held-out windows, every eval_every steps
    steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    lr_compressor: float = 1e-3
    lr_lora: float = 5e-5
    warmup_steps: int = 10
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    loss_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    # Generation term: tokens the model decodes greedily itself (from the soft vectors) before the reference's
    # later part is scored (see losses.generation_batch).
    generation_prefix_tokens: int = 8
    contrastive_temperature: float = 0.1
    lora: LoraSpec | None = None
    eval_every: int = 25
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"

    @property
    def total_windows(self) -> int:
        return self.steps * self.batch_size * self.grad_accum

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.lora is not None:
            d["lora"]["target_modules"] = list(self.lora.target_modules)
        return d


_INT_FIELDS = {"context_tokens": 8, "continuation_tokens": 2, "held_out": 1, "eval_windows": 1, "batch_size": 1,
               "grad_accum": 1, "warmup_steps": 0, "held_out_seed": 0, "generation_prefix_tokens": 0, "eval_every": 1, "checkpoint_every": 1,
               "seed": 0}
_FLOAT_FIELDS = {"lr_compressor": 0.0, "lr_lora": 0.0, "weight_decay": 0.0, "max_grad_norm": 0.0,
                 "contrastive_temperature": 0.0}
_STR_FIELDS = ("model", "dataset", "device", "dtype")
OBJECTIVES = ("lm", "qa")
_KEYS = {"name", "description", "architecture", "rate", "samples", "steps", "loss_weights", "lora", "objective",
         *_INT_FIELDS, *_FLOAT_FIELDS, *_STR_FIELDS}


def _int(value, source, path, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"expected a whole number of at least {minimum}, got {value!r}", source, path)
    return value


def _float(value, source, path, minimum, open_min=True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= minimum if open_min else value < minimum):
        raise PlanError(f"expected a number {'greater than' if open_min else 'at least'} {minimum:g}, got {value!r}",
                        source, path)
    return float(value)


def parse_train_config(data: Any, source: str | None = None) -> TrainConfig:
    """Validate a training plan and return it resolved. Raises PlanError naming ``source`` and the field."""
    from workbench import datasets
    from workbench.models.spec import ModelLoadError, classify_model_spec

    if not isinstance(data, dict):
        raise PlanError("a training plan is a JSON object", source)
    unknown = set(data) - _KEYS
    if unknown and {"base", "architectures"} <= set(data):
        raise PlanError("this is an ablation grid, not one training plan: run it with `workbench train --ablation FILE`",
                        source)
    if unknown and unknown & {"methods", "datasets", "protocol"}:
        raise PlanError("this is a comparison plan (a preset), not a training plan: run it with `workbench --preset "
                        "FILE`", source)
    if unknown:
        raise PlanError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(_KEYS))}", source, sorted(unknown)[0])
    out: dict[str, Any] = {}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 120 or any(ch in name for ch in "/\\\0") \
            or name.startswith("."):
        raise PlanError("a run name is a non-empty string of at most 120 characters without '/' or '\\', not "
                        "starting with '.'", source, "name")
    out["name"] = name.strip()
    arch = data.get("architecture", "cross-attention")
    if arch not in ARCHITECTURE_NAMES:
        raise PlanError(f"unknown architecture {arch!r}; architectures: {', '.join(ARCHITECTURE_NAMES)}", source,
                        "architecture")
    out["architecture"] = arch
    rate = data.get("rate", 0.125)
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < 1):
        raise PlanError(f"rate is the fraction of context positions kept, strictly between 0 and 1; got {rate!r}", source,
                        "rate")
    out["rate"] = float(rate)
    for key in _STR_FIELDS:
        if key in data:
            if not isinstance(data[key], str) or not data[key].strip():
                raise PlanError("expected a non-empty string", source, key)
            out[key] = data[key].strip()
    from workbench.models.spec import check_device_dtype_words

    for key in ("device", "dtype"):  # a typo is said now, not after a run folder was made for it
        try:
            check_device_dtype_words(**{key: out.get(key, "auto")})
        except ValueError as err:
            raise PlanError(str(err), source, key) from None
    for key, minimum in _INT_FIELDS.items():
        if key in data:
            out[key] = _int(data[key], source, key, minimum)
    for key, minimum in _FLOAT_FIELDS.items():
        if key in data:
            out[key] = _float(data[key], source, key, minimum)
    try:
        classify_model_spec(out.get("model", TrainConfig.model))
    except ModelLoadError as err:
        raise PlanError(str(err), source, "model") from None
    try:
        datasets.validate_dataset_spec(out.get("dataset", TrainConfig.dataset))
    except ValueError as err:
        raise PlanError(str(err), source, "dataset") from None
    out["objective"] = _objective(data, out.get("dataset", TrainConfig.dataset), source)
    if "steps" in data and "samples" in data:
        raise PlanError("give steps (optimiser steps) or samples (training windows), not both", source, "samples")
    per_step = out.get("batch_size", TrainConfig.batch_size) * out.get("grad_accum", TrainConfig.grad_accum)
    if "samples" in data:
        out["steps"] = math.ceil(_int(data["samples"], source, "samples", 1) / per_step)
    elif "steps" in data:
        out["steps"] = _int(data["steps"], source, "steps", 0)  # 0 steps: the untrained compressor, saved as a run
    weights = dict(DEFAULT_WEIGHTS)
    given = data.get("loss_weights", {})
    if not isinstance(given, dict):
        raise PlanError("expected an object of loss term → weight", source, "loss_weights")
    for term, w in given.items():
        if term not in LOSS_TERMS:
            raise PlanError(f"unknown loss term {term!r}; terms: {', '.join(LOSS_TERMS)}", source, f"loss_weights.{term}")
        weights[term] = _float(w, source, f"loss_weights.{term}", 0.0, open_min=False)
    if sum(weights.values()) <= 0:
        raise PlanError("at least one loss weight must be positive", source, "loss_weights")
    out["loss_weights"] = weights
    lora = data.get("lora")
    if lora is not None:
        if not isinstance(lora, dict) or set(lora) - {"r", "alpha", "dropout", "target_modules"}:
            raise PlanError("expected null or an object with r, alpha, dropout (and target_modules)", source, "lora")
        targets = lora.get("target_modules", list(LoraSpec.target_modules))
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise PlanError("expected a non-empty list of module names", source, "lora.target_modules")
        dropout = lora.get("dropout", 0.0)
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise PlanError(f"expected a number in [0, 1), got {dropout!r}", source, "lora.dropout")
        out["lora"] = LoraSpec(r=_int(lora.get("r", 8), source, "lora.r", 1), alpha=_int(lora.get("alpha", 16), source,
                               "lora.alpha", 1), dropout=float(dropout), target_modules=tuple(targets))
    cfg = TrainConfig(**out)
    k = max(1, round(cfg.rate * cfg.context_tokens))
    if cfg.objective == "qa" and cfg.loss_weights["distillation"] > 0:
        raise PlanError("the distillation term compares continuation logits (the lm objective); with the qa objective "
                        "set loss_weights.distillation to 0", source, "loss_weights.distillation")
    if cfg.objective == "lm" and cfg.generation_prefix_tokens >= cfg.continuation_tokens - 1 \
            and cfg.loss_weights["generation"] > 0:
        raise PlanError(f"the generation term decodes {cfg.generation_prefix_tokens} tokens itself and scores the rest of "
                        f"the {cfg.continuation_tokens}-token continuation: make it at most {cfg.continuation_tokens - 2}",
                        source, "generation_prefix_tokens")
    if cfg.eval_windows > cfg.held_out:
        raise PlanError(f"eval_windows ({cfg.eval_windows}) is more than the held-out windows ({cfg.held_out})", source,
                        "eval_windows")
    if cfg.loss_weights["contrastive"] > 0 and cfg.batch_size < 2:
        raise PlanError("the contrastive term compares each window with the batch's others: batch_size must be at least 2 "
                        "(or set loss_weights.contrastive to 0)", source, "batch_size")
    del k
    return cfg


def _objective(data: dict, dataset: str, source) -> str:
    """The plan's objective, or by default "qa" on a question-answering dataset and "lm" on text. QA needs records
    with a context, a question and answers (an ``hf:`` id is taken to be such a set, as the task protocol does)."""
    from workbench import tasks

    try:
        task = tasks.task_for_dataset(dataset)
    except (ValueError, OSError) as err:
        raise PlanError(str(err), source, "dataset") from None
    objective = data.get("objective", "qa" if task == "qa" else "lm")
    if objective not in OBJECTIVES:
        raise PlanError(f"expected one of {', '.join(OBJECTIVES)}, got {objective!r}", source, "objective")
    if objective == "qa" and task != "qa":
        raise PlanError(f"the qa objective needs question-answering records (context, question, answers: a .jsonl file "
                        f"or an hf: set); {dataset} has none", source, "objective")
    return objective


def config_from_record(data: dict, source: str) -> TrainConfig:
    """A TrainConfig from a run's config.json (its ``to_dict``): the same validation as a plan."""
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in ("total_windows",)}
    return parse_train_config(data, source)


def load_train_plan(name_or_path: str) -> TrainConfig:
    """A shipped training preset by name (``presets/train/NAME.json``) or a JSON file by path. Raises PlanError."""
    from pathlib import Path

    from workbench import jsonio

    path = Path(name_or_path)
    try:
        local = name_or_path.endswith(".json") or "/" in name_or_path or path.exists()
    except OSError:
        local = True
    try:
        if local:
            return parse_train_config(jsonio.read_json(path, "training plan"), str(path))
        entry = train_preset_dir() / f"{name_or_path}.json"
        if not entry.is_file():
            raise PlanError(f"no training preset named {name_or_path!r}; training presets: {', '.join(train_preset_names())}")
        source = f"training preset {name_or_path}"
        return parse_train_config(jsonio.parse(entry.read_text(encoding="utf-8"), source), source)
    except jsonio.InputFileError as err:
        raise PlanError(str(err)) from None


def train_preset_dir():
    """presets/train/: installed inside the engine package (workbench.presets), or the source tree's."""
    from importlib import resources
    from pathlib import Path

    try:
        return resources.files("workbench.presets") / "train"
    except ModuleNotFoundError:  # a source tree that was never installed
        return Path(__file__).resolve().parents[2] / "presets" / "train"


def train_preset_names() -> list[str]:
    folder = train_preset_dir()
    try:
        plans = sorted(p for p in folder.iterdir() if p.name.endswith(".json"))
    except (OSError, FileNotFoundError):
        return []
    return [p.name[:-5] for p in plans if not _is_grid_file(p)]


def _is_grid_file(path) -> bool:
    """An ablation grid (base × architectures × rates: ``learned.grid``) kept beside the plans, not one plan."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # a broken plan is still listed: choosing it says what is wrong
    return isinstance(data, dict) and "architectures" in data and "base" in data
