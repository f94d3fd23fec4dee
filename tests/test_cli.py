"""The headless face: exit codes, documented errors for bad presets, dry run, import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def workbench(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("module", ["workbench.runner", "workbench.plan", "workbench.session", "workbench.cli",
                                    "workbench.report", "workbench.methods.registry", "workbench.methods.presses"])
def test_engine_modules_import_neither_torch_nor_textual(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'textual', 'rich', 'transformers', 'kvpress') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_help_lists_the_headless_options():
    result = workbench("--help")
    assert result.returncode == 0
    for option in ("--preset", "--out", "--dry-run", "--device", "--json"):
        assert option in result.stdout


def test_dry_run_prints_cells_and_forward_passes():
    result = workbench("--preset", "quickstart", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "cells 28" in result.stdout and "forward passes" in result.stdout
    assert "shared-prefill" in result.stdout


def test_shipped_presets_validate():
    from workbench.plan import load_preset, preset_names

    names = preset_names()
    assert {"quickstart", "kv-compare"} <= set(names)
    for name in names:
        load_preset(name)
    kv = load_preset("kv-compare")
    assert kv.protocol.name == "chunked" and kv.rates == [0.5]
    assert [m.name for m in kv.methods] == ["random", "streaming-llm", "expected-attention", "dms", "dms", "observed-attention"]
    assert [m.label for m in kv.methods][3:5] == ["kvzap", "kvzap-thr-6"] and kv.methods[3].params["match_rate"]


BAD_PRESETS = [
    ({"methods": ["no-such-press"]}, "methods[0].name", "unknown method"),
    ({"methods": ["knorm"], "rates": [0.5, 1.5]}, "rates[1]", "(0, 1]"),
    ({"methods": ["knorm"], "rates": [0]}, "rates[0]", "fraction of tokens kept"),
    ({"datasets": ["no-such-dataset"]}, "datasets[0].name", "no-such-dataset"),
    ({"methods": [{"name": "snapkv", "params": {"window": 3}}]}, "methods[0].params.window", "window_size"),
    ({"methods": [{"name": "snapkv", "params": {"compression_ratio": 0.5}}]}, "methods[0].params.compression_ratio", "rates"),
    ({"protocol": {"name": "sliding"}}, "protocol.name", "unknown protocol"),
    ({"methods": ["knorm", "knorm"]}, "methods[1].label", "label"),
    ({"model": "./no/such/model.gguf"}, "model", ""),
    ({"colour": "blue"}, "(top level)", "unknown key"),
    ({"methods": ["random"]}, "methods[0].name", "set \"family\""),
    ({"batch_size": 0}, "batch_size", "whole number from 1 to 256"),
]


@pytest.mark.parametrize("patch,field,words", BAD_PRESETS)
def test_malformed_presets_exit_2_naming_file_and_field(tmp_path, patch, field, words):
    preset = {"name": "bad", "model": "smollm2-135m", "datasets": ["wikitext2"], "methods": ["knorm"], "rates": [0.5]}
    preset.update(patch)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(preset))
    result = workbench("--preset", str(path), "--dry-run")
    assert result.returncode == 2
    assert str(path) in result.stderr and f"field '{field}'" in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr


def test_batch_size_option_reaches_the_plan_or_exits_2():
    result = workbench("--preset", "quickstart", "--batch-size", "4", "--dry-run")
    assert result.returncode == 0 and "up to 4 samples per forward pass" in result.stdout
    result = workbench("--preset", "quickstart", "--batch-size", "several", "--dry-run")
    assert result.returncode == 2 and "batch_size" in result.stderr and "Traceback" not in result.stderr


def test_invalid_json_and_unknown_preset_exit_2(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x", ')
    result = workbench("--preset", str(path))
    assert result.returncode == 2 and "not valid JSON" in result.stderr and str(path) in result.stderr
    result = workbench("--preset", "no-such-preset")
    assert result.returncode == 2 and "quickstart" in result.stderr


def test_hub_model_offline_is_a_clear_error(tmp_path):
    preset = {"name": "hub", "model": "nonexistent-org/nonexistent-model-xyz", "methods": ["knorm"]}
    path = tmp_path / "hub.json"
    path.write_text(json.dumps(preset))
    env_run = subprocess.run([sys.executable, "-m", "workbench", "--preset", str(path), "--out", str(tmp_path / "s.json")],
                             capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert env_run.returncode == 2
    assert "nonexistent-org/nonexistent-model-xyz" in env_run.stderr and "Traceback" not in env_run.stderr


def test_headless_run_table_json_and_resume(tmp_path, tiny_llama_dir):
    preset = {"name": "tiny", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 2}],
              "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": [0.5], "methods": ["knorm", "kvzap"]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "s.json"
    result = workbench("--preset", str(path), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr  # kvzap is unavailable offline, which is not a failure
    header = result.stdout.splitlines()[1]
    for column in ("Method", "Rate", "PPL", "ΔPPL", "ΔPPL %", "Kept", "KV bytes", "Time"):
        assert column in header
    assert "unavailable" in result.stdout and "knorm" in result.stdout
    again = workbench("--preset", str(path), "--out", str(out), "--json", cwd=tmp_path)
    assert again.returncode == 0
    data = json.loads(again.stdout)
    assert {c["method"]: c["status"] for c in data["cells"]} == {"baseline": "done", "knorm": "done", "kvzap": "unavailable"}
    assert "0 of 3 cells to run" in again.stderr or "1 of 3 cells to run" in again.stderr


def test_failed_cells_exit_1(tmp_path, tiny_llama_dir):
    # SnapKV pools the attention of its last window_size queries; with a window longer than the 64-token context
    # kvpress's own check fails inside the prefill, on every sample: a real failure at run time, not a plan error.
    preset = {"name": "tiny", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 2}],
              "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": [0.5],
              "methods": [{"name": "snapkv", "params": {"window_size": 100}}, "knorm"]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(preset))
    result = workbench("--preset", str(path), "--out", str(tmp_path / "s.json"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    cells = {c["method"]: c for c in json.loads((tmp_path / "s.json").read_text())["cells"]}
    assert cells["snapkv"]["status"] == "error" and cells["snapkv"]["samples_done"] == 0
    assert "window size 100" in cells["snapkv"]["error"]
    assert cells["baseline"]["status"] == cells["knorm"]["status"] == "done"
    assert cells["knorm"]["samples_done"] == 2
    assert "error" in result.stderr and "snapkv" in result.stdout


def test_killed_run_resumes_where_it_stopped(tmp_path, tiny_llama_dir):
    """SIGKILL in the middle of a run: the file on disk is a valid session and a rerun completes it."""
    import os
    import signal
    import time

    preset = {"name": "tiny", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 6}],
              "protocol": {"context_tokens": 128, "continuation_tokens": 16}, "rates": [0.75, 0.5, 0.25],
              "methods": ["knorm", "snapkv", "tova", {"name": "random", "family": "kv"}], "shared_prefill": False}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(preset))
    out = tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "--preset", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline:
        if out.exists():
            cells = json.loads(out.read_text())["cells"]
            if sum(c["samples_done"] for c in cells) >= 10:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cells = json.loads(out.read_text())["cells"]  # whatever moment it died at, the file parses
    done_before = sum(c["samples_done"] for c in cells)
    assert 0 < done_before < sum(c["samples_total"] for c in cells)
    result = workbench("--preset", str(path), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    final = json.loads(out.read_text())
    assert all(c["status"] == "done" and c["samples_done"] == 6 for c in final["cells"])


def test_non_editable_install_finds_presets_and_data(tmp_path):
    """`pip install .` (not editable) ships the presets and the bundled datasets as package data."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(repo)], check=True,
                   capture_output=True, timeout=600)
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, timeout=600)
    code = ("import workbench, workbench.plan as p, workbench.datasets as d; "
            "print(workbench.__file__); print(','.join(p.preset_names())); print(len(d.load_documents('gsm8k')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True,
                         env={**os.environ, "PYTHONPATH": str(target)}).stdout.split()
    assert out[0].startswith(str(target))
    assert {"quickstart", "kv-compare"} <= set(out[1].split(","))
    assert out[2] == "1319"
