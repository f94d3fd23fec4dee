"""The ablation grid and its schedule: seed 002's grid expands to 12 runs; runs go one per slot at a time, the rest
queued; a failed run fails alone; cancel stops the running ones; a summary at the end.

Each run is a real subprocess (tests/fake_train_run.py in place of `workbench train`: it prints progress lines,
writes a run record where the store keeps it, and logs what it saw), so the queueing, the concurrency cap, the
per-GPU environment, failure isolation and the summary are the scheduler's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.learned import ablation, ablation_cli, grid

FAKE = [sys.executable, str(Path(__file__).with_name("fake_train_run.py"))]
ARCHS = ["cross-attention", "conv", "pooling", "gist"]


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    log = tmp_path / "log"
    log.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("FAKE_TRAIN_FAIL", raising=False)
    monkeypatch.delenv("FAKE_TRAIN_HOLD", raising=False)
    return log


def logged(log: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in log.glob("*.json")}


def shipped_runs():
    data, source = grid.load_grid("ablation-squad")
    return grid.expand(data, source)


# -- the grid --------------------------------------------------------------------------------------------


def test_the_shipped_grid_is_seed_002s_four_architectures_by_three_rates():
    runs = shipped_runs()
    assert len(runs) == 12 and len({r.name for r in runs}) == 12
    assert {(r.architecture, r.soft_tokens) for r in runs} == {(a, m) for a in ARCHS for m in (32, 64, 128)}
    for run in runs:
        assert run.rate == run.soft_tokens / 512  # rate = fraction of the 512 context positions kept
        assert run.config["name"] == run.name and run.config["architecture"] == run.architecture
        assert run.config["rate"] == run.rate and run.config["context_tokens"] == 512
        assert run.config["loss_weights"] == {"teacher_forcing": 0.5, "generation": 0.3, "contrastive": 0.2}
    assert [r.name for r in runs][:3] == ["ablation-squad-cross-attention-m32", "ablation-squad-cross-attention-m64",
                                          "ablation-squad-cross-attention-m128"]


def test_each_run_of_the_shipped_grid_is_a_training_plan_the_trainer_reads():
    pytest.importorskip("workbench.learned.config", reason="the learned family's training plans are not in this build")
    data, source = grid.load_grid("ablation-squad")
    grid.check_configs(grid.expand(data, source), source)


@pytest.mark.parametrize("change, field", [
    ({"architectures": []}, "architectures"),
    ({"architectures": ["gist", "gist"]}, "architectures"),
    ({"soft_tokens": [32, 1024]}, "soft_tokens"),
    ({"soft_tokens": [64, 64]}, "soft_tokens"),
    ({"rates": [0.5]}, "give the rates once"),
    ({"name": "a b"}, "name"),
    ({"base": {"rate": 0.5, "context_tokens": 512}}, "base.rate"),
    ({"base": {"model": "x"}}, "base.context_tokens"),
    ({"seed": 1}, "'seed'"),
])
def test_a_bad_grid_is_one_line_naming_the_file_and_field_and_exit_2(tmp_path, change, field, capsys):
    data, _ = grid.load_grid("ablation-squad")
    path = tmp_path / "g.json"
    path.write_text(json.dumps({**data, **change}))
    assert ablation_cli.main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and field in err


def test_rates_given_as_fractions_name_runs_by_rate(tmp_path):
    runs = grid.expand({"name": "g", "base": {}, "architectures": ["conv"], "rates": [0.5, 0.25]}, "g.json")
    assert [(r.name, r.rate, r.soft_tokens) for r in runs] == [("g-conv-r0.5", 0.5, None), ("g-conv-r0.25", 0.25, None)]


def test_an_unknown_grid_name_lists_the_shipped_ones(capsys):
    assert ablation_cli.main(["no-such-grid"]) == 2
    assert "shipped grids: ablation-squad" in capsys.readouterr().err


# -- the schedule ----------------------------------------------------------------------------------------


def test_two_gpus_run_two_trainings_at_a_time_each_on_its_own_gpu_and_a_failure_fails_alone(fake_env, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_FAIL", "ablation-squad-conv-m64")
    runs, lines, order = shipped_runs(), [], []
    launcher = ablation.LocalLauncher(str(tmp_path / "plans"), FAKE)
    outcomes = ablation.schedule(runs, ["cuda:0", "cuda:1"], launcher, on_line=lambda n, line: lines.append((n, line)),
                                 on_start=lambda run, slot: order.append(run.name), poll_seconds=0.02)
    seen = logged(fake_env)
    assert order == [r.name for r in runs]  # queued in the grid's order
    assert [o.run for o in outcomes] == [r.name for r in runs] and set(seen) == set(order)  # each run ran once
    by_status = {o.run: o.status for o in outcomes}
    assert by_status.pop("ablation-squad-conv-m64") == "failed" and set(by_status.values()) == {"done"}
    failed = next(o for o in outcomes if o.status == "failed")
    assert failed.returncode == 3 and "CUDA out of memory (fake)" in failed.error
    # Each run saw exactly its slot's GPU; never more than two at once, never two on one GPU.
    for o in outcomes:
        assert seen[o.run]["cuda"] == o.slot.split(":")[1]
    spans = [(e["start"], e["end"], e["cuda"]) for e in seen.values()]
    for t, _, _ in spans:
        active = [c for s, e, c in spans if s <= t < e]
        assert len(active) <= 2 and len(set(active)) == len(active)
    assert max(sum(s <= t < e for s, e, _ in spans) for t, _, _ in spans) == 2  # and both GPUs were used at once
    # Progress lines and records are collected per run.
    assert ("ablation-squad-gist-m128", "step 3/3 loss 1.250") in lines
    done = next(o for o in outcomes if o.run == "ablation-squad-gist-m32")
    assert ablation.final_figures(done.record) == {"loss": 1.0625, "val_loss": 1.5, "val_ppl": 4.48}
    table = ablation.summary_table(runs, outcomes)
    assert len(table.splitlines()) == 1 + 12 + 1 and "11 of 12 runs done, 1 failed, 0 cancelled" in table
    assert "exit code 3: RuntimeError: CUDA out of memory (fake)" in table


def test_a_run_that_exits_0_without_a_record_failed_and_a_stale_record_does_not_count(fake_env, tmp_path, monkeypatch):
    run = grid.AblationRun("solo", "conv", 0.5, None, {"name": "solo", "architecture": "conv", "rate": 0.5})
    stale = ablation.record_path("solo")
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    old = time.time() - 3600
    import os

    os.utime(stale, (old, old))
    true = [sys.executable, "-c", "import sys; print('trained nothing')"]
    [outcome] = ablation.schedule([run], ["cpu0"], ablation.LocalLauncher(str(tmp_path / "plans"), true), poll_seconds=0.02)
    assert outcome.status == "failed" and "wrote no run record" in outcome.error and outcome.lines == ["trained nothing"]


def test_cancel_stops_the_running_trainings_and_starts_no_more(fake_env, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TRAIN_HOLD", "1")
    runs, cancel = shipped_runs()[:5], threading.Event()
    started = []

    def on_line(name, line):
        if line.startswith("step 2/"):
            started.append(name)
            if len(set(started)) == 2:
                cancel.set()

    t0 = time.monotonic()
    outcomes = ablation.schedule(runs, ["cpu0", "cpu1"], ablation.LocalLauncher(str(tmp_path / "plans"), FAKE),
                                 on_line=on_line, cancel=cancel, poll_seconds=0.02)
    assert time.monotonic() - t0 < 20
    assert [o.status for o in outcomes] == ["cancelled"] * 5
    assert [o.error for o in outcomes[2:]] == ["not started"] * 3 and set(logged(fake_env)) == {r.name for r in runs[:2]}
    for o in outcomes[:2]:  # the running ones were told to stop and said where they stopped (their checkpoint kept)
        assert o.returncode == 130 and o.lines[-1].startswith("cancelled at step")


def test_cpu_workers_share_the_cores_and_see_no_gpu(fake_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablation, "gpu_slots", lambda: [])
    gridfile = tmp_path / "g.json"
    gridfile.write_text(json.dumps({"name": "g", "base": {"context_tokens": 64}, "architectures": ["conv", "gist"],
                                    "soft_tokens": [8, 16]}))
    assert ablation_cli.main([str(gridfile), "--cpu-workers", "2", "--json"], command=FAKE) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(o["run"], o["status"], o["rate"]) for o in out] == [
        ("g-conv-m8", "done", 0.125), ("g-conv-m16", "done", 0.25), ("g-gist-m8", "done", 0.125), ("g-gist-m16", "done", 0.25)]
    assert {o["slot"] for o in out} <= {"cpu0", "cpu1"}
    import os

    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert all(e["cuda"] == "" and e["omp"] == threads for e in logged(fake_env).values())


def test_the_command_line_prints_progress_to_stderr_and_the_table_to_stdout_exit_1_on_a_failure(fake_env, tmp_path):
    gridfile = tmp_path / "g.json"
    gridfile.write_text(json.dumps({"name": "g", "base": {}, "architectures": ["conv", "gist"], "rates": [0.25]}))
    code = ("import sys; from workbench.learned import ablation_cli; "
            f"sys.exit(ablation_cli.main(sys.argv[1:], command={FAKE!r}))")
    env = {**__import__("os").environ, "FAKE_TRAIN_FAIL": "g-gist-r0.25", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", code, str(gridfile)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "[g-conv-r0.25] step 1/3" in proc.stderr and "[g-gist-r0.25] failed after" in proc.stderr
    assert "g: 2 runs on 1 CPU worker, 1 at a time" in proc.stderr
    table = proc.stdout.splitlines()
    assert table[0].split()[:6] == ["run", "arch", "rate", "M", "slot", "status"]
    assert table[-1] == "1 of 2 runs done, 1 failed, 0 cancelled"


def test_through_ray_one_actor_per_slot_runs_the_same_subprocesses(fake_env, tmp_path, capsys):
    pytest.importorskip("ray", reason="the Ray path needs the ray extra")
    gridfile = tmp_path / "g.json"
    gridfile.write_text(json.dumps({"name": "g", "base": {}, "architectures": ["conv", "gist", "pooling"], "rates": [0.25]}))
    import os

    os.environ["FAKE_TRAIN_FAIL"] = "g-gist-r0.25"  # read by the actors' processes (Ray starts after this)
    try:
        code = ablation_cli.main([str(gridfile), "--ray", "--cpu-workers", "2", "--json"], command=FAKE)
    finally:
        del os.environ["FAKE_TRAIN_FAIL"]
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(o["run"], o["status"]) for o in out] == [("g-conv-r0.25", "done"), ("g-gist-r0.25", "failed"),
                                                      ("g-pooling-r0.25", "done")]
    assert {o["slot"] for o in out} <= {"ray:0", "ray:1"} and out[0]["val_ppl"] == 4.48
    assert set(logged(fake_env)) == {"g-conv-r0.25", "g-gist-r0.25", "g-pooling-r0.25"}


def test_the_grid_and_the_scheduler_import_no_torch_no_ray_no_textual():
    code = ("import sys; import workbench.learned.grid, workbench.learned.ablation, workbench.learned.ablation_cli, "
            "workbench.learned.ablation_ray; print(sorted(m for m in ('torch', 'ray', 'textual', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_more_gpus_asked_for_than_there_are_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(ablation, "gpu_slots", lambda: ["cuda:0"])
    assert ablation_cli.main(["ablation-squad", "--gpus", "2", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == ("workbench train: --gpus 2 asked for, but this machine has 1 GPU "
                                               "(--ray for a cluster's)")
    assert ablation_cli.main(["ablation-squad", "--gpus", "1", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "ablation-squad-cross-attention-m32: cross-attention at rate 0.0625, starts on cuda:0"
    assert len(out) == 12 and out[1].endswith("queued")
