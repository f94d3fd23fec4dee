"""The Progress view during a decoding run (the real runner on the tiny Llama): the KV budget over decoding steps
is drawn from the run's live reports, and the finished cells' curves stay."""

from __future__ import annotations

import asyncio
import json
import time

from test_app_fakes import make_app, run_to_end, setup_ready, wait_for


def _real_run(target, on_event, cancel, out=None):
    from workbench import runner

    return runner.run(target, on_event, cancel, out=out)


def test_the_budget_plot_follows_decoding_steps_live(tiny_llama_dir, tmp_path):
    preset = tmp_path / "dec.json"
    preset.write_text(json.dumps({
        "name": "dec", "model": str(tiny_llama_dir), "device": "cpu", "dtype": "float32",
        "datasets": [{"name": "wikitext2", "samples": 1}],
        "protocol": {"name": "decoding", "context_tokens": 32, "max_new_tokens": 200},
        "rates": [0.5], "methods": [{"name": "interval", "params": {"every": 16}}]}))

    async def go():
        app = make_app(tmp_path, _real_run, clock=time.monotonic, preset=str(preset), progress_interval=0)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            assert app.plan.protocol.name == "decoding"
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: app.run_state.live, timeout=60, what="a live budget report")
            await run_to_end(pilot, timeout=60)
            screen = app.screen
            live = app.run_state.live["interval"]
            assert live["curve"][-1][0] == 198  # the whole sample: its last step
            assert [p for p in live["curve"] if p[0] == 15][-1][1] == (32 + 16) // 2  # the first point kept half
            await wait_for(pilot, lambda: screen._live_drawn == app.run_state.live_version, what="the plot to redraw")
            from screens import data

            cells = list(app.cells.values())
            assert screen._budget(cells) == "steps"
            assert data.step_curves(cells, app.run_state.live)["interval"][-1] == (198, live["curve"][-1][1])
            assert data.step_curves(cells)["interval"]  # the finished cell's own recorded curve
            await pilot.press("b")  # the budget key cycles on to the other units and back
            assert screen.budget == "tokens"
            for _ in range(3):
                await pilot.press("b")
            assert screen.budget == "steps"

    asyncio.run(go())
