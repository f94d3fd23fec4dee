"""Snapshots of every screen (pytest-textual-snapshot), at 80×24 — the size that must stay usable — and
at 200×60. Update after a deliberate change with ``pytest tests/test_app_snapshots.py --snapshot-update``
and look at the SVGs under tests/__snapshots__/ before committing them.

Everything on screen is made deterministic: the fake runner's figures and clock, a fixed device probe
and memory line, a fixed session stamp, relative paths (the test runs in its own folder), no toasts.
"""

from __future__ import annotations

import pytest

from test_app_fakes import FakeRunner, make_app, run_to_end, saved_session, wait_for

PROMPT_PLAN = {"name": "prompt", "model": "smollm2-135m", "datasets": [{"name": "meetingbank", "samples": 2}],
               "protocol": {"context_tokens": 256, "continuation_tokens": 32}, "rates": [0.5, 0.25],
               "methods": [{"name": "random", "family": "prompt"}, "naive"]}


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths on screen are relative: sessions/…
    return tmp_path


def app_for(runner=None, **kwargs):
    return make_app(None, runner, sessions_dir="sessions", **kwargs)


async def settle(pilot) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.device_info is not None, what="the device probe")
    await wait_for(pilot, lambda: app.plan is not None and (app._initial is None or app.session is not None),
                   what="the plan (and the session) to load")
    await wait_for(pilot, lambda: not app.model_checking, what="Setup's model check")
    await pilot.pause(0.1)
    app.clear_notifications()
    await pilot.pause(0.1)


async def run_fake(pilot) -> None:
    await settle(pilot)
    await pilot.press("ctrl+r")
    await run_to_end(pilot)
    await pilot.pause(0.4)  # the plot timer redraws at most four times a second
    await settle(pilot)


FAILING = dict(fail={"snapkv": "RuntimeError: shapes do not match (at forward, kv_eval.py:120)"},
               unavailable={"tova": "needs artefacts from the Hugging Face hub; not reachable here"})


def test_setup_80x24(snap_compare, here):
    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=settle)


def test_setup_methods_80x24(snap_compare, here):
    async def before(pilot):
        await settle(pilot)
        pilot.app.screen.query_one("#tabs").active = "tab-methods"
        await pilot.pause()
        pilot.app.screen.query_one("#methods").focus()
        await pilot.press("down", "down", "down", "down")
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=before)


def test_setup_invalid_rate_80x24(snap_compare, here):
    async def before(pilot):
        await settle(pilot)
        screen = pilot.app.screen
        screen.query_one("#tabs").active = "tab-rates"
        await pilot.pause()
        screen.query_one("#rates-list").value = "0.75, 1.5"
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=before)


def test_run_finished_80x24(snap_compare, here):
    assert snap_compare(app_for(FakeRunner(**FAILING)), terminal_size=(80, 24), run_before=run_fake)


def test_results_80x24(snap_compare, here):
    async def before(pilot):
        await run_fake(pilot)
        await pilot.press("f4")
        await pilot.pause(0.2)

    assert snap_compare(app_for(FakeRunner(**FAILING)), terminal_size=(80, 24), run_before=before)


def test_results_plots_80x24(snap_compare, here):
    async def before(pilot):
        await run_fake(pilot)
        await pilot.press("f4")
        await pilot.pause(0.1)
        await pilot.press("p")
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=before)


def test_error_modal_80x24(snap_compare, here):
    assert snap_compare(app_for(FakeRunner(raise_at="model")), terminal_size=(80, 24), run_before=run_fake)


def test_compare_80x24(snap_compare, here):
    a = saved_session(here / "sessions" / "a.json")
    b = saved_session(here / "sessions" / "b.json")
    for cell in b.cells.values():  # b is worse on knorm and better on random
        for s in cell["samples"]:
            s["nll_sum"] *= {"knorm": 1.05, "random-kv": 0.98}.get(cell["method"], 1.0)
        b.refresh(cell["key"])
    b.save()

    async def before(pilot):
        await settle(pilot)
        await pilot.press("f5")
        await pilot.pause()
        pilot.app.screen.add_session(b)
        await pilot.pause(0.3)

    assert snap_compare(app_for(session=a), terminal_size=(80, 24), run_before=before)


def test_inspect_80x24(snap_compare, here):
    session = saved_session(here / "sessions" / "prompt.json", plan_doc=PROMPT_PLAN)

    async def before(pilot):
        await settle(pilot)
        await pilot.press("f6")
        await pilot.pause(0.3)

    assert snap_compare(app_for(session=session), terminal_size=(80, 24), run_before=before)


def test_inspect_empty_80x24(snap_compare, here):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("f6")
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=before)


def test_help_80x24(snap_compare, here):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("f1")
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(80, 24), run_before=before)


def test_setup_200x60(snap_compare, here):
    async def before(pilot):
        await settle(pilot)
        pilot.app.screen.query_one("#tabs").active = "tab-methods"
        await pilot.pause(0.2)

    assert snap_compare(app_for(), terminal_size=(200, 60), run_before=before)


def test_run_finished_200x60(snap_compare, here):
    assert snap_compare(app_for(FakeRunner(**FAILING)), terminal_size=(200, 60), run_before=run_fake)


def test_results_200x60(snap_compare, here):
    async def before(pilot):
        await run_fake(pilot)
        await pilot.press("f4")
        await pilot.pause(0.2)

    assert snap_compare(app_for(FakeRunner(**FAILING)), terminal_size=(200, 60), run_before=before)


def test_train_finished_80x24(snap_compare, here, monkeypatch):
    from test_train_view import fake_training, plan_dir

    monkeypatch.setenv("WORKBENCH_DATA", "data")  # relative: the checkpoint paths on screen do not depend on the machine

    async def before(pilot):
        await settle(pilot)
        await pilot.press("f8")
        screen = pilot.app.screen
        screen.query_one("#plan").value = str(screen.plans[0])
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: pilot.app.learned.status == "done", what="the training")
        await pilot.pause(0.4)  # a plot redraw
        await settle(pilot)

    assert snap_compare(app_for(learned_train_fn=fake_training([]), train_plans_dir=plan_dir(here)),
                        terminal_size=(80, 24), run_before=before)
