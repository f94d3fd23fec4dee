"""Sessions in the app: opening asks before it replaces unsaved Setup edits, ctrl+r after a cancel offers to
resume or start fresh, the palette's run: resume, and one count of cells in the Open dialog, Results,
Progress and the headless report."""

from __future__ import annotations

import asyncio
import itertools

from test_app_fakes import FakeRunner, make_app, run_to_end, saved_session, wait_for
from workbench import report
from workbench.session import Session


def drive(coro):
    return asyncio.run(coro)


def test_opening_a_session_asks_before_replacing_unsaved_setup_edits(tmp_path):
    other = saved_session(tmp_path / "other.json")

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            from screens.dialogs import ConfirmModal
            from screens.results import ResultsScreen

            await wait_for(pilot, lambda: app.plan is not None, what="the plan")
            await pilot.pause(0.2)
            assert not app.plan_edited  # the preset as loaded
            setup = app.screen
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            setup.query_one("#rates-list").value = "0.9, 0.1"
            await pilot.pause()
            assert app.plan_edited and app.plan.rates == [0.9, 0.1]
            app.open_path(str(other.path))
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal) and "edits" in str(app.screen.query_one(".title").render())
            await pilot.press("n")  # keep editing: nothing replaced
            await pilot.pause()
            assert app.plan.rates == [0.9, 0.1] and app.session is None
            app.open_path(str(other.path))
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            assert isinstance(app.screen, ResultsScreen) and app.session.path == other.path
            assert app.plan.rates == [0.75, 0.5, 0.25] and not app.plan_edited
            app.open_path(str(other.path))  # no edits now: opens without asking
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmModal)

    drive(go())


def test_ctrl_r_after_a_cancel_offers_resume_or_a_fresh_session(tmp_path):
    runner = FakeRunner(pause_after=6)
    stamps = itertools.count(1)

    async def go():
        app = make_app(tmp_path, runner, stamp=lambda: f"t{next(stamps)}")
        async with app.run_test(size=(100, 30)) as pilot:
            from screens.dialogs import ChoiceModal

            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(pilot, runner.paused.is_set, what="the run to hold")
            await pilot.press("escape")
            await run_to_end(pilot)
            runner.pause_after = set()  # later runs go straight through
            first = app.session.path
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert isinstance(app.screen, ChoiceModal)
            assert "1/19 cells done, 18 to run" in str(app.screen.query_one(".title").render())
            await pilot.press("r")
            await run_to_end(pilot)
            assert len(runner.calls) == 2 and runner.calls[1].path == first  # resumed in place
            assert app.run_state.status == "finished" and Session.load(first).status == "finished"
            assert [e.data["todo"] for e in runner.events if e.kind == "run-started"] == [19, 18]
            await pilot.press("ctrl+r")  # a finished session: nothing to resume, a fresh run at once
            await pilot.pause()
            assert not isinstance(app.screen, ChoiceModal)
            await run_to_end(pilot)
            assert app.session.path != first and len(runner.calls) == 3

    drive(go())


def test_start_fresh_after_a_cancel_writes_a_new_session_file(tmp_path):
    runner = FakeRunner(pause_after=6)
    stamps = itertools.count(1)

    async def go():
        app = make_app(tmp_path, runner, stamp=lambda: f"t{next(stamps)}")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(pilot, runner.paused.is_set, what="the run to hold")
            await pilot.press("escape")
            await run_to_end(pilot)
            first = app.session.path
            await pilot.press("ctrl+r")
            await pilot.pause()
            await pilot.press("f")
            await wait_for(pilot, runner.paused.is_set, what="the fresh run to hold")
            assert app.session.path != first and Session.load(first).status == "cancelled"  # the old one kept
            await pilot.press("escape")
            await run_to_end(pilot)

    drive(go())


def test_the_palette_resumes_a_cancelled_run(tmp_path):
    runner = FakeRunner(pause_after=6)

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "run: resume" in titles
            app.action_resume_run()  # nothing yet: says so, runs nothing
            await pilot.pause()
            assert runner.calls == []
            await pilot.press("ctrl+r")
            await wait_for(pilot, runner.paused.is_set, what="the run to hold")
            await pilot.press("escape")
            await run_to_end(pilot)
            runner.pause_after = set()
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"run: resume")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await run_to_end(pilot)
            assert len(runner.calls) == 2 and runner.calls[1] is runner.calls[0]  # the same session, resumed
            assert app.run_state.status == "finished"

    drive(go())


def test_one_count_of_cells_in_the_open_dialog_results_progress_and_the_report(tmp_path):
    folder = tmp_path / "sessions"
    failed = saved_session(folder / "failed.json", runner=FakeRunner(fail={m: "boom" for m in
                                                                     ("baseline", "random-kv", "streaming-llm", "snapkv",
                                                                      "expected-attention", "knorm", "tova")}))
    mixed = saved_session(folder / "mixed.json", runner=FakeRunner(unavailable={"tova": "needs the hub"}))

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, lambda: app.plan is not None, what="the plan")
            await pilot.press("ctrl+o")
            await pilot.pause()
            options = app.screen.query_one("#choices")
            labels = {str(options.get_option_at_index(i).prompt).split()[0]: str(options.get_option_at_index(i).prompt)
                      for i in range(options.option_count)}
            assert "[finished, 0/19 cells done, 19 failed]" in labels["failed.json"]
            assert "[finished, 16/19 cells done, 3 unavailable]" in labels["mixed.json"]
            app.screen.query_one("#path").value = str(mixed.path)
            await pilot.press("enter")
            await pilot.pause()
            assert str(app.screen.query_one("#bar").render()).startswith("16/19 cells done, 3 unavailable ·")
            await pilot.press("f3")
            await pilot.pause()
            assert str(app.screen.query_one("#cell-text").render()) == "16/19 cells done, 3 unavailable"

    drive(go())
    assert report.text_table(mixed).rstrip().endswith("16/19 cells done, 3 unavailable")
    assert report.text_table(failed).rstrip().endswith("0/19 cells done, 19 failed")
