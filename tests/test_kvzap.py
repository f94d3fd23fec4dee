"""KVzap scorers trained by the workbench, on a tiny random Llama (mechanics): training end to end, the
save_pretrained round trip, the press finding and checking a scorer, resuming after SIGKILL, rate-matched thresholds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")

from workbench.kvzap import store  # noqa: E402

TINY = dict(data=("wikitext2",), min_tokens=40, max_tokens=60, tokens_per_text=20)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench.models import load_model

    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


def _settings(spec, kind="mlp", texts=4, held_out=1, **kw):
    from workbench.kvzap.fit import FitSettings
    from workbench.kvzap.train import TrainSettings

    return TrainSettings(model=spec, texts=texts, held_out=held_out, fit=FitSettings(kind=kind, hidden_dim=16, epochs=3),
                         **{**TINY, **kw})


def _hidden(tiny_lm, n=12):
    """The hidden states entering each attention layer for n tokens: what the press scores."""
    from workbench import kv_eval

    seen = {}

    def record(module, kwargs, output):
        seen.setdefault(module.layer_idx, (module, kwargs["hidden_states"]))

    ids = torch.randint(4, 100, (1, n), generator=torch.Generator().manual_seed(1))
    with kv_eval.layer_hooks(tiny_lm.model, record):
        with torch.inference_mode():
            tiny_lm.model(ids)
    return seen


@pytest.mark.parametrize("kind", ["mlp", "linear"])
def test_trained_scorer_round_trips_and_the_press_finds_it(tiny_llama_dir, tiny_lm, data_dir, kind):
    from workbench.kvzap import scorer as kvzap_scorer
    from workbench.kvzap.train import train
    from workbench.methods.press_build import build_press

    record = train(_settings(str(tiny_llama_dir), kind=kind))
    folder = store.scorer_dir(str(tiny_llama_dir), kind)
    assert record["folder"] == str(folder)
    assert {"config.json", "model.safetensors", "record.json"} <= {p.name for p in folder.iterdir()}
    saved = json.loads((folder / "record.json").read_text())
    assert saved["model"]["fingerprint"] == kvzap_scorer.fingerprint(tiny_lm.model)
    assert (saved["model"]["n_layers"], saved["model"]["hidden_size"], saved["model"]["n_kv_heads"]) == (2, 64, 2)
    assert saved["samples_train"] == 4 * 20 and saved["samples_held_out"] == 20
    assert len(saved["held_out"]["per_layer"]) == 2 and saved["held_out"]["mean_pearson_r"] is not None
    assert not store.work_dir(str(tiny_llama_dir), kind).exists()  # the work folder goes once the scorer is saved

    # The press built from a plan's parameters finds the scorer by the model's fingerprint and says so.
    press = build_press("kvzap", {"model_type": kind, "scorer": None, "compression_ratio": 0.0}, 0.5)
    press.post_init_from_model(tiny_lm.model)
    assert str(folder) in press.scorer_used
    loaded = kvzap_scorer.load(folder)
    for layer, (module, hidden) in _hidden(tiny_lm).items():
        with torch.inference_mode():
            via_press = press.score(module, hidden, None, None, None, {})
            direct = loaded.layers[layer](hidden).transpose(1, 2)
        assert via_press.shape == (1, 2, hidden.shape[1])
        assert torch.equal(via_press, direct)


def test_save_pretrained_then_load_gives_the_same_scores(tmp_path):
    from workbench.kvzap import fit, scorer as kvzap_scorer

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 2, 64, generator=gen), torch.randn(300, 2, 2, generator=gen)
    trained = fit.fit(x, y, fit.FitSettings(hidden_dim=16, epochs=2, batch_size=64))
    trained.save_pretrained(str(tmp_path / "s"))
    again = kvzap_scorer.load(tmp_path / "s")
    assert torch.equal(fit.predict(trained, x), fit.predict(again, x))
    assert fit.predict(trained, x).abs().sum() > 0


def test_linear_fit_recovers_a_linear_target():
    """The closed-form ridge fit is a real fit: a target that is linear in the inputs is predicted almost exactly."""
    from workbench.kvzap import fit

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, 16, generator=gen)
    w, b = torch.randn(3, 16, 2, generator=gen), torch.randn(3, 2, generator=gen)
    y = torch.einsum("nld,ldh->nlh", x, w) + b + 0.01 * torch.randn(2000, 3, 2, generator=gen)
    scorer = fit.fit(x, y, fit.FitSettings(kind="linear"))
    per_layer = fit.layer_fit(fit.predict(scorer, x), y)
    assert all(p["r2"] > 0.999 and p["pearson_r"] > 0.999 for p in per_layer)
    assert fit.layer_fit(torch.zeros_like(y), y)[0]["r2"] < 0.01


def test_a_scorer_for_another_shape_is_refused_naming_both(tiny_lm, tmp_path):
    from workbench.kvzap import fit
    from workbench.methods.press_build import build_press

    fit.new_scorer(3, 32, 1, fit.FitSettings(hidden_dim=8)).save_pretrained(str(tmp_path / "other"))
    press = build_press("kvzap", {"model_type": "mlp", "scorer": str(tmp_path / "other"), "compression_ratio": 0.0}, 0.5)
    with pytest.raises(ValueError) as err:
        press.post_init_from_model(tiny_lm.model)
    text = str(err.value)
    assert "3 layers, hidden size 32, 1 KV heads" in text and "2 layers, hidden size 64, 2 KV heads" in text


def test_no_scorer_offline_says_the_one_command(tiny_lm, data_dir, monkeypatch):
    from workbench.methods.kvzap_press import NoScorer
    from workbench.methods.press_build import build_press
    from workbench.runner import classify_failure
    from workbench.methods import presses

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    press = build_press("kvzap", {"model_type": "linear", "scorer": None, "compression_ratio": 0.0}, 0.5)
    with pytest.raises(NoScorer) as err:
        press.post_init_from_model(tiny_lm.model)
    assert "workbench train-kvzap --model" in str(err.value) and "--kind linear" in str(err.value)
    status, message = classify_failure(err.value, presses.resolve("kvzap", {"model_type": "linear"}).hub_reason)
    assert status == "unavailable" and "workbench train-kvzap" in message


def _run_cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "workbench", "train-kvzap", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _kill_after(proc, shards, n: int) -> int:
    """SIGKILL the training once n texts are on disk; returns how many were."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(shards.glob("*.safetensors"))) < n:
        time.sleep(0.02)
    assert proc.poll() is None, "the training ended before it could be killed: " + proc.communicate()[1][-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(list(shards.glob("*.safetensors")))


def test_training_resumes_after_sigkill_and_restarts_on_other_settings(tiny_llama_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from workbench.kvzap.train import train

    env = {**os.environ, "WORKBENCH_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["--model", str(tiny_llama_dir), "--data", "wikitext2", "--texts", "30", "--held-out", "2", "--min-tokens", "100",
            "--max-tokens", "150", "--tokens-per-text", "20", "--epochs", "2", "--hidden-dim", "8"]
    folder = tmp_path / "data" / "kvzap" / store.model_slug(str(tiny_llama_dir))
    shards = folder / ".mlp.work" / "texts"
    done_before = _kill_after(_run_cli(args, env), shards, 3)
    assert done_before >= 3 and not (folder / "mlp").exists()

    out, err = _run_cli(args, env).communicate(timeout=300)
    assert f"resuming: {done_before} of 32 texts" in err, err[-2000:]
    assert "mean" in out and not (folder / ".mlp.work").exists()
    resumed = load_file(str(folder / "mlp" / "model.safetensors"))

    # Uninterrupted, the same settings give the same scorer.
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data2"))
    settings = _settings(str(tiny_llama_dir), texts=30, held_out=2, min_tokens=100, max_tokens=150)
    settings = type(settings)(**{**settings.__dict__, "fit": type(settings.fit)(hidden_dim=8, epochs=2)})
    record = train(settings)
    fresh = load_file(str(tmp_path / "data2" / "kvzap" / store.model_slug(str(tiny_llama_dir)) / "mlp" / "model.safetensors"))
    assert fresh.keys() == resumed.keys() and all(torch.allclose(fresh[k], resumed[k], atol=1e-6) for k in fresh)
    assert record["texts_reused"] == 0

    # Other settings (another seed) do not reuse what a killed run left: they start afresh.
    _kill_after(_run_cli(args, env), shards, 2)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    said = []
    record = train(type(settings)(**{**settings.__dict__, "seed": 1}), on_progress=lambda *a: said.append(a[-1]))
    assert record["texts_reused"] == 0 and not any("resuming" in s for s in said)


def test_cli_bad_input_is_one_line_and_exit_2(tiny_llama_dir, tmp_path):
    env = {**os.environ, "WORKBENCH_DATA": str(tmp_path / "data")}
    for args, field in ((["--data", "no-such-set"], "--data"), (["--model", "./nowhere"], "--model"),
                        (["--min-tokens", "900", "--max-tokens", "800"], "--min-tokens"), (["--texts", "0"], "--texts")):
        proc = _run_cli(args, env)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and "Traceback" not in err, err
        assert field in err.strip().splitlines()[-1], err  # one line naming the flag (after argparse's usage, for its own)
    assert not (tmp_path / "data").exists()


def test_rate_matched_threshold_meets_the_rate(tiny_lm):
    """DMS over a score press, rate-matched: one threshold per sample (all layers and heads) that keeps the rate
    under context-continuation; the threshold mode keeps reporting what it kept."""
    from workbench import datasets, evaluate
    from workbench.plan import MethodSpec, ProtocolSpec

    protocol = ProtocolSpec(name="context-continuation", context_tokens=96, continuation_tokens=8)
    sample = datasets.lm_samples("wikitext2", tiny_lm.tokenizer, 1, 96, 8, 0)[0]
    params = {"press": {"name": "knorm", "params": {"compression_ratio": 0.0}}, "threshold": -6.0,
              "sliding_window_size": 16, "decoding": False, "match_rate": True}
    matched = MethodSpec(name="dms", family="kv", label="dms-matched", params=params, rates=[0.5, 0.25])
    out = evaluate.evaluate_kv(tiny_lm, sample, matched, [0.5, 0.25], protocol)
    cells = 2 * 2 * 96  # layers × KV heads × context tokens
    for rate in (0.5, 0.25):
        assert abs(out[rate]["kept_fraction"] - rate) <= 1 / cells
        assert isinstance(out[rate]["threshold"], float)
    assert out[0.25]["threshold"] > out[0.5]["threshold"]
    fixed = MethodSpec(name="dms", family="kv", label="dms", params={**params, "match_rate": False,
                                                                     "threshold": out[0.5]["threshold"]}, rates=[None])
    again = evaluate.evaluate_kv(tiny_lm, sample, fixed, [None], protocol)[None]
    assert again["kept_fraction"] == out[0.5]["kept_fraction"] and "threshold" not in again


def test_plan_takes_rates_for_dms_only_when_rate_matched(tmp_path):
    from workbench.plan import PlanError, load_preset

    base = {"name": "p", "model": "smollm2-135m", "rates": [0.5, 0.25]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**base, "methods": [{"name": "dms", "params": {"press": "knorm"}, "rates": [0.5]}]}))
    with pytest.raises(PlanError, match="match_rate"):
        load_preset(str(path))
    path.write_text(json.dumps({**base, "methods": [{"name": "dms", "params": {"press": "kvzap", "match_rate": True}}]}))
    plan = load_preset(str(path))
    assert [c.rate for c in plan.cells() if c.method == "dms"] == [0.5, 0.25]
    path.write_text(json.dumps({**base, "methods": [{"name": "dms", "params": {"press": "kvzap"}}]}))
    assert [c.rate for c in load_preset(str(path)).cells() if c.method == "dms"] == [None]


def test_a_plan_runs_kvzap_offline_once_a_scorer_is_trained(tiny_llama_dir, data_dir, monkeypatch):
    """kv-compare's KVzap cells on the tiny model under the chunked protocol: unavailable (with the command) before
    training, done after — rate-matched at the plan's rate, and at a fixed threshold — each record naming its scorer."""
    from workbench import runner
    from workbench.kvzap.train import train
    from workbench.plan import parse_plan

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plan = parse_plan({
        "name": "tiny-kv-compare", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 2, "seed": 0}],
        "protocol": {"name": "chunked", "context_tokens": 96, "continuation_tokens": 31, "chunk_size": 32}, "rates": [0.5],
        "methods": ["streaming-llm", {"name": "dms", "params": {"press": "kvzap", "match_rate": True, "sliding_window_size": 16},
                                      "label": "kvzap"},
                    {"name": "dms", "params": {"press": "kvzap", "threshold": 0.0, "sliding_window_size": 16}, "label": "kvzap-thr"}]})
    before = {c["method"]: c for c in runner.run(plan).cells.values()}
    assert before["kvzap"]["status"] == "unavailable" and "workbench train-kvzap --model" in before["kvzap"]["reason"]
    assert before["streaming-llm"]["status"] == "done"

    record = train(_settings(str(tiny_llama_dir)))
    cells = {c["method"]: c for c in runner.run(plan).cells.values()}
    matched, fixed = cells["kvzap"], cells["kvzap-thr"]
    assert matched["status"] == "done" and fixed["status"] == "done"
    assert matched["rate"] == 0.5 and abs(matched["kept_fraction"] - 0.5) < 0.15  # chunked: near the rate, measured
    assert fixed["rate"] is None and 0 < fixed["kept_fraction"] <= 1
    for s in matched["samples"] + fixed["samples"]:
        assert record["folder"] in s["scorer"]
    assert all(isinstance(s["threshold"], float) for s in matched["samples"])


def test_a_scorer_folder_that_is_not_there_is_refused_before_a_run(tiny_llama_dir, tmp_path):
    from workbench.plan import PlanError, parse_plan
    from workbench.preflight import preflight

    doc = {"name": "t", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 1}],
           "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": [0.5],
           "methods": ["knorm", {"name": "dms", "params": {"press": {"name": "kvzap", "params": {"scorer": str(tmp_path / "nope")}},
                                                           "match_rate": True}}]}
    with pytest.raises(PlanError, match=r"t.json: field 'methods\[1\]\.params\.press\.params\.scorer': .*nope is not a folder"):
        preflight(parse_plan(doc), "t.json")
    (tmp_path / "nope").mkdir()
    preflight(parse_plan(doc), "t.json")


def test_two_trainings_of_one_scorer_do_not_run_at_once(tiny_llama_dir, data_dir):
    from workbench.kvzap.train import _exclusive, train

    with _exclusive(store.work_dir(str(tiny_llama_dir), "mlp")):  # as another process holding the lock would
        with pytest.raises(store.TrainingBusy, match="another process is training this scorer"):
            train(_settings(str(tiny_llama_dir)))
    assert train(_settings(str(tiny_llama_dir)))["samples_train"] == 80


def test_kvzap_as_a_score_press_shares_one_prefill_across_rates(tiny_llama_dir, tiny_lm, data_dir):
    """The plain kvzap press (top-k of its scores per head) on the shared-prefill path gives the per-rate caches."""
    from workbench import datasets, evaluate
    from workbench.kvzap.train import train
    from workbench.plan import MethodSpec, ProtocolSpec

    train(_settings(str(tiny_llama_dir)))
    protocol = ProtocolSpec(name="context-continuation", context_tokens=64, continuation_tokens=8)
    sample = datasets.lm_samples("wikitext2", tiny_lm.tokenizer, 1, 64, 8, 3)[0]
    method = MethodSpec(name="kvzap", family="kv", label="kvzap", params={"model_type": "mlp", "scorer": None, "compression_ratio": 0.0},
                        rates=[0.75, 0.5])
    shared = evaluate.evaluate_kv(tiny_lm, sample, method, [0.75, 0.5], protocol, shared_allowed=True)
    per_rate = evaluate.evaluate_kv(tiny_lm, sample, method, [0.75, 0.5], protocol, shared_allowed=False)
    for rate in (0.75, 0.5):
        assert shared[rate]["path"] == "shared-prefill" and per_rate[rate]["path"] == "per-rate"
        assert shared[rate]["nll_sum"] == pytest.approx(per_rate[rate]["nll_sum"], rel=1e-6)
        assert shared[rate]["kept_fraction"] == per_rate[rate]["kept_fraction"] == pytest.approx(rate, abs=1 / 64)
        assert shared[rate]["scorer"] == per_rate[rate]["scorer"] and "trained for" in shared[rate]["scorer"]
