"""Headless runs with an API evaluator against a real local server: results, failures kept apart, the budget,
a refused key, a SIGKILL and a resume that pays for nothing twice, and no key in any file or stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from api_server import FakeApi
from workbench.session import Session

KEY_VAR, KEY = "WB_TEST_LLM", "sk-test-NOT-A-REAL-KEY-0123456789"  # a name without KEY in it: scrubbed all the same


@pytest.fixture
def api():
    servers = []

    def start(**kwargs):
        server = FakeApi(**kwargs)
        servers.append(server)
        return server, server.start()

    yield start
    for server in servers:
        server.stop()


def _plan(tmp_path, model_dir, base_url, samples=4, **extra) -> str:
    plan = {"name": "api-test", "model": str(model_dir), "datasets": [{"name": "gsm8k", "samples": samples}],
            "protocol": {"name": "task", "n_shots": 1, "max_new_tokens": 16}, "rates": [0.5, 0.8],
            "methods": [{"name": "random", "family": "prompt", "params": {"seed": 1}}, "snapkv"],
            "evaluator": {"provider": "openai-compatible", "model": "fake", "base_url": base_url, "api_key_env": KEY_VAR,
                          "max_concurrency": 2, "timeout_s": 5, "max_retries": 2, "prices": {"input": 1.0, "output": 2.0}},
            **extra}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return str(path)


def _env(tmp_path, **more):
    return {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache"), KEY_VAR: KEY, "OMP_NUM_THREADS": "1", **more}


def _workbench(tmp_path, *args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env or _env(tmp_path), timeout=timeout)


def _records(path) -> dict:
    """Per cell, per sample: what was measured (timings left out: they differ from run to run)."""
    timing = {"prefill_seconds", "scoring_seconds", "compression_seconds"}
    cells = Session.load(path).cells.values()
    return {c["key"]: {s["sample_id"]: {k: v for k, v in s.items() if k not in timing} for s in c["samples"]} for c in cells}


def test_api_run_scores_prompt_methods_marks_presses_unavailable_and_costs(tmp_path, tiny_llama_dir, api):
    server, url = api(delay_s=0.2)  # slow enough that the plan's two concurrent requests overlap at the server
    plan = _plan(tmp_path, tiny_llama_dir, url)
    dry = _workbench(tmp_path, "--preset", plan, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "API: 12 requests" in dry.stdout and "snapkv" in dry.stdout and "unavailable" in dry.stdout
    run = _workbench(tmp_path, "--preset", plan, "--out", "s.json")
    assert run.returncode == 0, run.stderr
    session = Session.load(tmp_path / "s.json")
    cells = {c["method"] + "@" + str(c["rate"]): c for c in session.cells.values()}
    assert cells["baseline@1.0"]["status"] == "done" and cells["random-prompt@0.5"]["samples_done"] == 4
    assert cells["snapkv@0.5"]["status"] == "unavailable" and "local cache" in cells["snapkv@0.5"]["reason"]
    record = cells["random-prompt@0.5"]["samples"][0]
    assert record["path"] == "api" and record["cost_usd"] > 0 and record["cost_estimated"] is False
    assert record["generated"].startswith("The answer is")
    assert cells["random-prompt@0.5"]["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in cells["random-prompt@0.5"]["samples"]))
    assert server.answered == 12 and "API spend of this session" in run.stderr
    assert server.max_in_flight == 2  # max_concurrency: the baseline's samples too, not one request at a time
    again = _workbench(tmp_path, "--preset", plan, "--out", "again.json")  # a new session, same requests: all cached
    assert again.returncode == 0 and server.received == 12
    assert _records(tmp_path / "again.json") == _records(tmp_path / "s.json")


def test_a_malformed_answer_fails_one_sample_the_rest_are_kept_and_resume_fills_it(tmp_path, tiny_llama_dir, api):
    server, url = api(behaviour=lambda n, body: (200, {}, "<html>oops") if n == 3 else None)
    plan = _plan(tmp_path, tiny_llama_dir, url)
    run = _workbench(tmp_path, "--preset", plan, "--out", "s.json")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    failed = [c for c in Session.load(tmp_path / "s.json").cells.values() if c["status"] == "error"]
    assert len(failed) == 1 and failed[0]["error"].startswith("1 of 4 samples failed") and failed[0]["samples_done"] == 3
    resumed = _workbench(tmp_path, "--resume", "s.json")
    assert resumed.returncode == 0, resumed.stderr
    assert all(c["status"] in ("done", "unavailable") for c in Session.load(tmp_path / "s.json").cells.values())
    assert max(server.answered_bodies.values()) == 1 and server.received == 13


def test_a_refused_key_stops_the_run_with_one_message_and_no_key_anywhere(tmp_path, tiny_llama_dir, api):
    server, url = api(behaviour=lambda n, body: (401, {}, json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}})))
    plan = _plan(tmp_path, tiny_llama_dir, url)
    run = _workbench(tmp_path, "--preset", plan, "--out", "s.json")
    assert run.returncode == 2 and "refused the key (401" in run.stderr and "Traceback" not in run.stderr
    assert server.received <= 2  # the requests already in flight at most (concurrency 2), then nothing more
    session = Session.load(tmp_path / "s.json")
    assert session.status == "cancelled"
    _assert_no_key(tmp_path, run.stdout + run.stderr)


def test_max_cost_stops_before_the_budget_and_a_higher_cap_resumes(tmp_path, tiny_llama_dir, api):
    server, url = api()
    # $1,000 per million tokens: a request's bound is ~$0.3, so $0.5 allows only the first requests.
    plan = json.loads(open(_plan(tmp_path, tiny_llama_dir, url)).read())
    plan["evaluator"]["prices"] = {"input": 1000.0, "output": 1000.0}
    plan["max_cost_usd"] = 0.5
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    run = _workbench(tmp_path, "--preset", "plan.json", "--out", "s.json")
    assert run.returncode == 1 and "stopped before crossing max_cost_usd" in run.stderr and "--max-cost USD" in run.stderr
    session = Session.load(tmp_path / "s.json")
    spent = sum(s["cost_usd"] for c in session.cells.values() for s in c["samples"])
    assert 0 < spent <= 0.5 and session.status == "cancelled"
    paid_before = server.answered
    resumed = _workbench(tmp_path, "--resume", "s.json", "--max-cost", "100")
    assert resumed.returncode == 0, resumed.stderr
    assert server.answered == 12 and paid_before < 12 and max(server.answered_bodies.values()) == 1


def test_killed_mid_run_and_resumed_pays_for_nothing_twice(tmp_path, tiny_llama_dir, api):
    # The 5th request stalls until released; the run is killed with SIGKILL while it waits, then resumed.
    server, url = api(behaviour=lambda n, body: "stall" if n == 5 else None)
    plan = _plan(tmp_path, tiny_llama_dir, url)
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "--preset", plan, "--out", "s.json"], cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert server.stalled.wait(120), "the run never reached the 5th request"
    time.sleep(0.3)  # the other request in flight (concurrency 2) is answered and cached
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    server.abandon.set()  # the stalled request's client is dead: the server drops it unanswered (as serve cancels it)
    server.release.set()
    answered_at_kill = server.answered
    resumed = _workbench(tmp_path, "--resume", "s.json")
    assert resumed.returncode == 0, resumed.stderr
    # Counted at the server: every request answered exactly once across the killed run and the resumed one.
    assert answered_at_kill >= 4 and server.answered == 12 and set(server.answered_bodies.values()) == {1}
    # The same plan uninterrupted, against the same (now warm) cache, gives the same records.
    whole = _workbench(tmp_path, "--preset", plan, "--out", "whole.json")
    assert whole.returncode == 0 and _records(tmp_path / "s.json") == _records(tmp_path / "whole.json")


def _assert_no_key(tmp_path, streams: str) -> None:
    assert KEY not in streams
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_the_key_is_in_no_file_or_stream_of_a_whole_run(tmp_path, tiny_llama_dir, api):
    server, url = api()
    plan = _plan(tmp_path, tiny_llama_dir, url)
    run = _workbench(tmp_path, "--preset", plan, "--out", "s.json", "--json")
    assert run.returncode == 0 and server.auth_headers[0] == f"Bearer {KEY}"  # it was sent, to the server only
    from workbench import report

    session = Session.load(tmp_path / "s.json")
    (tmp_path / "export.md").write_text(report.markdown_table(session))
    (tmp_path / "export.csv").write_text(report.csv_text(session))
    _assert_no_key(tmp_path, run.stdout + run.stderr)


def test_evaluator_mistakes_exit_2_naming_the_field(tmp_path, tiny_llama_dir):
    cases = [({"provider": "nope", "model": "m"}, "evaluator.provider"),
             ({"provider": "openai-compatible", "model": "m"}, "evaluator.base_url"),
             ({"provider": "openai", "model": "m", "api_key_env": "sk-abc123"}, "evaluator.api_key_env"),
             ({"provider": "openai", "model": "m", "max_concurrency": 0}, "evaluator.max_concurrency")]
    for block, field in cases:
        (tmp_path / "p.json").write_text(json.dumps({"model": str(tiny_llama_dir), "datasets": ["gsm8k"], "protocol": "task",
                                                     "evaluator": block}))
        run = _workbench(tmp_path, "--preset", "p.json", "--dry-run")
        assert run.returncode == 2 and f"field '{field}'" in run.stderr and "sk-abc123" not in run.stderr, run.stderr
    (tmp_path / "p.json").write_text(json.dumps({"model": str(tiny_llama_dir), "datasets": ["wikitext2"],
                                                 "evaluator": {"provider": "openai", "model": "gpt-4o-mini"}}))
    run = _workbench(tmp_path, "--preset", "p.json", "--dry-run")
    assert run.returncode == 2 and "needs the task protocol" in run.stderr
    (tmp_path / "p.json").write_text(json.dumps({"model": str(tiny_llama_dir), "datasets": ["gsm8k"], "protocol": "task",
                                                 "evaluator": {"provider": "openai", "model": "my-finetune"}, "max_cost_usd": 5}))
    run = _workbench(tmp_path, "--preset", "p.json", "--dry-run")
    assert run.returncode == 2 and "field 'evaluator.prices'" in run.stderr
    env = {k: v for k, v in _env(tmp_path).items() if k != "OPENAI_API_KEY"}
    (tmp_path / "p.json").write_text(json.dumps({"model": str(tiny_llama_dir), "datasets": ["gsm8k"], "protocol": "task",
                                                 "evaluator": {"provider": "openai", "model": "gpt-4o-mini"}}))
    run = _workbench(tmp_path, "--preset", "p.json", "--out", "s.json", env=env)
    assert run.returncode == 2 and "$OPENAI_API_KEY is not set" in run.stderr and not (tmp_path / "s.json").exists()
