"""Training a KVzap scorer from the app: the command palette's `train: kvzap scorer` runs it as a job in a worker
thread, progress arrives as messages, the outcome is told once (a fake training: the real one takes minutes)."""

from __future__ import annotations

import asyncio
import threading

from test_app_fakes import make_app, setup_ready, wait_for


def _fake_training(calls: list, release: threading.Event):
    def train(model, on_progress, cancel):
        calls.append(model)
        for i in range(1, 4):
            on_progress("targets", i, 3, f"KVzip+ targets: text {i}/3")
        release.wait(5)
        if cancel.is_set():
            from workbench.kvzap.store import Cancelled

            raise Cancelled("training cancelled")
        on_progress("fit", 15, 15, "fitting the mlp scorer: epoch 15/15")
        return {"folder": "/data/kvzap/smollm2-135m/mlp", "held_out": {"mean_r2": 0.61}, "seconds": {"total": 300.0}}

    return train


def test_palette_trains_a_kvzap_scorer_for_the_setup_model_as_a_job(tmp_path):
    calls: list = []
    release = threading.Event()

    async def go():
        app = make_app(tmp_path)
        app.train_fn = _fake_training(calls, release)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await pilot.press("ctrl+p")
            await pilot.press(*"train: kvzap")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda: "targets 3/3" in (app.train_status or ""), what="training progress")
            assert app.training_active() and app.screen.is_current  # the app stays usable while it trains
            app.action_train_kvzap()  # a second one is refused while the first runs
            assert calls == ["smollm2-135m"]
            release.set()
            await wait_for(pilot, lambda: not app.training_active(), what="the training to end")
            assert "saved to /data/kvzap/smollm2-135m/mlp in 5.0 min" in app.train_status
            assert "held-out R² 0.61" in app.train_status
            titles = [n.title for n in app._notifications]
            assert "train: kvzap scorer done" in titles

    asyncio.run(go())


def test_training_can_be_cancelled_and_says_so(tmp_path):
    calls: list = []
    release = threading.Event()

    async def go():
        app = make_app(tmp_path)
        app.train_fn = _fake_training(calls, release)
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            app.action_train_kvzap()
            await wait_for(pilot, lambda: "targets" in (app.train_status or ""), what="training progress")
            app.action_cancel_training()
            release.set()
            await wait_for(pilot, lambda: not app.training_active(), what="the training to stop")
            assert "cancelled" in app.train_status and "failed" not in app.train_status

    asyncio.run(go())
