"""Compression while decoding (seed 003) on the tiny random-weight Llama: schedules compress where they say, the
budget curve is the cache actually held, "compress never" is plain greedy generation, plan errors name the field."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import ClassVar

import pytest

from workbench import runner
from workbench.decoding import curve as curves
from workbench.decoding.boundaries import boundary_points
from workbench.plan import PlanError, parse_plan


def _plan(model_dir, methods, rates=(0.5,), datasets=None, max_new=40):
    return parse_plan({"name": "dec", "model": str(model_dir), "device": "cpu", "dtype": "float32",
                       "datasets": datasets or [{"name": "wikitext2", "samples": 2}],
                       "protocol": {"name": "decoding", "context_tokens": 32, "max_new_tokens": max_new},
                       "rates": list(rates), "methods": methods})


@pytest.fixture(scope="module")
def session(tiny_llama_dir, tmp_path_factory):
    plan = _plan(tiny_llama_dir, [{"name": "interval", "params": {"every": 8}},
                                  {"name": "interval", "label": "int-b12", "params": {"every": 5, "budget": 12}},
                                  {"name": "random-points", "params": {"every": 6, "seed": 3}},
                                  "step-boundaries"])
    events = []
    s = runner.run(plan, on_event=events.append, out=str(tmp_path_factory.mktemp("dec") / "s.json"))
    s.events = events
    return s


def _cell(session, label, rate=0.5):
    return next(c for c in session.cells.values() if c["method"] == label and c["dataset"] == "wikitext2"
                and c["rate"] == (1.0 if label == "baseline" else rate))


def test_every_cell_is_measured_with_the_decoding_figures(session):
    assert session.status == "finished", [c["error"] for c in session.cells.values()]
    for c in session.cells.values():
        assert c["ppl"] is not None and c["generated_tokens"] == 40 and c["tokens_per_second"] > 0
        for s in c["samples"]:
            assert s["n_tokens"] == 40 and s["generated_text"] and s["peak_memory_bytes"] > 0
            assert len(s["compression_points"]) == len(s["compression_chars"])
    base = _cell(session, "baseline")
    assert base["compressions"] == 0 and base["kept_fraction"] == 1.0
    interval = _cell(session, "interval")
    assert interval["delta_ppl"] is not None and interval["speed_ratio"] is not None
    assert interval["kept_fraction"] < 0.8  # the cache holds about half of what it has seen


def test_interval_and_budget_points_are_where_the_schedule_says(session):
    for s in _cell(session, "interval")["samples"]:
        assert s["compression_points"] == [7, 15, 23, 31]  # every 8 generated tokens: after t = 7, 15, …
        assert s["schedule"] == {"every": 8}  # the record says which schedule put them there
    budget = next(c for c in session.cells.values() if c["method"] == "int-b12" and c["dataset"] == "wikitext2")
    assert budget["rate"] is None and budget["key"].endswith("|thr")
    for s in budget["samples"]:
        assert s["compression_points"] == [4, 9, 14, 19, 24, 29, 34]
        assert all(layers == [12, 12] for layers in s["kv_point_layers"])  # the fixed budget, every layer


class _PunctuatedTokenizer:
    """The tiny model's word tokenizer, with a few words written as punctuation (its vocabulary has none), so
    generated text holds sentence ends and new lines."""

    MARKS: ClassVar[dict[int, str]] = {10: ".", 11: "\n", 12: " <<3*4=12>>"}

    def __init__(self, tok):
        self.tok = tok

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.MARKS.get(i) or " " + self.tok.decode([i], skip_special_tokens=True) for i in ids)


def test_step_boundary_points_follow_the_rule_on_the_generated_text(tiny_llama_dir):
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.decoding import loop
    from workbench.decoding.schedules import StepBoundaries
    from workbench.methods.press_build import build_press

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float32).eval()
    tok = _PunctuatedTokenizer(AutoTokenizer.from_pretrained(tiny_llama_dir))
    rng = random.Random(0)
    forced = [rng.choice([10, 11, 12]) if rng.random() < 0.25 else rng.randrange(20, 60) for _ in range(80)]
    out = loop.decode(model, tok, list(range(5, 25)), 80, set(), StepBoundaries(),
                      loop.Evictor(model, build_press("knorm", {}, None), loop.Target(budget=16)), forced=forced)
    pieces = [tok.decode([i]) for i in forced]
    expected = boundary_points(pieces)
    assert len(expected) > 5 and out.points == expected
    for t, char in zip(out.points, out.chars):
        assert out.text[:char] == "".join(pieces[: t + 1])
    assert all(layers == [16, 16] for layers in out.point_layers)


def test_random_points_are_seeded_and_as_many_as_an_interval_on_average(tiny_llama_dir):
    from workbench.decoding.schedule import Step
    from workbench.decoding.schedules import RandomPoints

    counts = []
    for seed in range(200):
        sched = RandomPoints(every=8, seed=1)
        sched.start(seed)
        pts = [t for t in range(400) if sched.is_point(Step(t, t, "", ""))]
        again = RandomPoints(every=8, seed=1)
        again.start(seed)
        assert pts == [t for t in range(400) if again.is_point(Step(t, t, "", ""))]
        counts.append(len(pts))
    assert sum(counts) / len(counts) == pytest.approx(50, rel=0.05)  # 400 tokens / 8


def test_the_budget_curve_is_the_cache_held_at_every_step(tiny_llama_dir):
    """A hook reads each layer's cache length as every decoding forward begins: it must equal the curve at the
    step before (what the schedule left), and every point must hold the target."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench import kv_eval
    from workbench.decoding import loop
    from workbench.decoding.schedules import RandomPoints
    from workbench.methods.press_build import build_press

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = list(range(5, 45))
    held: dict[int, list[int]] = {}

    def seen(module, args, kwargs):
        if kwargs["hidden_states"].shape[1] == 1:
            step = int(kwargs["position_ids"][0, 0]) - len(prompt)
            held.setdefault(step, []).append(kwargs["past_key_values"].layers[module.layer_idx].keys.shape[-2])

    handles = [m.register_forward_pre_hook(seen, with_kwargs=True) for m in kv_eval.attention_modules(model)]
    try:
        sched = RandomPoints(every=5, seed=0)
        out = loop.decode(model, tok, prompt, 60, set(), sched, loop.Evictor(model, build_press("knorm", {}, None),
                          loop.Target(rate=0.4)), seed=7)
    finally:
        for h in handles:
            h.remove()
    assert out.points, "the seed gives points"
    expanded = curves.expand(out.curve)
    for step in range(1, 59):
        # The forward feeding token `step` sees what the cache held after the decision at step - 1.
        assert held[step] == [expanded[step - 1]] * 2, step
    for t, layers in zip(out.points, out.point_layers):
        assert layers == [kv_eval.compute_n_kept(len(prompt) + t + 1, 0.6)] * 2


def test_compress_never_is_plain_greedy_generation_token_for_token(session, tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

    from workbench import kv_eval
    from workbench.datasets import lm_samples

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    base = _cell(session, "baseline")
    samples = {s.sample_id: s for s in lm_samples("wikitext2", tok, 2, 32, 40, 0)}
    for record in base["samples"]:
        prompt = torch.tensor([samples[record["sample_id"]].input_ids[:32]])
        tokens, _ = kv_eval.generate(model, DynamicCache(), prompt, 0, 40, set())  # plain greedy decoding
        assert record["generated_text"] == tok.decode(tokens, skip_special_tokens=True)
        assert record["compression_points"] == [] and record["kv_curve"][-1][1] == 32 + 39


def test_compressed_cells_score_the_baselines_tokens(session):
    base = {s["sample_id"]: s for s in _cell(session, "baseline")["samples"]}
    for label in ("interval", "step-boundaries"):
        for s in _cell(session, label)["samples"]:
            assert s["n_tokens"] == base[s["sample_id"]]["n_tokens"]
    # Compression changes the NLL of the same tokens (the tiny model's cache is evicted to 50 %).
    assert any(s["nll_sum"] != base[s["sample_id"]]["nll_sum"] for s in _cell(session, "interval")["samples"])


def test_live_budget_events_carry_the_cell_and_the_curve(session):
    live = [e for e in session.events if e.kind == "live"]
    assert live, "each decoded sample reports its curve at least once"
    assert all(e.data["cell"] in session.cells and e.data["curve"] for e in live)


def test_the_session_reloads_and_its_table_shows_the_decoding_columns(session):
    from workbench import tables
    from workbench.session import Session

    again = Session.load(session.path)
    assert again.plan.protocol.max_new_tokens == 40
    labels = [c.label for c in tables.columns_for(list(again.cells.values()))]
    assert {"Gen", "Points", "Tok/s", "Speed", "ΔPPL"} <= set(labels)
    assert tables.rate_text(next(c for c in again.cells.values() if c["method"] == "int-b12")) == "12 tok"


@pytest.mark.parametrize("doc, field", [
    ({"protocol": {"name": "decoding", "max_new_tokens": 0}}, "protocol.max_new_tokens"),
    ({"protocol": {"name": "decoding", "continuation_tokens": 7}}, "protocol.continuation_tokens"),
    ({"protocol": {"name": "decoding", "temperature": -1}}, "protocol.temperature"),
    ({"protocol": {"name": "context-continuation", "temperature": 0.7}}, "protocol.temperature"),
    ({"methods": [{"name": "interval", "params": {"every": 0}}]}, "methods[0].params.every"),
    ({"methods": [{"name": "interval", "params": {"budget": -3}}]}, "methods[0].params.budget"),
    ({"methods": [{"name": "interval", "params": {"press": "adakv"}}]}, "methods[0].params.press"),
    ({"methods": [{"name": "interval", "params": {"press": "observed-attention"}}]}, "methods[0].params.press"),
    ({"methods": [{"name": "interval", "params": {"budget": 8}, "rates": [0.5]}]}, "methods[0].rates"),
    ({"methods": ["snapkv"]}, "methods[0]"),
    ({"methods": [{"name": "random", "family": "prompt"}]}, "methods[0]"),
    ({"methods": ["interval"], "protocol": {"name": "task"}, "datasets": ["gsm8k"]}, "methods[0]"),
])
def test_plan_errors_name_the_field(tiny_llama_dir, doc, field):
    data = {"name": "x", "model": str(tiny_llama_dir), "datasets": ["wikitext2"], "protocol": {"name": "decoding"},
            "methods": ["interval"], **doc}
    with pytest.raises(PlanError) as err:
        parse_plan(data, source="p.json")
    assert f"field '{field}'" in str(err.value)


def test_a_bad_decoding_preset_exits_2_naming_the_field(tiny_llama_dir, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "x", "model": str(tiny_llama_dir), "protocol": {"name": "decoding"},
                                "methods": [{"name": "step-boundaries", "params": {"budget": 0}}]}))
    done = subprocess.run([sys.executable, "-m", "workbench", "--preset", str(path), "--dry-run"], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "methods[0].params.budget" in done.stderr and "Traceback" not in done.stderr


def test_a_resumed_cell_generates_the_baselines_tokens_again(session, tiny_llama_dir):
    """Without the baseline's tokens in memory (a resumed run, a Ray worker) a cell generates them again: its
    records are the ones the run made."""
    from workbench.decoding.protocol import Decoding
    from workbench.models import load_model

    backend = load_model(str(tiny_llama_dir), "cpu", "float32")
    plan = session.plan
    fresh = Decoding()
    samples = fresh.samples(backend, plan.datasets[0], plan)
    method = plan.method("interval")
    again = fresh.decoded(backend, samples, method, [0.5], plan)
    recorded = {s["sample_id"]: s for s in _cell(session, "interval")["samples"]}
    for per_rate in again:
        rec = per_rate[0.5]
        old = recorded[rec["sample_id"]]
        assert rec["nll_sum"] == pytest.approx(old["nll_sum"], rel=1e-6)
        assert rec["compression_points"] == old["compression_points"] and rec["generated_text"] == old["generated_text"]


def test_sampling_is_seeded_and_temperature_zero_is_greedy(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.decoding import loop

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = list(range(5, 37))
    greedy = loop.decode(model, tok, prompt, 30, set()).tokens
    assert loop.decode(model, tok, prompt, 30, set(), temperature=0.0, seed=5).tokens == greedy
    a = loop.decode(model, tok, prompt, 30, set(), temperature=1.5, seed=5).tokens
    assert a == loop.decode(model, tok, prompt, 30, set(), temperature=1.5, seed=5).tokens
    assert a != greedy and a != loop.decode(model, tok, prompt, 30, set(), temperature=1.5, seed=6).tokens


def test_the_dry_run_says_what_a_budget_method_keeps_and_how_long_it_generates():
    done = subprocess.run([sys.executable, "-m", "workbench", "--preset", "decoding-quick", "--dry-run"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "up to 64 new tokens" in done.stdout and "continuation tokens" not in done.stdout
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("    ")}
    assert "rates none (budget 96)" in lines["interval-16"] and "rates 0.5" in lines["interval-16-half"]
