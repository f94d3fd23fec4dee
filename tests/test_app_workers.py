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


def test_the_app_runs_a_decoding_plan_on_a_real_ray_worker_with_live_curves(tiny_llama_dir, tmp_path):
    """The app's real runner on one real Ray worker (a local Ray started by the run, inside the app, whose stderr
    is Textual's capture without a file descriptor): it finishes, and the worker's live budget curves reach the
    Progress view's state while cells decode."""
    import pytest

    pytest.importorskip("ray")
    from screens.app import WorkbenchApp
    from test_app_fakes import fixed_device, run_to_end

    from workbench.plan import parse_plan

    plan = parse_plan({"name": "tiny-dec-ray", "model": str(tiny_llama_dir), "device": "cpu", "dtype": "float32",
                       "datasets": [{"name": "wikitext2", "samples": 1}],
                       "protocol": {"name": "decoding", "context_tokens": 32, "max_new_tokens": 40},
                       "rates": [0.5], "methods": [{"name": "interval", "params": {"every": 8}}],
                       "execution": {"workers": 1}}, source="test")
    live_methods = set()

    async def go():
        app = WorkbenchApp(sessions_dir=tmp_path, device_probe=fixed_device, stamp=lambda: "ray", theme="textual-dark")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            app.replace_plan(plan)
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot, timeout=240)
            assert app.run_state.status == "finished", list(app.run_state.log)
            assert {w["state"] for w in app.run_state.workers.values()} <= {"ready", "measured", "measuring"}
            live_methods.update(app.run_state.live)

    import faulthandler
    import sys

    # As in a terminal: nothing has turned faulthandler on yet (pytest has, which would hide the fault).
    was_on = faulthandler.is_enabled()
    faulthandler.disable()
    try:
        drive(go())
    finally:
        if was_on:
            faulthandler.enable(file=sys.__stderr__)
    assert "interval" in live_methods


class BackToBack(FakeRunner):
    """Two workers reporting units back to back, as the driver does: each "measured" is followed at once by the
    "measuring" of the worker's next unit."""

    def __call__(self, target, on_event=None, cancel=None, out=None):
        def report(worker, state, unit, pace=None):
            data = {"worker": worker, "state": state, "device": "cuda:0", "node": f"gpu-{worker}", "unit": unit,
                    "samples_per_s": pace}
            on_event(Event("worker", f"worker {worker}: {state} {unit}", data))

        for worker in (0, 1):
            report(worker, "ready", None)
            report(worker, "measuring", f"snapkv s#{worker}")
        for n in range(3):
            for worker in (0, 1):
                report(worker, "measured", f"snapkv s#{2 * n + worker}", 2.0 + n)
                if n < 2:
                    report(worker, "measuring", f"snapkv s#{2 * n + 2 + worker}")
        return super().__call__(target, on_event, cancel, out)


def test_the_worker_line_shows_the_unit_each_worker_measures_now(tmp_path):
    """Reports are thinned per worker and a worker's next unit always arrives (the line was left on the unit before)."""
    async def go():
        app = make_app(tmp_path, BackToBack(), progress_interval=10.0)  # thinning everything it may
        async with app.run_test(size=(140, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            await pilot.pause(0.2)
            assert app.run_state.workers[0]["unit"] == "snapkv s#4" and app.run_state.workers[1]["unit"] == "snapkv s#5"
            # 2 "ready" + 6 "measuring" + each worker's first "measured" (thinned per worker, not one for both)
            assert app.run_state.delivered["worker"] == 10

    drive(go())
