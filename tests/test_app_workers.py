"""Ray workers in the app: the Setup form's Workers and Ray cluster fields become the plan's "execution" block
(flagged in place when wrong), and the Progress view shows each worker's device, unit and pace."""

from __future__ import annotations

import asyncio

from test_app_fakes import FakeRunner, make_app, run_to_end, setup_ready

from workbench.events import Event


def drive(coro):
    return asyncio.run(coro)


def text(widget) -> str:
    return str(widget.render())


def test_setup_workers_and_cluster_fields_make_the_execution_block(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            setup = app.screen
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            assert app.plan.execution is None  # blank: this process, as always
            setup.query_one("#workers").value = "0"
            await pilot.pause()
            assert text(setup.query_one("#summary")).startswith("✗ Workers: must be at least 1")
            setup.query_one("#workers").value = "2"
            setup.query_one("#ray-address").value = "auto"
            await pilot.pause()
            assert text(setup.query_one("#summary")).startswith("✓")
            assert app.plan.execution is not None and (app.plan.execution.workers, app.plan.execution.ray) == (2, "auto")

    drive(go())


class WorkerEvents(FakeRunner):
    """The fake runner, with the worker reports a run on two Ray workers sends before its samples."""

    def __call__(self, target, on_event=None, cancel=None, out=None):
        for data in ({"worker": 0, "state": "ready", "device": "cuda:0", "node": "gpu-a"},
                     {"worker": 1, "state": "ready", "device": "cuda:0", "node": "gpu-b"},
                     {"worker": 1, "state": "measured", "device": "cuda:0", "node": "gpu-b", "unit": "snapkv s#3",
                      "samples_per_s": 2.5},
                     {"worker": 0, "state": "lost", "device": "cuda:0", "node": "gpu-a"}):
            on_event(Event("worker", f"worker {data['worker']} ({data['device']} on {data['node']}): {data['state']}", data))
        return super().__call__(target, on_event, cancel, out)


def test_the_progress_view_shows_each_worker(tmp_path):
    async def go():
        app = make_app(tmp_path, WorkerEvents(), progress_interval=0)
        async with app.run_test(size=(140, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            await pilot.pause(0.2)
            line = text(app.screen.query_one("#device"))
            assert "w0 cuda:0: lost" in line and "w1 cuda:0: snapkv s#3 2.5/s" in line
            logged = [t for _, t in app.run_state.log]
            assert "worker 0 (cuda:0 on gpu-a): ready" in logged and ("warning", "worker 0 (cuda:0 on gpu-a): lost") in app.run_state.log
            assert not any("measured" in t for t in logged)  # per-unit reports go to the line, not the log

    drive(go())
