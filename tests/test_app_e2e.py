"""End to end: the app drives the real runner (a real model, real presses) on a tiny random Llama."""

from __future__ import annotations

import asyncio
import math

import pytest

from test_app_fakes import fixed_device, run_to_end
from workbench.plan import parse_plan
from workbench.session import Session


@pytest.mark.slow
def test_the_app_runs_the_real_runner_on_a_tiny_llama(tiny_llama_dir, tmp_path):
    from screens.app import WorkbenchApp

    plan = parse_plan({"name": "tiny", "model": str(tiny_llama_dir), "device": "cpu", "dtype": "float32",
                       "datasets": [{"name": "wikitext2", "samples": 1}],
                       "protocol": {"context_tokens": 64, "continuation_tokens": 8},
                       "rates": [0.5], "methods": ["knorm"]}, source="test")

    async def go():
        app = WorkbenchApp(sessions_dir=tmp_path, device_probe=fixed_device, stamp=lambda: "e2e", theme="textual-dark")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.replace_plan(plan)  # as if loaded from a file: the setup form refills and validates it
            await pilot.pause()
            assert app.plan is not None and app.plan.model == str(tiny_llama_dir)
            await pilot.press("ctrl+r")
            await run_to_end(pilot, timeout=180)
            assert app.run_state.status == "finished", list(app.run_state.log)
            knorm = next(c for c in app.cells.values() if c["method"] == "knorm")
            assert knorm["status"] == "done" and math.isfinite(knorm["ppl"]) and knorm["delta_ppl"] is not None
            assert knorm["kept_fraction"] == pytest.approx(0.5, abs=0.05)
            assert app.run_state.delivered["cell-finished"] == 2
            app.screen.redraw()
            assert list(app.screen.query_one("#quality-plot").lines) == ["knorm"]
            await pilot.press("f4")
            await pilot.pause()
            assert app.screen.query_one("DataTable").row_count == 2
        return app.session.path

    path = asyncio.run(go())
    assert Session.load(path).status == "finished"
