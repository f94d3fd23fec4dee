"""Every input a user can give gets a result or one line naming the file and the field, exit code 2.

A corpus of malformed presets, sessions, flags, --out targets and app session files, generated from a
real preset and a real session written by the real Session class (no model runs). Each case runs the
real entry point, ``workbench.cli.main``, in-process and checks: exit 2, a one-line message naming the
file (or the flag) and the field, no traceback, no file in the case's folder created or changed (no
session file, no lock file left behind). A few cases also run as subprocesses, to see stderr whole.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from real_session import plan_doc, session_doc
from workbench import cli


@dataclass
class Ctx:
    model: str
    preset: dict
    session: dict


@dataclass
class Case:
    id: str
    argv: list[str]
    names: tuple[str, ...]  # what the message must contain; "{d}" is the case's folder
    files: dict[str, Callable[[Ctx], Any]] = field(default_factory=dict)  # bytes, str, a JSON value or DIR


DIR = object()  # a file entry that is a folder


def _set(doc: Any, where: str, value: Any, delete: bool = False) -> Any:
    """Set (or delete) the field 'a.b[3].c' of ``doc``; returns ``doc``."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", where)]
    target = doc
    for part in parts[:-1]:
        target = target[part]
    if delete:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return doc


# --- presets --------------------------------------------------------------------------------------

def preset(id_: str, patch: dict | Callable[[dict], Any], field_: str, argv: tuple = ()) -> Case:
    def content(ctx: Ctx):
        doc = copy.deepcopy(ctx.preset)
        if callable(patch):
            return patch(doc)
        doc.update(patch)
        return doc

    return Case(f"preset-{id_}", ["--preset", "{d}/p.json", "--out", "{d}/out.json", *argv],
                ("{d}/p.json", f"field '{field_}'"), {"p.json": content})


def raw(text: str) -> Callable[[dict], bytes]:
    """A preset whose JSON text has ``text`` where the value "@" is (NaN, Infinity: not JSON, accepted by Python)."""
    return lambda doc: json.dumps(doc).replace('"@"', text).encode()


def with_rates(value: Any) -> dict:
    return {"rates": value}


PRESETS = [
    preset("unknown-key", {"colour": "blue"}, "(top level)"),
    preset("a-list", lambda doc: [doc], "(top level)"),
    preset("a-string", lambda doc: json.dumps("quickstart"), "(top level)"),
    preset("a-number", lambda doc: 3, "(top level)"),
    preset("null", lambda doc: None, "(top level)"),
    preset("model-number", {"model": 5}, "model"),
    preset("model-empty", {"model": "  "}, "model"),
    preset("model-missing-path", {"model": "./no/such/model"}, "model"),
    preset("model-not-hub-id", {"model": "not a hub id!!"}, "model"),
    preset("model-object-bad-id", {"model": {"id": 3}}, "model"),
    preset("model-name-too-long", {"model": "./" + "m" * 5000}, "model"),
    preset("device-cuda-abc", {"device": "cuda:abc"}, "device"),
    preset("device-unicode-digit", {"device": "cuda:²"}, "device"),
    preset("device-number", {"device": 5}, "device"),
    preset("device-gpu", {"device": "gpu"}, "device"),
    preset("device-absent-gpu", {"device": "cuda:99"}, "device"),  # preflight: no machine has 100 GPUs
    preset("dtype-float64", {"dtype": "float64"}, "dtype"),
    preset("dtype-number", {"dtype": 16}, "dtype"),
    preset("dtype-list", {"dtype": ["float32"]}, "dtype"),
    preset("datasets-empty", {"datasets": []}, "datasets"),
    preset("datasets-string", {"datasets": "wikitext2"}, "datasets"),
    preset("dataset-number", {"datasets": [5]}, "datasets[0]"),
    preset("dataset-unknown-key", {"datasets": [{"name": "wikitext2", "bogus": 1}]}, "datasets[0]"),
    preset("dataset-unknown", {"datasets": ["no-such-dataset"]}, "datasets[0].name"),
    preset("dataset-name-empty", {"datasets": [{"name": ""}]}, "datasets[0].name"),
    preset("dataset-missing-file", {"datasets": ["missing.txt"]}, "datasets[0].name"),
    preset("dataset-name-too-long", {"datasets": ["d" * 5000 + ".txt"]}, "datasets[0].name"),
    preset("samples-zero", {"datasets": [{"name": "wikitext2", "samples": 0}]}, "datasets[0].samples"),
    preset("samples-negative", {"datasets": [{"name": "wikitext2", "samples": -1}]}, "datasets[0].samples"),
    preset("samples-string", {"datasets": [{"name": "wikitext2", "samples": "4"}]}, "datasets[0].samples"),
    preset("samples-fraction", {"datasets": [{"name": "wikitext2", "samples": 4.5}]}, "datasets[0].samples"),
    preset("samples-bool", {"datasets": [{"name": "wikitext2", "samples": True}]}, "datasets[0].samples"),
    preset("seed-negative", {"datasets": [{"name": "wikitext2", "seed": -1}]}, "datasets[0].seed"),
    preset("seed-string", {"datasets": [{"name": "wikitext2", "seed": "0"}]}, "datasets[0].seed"),
    preset("dataset-twice", {"datasets": ["wikitext2", {"name": "wikitext2", "seed": 1}]}, "datasets"),
    preset("protocol-unknown", {"protocol": "sliding"}, "protocol.name"),
    preset("protocol-name-number", {"protocol": {"name": 5}}, "protocol.name"),
    preset("protocol-name-list", {"protocol": {"name": ["task"]}}, "protocol.name"),
    preset("protocol-number", {"protocol": 7}, "protocol"),
    preset("context-too-short", {"protocol": {"context_tokens": 4}}, "protocol.context_tokens"),
    preset("context-string", {"protocol": {"context_tokens": "64"}}, "protocol.context_tokens"),
    preset("continuation-zero", {"protocol": {"context_tokens": 64, "continuation_tokens": 0}}, "protocol.continuation_tokens"),
    preset("chunk-size-not-chunked", {"protocol": {"chunk_size": 8}}, "protocol.chunk_size"),
    preset("depths-not-task", {"protocol": {"depths": [0.5]}}, "protocol.depths"),
    preset("protocol-unknown-key", {"protocol": {"bogus": 1}}, "protocol"),
    preset("task-without-task-dataset", {"protocol": {"name": "task"}}, "datasets[0].name"),
    preset("depths-out-of-range", {"protocol": {"name": "task", "depths": [1.5]}, "datasets": ["paulgraham"]}, "protocol.depths"),
    preset("rates-empty", with_rates([]), "rates"),
    preset("rates-number", with_rates(0.5), "rates"),
    preset("rate-zero", with_rates([0]), "rates[0]"),
    preset("rate-above-one", with_rates([0.5, 1.5]), "rates[1]"),
    preset("rate-negative", with_rates([-0.5]), "rates[0]"),
    preset("rate-string", with_rates(["0.5"]), "rates[0]"),
    preset("rate-bool", with_rates([True]), "rates[0]"),
    preset("rate-repeated", with_rates([0.5, 0.5]), "rates[1]"),
    preset("rate-repeated-to-6-digits", with_rates([0.5, 0.5000001]), "rates[1]"),
    preset("rate-nan", lambda doc: raw("NaN")({**doc, "rates": [0.5, "@"]}), "rates[1]"),
    preset("sweep-stop-above-one", with_rates({"start": 0.9, "stop": 1.5, "step": 0.1}), "rates.stop"),
    preset("sweep-start-string", with_rates({"start": "a", "stop": 0.1, "step": 0.1}), "rates.start"),
    preset("sweep-start-zero", with_rates({"start": 0, "stop": 0.5, "step": 0.1}), "rates.start"),
    preset("sweep-step-zero", with_rates({"start": 0.9, "stop": 0.1, "step": 0}), "rates.step"),
    preset("sweep-step-negative", with_rates({"start": 0.9, "stop": 0.1, "step": -0.1}), "rates.step"),
    preset("sweep-step-string", with_rates({"start": 0.9, "stop": 0.1, "step": "0.1"}), "rates.step"),
    preset("sweep-step-tiny", with_rates({"start": 0.9, "stop": 0.1, "step": 1e-9}), "rates.step"),
    preset("sweep-too-many-rates", with_rates({"start": 0.9, "stop": 0.1, "step": 1e-6}), "rates.step"),
    preset("sweep-step-missing", with_rates({"start": 0.9, "stop": 0.1}), "rates.step"),
    preset("sweep-unknown-key", with_rates({"start": 0.9, "stop": 0.1, "step": 0.1, "count": 3}), "rates"),
    preset("sweep-step-infinity", lambda doc: raw("Infinity")({**doc, "rates": {"start": 0.9, "stop": 0.1, "step": "@"}}),
           "rates.step"),
    preset("sweep-start-1e999", lambda doc: raw("1e999")({**doc, "rates": {"start": "@", "stop": 0.1, "step": 0.1}}),
           "rates.start"),
    preset("methods-object", {"methods": {"knorm": {}}}, "methods"),
    preset("method-number", {"methods": [5]}, "methods[0]"),
    preset("method-unknown", {"methods": ["no-such-press"]}, "methods[0].name"),
    preset("method-unknown-key", {"methods": [{"name": "knorm", "bogus": 1}]}, "methods[0]"),
    preset("method-params-list", {"methods": [{"name": "knorm", "params": []}]}, "methods[0].params"),
    preset("method-unknown-param", {"methods": [{"name": "snapkv", "params": {"window": 3}}]}, "methods[0].params.window"),
    preset("method-rate-param", {"methods": [{"name": "snapkv", "params": {"compression_ratio": 0.5}}]},
           "methods[0].params.compression_ratio"),
    preset("method-twice", {"methods": ["knorm", "knorm"]}, "methods[1].label"),
    preset("method-label-baseline", {"methods": [{"name": "knorm", "label": "baseline"}]}, "methods[0].label"),
    preset("method-label-number", {"methods": [{"name": "knorm", "label": 5}]}, "methods[0].label"),
    preset("method-family-needed", {"methods": ["random"]}, "methods[0].name"),
    preset("method-family-unknown", {"methods": [{"name": "random", "family": "both"}]}, "methods[0].name"),
    preset("method-family-list", {"methods": [{"name": "random", "family": ["kv"]}]}, "methods[0].family"),
    preset("method-rate-above-one", {"methods": [{"name": "knorm", "rates": [2]}]}, "methods[0].rates[0]"),
    preset("method-threshold-with-rates", {"methods": [{"name": "dms", "rates": [0.5]}]}, "methods[0].rates"),
    preset("wrapper-unknown-press", {"methods": [{"name": "adakv", "params": {"press": "no-such-press"}}]},
           "methods[0].params.press.name"),
    preset("wrapper-press-number", {"methods": [{"name": "adakv", "params": {"press": 5}}]}, "methods[0].params.press"),
    preset("wrapper-press-name-number", {"methods": [{"name": "adakv", "params": {"press": {"name": 5}}}]},
           "methods[0].params.press"),
    preset("prompt-method-chunked", {"methods": [{"name": "random", "family": "prompt"}], "protocol": "chunked"}, "methods[0]"),
    preset("shared-prefill-string", {"shared_prefill": "yes"}, "shared_prefill"),
    preset("shared-prefill-number", {"shared_prefill": 1}, "shared_prefill"),
    preset("batch-size-zero", {"batch_size": 0}, "batch_size"),
    preset("batch-size-huge", {"batch_size": 300}, "batch_size"),
    preset("batch-size-word", {"batch_size": "big"}, "batch_size"),
    preset("batch-size-bool", {"batch_size": True}, "batch_size"),
    preset("batch-size-fraction", {"batch_size": 2.5}, "batch_size"),
    preset("name-walks-out", {"name": "../../x"}, "name"),
    preset("name-with-slash", {"name": "a/b"}, "name"),
    preset("name-number", {"name": 5}, "name"),
    preset("name-hidden", {"name": ".hidden"}, "name"),
    preset("name-too-long", {"name": "x" * 200}, "name"),
    preset("name-control-character", {"name": "tab\there"}, "name"),
    preset("description-number", {"description": 5}, "description"),
    preset("grid-too-large", {"rates": [round(0.001 * i, 3) for i in range(1, 1001)],
                              "methods": [{"name": "knorm", "label": f"k{i}"} for i in range(10)]}, "rates"),
    # preflight: the plan parses, this machine cannot run it; nothing may be written before it says so
    preset("samples-beyond-dataset", {"datasets": [{"name": "wikitext2", "samples": 10**9}]}, "datasets[0].samples"),
    preset("positions-beyond-model", {"protocol": {"context_tokens": 300, "continuation_tokens": 8}}, "protocol.context_tokens"),
    preset("hf-dataset-offline", {"datasets": ["hf:nonexistent-org/nonexistent-dataset"]}, "datasets[0].name"),
    preset("gsm8k-beyond-problems", {"protocol": {"name": "task", "context_tokens": 64},
                                     "datasets": [{"name": "gsm8k", "samples": 5000}]}, "datasets[0].samples"),
    preset("meetingbank-beyond-rows", {"protocol": {"name": "task", "context_tokens": 64},
                                       "datasets": [{"name": "meetingbank", "samples": 4}]}, "datasets[0].samples"),
    preset("needle-beyond-haystacks", {"protocol": {"name": "task", "context_tokens": 128},
                                       "datasets": [{"name": "paulgraham", "samples": 100000}]}, "datasets[0].samples"),
]


def local_dataset(id_: str, name: str, content: bytes, field_: str) -> Case:
    case = preset(id_, lambda doc: {**doc, "datasets": [{"name": f"DATA/{name}", "samples": 1}]}, field_)
    case.files[name] = lambda ctx: content
    return case


LOCAL_DATASETS = [
    local_dataset("txt-empty", "empty.txt", b"", "datasets[0].name"),
    local_dataset("txt-blank", "blank.txt", b"  \n\n \n", "datasets[0].name"),
    local_dataset("txt-not-utf8", "latin1.txt", "café au lait\n".encode("latin-1"), "datasets[0].name"),
    local_dataset("jsonl-bad-line", "bad.jsonl", b'{"text": "a"}\n{"text": \n', "datasets[0].name"),
    local_dataset("jsonl-not-objects", "list.jsonl", b'["a", "b"]\n', "datasets[0].name"),
    local_dataset("jsonl-no-text", "notext.jsonl", b'{"label": 1}\n', "datasets[0].name"),
    local_dataset("txt-too-small", "small.txt", b"the cat sat on the mat\n", "datasets[0].samples"),
]
_task_jsonl = local_dataset("task-jsonl-bad-line", "qa.jsonl", b'{"context": "a", "question": "b", "answers": ["c"]}\n{\n',
                            "datasets[0].name")
_task_jsonl.files["p.json"] = (lambda make: lambda ctx: {**make(ctx), "protocol": {"name": "task", "context_tokens": 64}})(
    _task_jsonl.files["p.json"])
LOCAL_DATASETS.append(_task_jsonl)

PRESET_FILES = [
    Case("preset-not-utf8", ["--preset", "{d}/p.json"], ("{d}/p.json", "UTF-8"), {"p.json": lambda ctx: b'{"name": "caf\xe9"}'}),
    Case("preset-utf16", ["--preset", "{d}/p.json"], ("{d}/p.json", "UTF-8"),
         {"p.json": lambda ctx: json.dumps(ctx.preset).encode("utf-16")}),
    Case("preset-folder", ["--preset", "{d}/p.json"], ("{d}/p.json", "folder"), {"p.json": lambda ctx: DIR}),
    Case("preset-folder-no-suffix", ["--preset", "{d}/presets"], ("{d}/presets", "folder"), {"presets": lambda ctx: DIR}),
    Case("preset-empty", ["--preset", "{d}/p.json"], ("{d}/p.json", "not valid JSON"), {"p.json": lambda ctx: b""}),
    Case("preset-truncated", ["--preset", "{d}/p.json"], ("{d}/p.json", "not valid JSON"),
         {"p.json": lambda ctx: json.dumps(ctx.preset)[:40]}),
    Case("preset-deep", ["--preset", "{d}/p.json"], ("{d}/p.json", "nested"), {"p.json": lambda ctx: "[" * 100_000}),
    Case("preset-deep-field", ["--preset", "{d}/p.json"], ("{d}/p.json", "nested", "field 'methods"),
         {"p.json": lambda ctx: {**ctx.preset, "methods": [json.loads("[" * 200 + "]" * 200)]}}),
    Case("preset-huge-integer", ["--preset", "{d}/p.json"], ("{d}/p.json", "not valid JSON"),
         {"p.json": lambda ctx: json.dumps(ctx.preset).replace('"samples": 2', '"samples": ' + "9" * 5000)}),
    Case("preset-missing", ["--preset", "{d}/missing.json"], ("{d}/missing.json", "no such preset file"), {}),
    Case("preset-unknown-name", ["--preset", "no-such-preset"], ("no-such-preset", "quickstart"), {}),
    Case("preset-path-too-long", ["--preset", "p" * 5000], ("p" * 100, "cannot be read"), {}),
]


# --- sessions -------------------------------------------------------------------------------------

def session(id_: str, where: str, value: Any = None, field_: str | None = None, delete: bool = False,
            text: str | None = None) -> Case:
    """--resume a copy of the real session with ``where`` set to ``value`` (or deleted; or raw ``text``)."""
    def content(ctx: Ctx):
        doc = _set(copy.deepcopy(ctx.session), where, "@" if text else value, delete=delete)
        return json.dumps(doc).replace('"@"', text).encode() if text else doc

    return Case(f"session-{id_}", ["--resume", "{d}/s.json"], ("{d}/s.json", f"field '{field_ or where}'"),
                {"s.json": content})


def session_doc_case(id_: str, change: Callable[[dict], Any], field_: str) -> Case:
    def content(ctx: Ctx):
        doc = copy.deepcopy(ctx.session)
        return change(doc) or doc

    return Case(f"session-{id_}", ["--resume", "{d}/s.json"], ("{d}/s.json", f"field '{field_}'"), {"s.json": content})


C, S = "cells[1]", "cells[1].samples[0]"  # knorm at 0.75 and its first sample
SESSIONS = [
    session("schema-zero", "schema_version", 0),
    session("schema-negative", "schema_version", -3),
    session("schema-true", "schema_version", True),
    session("schema-newer", "schema_version", 2),
    session("schema-string", "schema_version", "1"),
    session("schema-float", "schema_version", 1.0),
    session("schema-missing", "schema_version", delete=True),
    session("version-missing", "workbench_version", delete=True),
    session("created-number", "created_at", 5),
    session("updated-list", "updated_at", []),
    session("status-unknown", "status", "exploded"),
    session("environment-string", "environment", "x"),
    session("plan-missing", "plan", delete=True),
    session("plan-rate", "plan.rates[0]", 2, field_="plan.rates[0]"),
    session("plan-name", "plan.name", "../../x", field_="plan.name"),
    session("plan-list", "plan", [], field_="plan"),
    session("cells-missing", "cells", delete=True),
    session("cells-object", "cells", {}),
    session("cell-number", C, 5),
    session("cell-key-missing", f"{C}.key", delete=True),
    session("cell-key-unknown", f"{C}.key", "m|d|x|0.5"),
    session("cell-key-number", f"{C}.key", 3),
    session_doc_case("cell-twice", lambda doc: doc["cells"].append(copy.deepcopy(doc["cells"][1])), "cells[7].key"),
    session("cell-dataset-not-in-plan", f"{C}.dataset", "tinystories"),
    session("cell-method-other", f"{C}.method", "snapkv"),
    session("cell-rate-string", f"{C}.rate", "abc"),
    session("cell-rate-other", f"{C}.rate", 0.3),
    session("cell-rate-null", f"{C}.rate", None),
    session("cell-family-other", f"{C}.family", "prompt"),
    session("cell-name-other", f"{C}.name", "tova"),
    session("cell-params-other", f"{C}.params", {"bogus": 1}),
    session("cell-status-unknown", f"{C}.status", "exploded"),
    session("cell-status-missing", f"{C}.status", delete=True),
    session("cell-samples-string", f"{C}.samples", "x"),
    session("cell-samples-total-string", f"{C}.samples_total", "2"),
    session("cell-samples-total-other", f"{C}.samples_total", 3),
    session("cell-samples-done-other", f"{C}.samples_done", 5),
    session("cell-samples-done-string", f"{C}.samples_done", "2"),
    session("cell-path-number", f"{C}.path", 5),
    session("cell-error-number", f"{C}.error", 5),
    session("cell-reason-list", f"{C}.reason", []),
    session("cell-peak-negative", f"{C}.peak_memory_bytes", -1),
    session("cell-peak-string", f"{C}.peak_memory_bytes", "1"),
    session("cell-load-seconds-negative", f"{C}.load_seconds", -1),
    session("cell-examples-string", "cells[5].examples", "x"),
    session("cell-example-id-number", "cells[5].examples[0].sample_id", 1),
    session("cell-example-span", "cells[5].examples[0].dropped[0]", [1]),
    session("cell-example-spans-string", "cells[5].examples[0].dropped", "0-4"),
    session("sample-tokens-negative", f"{S}.n_tokens", -16),
    session("sample-tokens-string", f"{S}.n_tokens", "8"),
    session("sample-tokens-fraction", f"{S}.n_tokens", 1.5),
    session("sample-tokens-bool", f"{S}.n_tokens", True),
    session("sample-tokens-missing", f"{S}.n_tokens", delete=True),
    session("sample-tokens-huge", f"{S}.n_tokens", 10**12),
    session("sample-nll-nan", f"{S}.nll_sum", text="NaN"),
    session("sample-nll-infinity", f"{S}.nll_sum", text="-Infinity"),
    session("sample-nll-string", f"{S}.nll_sum", "x"),
    session("sample-nll-missing", f"{S}.nll_sum", delete=True),
    session("sample-nll-overflows-exp", f"{S}.nll_sum", 1e308),
    session("sample-nll-negative", f"{S}.nll_sum", -5),
    session("sample-id-number", f"{S}.sample_id", 5),
    session("sample-id-empty", f"{S}.sample_id", ""),
    session("sample-number", S, 5),
    session("sample-score-above-one", f"{S}.score", 2),
    session("sample-score-string", f"{S}.score", "1"),
    session("sample-kept-negative", f"{S}.kept_fraction", -0.1),
    session("sample-kv-bytes-huge", f"{S}.kv_bytes", 1e300),
    session("sample-prefill-negative", f"{S}.prefill_seconds", -1),
    session("sample-batch-zero", f"{S}.batch", 0),
    session("sample-metric-number", f"{S}.metric", 5),
    session("sample-path-number", f"{S}.path", 5),
    session_doc_case("sample-twice", lambda doc: doc["cells"][1]["samples"].__setitem__(1, copy.deepcopy(doc["cells"][1]["samples"][0])),
                     "cells[1].samples[1].sample_id"),
    session_doc_case("sample-duplicated-extra", lambda doc: doc["cells"][1]["samples"].append(copy.deepcopy(doc["cells"][1]["samples"][0])),
                     "cells[1].samples"),
    Case("session-deep-environment", ["--resume", "{d}/s.json"], ("{d}/s.json", "field 'environment.a[0][0]", "nested"),
         {"s.json": lambda ctx: {**ctx.session, "environment": {"a": json.loads("[" * 100 + "]" * 100)}}}),
]

SESSION_FILES = [
    Case("session-not-utf8", ["--resume", "{d}/s.json"], ("{d}/s.json", "UTF-8"), {"s.json": lambda ctx: b'{"schema_version": 1, "x": "\xff"}'}),
    Case("session-folder", ["--resume", "{d}/s.json"], ("{d}/s.json", "folder"), {"s.json": lambda ctx: DIR}),
    Case("session-truncated", ["--resume", "{d}/s.json"], ("{d}/s.json", "not valid JSON"),
         {"s.json": lambda ctx: json.dumps(ctx.session)[:500]}),
    Case("session-deep", ["--resume", "{d}/s.json"], ("{d}/s.json", "nested"), {"s.json": lambda ctx: "{\"a\":" * 50_000}),
    Case("session-missing", ["--resume", "{d}/missing.json"], ("{d}/missing.json", "no such session file"), {}),
    Case("session-empty", ["--resume", "{d}/s.json"], ("{d}/s.json", "not valid JSON"), {"s.json": lambda ctx: b""}),
    Case("session-a-preset", ["--resume", "{d}/s.json"], ("{d}/s.json", "field 'schema_version'"), {"s.json": lambda ctx: ctx.preset}),
]


# --- flags, --out, the app's session file ---------------------------------------------------------

def flags(id_: str, *argv: str, names: tuple[str, ...], files: dict | None = None) -> Case:
    return Case(f"flags-{id_}", list(argv), names, files or {})


GOOD_PRESET = {"p.json": lambda ctx: ctx.preset}
GOOD_SESSION = {"s.json": lambda ctx: ctx.session}
FLAGS = [
    flags("samples-zero", "--preset", "{d}/p.json", "--samples", "0", names=("--samples", "'0'"), files=GOOD_PRESET),
    flags("samples-negative", "--preset", "{d}/p.json", "--samples", "-1", names=("--samples",), files=GOOD_PRESET),
    flags("samples-unicode-digit", "--preset", "{d}/p.json", "--samples", "²", names=("--samples",), files=GOOD_PRESET),
    flags("samples-arabic-digit", "--preset", "{d}/p.json", "--samples", "٣", names=("--samples",), files=GOOD_PRESET),
    flags("samples-word", "--preset", "{d}/p.json", "--samples", "many", names=("--samples",), files=GOOD_PRESET),
    flags("samples-fraction", "--preset", "{d}/p.json", "--samples", "1.5", names=("--samples",), files=GOOD_PRESET),
    flags("samples-beyond-dataset", "--preset", "{d}/p.json", "--samples", "1000000000",
          names=("{d}/p.json", "--samples 1000000000", "field 'datasets[0].samples'"), files=GOOD_PRESET),
    flags("batch-unicode-digit", "--preset", "{d}/p.json", "--batch-size", "²", names=("--batch-size ²", "field 'batch_size'"),
          files=GOOD_PRESET),
    flags("batch-zero", "--preset", "{d}/p.json", "--batch-size", "0", names=("field 'batch_size'",), files=GOOD_PRESET),
    flags("batch-huge", "--preset", "{d}/p.json", "--batch-size", "300", names=("field 'batch_size'",), files=GOOD_PRESET),
    flags("batch-word", "--preset", "{d}/p.json", "--batch-size", "big", names=("field 'batch_size'",), files=GOOD_PRESET),
    flags("device-cuda-abc", "--preset", "{d}/p.json", "--device", "cuda:abc", names=("--device cuda:abc", "field 'device'"),
          files=GOOD_PRESET),
    flags("device-gpu", "--preset", "{d}/p.json", "--device", "gpu", names=("field 'device'",), files=GOOD_PRESET),
    flags("device-absent", "--preset", "{d}/p.json", "--device", "cuda:99", names=("--device cuda:99", "field 'device'"),
          files=GOOD_PRESET),
    flags("dtype-float64", "--preset", "{d}/p.json", "--dtype", "float64", names=("field 'dtype'",), files=GOOD_PRESET),
    flags("preset-and-resume", "--preset", "{d}/p.json", "--resume", "{d}/s.json", names=("--preset", "--resume"),
          files={**GOOD_PRESET, **GOOD_SESSION}),
    flags("app-file-and-preset", "{d}/s.json", "--preset", "{d}/p.json", names=("{d}/s.json", "--preset"),
          files={**GOOD_PRESET, **GOOD_SESSION}),
    flags("app-file-and-resume", "{d}/s.json", "--resume", "{d}/s.json", names=("{d}/s.json", "--resume"), files=GOOD_SESSION),
    flags("out-without-run", "--out", "{d}/out.json", names=("--out",)),
    flags("dry-run-without-run", "--dry-run", names=("--dry-run",)),
    flags("json-without-run", "--json", names=("--json",)),
    flags("device-for-app", "{d}/s.json", "--device", "cpu", names=("--device",), files=GOOD_SESSION),
    flags("list-and-preset", "--list", "presets", "--preset", "{d}/p.json", names=("--list", "--preset"), files=GOOD_PRESET),
    flags("version-and-json", "--version", "--json", names=("--version", "--json")),
    flags("list-unknown", "--list", "everything", names=("--list",)),
    flags("resume-with-device", "--resume", "{d}/s.json", "--device", "cpu", names=("--device", "{d}/s.json"), files=GOOD_SESSION),
    flags("unknown-flag", "--preset", "{d}/p.json", "--colour", "blue", names=("--colour",), files=GOOD_PRESET),
]

OTHER_SESSION = {"other.json": lambda ctx: {**ctx.session, "plan": {**ctx.session["plan"], "rates": [0.25]},
                                            "cells": [c for c in ctx.session["cells"] if c["method"] == "baseline"]}}
OUT = [
    flags("out-folder", "--preset", "{d}/p.json", "--out", "{d}/runs", names=("{d}/runs", "folder"),
          files={**GOOD_PRESET, "runs": lambda ctx: DIR}),
    flags("out-parent-is-file", "--preset", "{d}/p.json", "--out", "{d}/notes.txt/s.json", names=("{d}/notes.txt", "not a folder"),
          files={**GOOD_PRESET, "notes.txt": lambda ctx: b"notes\n"}),
    flags("out-unrelated-json", "--preset", "{d}/p.json", "--out", "{d}/data.json", names=("{d}/data.json", "--out"),
          files={**GOOD_PRESET, "data.json": lambda ctx: {"a": 1}}),
    flags("out-text-file", "--preset", "{d}/p.json", "--out", "{d}/notes.txt", names=("{d}/notes.txt", "--out"),
          files={**GOOD_PRESET, "notes.txt": lambda ctx: b"my notes\n"}),
    flags("out-binary-file", "--preset", "{d}/p.json", "--out", "{d}/blob.json", names=("{d}/blob.json", "--out"),
          files={**GOOD_PRESET, "blob.json": lambda ctx: b"\x00\xff\xfe"}),
    flags("out-other-plan", "--preset", "{d}/p.json", "--out", "{d}/other.json", names=("{d}/other.json", "different plan"),
          files={**GOOD_PRESET, **OTHER_SESSION}),
    flags("out-broken-session", "--preset", "{d}/p.json", "--out", "{d}/s.json", names=("{d}/s.json", "--out", "n_tokens"),
          files={**GOOD_PRESET, "s.json": lambda ctx: _set(copy.deepcopy(ctx.session), S + ".n_tokens", -16)}),
    flags("resume-out-other-plan", "--resume", "{d}/s.json", "--out", "{d}/other.json", names=("{d}/other.json", "--out"),
          files={**GOOD_SESSION, **OTHER_SESSION}),
    flags("resume-out-same-plan-copy", "--resume", "{d}/s.json", "--out", "{d}/copy.json", names=("{d}/copy.json", "--out"),
          files={**GOOD_SESSION, "copy.json": lambda ctx: ctx.session}),
    flags("resume-out-text-file", "--resume", "{d}/s.json", "--out", "{d}/notes.txt", names=("{d}/notes.txt", "--out"),
          files={**GOOD_SESSION, "notes.txt": lambda ctx: b"notes\n"}),
    flags("resume-out-folder", "--resume", "{d}/s.json", "--out", "{d}/runs", names=("{d}/runs", "folder"),
          files={**GOOD_SESSION, "runs": lambda ctx: DIR}),
]

APP = [
    flags("app-missing-file", "{d}/missing.json", names=("{d}/missing.json", "no such session file")),
    flags("app-folder", "{d}/runs", names=("{d}/runs", "folder"), files={"runs": lambda ctx: DIR}),
    flags("app-not-utf8", "{d}/s.json", names=("{d}/s.json", "UTF-8"), files={"s.json": lambda ctx: b"\xff\xfe{"}),
    flags("app-invalid-json", "{d}/s.json", names=("{d}/s.json", "not valid JSON"), files={"s.json": lambda ctx: b"{"}),
    flags("app-a-preset", "{d}/s.json", names=("{d}/s.json", "field 'schema_version'", "--preset {d}/s.json"),
          files={"s.json": lambda ctx: ctx.preset}),
    flags("app-broken-session", "{d}/s.json", names=("{d}/s.json", f"field '{S}.n_tokens'"),
          files={"s.json": lambda ctx: _set(copy.deepcopy(ctx.session), S + ".n_tokens", -16)}),
]

CASES = PRESETS + LOCAL_DATASETS + PRESET_FILES + SESSIONS + SESSION_FILES + FLAGS + OUT + APP


def test_corpus_is_large_and_ids_are_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


# --- running a case -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx(tiny_llama_dir, tmp_path_factory) -> Ctx:
    model = str(tiny_llama_dir)
    return Ctx(model, plan_doc(model), session_doc(tmp_path_factory.mktemp("real-session"), model))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # No hub probe (3 s): the hf: case must fail because the dataset is not cached, quickly.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _fill(text: str, folder: Path) -> str:
    return text.replace("{d}", str(folder)).replace("DATA/", str(folder) + "/")


def _prepare(case: Case, ctx: Ctx, tmp_path: Path) -> tuple[Path, list[str]]:
    """The case's folder with its files written; its argv with the folder filled in."""
    folder = tmp_path / "case"
    folder.mkdir()
    for name, make in case.files.items():
        path = folder / name
        content = make(ctx)
        if content is DIR:
            path.mkdir(parents=True)
            continue
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):  # a JSON value: local dataset paths point into the folder
            content = _fill(json.dumps(content), folder).encode()
        path.write_bytes(content)
    return folder, [_fill(a, folder) for a in case.argv]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones too) with a hash of its bytes and its mode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else f"{hashlib.sha256(path.read_bytes()).hexdigest()} {oct(path.stat().st_mode)}"
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_exits_2_naming_file_and_field(case, ctx, tmp_path, monkeypatch, capsys):
    folder, argv = _prepare(case, ctx, tmp_path)
    monkeypatch.chdir(folder)  # a default sessions/ folder would appear here
    before = _snapshot(folder)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stdout {out[-500:]!r}; stderr {err[-500:]!r}"
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("workbench: "), err
    if not lines[0].startswith("usage:"):  # argparse prints its usage, then one line; ours is one line
        assert len(lines) == 1, err
    for name in case.names:
        assert _fill(name, folder) in err, f"{name!r} not in {err!r}"
    assert _snapshot(folder) == before, "a file was created or changed"


# --- the same through a real process: nothing but the one line reaches stderr --------------------

SUBPROCESS = ["session-sample-tokens-negative", "preset-sweep-step-infinity", "flags-samples-unicode-digit", "preset-not-utf8",
              "out-unrelated-json", "preset-deep", "app-folder"]


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_in_a_real_process_stderr_is_one_line(case_id, ctx, tmp_path):
    case = next(c for c in CASES if c.id == case_id or c.id == f"flags-{case_id}")
    folder, argv = _prepare(case, ctx, tmp_path)
    before = _snapshot(folder)
    result = subprocess.run([sys.executable, "-m", "workbench", *argv], capture_output=True, text=True, cwd=folder,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("workbench: ") and (len(lines) == 1 or lines[0].startswith("usage:")), result.stderr
    assert _snapshot(folder) == before


# --- press parameters: their types, ranges and composability are traits of the method registry ------

PRESS_PARAMETERS = [
    ("snapkv-window-word", {"name": "snapkv", "params": {"window_size": "big"}}),
    ("snapkv-window-negative", {"name": "snapkv", "params": {"window_size": -3}}),
    ("streaming-sink-fraction", {"name": "streaming-llm", "params": {"n_sink": 1.5}}),
    ("adakv-around-chunkkv", {"name": "adakv", "params": {"press": "chunkkv"}}),
]


@pytest.mark.parametrize("method", [m for _, m in PRESS_PARAMETERS], ids=[i for i, _ in PRESS_PARAMETERS])
def test_press_parameters_are_validated(method, ctx, tmp_path, monkeypatch, capsys):
    # --dry-run: while these pass, nothing runs (and nothing is written) before the assertion fails.
    case = preset("press-parameters", {"methods": [method]}, "methods[0].params", argv=("--dry-run",))
    folder, argv = _prepare(case, ctx, tmp_path)
    monkeypatch.chdir(folder)
    before = _snapshot(folder)
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert _snapshot(folder) == before
    assert code == 2 and f"{folder}/p.json: field 'methods[0].params" in err
