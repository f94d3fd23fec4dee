"""The terminal app with an API evaluator: chosen on Setup with the cost beside the cell count, and a real run
against a local API server showing requests and money on Progress."""

from __future__ import annotations

import asyncio
import json

from test_app_fakes import make_app, setup_ready, wait_for

from api_server import FakeApi


def text(widget) -> str:
    return str(widget.render())


def test_setup_shows_the_evaluator_and_the_cost_estimate_and_flags_a_missing_base_url(tmp_path):
    async def go():
        app = make_app(tmp_path, preset="api-phase1")
        async with app.run_test(size=(80, 24)) as pilot:
            await setup_ready(pilot)
            setup = app.screen
            assert setup.query_one("#evaluator").value == "openai" and setup.query_one("#api-model").value == "gpt-4o-mini"
            assert setup.query_one("#api-base-url").placeholder == "https://api.openai.com/v1"
            summary = text(setup.query_one("#summary"))
            assert "API 70 requests" in summary and "cap $15" in summary and "forward passes" not in summary
            setup.query_one("#evaluator").value = "openai-compatible"
            await wait_for(pilot, lambda: text(setup.query_one("#summary")).startswith("✗"), what="the missing base URL")
            assert "API base URL" in text(setup.query_one("#summary"))
            assert setup.query_one("#api-base-url").has_class("-invalid")
            setup.query_one("#api-base-url").value = "http://127.0.0.1:9/v1"
            await wait_for(pilot, lambda: text(setup.query_one("#summary")).startswith("✓"), what="a valid plan again")
            assert app.plan.evaluator.base_url == "http://127.0.0.1:9/v1" and app.plan.evaluator.max_concurrency == 8
            setup.query_one("#evaluator").value = "local"
            await wait_for(pilot, lambda: "forward passes" in text(setup.query_one("#summary")), what="the local plan")
            assert app.plan.evaluator is None and not setup.query_one("#api-base-url").parent.display

    asyncio.run(go())


def test_a_run_against_an_api_shows_requests_and_spend_on_progress(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    server = FakeApi()
    url = server.start()
    plan = {"name": "api-tui", "model": str(tiny_llama_dir), "datasets": [{"name": "gsm8k", "samples": 3}],
            "protocol": {"name": "task", "n_shots": 1, "max_new_tokens": 8}, "rates": [0.5],
            "methods": [{"name": "random", "family": "prompt"}],
            "evaluator": {"provider": "openai-compatible", "model": "fake", "base_url": url, "max_concurrency": 2,
                          "prices": {"input": 1.0, "output": 2.0}}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    def real_run(target, on_event, cancel, out=None):
        from workbench import runner

        return runner.run(target, on_event, cancel, out=out)

    async def go():
        app = make_app(tmp_path, preset=str(tmp_path / "plan.json"))
        app.run_fn = real_run
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: app.run_state.status == "finished", timeout=120, what="the run to finish")
            await pilot.press("f3")
            await pilot.pause(0.2)
            line = text(app.screen.query_one("#device"))
            assert "API 6 done (0 cached) · 0 in flight" in line and "spent" in line, line
            assert f"${app.run_state.api['session_usd']:.4f}" in line and app.run_state.api["session_usd"] > 0

    try:
        asyncio.run(go())
    finally:
        server.stop()
    assert server.answered == 6
