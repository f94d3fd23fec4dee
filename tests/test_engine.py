"""Engine mechanics on a tiny random-weight Llama: protocols, shared prefill, sessions, resume."""

from __future__ import annotations

import json
import math
import threading

import pytest

from workbench import runner
from workbench.plan import parse_plan
from workbench.session import Session, SessionError


def tiny_plan(model_dir, **overrides) -> dict:
    plan = {
        "name": "tiny",
        "model": str(model_dir),
        "datasets": [{"name": "wikitext2", "samples": 3, "seed": 1}],
        "protocol": {"name": "context-continuation", "context_tokens": 96, "continuation_tokens": 16},
        "rates": [0.75, 0.5, 0.25],
        "methods": ["knorm", "streaming-llm", {"name": "random", "family": "kv"}],
    }
    plan.update(overrides)
    return plan


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench.models import load_model

    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


def _ids(lm, n, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, lm.model.config.vocab_size, (1, n), generator=g)


def test_chunked_without_press_equals_full_sequence_nll(tiny_lm):
    import torch
    import torch.nn.functional as F

    from workbench import kv_eval

    ids = _ids(tiny_lm, 97)
    with torch.inference_mode():
        logits = tiny_lm.model(ids).logits
    full = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="sum").item()
    for chunk in (1, 7, 32, 200):
        nll, n, cache, _ = kv_eval.chunked_nll(tiny_lm.model, ids, chunk)
        assert n == 96
        assert nll == pytest.approx(full, rel=1e-5), chunk
        assert cache.layers[0].keys.shape[2] == 96


def test_context_continuation_baseline_equals_full_sequence_nll(tiny_lm):
    import torch
    import torch.nn.functional as F

    from workbench import kv_eval

    ids = _ids(tiny_lm, 64 + 16 + 1, seed=3)
    with torch.inference_mode():
        logits = tiny_lm.model(ids).logits
    # Tokens 65..80 are the ones the protocol scores (each predicted from positions 64..79).
    expected = F.cross_entropy(logits[0, 64:80].float(), ids[0, 65:81], reduction="sum").item()
    cache, _ = kv_eval.prefill(tiny_lm.model, ids[:, :64])
    nll, n, _ = kv_eval.continuation_nll(tiny_lm.model, cache, ids[:, 64:], 64)
    assert n == 16
    assert nll == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["knorm", "streaming-llm", "snapkv", "tova", "random", "expected-attention"])
def test_shared_prefill_reproduces_per_rate_cache_on_tiny_model(tiny_lm, name):
    """Mechanics of the gather (the embedded-model test checks PPL equality for every supported press)."""
    from workbench import evaluate
    from workbench.methods.registry import lookup, resolve_params
    from workbench.plan import MethodSpec, ProtocolSpec
    from workbench.datasets import LMSample

    info = lookup(name, "kv")
    method = MethodSpec(name=name, label=name, params=resolve_params(info, {}), rates=[0.75, 0.5, 0.25])
    protocol = ProtocolSpec(context_tokens=80, continuation_tokens=12)
    sample = LMSample("s#0", tuple(int(t) for t in _ids(tiny_lm, 93, seed=5)[0]), 80)
    shared = evaluate.evaluate_kv(tiny_lm, sample, method, method.rates, protocol, shared_allowed=True)
    per_rate = evaluate.evaluate_kv(tiny_lm, sample, method, method.rates, protocol, shared_allowed=False)
    for rate in method.rates:
        assert shared[rate]["path"] == "shared-prefill" and per_rate[rate]["path"] == "per-rate"
        assert shared[rate]["nll_sum"] == pytest.approx(per_rate[rate]["nll_sum"], rel=1e-5)
        assert shared[rate]["kept_fraction"] == per_rate[rate]["kept_fraction"] == int(80 * rate) / 80


def test_plan_cells_rates_and_paths(tiny_llama_dir):
    plan = parse_plan(tiny_plan(tiny_llama_dir, methods=["knorm", {"name": "criticalkv"}, {"name": "dms", "params": {"press": "knorm", "threshold": 0.5}}]))
    keys = [c.key for c in plan.cells()]
    assert keys[0].endswith("|baseline|1")
    assert len(keys) == 1 + 3 + 3 + 1  # baseline, knorm × 3, criticalkv × 3, dms once (threshold-driven)
    from workbench.families.kv import kv_path

    assert kv_path(plan.methods[0], plan.protocol, True) == ("shared-prefill", None)
    path, why = kv_path(plan.methods[1], plan.protocol, True)
    assert path == "per-rate" and "rate" in why
    assert plan.methods[1].params["press"]["name"] == "expected-attention"  # the wrapper's default inner press


def test_run_records_rates_deltas_and_budget(tiny_llama_dir, tmp_path):
    out = tmp_path / "s.json"
    session = runner.run(parse_plan(tiny_plan(tiny_llama_dir)), out=str(out))
    assert session.status == "finished" and not session.failed_cells()
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1 and data["plan"]["model"] == str(tiny_llama_dir)
    assert {"python", "packages", "cpu_count"} <= set(data["environment"])
    cells = {c["key"]: c for c in data["cells"]}
    base = next(c for c in cells.values() if c["method"] == "baseline")
    assert base["kept_fraction"] == 1.0 and base["samples_done"] == 3
    assert base["kv_bytes"] == 2 * 2 * 2 * 96 * 16 * 4  # layers × (K,V) × kv heads × tokens × head_dim × fp32
    for c in cells.values():
        assert c["status"] == "done"
        assert math.isfinite(c["ppl"]) and c["ppl"] == pytest.approx(math.exp(c["nll"]))
        if c["method"] != "baseline":
            assert c["kept_fraction"] == pytest.approx(int(96 * c["rate"]) / 96)
            assert c["kv_bytes"] == pytest.approx(base["kv_bytes"] * c["kept_fraction"], rel=0.02)
            assert c["delta_ppl"] == pytest.approx(c["ppl"] - base["ppl"])
            assert c["path"] == "shared-prefill"


def test_cancelled_then_resumed_session_equals_uninterrupted(tiny_llama_dir, tmp_path):
    plan = parse_plan(tiny_plan(tiny_llama_dir))
    whole = runner.run(plan, out=str(tmp_path / "whole.json"))

    cancel = threading.Event()
    seen = []

    def on_event(event):
        if event.kind == "progress":
            seen.append(event.data["done"])
            if len(seen) == 5:  # the baseline's 3 samples and 2 samples of the first press
                cancel.set()

    part_path = tmp_path / "part.json"
    partial = runner.run(plan, on_event, cancel, out=str(part_path))
    assert partial.status == "cancelled"
    on_disk = json.loads(part_path.read_text())
    done = [c for c in on_disk["cells"] if c["status"] == "done"]
    assert len(done) == 1 and done[0]["method"] == "baseline"
    partial_cells = [c for c in on_disk["cells"] if c["samples_done"] and c["status"] != "done"]
    assert partial_cells and all(c["samples_done"] == 2 for c in partial_cells)

    events = []
    resumed = runner.run(Session.load(part_path), events.append)
    assert resumed.status == "finished"
    first = next(e for e in events if e.kind == "run-started")
    assert first.data["todo"] == len(resumed.cells) - 1  # the finished baseline is skipped
    for key, cell in whole.cells.items():
        other = resumed.cells[key]
        by_id = {s["sample_id"]: s for s in other["samples"]}
        assert set(by_id) == {s["sample_id"] for s in cell["samples"]}
        for s in cell["samples"]:
            assert by_id[s["sample_id"]]["nll_sum"] == pytest.approx(s["nll_sum"], rel=1e-6)
        assert other["ppl"] == pytest.approx(cell["ppl"], rel=1e-6)


def test_failing_method_is_recorded_and_others_go_on(tiny_llama_dir, tmp_path):
    # A threshold press wrapping a hub-only scorer cannot run offline; the knorm cells still finish.
    plan = parse_plan(tiny_plan(tiny_llama_dir, methods=["kvzap", "knorm"], rates=[0.5]))
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    by_method = {c["method"]: c for c in session.cells.values()}
    assert by_method["kvzap"]["status"] == "unavailable"
    assert "hub" in by_method["kvzap"]["reason"]
    assert by_method["knorm"]["status"] == "done"
    assert session.status == "finished"


def test_method_crashing_mid_run_is_an_error_and_keeps_its_finished_samples(tiny_llama_dir, tmp_path, monkeypatch):
    """An ordinary exception inside a press, after a sample of it succeeded: its cells are 'error' (a bug to look
    at, not 'unavailable' here), the finished sample stays, the other methods finish, and the file says the same."""
    import kvpress

    real_score = kvpress.KnormPress.score
    first_layer_calls = []

    def score_failing_on_second_sample(self, module, *args, **kwargs):
        if module.layer_idx == 0:
            first_layer_calls.append(1)
        if len(first_layer_calls) == 2:  # one prefill per sample on the shared path: this is sample 2
            raise ValueError("injected: scores are not finite")
        return real_score(self, module, *args, **kwargs)

    monkeypatch.setattr(kvpress.KnormPress, "score", score_failing_on_second_sample)
    out = tmp_path / "s.json"
    plan = parse_plan(tiny_plan(tiny_llama_dir, methods=["knorm", "streaming-llm"], rates=[0.75, 0.5]))
    session = runner.run(plan, out=str(out))
    assert session.status == "finished"  # every cell reached an end state; the failed ones are listed
    on_disk = {c["key"]: c for c in json.loads(out.read_text())["cells"]}
    for cells in (session.cells, on_disk):
        knorm = [c for c in cells.values() if c["method"] == "knorm"]
        assert len(knorm) == 2
        for cell in knorm:
            assert cell["status"] == "error", cell
            assert "ValueError: injected: scores are not finite" in cell["error"] and "score_failing_on_second_sample" in cell["error"]
            assert cell["samples_done"] == 1 and [s["sample_id"] for s in cell["samples"]] == [plan_sample_ids(session)[0]]
            assert math.isfinite(cell["ppl"])  # computed from the sample it finished
        others = [c for c in cells.values() if c["method"] != "knorm"]
        assert len(others) == 3 and all(c["status"] == "done" and c["samples_done"] == 3 for c in others)
    assert [c["key"] for c in session.failed_cells()] == [c["key"] for c in on_disk.values() if c["status"] == "error"]


def plan_sample_ids(session) -> list[str]:
    """The dataset's sample ids in run order, from the baseline cell."""
    base = next(c for c in session.cells.values() if c["method"] == "baseline")
    return [s["sample_id"] for s in base["samples"]]


def test_chunked_protocol_compresses_to_rate(tiny_llama_dir, tmp_path):
    plan = parse_plan(tiny_plan(tiny_llama_dir, protocol={"name": "chunked", "context_tokens": 64, "continuation_tokens": 31, "chunk_size": 16},
                                methods=["knorm", "adakv"], rates=[0.5]))
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    cells = {c["method"]: c for c in session.cells.values()}
    assert cells["baseline"]["tokens_scored"] == 3 * 95
    assert cells["knorm"]["status"] == "done"
    # 96 tokens seen, half kept after the last chunk's compression (which ran at 95 seen tokens).
    assert cells["knorm"]["kv_tokens_per_layer"] == int(95 * 0.5)
    assert cells["adakv"]["status"] == "unavailable" and "chunked" in cells["adakv"]["reason"]


def test_session_file_validation_names_field(tmp_path, tiny_llama_dir):
    path = tmp_path / "s.json"
    session = Session(parse_plan(tiny_plan(tiny_llama_dir)), path)
    session.save()
    data = json.loads(path.read_text())
    data["cells"][2]["status"] = "exploded"
    path.write_text(json.dumps(data))
    with pytest.raises(SessionError, match=r"cells\[2\]\.status"):
        Session.load(path)
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(SessionError, match="schema_version"):
        Session.load(path)
    path.write_text("{not json")
    with pytest.raises(SessionError, match="not valid JSON"):
        Session.load(path)


def test_atomic_save_leaves_no_temporary_files(tmp_path, tiny_llama_dir):
    session = Session(parse_plan(tiny_plan(tiny_llama_dir)), tmp_path / "s.json")
    for _ in range(3):
        session.save()
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_secrets_are_scrubbed_from_errors(monkeypatch):
    from workbench.session import scrub

    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijklmnopqrstuvwxyz123456")
    monkeypatch.setenv("MY_API_KEY", "sk-verysecretvalue")
    text = scrub("401 for token hf_abcdefghijklmnopqrstuvwxyz123456 and key sk-verysecretvalue")
    assert "hf_abc" not in text and "sk-very" not in text
    assert "HF_TOKEN hidden" in text


def test_every_press_kvpress_exports_is_in_the_registry():
    """The static table (validation without importing kvpress) covers every press of the installed kvpress."""
    import inspect

    import kvpress

    from workbench.methods.presses import PRESSES

    exported = {n for n in kvpress.__all__ if inspect.isclass(getattr(kvpress, n)) and issubclass(getattr(kvpress, n), kvpress.BasePress)}
    described = {info.implementation for info in PRESSES.values()}
    assert exported - {"BasePress", "ScorerPress"} <= described


def test_dms_runs_only_without_eager_attention(tiny_llama_dir, tmp_path):
    # DMS masks entries through kvpress's attention patch, which eager attention lacks: paired with a press
    # that needs eager attention, the cells fail up front with the reason instead of crashing mid-run.
    from workbench.methods import presses
    from workbench.methods.registry import lookup, resolve_params

    dms = lookup("dms", "kv")
    assert presses.requirements("dms", resolve_params(dms, {"press": "knorm"}))[0] == "sdpa"
    assert presses.requirements("dms", resolve_params(dms, {"press": "observed-attention"}))[0] == "conflict"
    plan = parse_plan(tiny_plan(tiny_llama_dir, methods=[{"name": "dms", "params": {"press": "observed-attention"}}]))
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    (cell,) = [c for c in session.cells.values() if c["method"] == "dms"]
    assert cell["status"] == "error" and "eager" in cell["error"]


def test_a_model_that_cannot_load_writes_no_session_and_leaves_an_existing_one_untouched(tiny_llama_dir, tmp_path):
    """Nothing is written before the backend loads, so fixing the model and running again starts cleanly."""
    from workbench.models import ModelLoadError

    def broken(plan):
        raise ModelLoadError("the model could not be loaded (test)")

    plan = parse_plan(tiny_plan(tiny_llama_dir))
    fresh = tmp_path / "fresh.json"
    with pytest.raises(ModelLoadError):
        runner.run(plan, out=str(fresh), backend_loader=broken)
    assert not fresh.exists()

    cancel = threading.Event()
    partial = tmp_path / "partial.json"

    def stop_after_first_sample(event):
        if event.kind == "progress":
            cancel.set()

    runner.run(parse_plan(tiny_plan(tiny_llama_dir)), stop_after_first_sample, cancel, out=str(partial))
    before = partial.read_bytes()
    with pytest.raises(ModelLoadError):
        runner.run(Session.load(partial), backend_loader=broken)
    assert partial.read_bytes() == before


def test_re_reporting_a_finished_session_keeps_its_environment(tiny_llama_dir, tmp_path):
    path = tmp_path / "done.json"
    runner.run(parse_plan(tiny_plan(tiny_llama_dir)), out=str(path))
    environment = json.loads(path.read_text())["environment"]
    assert environment.get("model")  # what the run was measured on

    def no_backend(plan):
        raise AssertionError("a finished session must not load the model")

    again = runner.run(Session.load(path), backend_loader=no_backend)
    assert again.status == "finished"
    assert json.loads(path.read_text())["environment"] == environment
