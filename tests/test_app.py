"""The Textual app driven like a user drives it (Pilot key presses) against the fast fake runner."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading


from test_app_fakes import (DEMO_PLAN, FakeRunner, highlight_method, make_app, run_and_show_results, run_to_end, saved_session,
                            wait_for)
from workbench import tables
from workbench.plan import load_preset, parse_plan
from workbench.session import Session

def drive(coro):
    """Run one Pilot session (no pytest-asyncio needed: each test owns its event loop)."""
    return asyncio.run(coro)


def test_importing_the_app_loads_neither_torch_nor_plotext():
    code = ("import sys, screens.app; bad = [m for m in ('torch', 'transformers', 'kvpress', 'textual_plotext') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_engine_modules_do_not_import_textual():
    code = ("import sys, workbench.runner, workbench.session, workbench.plan, workbench.report, workbench.cli; "
            "sys.exit(1 if 'textual' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_opens_on_setup_with_the_quickstart_preset(tmp_path):
    quickstart = load_preset("quickstart")

    async def go():
        app = make_app(tmp_path, preset="quickstart")
        async with app.run_test(size=(80, 24)) as pilot:
            from screens.setup import SetupScreen

            await wait_for(pilot, lambda: isinstance(app.screen, SetupScreen), what="setup")
            await wait_for(pilot, lambda: "cells" in str(app.screen.query_one("#summary").render()), what="the check")
            assert app.plan is not None and app.plan.to_dict() == quickstart.to_dict()  # the form round-trips it
            summary = str(app.screen.query_one("#summary").render())
            assert f"{len(quickstart.cells())} cells" in summary
            assert f"≈{quickstart.forward_passes()['total']} forward passes" in summary
            assert app.screen.query_one("#model").value == "smollm2-135m"
            await wait_for(pilot, lambda: app.device_info is not None, what="device probe")
            await pilot.pause()
            assert "runs on cpu · float32" in str(app.screen.query_one("#device-info").render())

    drive(go())


def test_invalid_rate_is_flagged_in_place_and_nothing_runs(tmp_path):
    runner = FakeRunner()

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            setup = app.screen
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            rates = setup.query_one("#rates-list")
            rates.focus()
            rates.value = ""
            await pilot.press(*"0.5, 1.5")
            await pilot.pause()
            assert rates.has_class("-invalid")
            assert app.plan is None and "Rates (kept), second value" in app.plan_error  # the field as Setup names it
            assert "must be in (0, 1]" in str(setup.query_one("#summary").render())
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert runner.calls == []  # invalid input never reaches the runner
            await pilot.press("backspace", "backspace", "backspace", *"0.25")
            await pilot.pause()
            assert not rates.has_class("-invalid")
            assert app.plan.rates == [0.5, 0.25]
            assert "13 cells" in str(setup.query_one("#summary").render())

    drive(go())


def test_batch_size_field_reaches_the_plan_and_bad_values_are_flagged(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            setup = app.screen
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            field = setup.query_one("#batch-size")
            assert field.value == "auto" and app.plan.batch_size == "auto"
            field.focus()
            field.value = ""
            await pilot.press(*"lots")
            await pilot.pause()
            assert field.has_class("-invalid") and app.plan is None and "Batch size" in app.plan_error
            field.value = ""
            await pilot.press("8")
            await pilot.pause()
            assert not field.has_class("-invalid") and app.plan.batch_size == 8

    drive(go())


def test_editing_the_form_updates_cells_and_forward_passes(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            setup = app.screen
            setup.query_one("#tabs").active = "tab-datasets"
            await pilot.pause()
            setup.query_one("#ds-tinystories").value = True  # a second dataset doubles the grid
            await pilot.pause()
            assert len(app.plan.cells()) == 38
            samples = setup.query_one("#ds-wikitext2-samples")
            samples.value = "x"
            await pilot.pause()
            assert samples.has_class("-invalid") and app.plan is None
            samples.value = "2"
            await pilot.pause()
            assert app.plan.datasets[0].samples == 2
            assert f"≈{app.plan.forward_passes()['total']} forward passes" in str(setup.query_one("#summary").render())
            # Sweep mode: start/stop/step resolved by the engine's own rule.
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            setup.query_one("#rates-as-sweep").value = True
            await pilot.pause()
            setup.query_one("#sweep-start").value = "0.9"
            setup.query_one("#sweep-stop").value = "0.1"
            setup.query_one("#sweep-step").value = "0.2"
            await pilot.pause()
            assert app.plan.rates == [0.9, 0.7, 0.5, 0.3, 0.1]
            setup.query_one("#proto-chunked").value = True
            await pilot.pause()
            assert app.plan.protocol.name == "chunked" and app.plan.protocol.chunk_size == 128
            assert setup.query_one("#chunk-row").display

    drive(go())


def test_methods_toggle_with_space_and_parameters_are_edited_in_place(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            setup = app.screen
            methods = await highlight_method(pilot, setup, "observed-attention")
            methods.focus()
            await pilot.pause()
            await pilot.press("space")
            await pilot.pause()
            assert "observed-attention" in [m.label for m in app.plan.methods]
            assert len(app.plan.cells()) == 22
            # The editor shows the highlighted method's parameters; n_sink of streaming-llm set to 8.
            await highlight_method(pilot, setup, "streaming-llm")
            n_sink = next(i for i in setup.query("#editor Input") if i.name.endswith("|n_sink"))
            n_sink.value = "8"
            await pilot.pause()
            assert app.plan.method("streaming-llm").params["n_sink"] == 8
            # A label clash is the engine's error, flagged on the method list.
            label = next(i for i in setup.query("#editor Input") if i.name.endswith("|label"))
            label.value = "snapkv"
            await pilot.pause()
            assert app.plan is None and "labelled 'snapkv'" in app.plan_error
            assert methods.has_class("-invalid")
            label.value = ""
            await pilot.pause()
            assert app.plan is not None
            await pilot.press("space")  # streaming-llm out again
            await pilot.pause()
            assert "streaming-llm" not in [m.label for m in app.plan.methods]

    drive(go())


def test_loading_a_preset_fills_the_form(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.screen.query_one("#preset").value = "kv-compare"
            await pilot.pause()
            await pilot.pause()
            assert app.plan.name == "kv-compare" and app.plan.protocol.name == "chunked"
            assert app.screen.query_one("#proto-chunked").value
            assert app.screen.query_one("#chunk-size").value == "128"

    drive(go())


def test_a_run_happens_in_a_worker_thread_and_fills_plots_and_table(tmp_path):
    runner = FakeRunner()

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            from screens.run import RunScreen

            assert isinstance(app.screen, RunScreen)
            assert runner.thread != threading.current_thread().name
            assert app.run_state.status == "finished"
            assert all(c["status"] == "done" for c in app.cells.values()) and len(app.cells) == 19
            app.screen.redraw()
            plot = app.screen.query_one("#quality-plot")
            assert set(plot.lines) == {"random-kv", "streaming-llm", "snapkv", "expected-attention", "knorm", "tova"}
            assert app.run_state.done == app.run_state.total == 76
            assert (tmp_path / "sessions" / "demo-test.json").is_file()  # the runner saved it
            await pilot.press("f4")
            await pilot.pause()
            table = app.screen.query_one("DataTable")
            assert table.row_count == 19

    drive(go())


def test_progress_messages_are_throttled_but_cell_results_all_arrive(tmp_path):
    runner = FakeRunner()

    async def go():
        app = make_app(tmp_path, runner, progress_interval=10.0)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            sent = sum(1 for e in runner.events if e.kind == "progress")
            delivered = app.run_state.delivered
            assert sent == 28 and delivered["progress"] <= 2  # one per sample and method
            assert delivered["cell-finished"] == 19 and delivered["run-finished"] == 1

    drive(go())


def test_a_failing_cell_shows_in_place_and_the_run_goes_on(tmp_path):
    runner = FakeRunner(fail={"snapkv": "RuntimeError: shapes do not match (at forward, x.py:1)"},
                        unavailable={"tova": "needs artefacts from the hub"})

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            statuses = {c["method"]: c["status"] for c in app.cells.values()}
            assert statuses["snapkv"] == "error" and statuses["tova"] == "unavailable" and statuses["knorm"] == "done"
            log = "\n".join(text for _, text in app.run_state.log)
            assert "snapkv @ 0.50: error: RuntimeError: shapes do not match" in log
            assert app.run_state.status == "finished"  # errors of cells do not stop the run
            await pilot.press("f4")
            await pilot.pause()
            results = app.screen
            row = next(i for i, c in enumerate(results.order) if c["method"] == "snapkv")
            results.query_one("DataTable").move_cursor(row=row)
            await pilot.pause()
            assert "shapes do not match" in str(results.query_one("#detail").render())

    drive(go())


def test_a_worker_failure_opens_the_error_modal_with_the_session_path(tmp_path):
    runner = FakeRunner(raise_at="model")

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            from screens.dialogs import ErrorModal

            await wait_for(pilot, lambda: isinstance(app.screen, ErrorModal), what="the error modal")
            modal = app.screen
            assert "RuntimeError: could not load smollm2-135m: fake failure" in str(modal.query_one("#error-message").render())
            assert "demo-test.json" in str(modal.query_one("#error-path").render())
            assert app.run_state.status == "failed"
            await pilot.press("enter")
            await pilot.pause()
            assert not isinstance(app.screen, ErrorModal)

    drive(go())


def test_cancel_keeps_finished_cells(tmp_path):
    runner = FakeRunner(pause_after=6)  # baseline (4 samples) done, random-kv half way

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(pilot, runner.paused.is_set, what="the run to pause")
            await pilot.pause()
            assert app.run_state.active
            await pilot.press("escape")
            await run_to_end(pilot)
            assert app.run_state.status == "cancelled"
            statuses = {c["method"]: c["status"] for c in app.cells.values()}
            assert statuses["baseline"] == "done" and statuses["random-kv"] == "cancelled"
            assert statuses["knorm"] == "pending"
            on_disk = Session.load(tmp_path / "sessions" / "demo-test.json")
            assert on_disk.status == "cancelled"
            assert on_disk.baseline_cell("smollm2-135m", "wikitext2")["samples_done"] == 4

    drive(go())


def test_save_then_open_round_trips(tmp_path):
    target = tmp_path / "kept" / "mine.json"

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            await pilot.press("ctrl+s")
            await pilot.pause()
            field = app.screen.query_one("#path")
            assert field.value.endswith("demo-test.json")  # the default: where the run wrote it
            field.value = str(target)
            await pilot.press("enter")
            await pilot.pause()
            assert target.is_file()
            return {k: c["ppl"] for k, c in app.cells.items()}

    ppl = drive(go())
    runner = FakeRunner()

    async def reopen():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+o")
            await pilot.pause()
            app.screen.query_one("#path").value = str(target)
            await pilot.press("enter")
            await pilot.pause()
            from screens.results import ResultsScreen

            assert isinstance(app.screen, ResultsScreen)
            assert {k: c["ppl"] for k, c in app.cells.items()} == ppl
            assert runner.calls == []  # a finished session is shown, not recomputed
            assert app.screen.query_one("DataTable").row_count == 19

    drive(reopen())


def test_save_asks_before_overwriting(tmp_path):
    existing = tmp_path / "old.json"
    existing.write_text("{}")

    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            from screens.dialogs import ConfirmModal

            await pilot.pause()
            for answer in ("n", "y"):
                await pilot.press("ctrl+s")
                await pilot.pause()
                app.screen.query_one("#path").value = str(existing)
                await pilot.press("enter")
                await pilot.pause()
                assert isinstance(app.screen, ConfirmModal)
                await pilot.press(answer)
                await pilot.pause()
                if answer == "n":
                    assert existing.read_text() == "{}"
            assert Session.load(existing).plan.name == "demo"  # the plan, saved as a pending session

    drive(go())


def test_opening_an_unfinished_session_offers_to_resume(tmp_path):
    path = tmp_path / "half.json"
    first = FakeRunner(pause_after=6)
    cancel = threading.Event()
    plan = parse_plan(DEMO_PLAN, source="test")
    thread = threading.Thread(target=lambda: first(Session(plan, path), cancel=cancel, out=str(path)))
    thread.start()
    first.paused.wait(10)
    cancel.set()
    thread.join(10)
    assert Session.load(path).status == "cancelled"
    runner = FakeRunner()

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            from screens.dialogs import ConfirmModal

            await pilot.pause()
            app.open_path(str(path))
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal) and "unfinished" in str(app.screen.query_one(".title").render())
            await pilot.press("y")
            await run_to_end(pilot)
            assert runner.calls and runner.calls[0].path == path  # resumed in place
            resumed = runner.calls[0]
            assert all(c["status"] == "done" for c in resumed.cells.values())
            skipped = [e for e in runner.events if e.kind == "run-started"][0]
            assert skipped.data["todo"] == 18  # the baseline was kept

    drive(go())


def test_results_sort_by_column_keys(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            results = await run_and_show_results(pilot)
            index = [c.key for c in results.columns].index("dppl")
            await pilot.press(str(index + 1))
            await pilot.pause()
            values = [c["delta_ppl"] or 0.0 for c in results.order]
            assert values == sorted(values) and results.sort_key == "dppl"
            await pilot.press(str(index + 1))  # again: reversed
            await pilot.pause()
            values = [c["delta_ppl"] or 0.0 for c in results.order]
            assert values == sorted(values, reverse=True)
            first_cell = results.query_one("DataTable").get_row_at(0)
            assert str(first_cell[0]).strip() == results.order[0]["method"]
            await pilot.press("s")  # the next column
            await pilot.pause()
            assert results.sort_key == results.columns[index + 1].key
            await pilot.press("p")
            await pilot.pause()
            assert results.query_one("ContentSwitcher").current == "plots"

    drive(go())


def test_command_palette_has_the_app_commands_and_runs_them(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for name in ("run: start", "run: cancel", "session: save", "session: open", "view: results", "view: compare",
                         "view: inspect", "view: help"):
                assert name in titles
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"view: results")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await pilot.pause()
            from screens.results import ResultsScreen

            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), what="results via the palette")

    drive(go())


def test_help_opens_with_f1_and_question_mark(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            from screens.help import HelpScreen

            await pilot.pause()
            await pilot.press("f1")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            await pilot.press("escape")
            await pilot.pause()
            await pilot.press("f4")  # no input has focus on Results: ? is free for help
            await pilot.pause()
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)

    drive(go())


PROMPT_PLAN = {"name": "prompt", "model": "smollm2-135m", "datasets": [{"name": "meetingbank", "samples": 2}],
               "protocol": {"context_tokens": 256, "continuation_tokens": 32}, "rates": [0.5, 0.25],
               "methods": [{"name": "random", "family": "prompt"}, "naive", "snapkv"]}


def test_inspect_strikes_out_what_prompt_compressors_dropped(tmp_path):
    session = saved_session(tmp_path / "prompt.json", plan_doc=PROMPT_PLAN)

    async def go():
        app = make_app(tmp_path, session=session)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            await pilot.press("f6")
            await pilot.pause()
            panels = list(app.screen.query(".panel"))
            assert len(panels) == 2  # the two prompt compressors at the first rate; the press has no text
            body = panels[0].query_one("Static").render()
            struck = [span for span in body.spans if "strike" in str(span.style)]
            assert struck, "dropped spans are struck out"
            await pilot.press("right_square_bracket")
            await pilot.pause()
            samples = app.screen._samples
            assert len(samples) == 2 and app.screen.query_one("#sample").value == samples[1]  # ] moved to the next one

    drive(go())


def test_inspect_explains_when_there_is_nothing_to_show(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("f6")
            await pilot.pause()
            assert "No prompt-compression cells in this session" in str(app.screen.query_one("#empty").render())

    drive(go())


def test_compare_puts_sessions_side_by_side_and_highlights_differences(tmp_path):
    a = saved_session(tmp_path / "sessions" / "a.json")
    b = saved_session(tmp_path / "sessions" / "b.json")
    # Make b differ: its knorm is worse (as if run on another model).
    for cell in b.cells.values():
        if cell["method"] == "knorm":
            for s in cell["samples"]:
                s["nll_sum"] *= 1.1
            b.refresh(cell["key"])
    b.save()

    async def go():
        app = make_app(tmp_path, session=a.path.as_posix())
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("f5")
            await pilot.pause()
            screen = app.screen
            assert len(screen.sessions) == 1
            await pilot.press("a")
            await pilot.pause()
            app.screen.query_one("#path").value = str(b.path)
            await pilot.press("enter")
            await pilot.pause()
            assert [s.path.name for s in screen.sessions] == ["a.json", "b.json"]
            plots = list(screen.query("MetricPlot"))
            assert len(plots) == 2
            table = screen.query_one("DataTable")
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            knorm = [r for r in rows if str(r[0]) == "knorm"]  # one dataset: no Dataset column
            assert knorm and all("green" in str(r[2].style) and "red" in str(r[3].style) for r in knorm)
            same = [r for r in rows if str(r[0]) == "snapkv"]
            assert all(str(r[2].style) == "" for r in same)  # identical values are not highlighted

    drive(go())


def test_quitting_during_a_run_asks_first(tmp_path):
    runner = FakeRunner(pause_after=2)

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            from screens.dialogs import ConfirmModal

            await pilot.pause()
            await pilot.press("ctrl+r")
            await wait_for(pilot, runner.paused.is_set, what="the run to pause")
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("n")
            await pilot.pause()
            assert app.run_state.active
            await pilot.press("ctrl+q")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            assert app._cancel.is_set()

    drive(go())


def test_run_app_refuses_a_broken_session_file(tmp_path, capsys):
    from screens.app import run_app

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run_app(str(bad)) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_task_protocol_from_the_form_and_task_scores_in_results(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            setup = app.screen
            setup.query_one("#tabs").active = "tab-datasets"
            await pilot.pause()
            setup.query_one("#ds-wikitext2").value = False
            setup.query_one("#ds-gsm8k").value = True
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            setup.query_one("#proto-task").value = True
            await pilot.pause()
            assert setup.query_one("#task-rows").display and not setup.query_one("#chunk-row").display
            setup.query_one("#max-new-tokens").value = "16"
            setup.query_one("#n-shots").value = "2"
            await pilot.pause()
            assert app.plan is not None, app.plan_error
            assert (app.plan.protocol.name, app.plan.protocol.max_new_tokens, app.plan.protocol.n_shots) == ("task", 16, 2)
            setup.query_one("#depths").value = "0.5, 2"  # a depth outside [0, 1]: the engine's error, in place
            await pilot.pause()
            assert app.plan is None and setup.query_one("#depths").has_class("-invalid")
            setup.query_one("#depths").value = ""
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            app.screen.redraw()
            assert app.screen.query_one("#quality-plot").metric == "score"  # ΔPPL means nothing here
            await pilot.press("f4")
            await pilot.pause()
            keys = [c.key for c in app.screen.columns]
            assert "score" in keys and "dscore" in keys and "ppl" not in keys

    drive(go())


def test_plot_series_start_at_the_baseline_and_sorting_puts_missing_values_last():
    from screens import data

    session = saved_session(None, runner=FakeRunner(fail={"snapkv": "boom"}))
    cells = list(session.cells.values())
    lines = data.series(cells, "dppl")
    assert "snapkv" not in lines and "baseline" not in lines  # failed cells and the reference are no lines
    assert all(pts[-1] == (1.0, 0.0) for pts in lines.values())  # each line ends at the baseline point
    assert [x for x, _ in lines["knorm"]] == [0.25, 0.5, 0.75, 1.0]
    ordered = tables.sort_cells(cells, "dppl", reverse=True)
    assert [c["method"] for c in ordered[-3:]] == ["snapkv"] * 3  # no figure: last, in either direction
    assert [c["key"] for c in tables.sort_cells(cells, "dppl")[-3:]] == [c["key"] for c in ordered[-3:]]
