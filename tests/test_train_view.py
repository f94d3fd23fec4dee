"""The Train view: a learned compressor trained as a job in the app. A fake training (a real worker thread that
emits the training's events: start, step, eval, checkpoint, done, and honours cancel) stands in for
workbench.learned.train, so the curves, the progress, resume, cancel and errors are the app's own."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from test_app_fakes import make_app, setup_ready, wait_for

from workbench.learned.store import STATE, Cancelled

TOTAL = 20


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path, monkeypatch):
    """Checkpoints of one test are no other test's."""
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))


def make_checkpoint(folder):
    """A checkpoint folder as the learned store recognises one (its state file present)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE).write_text("{}")


def plan_dir(tmp_path):
    folder = tmp_path / "train-plans"
    folder.mkdir()
    (folder / "gist-small.json").write_text(json.dumps({"name": "gist-small", "model": "smollm2-135m",
                                                        "architecture": "gist", "rate": 0.125}))
    (folder / "grid.json").write_text(json.dumps({"name": "g", "base": {}, "architectures": ["gist"], "rates": [0.5]}))
    return folder


def fake_training(calls: list, hold_at: int | None = None, gate: threading.Event | None = None, fail_at: int | None = None):
    def train(data, source, on_event, cancel, restart):
        from workbench.models.spec import data_root

        calls.append((data["name"], source, restart, threading.current_thread() is threading.main_thread()))
        folder = data_root() / "learned" / data["name"]
        resumed = None if restart or not (folder / "checkpoint-10").is_dir() else 10
        on_event({"kind": "start", "run": data["name"], "total_steps": TOTAL, "resumed_from": resumed,
                  "params": {"compressor": 1_180_000, "lora": 290_000}})
        for step in range((resumed or 0) + 1, TOTAL + 1):
            if cancel.is_set():
                raise Cancelled("training cancelled")
            loss = 4.0 / step
            on_event({"kind": "step", "step": step, "total_steps": TOTAL, "loss": loss,
                      "terms": {"teacher_forcing": 0.5 * loss, "generation": 0.3 * loss, "contrastive": 0.2 * loss},
                      "lr": {"compressor": 1e-4, "lora": 5e-5}, "samples_per_s": 12.5, "eta_s": (TOTAL - step) * 0.5})
            if step % 5 == 0:
                on_event({"kind": "eval", "step": step, "val_loss": 3.0 / step, "val_ppl": 2.718 ** (3.0 / step)})
                make_checkpoint(folder / f"checkpoint-{step}")
                on_event({"kind": "checkpoint", "step": step, "path": str(folder / f"checkpoint-{step}")})
            if step == fail_at:
                on_event({"kind": "error", "message": "batch 3 skipped: its answer is empty"})
                on_event({"kind": "eval", "val_loss": 1.0})  # malformed (no step): told in the log, the app goes on
                raise RuntimeError(f"the loss is NaN at step {step}")
            if step == hold_at:
                gate.wait(10)
        record = {"name": data["name"], "folder": str(folder)}
        on_event({"kind": "done", "record": record})
        return record

    return train


def train_app(tmp_path, fn, **kwargs):
    return make_app(tmp_path, learned_train_fn=fn, train_plans_dir=plan_dir(tmp_path), **kwargs)


async def choose_shipped_plan(pilot):
    from textual.widgets import Select

    screen = pilot.app.screen
    select = screen.query_one("#plan", Select)
    assert [p.name for p in screen.plans] == ["gist-small.json"]  # the grid is no plan: not offered
    select.value = str(screen.plans[0])
    await wait_for(pilot, lambda: screen.choice is not None, what="the plan to be read")


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector).render())


def test_the_palette_opens_the_view_and_a_training_draws_curves_progress_and_outcome(tmp_path):
    calls: list = []

    async def go():
        app = train_app(tmp_path, fake_training(calls))
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await pilot.press("ctrl+p", *"train: learned")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "TrainScreen", what="the Train view")
            screen = app.screen
            assert "No training yet" in text(screen, "#status")
            await choose_shipped_plan(pilot)
            assert text(screen, "#plan-info") == "gist-small · gist at rate 0.125 on smollm2-135m"
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: app.learned.status == "done", what="the training to finish")
            await pilot.pause(0.4)  # a plot redraw
            s = app.learned
            assert [st for st, _, _ in s.steps] == list(range(1, TOTAL + 1))  # every step, however the messages were batched
            assert [e[0] for e in s.evals] == [5, 10, 15, 20] and s.checkpoint[0] == 20
            assert calls == [("gist-small", str(tmp_path / "train-plans" / "gist-small.json"), False, False)]  # in a worker
            loss = screen.query_one("#loss-plot").drawn
            assert set(loss) == {"total", "teacher_forcing", "generation", "contrastive"}
            assert loss["total"][-1] == (20, 0.2) and loss["contrastive"][0] == (1, pytest.approx(0.8))
            assert [p[0] for p in screen.query_one("#val-plot").drawn["val"]] == [5, 10, 15, 20]
            bar = screen.query_one("#bar")
            assert (bar.progress, bar.total) == (20, 20)
            assert text(screen, "#bar-text") == "20/20 steps · 12.5 samples/s"
            assert text(screen, "#status").startswith("✓ done gist-small")
            details = text(screen, "#details")
            assert "lr compressor 1.0e-04 · lora 5.0e-05" in details and "params compressor 1.18M · lora 0.29M" in details
            assert "checkpoint step 20" in details and "val PPL 1.16" in details
            assert any(n.title == "train: learned compressor done" and "20 steps" in n.message for n in app._notifications)

    asyncio.run(go())


def test_a_checkpoint_is_said_before_the_start_and_the_training_resumes_from_it_or_starts_over(tmp_path):
    calls: list = []

    async def go():
        from workbench.models.spec import data_root

        make_checkpoint(data_root() / "learned" / "gist-small" / "checkpoint-10")
        app = train_app(tmp_path, fake_training(calls))
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await pilot.press("f8")
            screen = app.screen
            await choose_shipped_plan(pilot)
            assert "gist-small · checkpoint at step 10: ctrl+t resumes or starts over · gist" in text(screen, "#plan-info")
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ChoiceModal", what="resume or start over")
            await pilot.press("r")
            await wait_for(pilot, lambda: app.learned.status == "done", what="the resumed training")
            assert calls[-1][2] is False and app.learned.resumed_from == 10
            assert [st for st, _, _ in app.learned.steps] == list(range(11, TOTAL + 1))
            assert "resumed from step 10" in text(screen, "#status")
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ChoiceModal", what="the question again")
            await pilot.press("o")
            await wait_for(pilot, lambda: len(calls) == 2 and app.learned.status == "done", what="the fresh training")
            assert calls[-1][2] is True and app.learned.resumed_from is None and len(app.learned.steps) == TOTAL

    asyncio.run(go())


def test_escape_cancels_at_the_next_step_keeping_the_checkpoint_and_the_app_stays_usable(tmp_path):
    calls: list = []
    gate = threading.Event()

    async def go():
        app = train_app(tmp_path, fake_training(calls, hold_at=7, gate=gate))
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await pilot.press("f8")
            await choose_shipped_plan(pilot)
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: app.learned.step == 7, what="step 7")
            # Usable while it trains: other views, the palette, and a second start is refused.
            await pilot.press("f2")
            assert type(app.screen).__name__ == "SetupScreen"
            await pilot.press("f8")
            assert app.start_learned({"name": "other"}, "x.json") is False and len(calls) == 1
            assert any(c.title == "train: cancel learned" for c in app.get_system_commands(app.screen))
            await pilot.press("escape")
            assert app.learned.status == "cancelling"
            gate.set()
            await wait_for(pilot, lambda: not app.learned.active, what="the training to stop")
            s = app.learned
            assert s.status == "cancelled" and s.step == 7
            assert s.log[-1] == ("warning", "cancelled at step 7; its checkpoint at step 5 is kept and the next start "
                                            "resumes from it")
            assert text(app.screen, "#status").startswith("■ cancelled gist-small")
            assert "checkpoint at step 5: ctrl+t resumes or starts over" in text(app.screen, "#plan-info")
            await pilot.press("escape")  # nothing to cancel now: the binding is off
            assert s.status == "cancelled"

    asyncio.run(go())


def test_a_failing_training_shows_its_reason_and_reported_errors(tmp_path):
    async def go():
        app = train_app(tmp_path, fake_training([], fail_at=7))
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await pilot.press("f8")
            await choose_shipped_plan(pilot)
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: app.learned.status == "failed", what="the failure")
            screen = app.screen
            assert text(screen, "#status").endswith("failed gist-small · 0m00s: the loss is NaN at step 7")
            assert ("error", "batch 3 skipped: its answer is empty") in app.learned.log
            assert any(n.severity == "error" and "the loss is NaN at step 7" in n.message for n in app._notifications)
            log_text = "\n".join(str(line.text) for line in screen.query_one("#log").lines)
            assert "batch 3 skipped" in log_text and "failed at step 7: the loss is NaN" in log_text
            assert "an event of the training could not be read (KeyError('step'))" in log_text

    asyncio.run(go())


def test_a_bad_plan_file_or_a_grid_is_named_before_anything_starts(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")

    async def go():
        app = train_app(tmp_path, fake_training([]))
        async with app.run_test(size=(80, 24)) as pilot:
            await setup_ready(pilot)
            await pilot.press("f8")
            screen = app.screen
            screen.query_one("#path").focus()
            screen.query_one("#path").value = str(bad)
            await pilot.pause(0.1)
            assert f"{bad}: not valid JSON" in text(screen, "#plan-info")
            await pilot.press("enter")
            assert app.learned.status == "idle"
            assert any("choose a training plan first" in n.message for n in app._notifications)
            screen.query_one("#path").value = str(tmp_path / "train-plans" / "grid.json")
            await pilot.pause(0.1)
            assert "an ablation grid, not one plan" in text(screen, "#plan-info")

    asyncio.run(go())
