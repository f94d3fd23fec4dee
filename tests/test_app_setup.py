"""The Setup view as a newcomer meets it: no error before the preset is in, the model checked for availability
in place, errors naming what the user typed, ctrl+n through every tab, plain wording."""

from __future__ import annotations

import asyncio

from test_app_fakes import FakeRunner, highlight_method, make_app, run_and_show_results, run_to_end, setup_ready, wait_for


def drive(coro):
    return asyncio.run(coro)


def text(widget) -> str:
    return str(widget.render())


def test_the_first_frames_show_no_error_before_the_preset_is_in(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            shown = [text(app.screen.query_one("#summary"))]
            while "cells" not in shown[-1] and len(shown) < 5000:
                await pilot.pause(0)
                shown.append(text(app.screen.query_one("#summary")))
            assert not [s for s in shown if s.startswith("✗")], shown
            assert "✓ demo" in shown[-1]

    drive(go())


def test_an_unknown_hub_model_is_flagged_on_setup_and_does_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the real check: not in the local cache, hub switched off
    runner = FakeRunner()

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            setup = app.screen
            model_line = setup.query_one("#model-kind")
            await wait_for(pilot, lambda: text(model_line).startswith("✓ embedded model"), what="the embedded model's check")
            setup.query_one("#model").value = "nonexistent-org/nonexistent-model-xyz"
            await pilot.pause()
            assert text(model_line).startswith("checking whether nonexistent-org/nonexistent-model-xyz can be loaded")
            await wait_for(pilot, lambda: text(model_line).startswith("✗"), what="the hub id's check")
            assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in text(model_line)
            summary = text(setup.query_one("#summary"))
            assert summary.startswith("✗ model:") and "ctrl+r runs it" not in summary
            assert setup.query_one("#model").has_class("-invalid")
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert runner.calls == []  # refused on Setup, not 13 s into a run
            setup.query_one("#model").value = "smollm2-135m"
            await wait_for(pilot, lambda: text(model_line).startswith("✓"), what="the embedded model again")
            assert app.model_problem is None and "ctrl+r runs it" in text(setup.query_one("#summary"))

    drive(go())


def test_a_missing_local_model_folder_is_flagged_in_place(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            app.screen.query_one("#model").value = str(tmp_path / "no-such-folder")
            await pilot.pause()
            assert app.plan is None and "does not exist" in app.plan_error  # the engine's own rule, at once
            assert text(app.screen.query_one("#summary")).startswith("✗ Model: The model path")

    drive(go())


def test_plan_errors_name_the_method_and_field_as_setup_shows_them(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            setup = app.screen
            await highlight_method(pilot, setup, "snapkv")
            rates = next(i for i in setup.query("#editor Input") if i.name.endswith("|rates"))
            rates.value = "0.5, 2"
            await pilot.pause()
            summary = text(setup.query_one("#summary"))
            assert "methods[" not in summary and "rates[" not in summary
            assert summary.startswith("✗ Methods tab, method 'snapkv', its rates (second value): a rate is the fraction")
            rates.value = ""
            setup.query_one("#tabs").active = "tab-datasets"
            await pilot.pause()
            setup.query_one("#ds-wikitext2-samples").value = "0"
            await pilot.pause()
            assert text(setup.query_one("#summary")).startswith("✗ Datasets tab, wikitext2, samples: must be at least 1")
            setup.query_one("#ds-wikitext2-samples").value = "4"
            setup.query_one("#tabs").active = "tab-rates"
            await pilot.pause()
            setup.query_one("#context-tokens").value = "4"
            await pilot.pause()
            assert text(setup.query_one("#summary")).startswith("✗ Context tokens: must be at least 8")

    drive(go())


def test_ctrl_n_goes_through_every_tab_from_anywhere(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            tabs = app.screen.query_one("#tabs")
            tabs.active = "tab-methods"
            await pilot.pause()
            app.screen.query_one("#methods").focus()  # the list that swallowed ctrl+n
            await pilot.pause()
            seen = []
            for _ in range(4):
                await pilot.press("ctrl+n")
                await pilot.pause(0.1)
                seen.append(tabs.active)
            assert seen == ["tab-rates", "tab-plan", "tab-datasets", "tab-methods"]
            await pilot.pause(0.3)
            assert tabs.active == "tab-methods"  # no snapping back to where the focus was

    drive(go())


def test_the_methods_pane_says_how_a_method_takes_the_rate(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            setup = app.screen
            setup.query_one("#tabs").active = "tab-methods"
            await pilot.pause()
            methods = setup.query_one("#methods")
            labels = [str(methods.get_option_at_index(i).prompt) for i in range(methods.option_count)]
            for name, wording in (("naive", "uses the rate as it is (fraction kept)"), ("snapkv", "compression_ratio = 1 − rate")):
                methods.highlighted = labels.index(name)
                await pilot.pause()
                summary = text(setup.query_one(".method-summary"))
                assert wording in summary and "rate → rate" not in summary

    drive(go())


def test_the_results_detail_line_says_what_a_row_is(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            results = await run_and_show_results(pilot)
            results.query_one("DataTable").move_cursor(row=[c["method"] for c in results.order].index("baseline"))
            await pilot.pause()
            detail = text(results.query_one("#detail"))
            assert detail.startswith("baseline (uncompressed reference) on wikitext2") and "(baseline, baseline)" not in detail
            results.query_one("DataTable").move_cursor(row=[c["method"] for c in results.order].index("random-kv"))
            await pilot.pause()
            assert text(results.query_one("#detail")).startswith("random-kv = random (KV press) on wikitext2")

    drive(go())


def test_ctrl_r_during_the_model_check_waits_for_its_answer(tmp_path):
    import threading
    import time

    from workbench.model_check import ModelCheck

    answered = threading.Event()

    def slow_check(spec: str) -> ModelCheck:
        answered.wait(10)  # the hub probe: seconds
        ok = spec == "smollm2-135m"
        return ModelCheck(ok, "hub" if "/" in spec else "embedded", "fine" if ok else f"'{spec}' is not cached here")

    runner = FakeRunner()

    async def go():
        app = make_app(tmp_path, runner, model_check=slow_check)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.plan is not None and app.screen._filled, what="Setup")
            app.screen.query_one("#model").value = "someone/unknown-model"
            await pilot.pause(0.5)  # the check has started and waits
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert runner.calls == [] and app.run_after_model_check
            answered.set()
            await wait_for(pilot, lambda: not app.model_checking, what="the check")
            await pilot.pause()
            assert runner.calls == [] and app.model_problem == "'someone/unknown-model' is not cached here"
            answered.clear()
            app.screen.query_one("#model").value = "smollm2-135m"
            await pilot.pause(0.5)
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert runner.calls == []
            started = time.monotonic()
            answered.set()
            await wait_for(pilot, lambda: runner.calls, what="the run, once the check said yes")
            assert time.monotonic() - started < 5
            await run_to_end(pilot)

    drive(go())
