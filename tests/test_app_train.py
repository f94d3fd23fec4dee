"""Training a KVzap scorer from the app: the command palette's `train: kvzap scorer` runs it as a job in a worker
thread, progress arrives as messages, the outcome is told once (a fake training: the real one takes minutes)."""

from __future__ import annotations

import asyncio
import threading

from test_app_fakes import make_app, setup_ready, wait_for


async def palette(pilot, command: str) -> None:
    """Run a command of the command palette as a user does: ctrl+p, its name typed, enter."""
    await pilot.press("ctrl+p")
    await pilot.press(*command)
    await pilot.pause(0.3)
    await pilot.press("enter")


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
            await palette(pilot, "train: kvzap")
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


def test_palette_trains_a_point_classifier_as_a_job_and_reads_its_scores(tmp_path):
    """`train: point classifier` runs the points training (here a fake with the real record's shape) for the Setup
    model; its outcome quotes the held-out F1 against both baselines; a cancel names what it keeps."""
    from workbench.points.store import Cancelled

    calls: list = []
    release = threading.Event()

    def train(model, on_progress, cancel):
        calls.append(model)
        on_progress("features", 2, 4, "hidden states at layer 30: text 2/4")
        release.wait(5)
        if cancel.is_set():
            raise Cancelled("training cancelled")
        f1 = lambda v: {"f1": v, "precision": v, "recall": v, "accuracy": v}  # noqa: E731
        return {"folder": "/data/points/smollm2-135m/rule-layer30", "seconds": {"total": 78.0},
                "metrics": {"test": {"classifier": f1(0.982), "never_a_point": f1(0.0), "always_a_point": f1(0.073)}}}

    async def go():
        app = make_app(tmp_path)
        app.train_fn = train
        async with app.run_test(size=(100, 30)) as pilot:
            await setup_ready(pilot)
            await palette(pilot, "train: point")
            await wait_for(pilot, lambda: "features 2/4" in (app.train_status or ""), what="training progress")
            await pilot.press("f3")  # the Progress view shows the job's progress while no run holds its status line
            await wait_for(pilot, lambda: "Training: [features 2/4] hidden states at layer 30: text 2/4"
                           in str(app.screen.query_one("#status").render()), what="the training on the Progress view")
            app.action_train_kvzap()  # one training at a time: refused, naming the one running
            assert calls == ["smollm2-135m"]
            await pilot.pause()
            assert any("compression-point classifier" in n.message and "already" in n.message for n in app._notifications)
            release.set()
            await wait_for(pilot, lambda: not app.training_active(), what="the training to end")
            assert app.train_status == ("point classifier saved to /data/points/smollm2-135m/rule-layer30 in 1.3 min, "
                                        "held-out F1 0.982 (never a point 0.000, every token 0.073)")
            assert "train: point classifier done" in [n.title for n in app._notifications]

            release.clear()
            app.action_train_points()
            await wait_for(pilot, lambda: "features" in (app.train_status or ""), what="the second training")
            app.action_cancel_training()
            release.set()
            await wait_for(pilot, lambda: not app.training_active(), what="the training to stop")
            assert app.train_status == "training cancelled; the texts' hidden states are kept for the next one"

    asyncio.run(go())
