"""Malformed input to the newer commands gives exit 2 and one line naming the file (or flag) and the field.

The subcommands (analyze, serve, train-kvzap, train-points, points-meta, train and train --ablation), a plan's
"execution" block and --workers/--ray, the decoding schedules' parameters, API presets, learned-compressor
training plans and checkpoint folders. Each case runs ``python -m workbench`` as a real process in its own
folder (with its own user data directory) and checks: exit 2, no traceback, the last line of stderr starts
with the command's name and contains what names the file and the field, and no file in the folder was created,
changed or removed (no run folder, no session, no report, no replaced input). Almost every case fails before a
model loads; the few that load torch say why in their id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
DIR = object()  # a file entry that is a folder
HAS_RAY = importlib.util.find_spec("ray") is not None


@dataclass
class Case:
    id: str
    argv: list[str]
    names: tuple[str, ...]  # what stderr's last line must contain; "{d}" is the case's folder
    files: dict[str, Any] = field(default_factory=dict)  # bytes, a JSON value, DIR, a callable(ctx) of those, a Tree
    needs_ray: bool = False


@dataclass
class Ctx:
    run: Path  # a real learned-compressor run folder (config.json, checkpoint-0/) on the tiny model
    model: str


def _preset(name: str) -> dict:
    return json.loads((REPO / "presets" / name).read_text(encoding="utf-8"))


def _train_plan(**over) -> dict:
    doc = _preset("train/train-cpu-pooling.json")
    doc.update(name="fuzz-run", **over)
    return doc


def _decoding(method: dict | None = None, **over) -> dict:
    doc = _preset("decoding-quick.json")
    if method is not None:
        doc["methods"] = [method]
    doc.update(over)
    return doc


def _api(**evaluator) -> dict:
    doc = _preset("api-local.json")
    doc["evaluator"] = {**doc["evaluator"], **evaluator}
    return doc


def _session(change: Callable[[dict], None]) -> Callable[[Ctx], dict]:
    def make(_ctx):
        doc = json.loads((REPO / "tests" / "data" / "kv_sweep_session.json").read_text(encoding="utf-8"))
        change(doc)
        return doc
    return make


def _sample(**fields) -> Callable[[dict], None]:
    def change(doc):
        doc["cells"][0]["samples"][0].update(fields)
    return change


SESSION = _session(lambda doc: None)
EVAL = '{"provider": "openai", "model": "gpt-4o-mini"}'


def _learned_plan(checkpoint: str) -> dict:
    return {"name": "fuzz-learned", "model": "smollm2-135m", "datasets": [{"name": "wikitext2", "samples": 1, "seed": 0}],
            "protocol": {"name": "context-continuation", "context_tokens": 32, "continuation_tokens": 12},
            "methods": [{"name": "learned", "params": {"checkpoint": checkpoint}}]}


@dataclass
class Tree:
    """A file entry made by copying the real run: ``make(ctx, target path)``."""
    make: Callable[[Ctx, Path], None]


def _run_copy(damage: Callable[[Path], None]) -> Tree:
    """A copy of the real run at {d}/run, then its checkpoint damaged."""
    def make(ctx: Ctx, target: Path):
        shutil.copytree(ctx.run, target)
        damage(target / "checkpoint-0")
    return Tree(make)


def _in_store(damage: Callable[[Path], None]) -> Tree:
    """The real run in this case's user data directory ({d}/data/learned/NAME), then damaged (a resume reads it)."""
    def make(ctx: Ctx, target: Path):
        run = target / "learned" / ctx.run.name
        shutil.copytree(ctx.run, run)
        damage(run)
    return Tree(make)


def _resume_plan(ctx: Ctx) -> dict:
    return {k: v for k, v in json.loads((ctx.run / "config.json").read_text()).items() if k != "total_windows"}


def _write(path: Path, text: bytes) -> None:
    path.write_bytes(text)


CASES: list[Case] = [
    # --- workbench serve ------------------------------------------------------------------------------
    Case("serve-port-out-of-range", ["serve", "--port", "99999"], ("workbench serve: --port",)),
    Case("serve-press-params-not-json", ["serve", "--press", "knorm", "--rate", "0.5", "--press-params", "{"],
         ("--press-params", "not valid JSON")),
    Case("serve-rate-without-press", ["serve", "--rate", "0.5"], ("--rate", "--press")),
    # imports the web server (seconds): a host that does not resolve was reported as the port's fault
    Case("serve-host-unresolvable", ["serve", "--host", "no-such-host.invalid", "--port", "0"], ("--host",)),
    # --- workbench train-kvzap ----------------------------------------------------------------------
    Case("kvzap-device-typo", ["train-kvzap", "--device", "gpu0"], ("workbench train-kvzap: --device", "gpu0")),
    Case("kvzap-dtype-unknown", ["train-kvzap", "--dtype", "float8"], ("--dtype", "float8")),
    Case("kvzap-min-above-max", ["train-kvzap", "--min-tokens", "10", "--max-tokens", "5"], ("--min-tokens", "--max-tokens")),
    Case("kvzap-data-missing-file", ["train-kvzap", "--data", "{d}/none.txt"], ("--data {d}/none.txt",)),
    Case("kvzap-model-missing-folder", ["train-kvzap", "--model", "{d}/no-model"], ("--model", "{d}/no-model")),
    Case("kvzap-texts-beyond-the-data", ["train-kvzap", "--texts", "100000"], ("--texts 100000", "holds")),
    # --- workbench train-points ---------------------------------------------------------------------
    Case("points-device-typo", ["train-points", "--device", "x"], ("workbench train-points: --device",)),
    Case("points-max-cost-infinite", ["train-points", "--labels", "api", "--evaluator", EVAL, "--max-cost", "inf"],
         ("--max-cost",)),
    Case("points-evaluator-not-json", ["train-points", "--labels", "api", "--evaluator", "{d}/ev.json"],
         ("{d}/ev.json", "not valid JSON"), {"ev.json": b"{"}),
    Case("points-evaluator-is-folder", ["train-points", "--labels", "api", "--evaluator", "{d}/ev"], ("{d}/ev",), {"ev": DIR}),
    Case("points-evaluator-provider-list", ["train-points", "--labels", "api", "--evaluator",
                                            '{"provider": ["openai"], "model": "x"}'], ("--evaluator", "field 'provider'")),
    Case("points-evaluator-without-api", ["train-points", "--evaluator", EVAL], ("--labels api",)),
    Case("points-check-with-training-flags", ["train-points", "--check", "{d}/none", "--restart"], ("--check", "--restart")),
    Case("points-check-missing-folder", ["train-points", "--check", "{d}/none"], ("--check", "{d}/none")),
    # --- workbench points-meta / analyze ------------------------------------------------------------
    Case("meta-not-json", ["points-meta", "{d}/s.json"], ("{d}/s.json", "not valid JSON"), {"s.json": b"{"}),
    Case("meta-folder", ["points-meta", "{d}/s"], ("{d}/s",), {"s": DIR}),
    Case("meta-generated-tokens-word", ["points-meta", "{d}/s.json"],
         ("{d}/s.json", "field 'cells[0].samples[0].generated_tokens'"), {"s.json": _session(_sample(generated_tokens="x"))}),
    Case("meta-compression-points-number", ["points-meta", "{d}/s.json"],
         ("{d}/s.json", "field 'cells[0].samples[0].compression_points'"), {"s.json": _session(_sample(compression_points=-1))}),
    Case("analyze-decode-seconds-word", ["analyze", "{d}/s.json"],
         ("{d}/s.json", "field 'cells[0].samples[0].decode_seconds'"), {"s.json": _session(_sample(decode_seconds="x"))}),
    Case("analyze-list", ["analyze", "{d}/s.json"], ("{d}/s.json", "JSON object"), {"s.json": [1, 2]}),
    Case("analyze-same-session-twice", ["analyze", "{d}/s.json", "{d}/./s.json"], ("{d}/./s.json", "twice"),
         {"s.json": SESSION}),
    Case("analyze-out-is-the-session", ["analyze", "{d}/s.json", "--out", "{d}/s.json"], ("--out {d}/s.json", "replace"),
         {"s.json": SESSION}),
    Case("analyze-markdown-is-the-session", ["analyze", "{d}/s.json", "--markdown", "{d}/./s.json"], ("--markdown",),
         {"s.json": SESSION}),
    Case("analyze-out-is-folder", ["analyze", "{d}/s.json", "--out", "{d}/r"], ("{d}/r", "cannot write"),
         {"s.json": SESSION, "r": DIR}),
    Case("analyze-two-reports-one-file", ["analyze", "{d}/s.json", "--out", "{d}/r", "--markdown", "{d}/r"],
         ("--markdown {d}/r", "--out"), {"s.json": SESSION}),
    Case("analyze-plot-not-png", ["analyze", "{d}/s.json", "--plot", "{d}/p.txt"], ("--plot {d}/p.txt", ".png"),
         {"s.json": SESSION}),
    # --- workbench train: training plans ------------------------------------------------------------
    Case("train-device-typo", ["train", "{d}/p.json"], ("{d}/p.json", "field 'device'"), {"p.json": _train_plan(device="gpu")}),
    Case("train-dtype-unknown", ["train", "{d}/p.json"], ("{d}/p.json", "field 'dtype'"), {"p.json": _train_plan(dtype="fp8")}),
    Case("train-rate-one", ["train", "{d}/p.json"], ("{d}/p.json", "field 'rate'"), {"p.json": _train_plan(rate=1)}),
    Case("train-steps-negative-flag", ["train", "{d}/p.json", "--steps", "-1"], ("field 'steps'",), {"p.json": _train_plan()}),
    Case("train-name-escapes", ["train", "{d}/p.json", "--name", "../x"], ("field 'name'",), {"p.json": _train_plan()}),
    Case("train-list-with-plan", ["train", "--list", "{d}/p.json"], ("--list",), {"p.json": _train_plan()}),
    Case("train-grid-as-plan", ["train", "{d}/p.json"], ("{d}/p.json", "--ablation"),
         {"p.json": _preset("train/ablation-squad.json")}),
    Case("train-comparison-plan", ["train", "{d}/p.json"], ("{d}/p.json", "--preset"), {"p.json": _preset("decoding-quick.json")}),
    Case("preset-is-training-plan", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "workbench train"),
         {"p.json": _train_plan()}),
    # imports torch and tries the model (seconds): the run folder it used to leave behind blocked the fixed plan
    Case("train-model-not-here-leaves-no-run", ["train", "{d}/p.json"], ("{d}/p.json", "field 'model'"),
         {"p.json": _train_plan(model="nobody/no-such-model"), "data": DIR}),
    # --- workbench train --ablation -----------------------------------------------------------------
    Case("ablation-workdir-is-file", ["train", "--ablation", "ablation-squad", "--workdir", "{d}/w", "--dry-run"],
         ("--workdir {d}/w",), {"w": b"x"}),
    Case("ablation-ray-address-malformed", ["train", "--ablation", "ablation-squad", "--ray", "head node", "--dry-run"],
         ("--ray", "HOST:PORT")),
    Case("ablation-ray-unreachable", ["train", "--ablation", "ablation-squad", "--ray", "127.0.0.1:1", "--dry-run"],
         ("127.0.0.1:1",), needs_ray=True),
    Case("ablation-gpus-negative", ["train", "--ablation", "ablation-squad", "--gpus", "-1"], ("--gpus",)),
    Case("ablation-grid-not-json", ["train", "--ablation", "{d}/g.json"], ("{d}/g.json",), {"g.json": b""}),
    # --- comparison plans: execution, decoding schedules, API evaluators ----------------------------
    Case("execution-ray-malformed", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "field 'execution.ray'"),
         {"p.json": _decoding(execution={"ray": "bad address"})}),
    Case("execution-workers-zero", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "field 'execution.workers'"),
         {"p.json": _decoding(execution={"workers": 0})}),
    Case("flag-ray-malformed", ["--preset", "decoding-quick", "--ray", "bad address", "--out", "{d}/o.json"],
         ("--ray", "field 'execution.ray'")),
    # tokenises the datasets in the preflight (seconds): ray.init waited minutes for a head node that is not there
    Case("flag-ray-unreachable", ["--preset", "{d}/p.json", "--ray", "127.0.0.1:1", "--out", "{d}/o.json"],
         ("--ray 127.0.0.1:1", "nothing answers"), {"p.json": _decoding(datasets=[{"name": "wikitext2", "samples": 1, "seed": 0}])},
         needs_ray=True),
    Case("schedule-press-list", ["--preset", "{d}/p.json", "--out", "{d}/o.json"], ("{d}/p.json", "field 'methods[0].params.press'"),
         {"p.json": _decoding({"name": "interval", "params": {"every": 4, "press": [], "budget": 32}})}),
    Case("schedule-every-zero", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "methods[0].params.every"),
         {"p.json": _decoding({"name": "interval", "params": {"every": 0, "budget": 32}})}),
    Case("schedule-classifier-missing", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("{d}/p.json", "field 'methods[0].params.classifier'"),
         {"p.json": _decoding({"name": "learned-points", "params": {"classifier": "no-such-folder", "budget": 32}})}),
    Case("task-answer-longer-than-model", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("{d}/p.json", "field 'protocol.max_new_tokens'"),
         {"p.json": {"model": "smollm2-135m", "datasets": [{"name": "gsm8k", "samples": 1, "seed": 0}], "rates": [0.5],
                     "protocol": {"name": "task", "n_shots": 1, "max_new_tokens": 10**12},
                     "methods": [{"name": "random", "family": "prompt"}]}}),
    Case("schedule-classifier-weights-damaged", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("field 'methods[0].params.classifier'", "classifier.safetensors", "damaged"),
         {"p.json": _decoding({"name": "learned-points", "params": {"classifier": "{d}/cls", "budget": 32}}), "cls": DIR,
          "cls/config.json": {"format": 1}, "cls/classifier.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}"}),
    Case("schedule-classifier-no-config", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("field 'methods[0].params.classifier'", "config.json"),
         {"p.json": _decoding({"name": "learned-points", "params": {"classifier": "{d}/cls", "budget": 32}}), "cls": DIR}),
    Case("api-provider-list", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "evaluator.provider"),
         {"p.json": _api(provider=["openai"])}),
    Case("api-base-url-ftp", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "evaluator.base_url"),
         {"p.json": _api(base_url="ftp://127.0.0.1/v1")}),
    Case("api-key-in-key-env", ["--preset", "{d}/p.json", "--dry-run"], ("{d}/p.json", "evaluator.api_key_env"),
         {"p.json": _api(api_key_env="sk-not-a-name")}),
    Case("api-key-not-set", ["--preset", "api-phase1", "--out", "{d}/o.json"], ("evaluator.api_key_env",)),
    # --- learned compressors: damaged checkpoint folders --------------------------------------------
    Case("checkpoint-compressor-garbage", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("{d}/p.json", "field 'methods[0].params.checkpoint'", "compressor.safetensors"),
         {"p.json": _learned_plan("{d}/run"), "run": _run_copy(lambda c: _write(c / "compressor.safetensors", b"garbage"))}),
    Case("checkpoint-compressor-truncated", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("field 'methods[0].params.checkpoint'", "compressor.safetensors", "corrupted"),
         {"p.json": _learned_plan("{d}/run"),
          "run": _run_copy(lambda c: _write(c / "compressor.safetensors", (c / "compressor.safetensors").read_bytes()[:-9]))}),
    Case("checkpoint-compressor-missing", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("field 'methods[0].params.checkpoint'", "compressor.safetensors", "missing"),
         {"p.json": _learned_plan("{d}/run"), "run": _run_copy(lambda c: (c / "compressor.safetensors").unlink())}),
    Case("checkpoint-state-not-json", ["--preset", "{d}/p.json", "--out", "{d}/o.json"],
         ("field 'methods[0].params.checkpoint'", "state.json"),
         {"p.json": _learned_plan("{d}/run"), "run": _run_copy(lambda c: _write(c / "state.json", b"{"))}),
    Case("checkpoint-not-a-run", ["--preset", "{d}/p.json", "--dry-run"], ("field 'methods[0].params.checkpoint'",),
         {"p.json": _learned_plan("{d}/empty"), "empty": DIR}),
    # imports torch (seconds), not the model: the checkpoint a resume would read is refused first
    Case("resume-optimizer-garbage", ["train", "{d}/p.json"], ("optimizer.safetensors", "corrupted"),
         {"p.json": _resume_plan, "data": _in_store(lambda r: _write(r / "checkpoint-0" / "optimizer.safetensors", b"xx"))}),
    Case("resume-config-garbage", ["train", "{d}/p.json"], ("config.json", "unreadable", "--restart"),
         {"p.json": _resume_plan, "data": _in_store(lambda r: _write(r / "config.json", b"{"))}),
]


def test_corpus_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES) >= 50


@pytest.fixture(scope="module")
def ctx(tiny_llama_dir, workbench_data_dir) -> Ctx:
    """One real run (the untrained pooling compressor on the tiny model, saved as step 0) to copy and damage."""
    from workbench.learned import store
    from workbench.learned.config import parse_train_config
    from workbench.learned.train import train

    cfg = parse_train_config({"name": "fuzz-base", "model": str(tiny_llama_dir), "architecture": "pooling", "rate": 0.125,
                              "context_tokens": 32, "continuation_tokens": 12, "dataset": "wikitext2", "held_out": 2,
                              "eval_windows": 1, "steps": 0, "batch_size": 2, "generation_prefix_tokens": 3,
                              "device": "cpu", "dtype": "float32"}, "test plan")
    train(cfg)
    return Ctx(run=store.run_dir("fuzz-base"), model=str(tiny_llama_dir))


def _fill(value: Any, folder: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{d}", str(folder))
    if isinstance(value, list):
        return [_fill(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, folder) for k, v in value.items()}
    return value


def _prepare(case: Case, ctx: Ctx, folder: Path) -> list[str]:
    for name, content in case.files.items():
        path = folder / name
        if isinstance(content, Tree):
            content.make(ctx, path)
            continue
        if callable(content):
            content = content(ctx)
        if content is DIR:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(_fill(content, folder)), encoding="utf-8")
    return _fill(case.argv, folder)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input_exits_2_naming_file_and_field(case, ctx, tmp_path):
    if case.needs_ray and not HAS_RAY:
        pytest.skip("needs the ray extra")
    folder = tmp_path / "case"
    folder.mkdir()
    argv = _prepare(case, ctx, folder)
    before = _snapshot(folder)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", WORKBENCH_DATA=str(folder / "data"))
    result = subprocess.run([sys.executable, "-m", "workbench", *argv], capture_output=True, text=True, cwd=folder,
                            env=env, timeout=180)
    err = result.stderr
    assert result.returncode == 2, f"exit {result.returncode}; stdout {result.stdout[-400:]!r}; stderr {err[-800:]!r}"
    assert "Traceback" not in err + result.stdout
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert last.startswith("workbench"), err
    for name in case.names:
        assert _fill(name, folder) in last, f"{_fill(name, folder)!r} not in {last!r}"
    assert _snapshot(folder) == before, "a file was created, changed or removed"


# --- the files checks accept what the trainers write (else every plan naming a good folder would be refused) --

def test_the_checkpoint_files_check_passes_a_real_run_and_refuses_it_cut_short(ctx, tmp_path):
    from workbench.learned import store

    state = json.loads((ctx.run / "checkpoint-0" / "state.json").read_text())
    store.check_tensor_files(ctx.run / "checkpoint-0", state, optimizer=True)
    copy = tmp_path / "run"
    shutil.copytree(ctx.run, copy)
    weights = copy / "checkpoint-0" / store.OPTIMIZER
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(store.CheckpointError, match="optimizer.safetensors: corrupted"):
        store.check_tensor_files(copy / "checkpoint-0", state, optimizer=True)


def test_the_classifier_files_check_passes_a_saved_classifier_and_refuses_it_cut_short(tmp_path):
    from workbench.points import classifier, store

    folder = classifier.save(classifier.PointMLP(16, 8), {"format": store.FORMAT}, tmp_path / "cls")
    store.check_files(str(folder))
    weights = folder / store.WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(store.CheckpointError, match="classifier.safetensors: damaged"):
        store.check_files(str(folder))
