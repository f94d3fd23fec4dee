"""The Progress view during and after a run: live sample counts, elapsed time and ETA, how a run ended, an
opened session's own counts, a failed model load, and the plots' markers. The fake runner holds at chosen
samples, so the screen is looked at in the middle of a run; its clock is the app's, so times are exact."""

from __future__ import annotations

import asyncio

from test_app_fakes import FakeRunner, make_app, run_to_end, saved_session, wait_for
from workbench import figures

TOTAL = 76  # samples of the demo plan: 19 cells × 4


def drive(coro):
    return asyncio.run(coro)


def label(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def hold(pilot, runner) -> None:
    await wait_for(pilot, runner.paused.is_set, what="the fake runner to hold")
    await pilot.pause(0.05)


async def go_on(pilot, runner) -> None:
    held = runner.holds
    runner.resume.set()
    await wait_for(pilot, lambda: runner.holds > held, what="the fake runner to go on")


def test_progress_follows_the_run_sample_by_sample(tmp_path):
    """Fails when progress events do not reach the screen: counts are looked at while the run holds."""
    runner = FakeRunner(pause_after=(6, 13))

    async def go():
        app = make_app(tmp_path, runner, progress_interval=0)  # no throttle: every sample's report arrives
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            seen = []
            for _ in range(2):
                await hold(pilot, runner)
                expected = figures.sample_counts(runner.calls[0].cells.values())[0]
                assert 0 < expected < TOTAL
                assert app.run_state.done == expected
                assert label(app, "#run-text").startswith(f"{expected}/{TOTAL} samples")
                assert app.screen.query_one("#run-bar").progress == expected
                assert app.screen.query_one("#cell-bar").progress > 0  # the current cell's own samples
                seen.append(expected)
                await go_on(pilot, runner)
            await run_to_end(pilot)
            assert seen[0] < seen[1]
            assert app.run_state.delivered["progress"] == sum(1 for e in runner.events if e.kind == "progress")

    drive(go())


def test_elapsed_moves_during_model_loading_and_the_eta_is_the_pace_of_samples(tmp_path):
    runner = FakeRunner(pause_in_load=True, load_seconds=10.0, pause_after=1)

    async def go():
        app = make_app(tmp_path, runner, progress_interval=0)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await hold(pilot, runner)  # loading the model: no sample yet
            runner.now = 7.0
            # The one-second timer on the main thread moves the elapsed time; there is no ETA without a sample.
            await wait_for(pilot, lambda: "0m07s elapsed" in label(app, "#run-text"), timeout=3, what="the clock to tick")
            assert "ETA —" in label(app, "#run-text") and label(app, "#cell-text") == "loading smollm2-135m"
            runner.now = 0.0
            await go_on(pilot, runner)
            await hold(pilot, runner)  # one sample done, 0.5 s after a 10 s load
            text = label(app, "#run-text")
            assert text.startswith(f"1/{TOTAL} samples · 0m10s elapsed")
            assert "ETA 0m38s" in text  # 75 samples left at 0.5 s each (not 10.5 s each: the load is not a sample)
            runner.now += 10.0  # ten seconds later, still at one sample: the ETA counts down
            app.screen.update_labels()
            assert "ETA 0m28s" in label(app, "#run-text")
            await pilot.press("escape")
            await run_to_end(pilot)

    drive(go())


def test_a_cancelled_run_says_so_keeps_no_eta_and_counts_its_cells(tmp_path):
    runner = FakeRunner(pause_after=6)

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await hold(pilot, runner)
            assert "escape" in app.screen.active_bindings  # "Cancel run" is offered while a run is active
            await pilot.press("escape")
            await run_to_end(pilot)
            assert label(app, "#status").startswith("■ cancelled after 0m03s (ctrl+r resumes)")
            assert "ETA" not in label(app, "#run-text")
            assert label(app, "#run-text").startswith(f"10/{TOTAL} samples measured")
            assert label(app, "#cell-text") == "1/19 cells done, 18 to run"
            assert "escape" not in app.screen.active_bindings  # nothing to cancel: not in the footer

    drive(go())


def test_a_finished_run_says_how_it_ended(tmp_path):
    runner = FakeRunner(fail={"snapkv": "boom"}, unavailable={"tova": "needs the hub"})

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            assert label(app, "#status").startswith("✓ finished in 0m10s · demo")
            assert label(app, "#run-text") == f"52/{TOTAL} samples measured · 0m10s elapsed"
            assert label(app, "#cell-text") == "13/19 cells done, 3 failed, 3 unavailable"
            assert app.screen.query_one("#cell-bar").percentage == 1.0
            assert "no cell running" not in label(app, "#cell-text")

    drive(go())


def test_an_opened_session_shows_its_own_counts(tmp_path):
    session = saved_session(tmp_path / "done.json", runner=FakeRunner(unavailable={"tova": "needs the hub"}))

    async def go():
        app = make_app(tmp_path, session=session)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session")
            await pilot.press("f3")
            await pilot.pause()
            assert label(app, "#status").startswith("✓ finished (opened from its file) · demo")
            assert label(app, "#run-text") == f"64/{TOTAL} samples measured"
            assert label(app, "#cell-text") == "16/19 cells done, 3 unavailable"
            assert "idle" not in label(app, "#status") and "0/0" not in label(app, "#run-text")

    drive(go())


def test_a_failed_model_load_says_it_failed_with_the_whole_message(tmp_path):
    message = ("The model 'nonexistent-org/model' is not in the local Hugging Face cache and the hub could not be "
               "reached. To fix it: run once with network access, or download it with `hf download "
               "nonexistent-org/model`, or pass a local model folder or .gguf file instead. END-OF-MESSAGE")
    runner = FakeRunner(raise_at="model", raise_message=message)

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            from screens.dialogs import ErrorModal

            await wait_for(pilot, lambda: isinstance(app.screen, ErrorModal), what="the error modal")
            await pilot.press("enter")
            await pilot.pause()
            assert label(app, "#status").startswith("✗ failed")
            assert label(app, "#device").startswith("✗ smollm2-135m could not be loaded")
            assert "loading" not in label(app, "#device") and "loading" not in label(app, "#cell-text")
            log = app.screen.query_one("#log")
            text = " ".join(str(line.text).strip() for line in log.lines)
            assert "END-OF-MESSAGE" in text and max(len(line.text) for line in log.lines) <= 80  # wrapped, not cut
            assert app.screen.has_class("-failed")  # the plots give their room to the message

    drive(go())


def test_a_method_keeps_its_marker_and_colour_for_the_whole_run(tmp_path):
    runner = FakeRunner(pause_after=9)  # baseline and random-kv done, streaming-llm under way

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await hold(pilot, runner)
            app.screen.redraw()
            early = dict(app.screen.query_one("#legend").styles_shown)
            assert list(early) == ["random-kv"]
            await go_on(pilot, runner)
            await run_to_end(pilot)
            app.screen.redraw()
            late = app.screen.query_one("#legend").styles_shown
            assert late["random-kv"] == early["random-kv"]
            assert list(late) == ["random-kv", "streaming-llm", "snapkv", "expected-attention", "knorm", "tova"]  # plan order

    drive(go())
