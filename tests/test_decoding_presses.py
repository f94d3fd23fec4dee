"""Every score-based press inside a decoding schedule (tiny random-weight Llama): the presses a schedule accepts
produce records, score between steps as they would over a prefill of the same tokens (a query window with its own
positions, future queries after the tokens seen, StreamingLLM's sinks kept, PyramidKV's per-layer budgets), and the
presses that cannot score there are refused when the plan is validated."""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import sys

import pytest

from workbench import runner
from workbench.methods import presses, registry, schedules
from workbench.plan import parse_plan

PROMPT = list(range(5, 37))  # 32 tokens: fewer than SnapKV's default window of 64


def _offline_schedule_presses() -> list[str]:
    out = []
    for name, info in presses.PRESSES.items():
        params = registry.resolve_params(info, {})
        if schedules.between_steps(info) is None and presses.resolve(name, params).hub_reason is None:
            out.append(name)
    return out


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(tiny_llama_dir))


def test_every_press_a_schedule_accepts_produces_records(tiny_llama_dir, tmp_path):
    names = _offline_schedule_presses()
    assert {"snapkv", "pyramidkv", "expected-attention", "streaming-llm", "tova", "cap"} <= set(names)
    methods = [{"name": "interval", "label": name, "params": {"every": 8, "press": name}} for name in names]
    methods += [{"name": "interval", "label": f"{name}-b12", "params": {"every": 5, "press": name, "budget": 12}}
                for name in ("snapkv", "pyramidkv")]  # a budget below the window: the window narrows to what is held
    plan = parse_plan({"name": "presses", "model": str(tiny_llama_dir), "device": "cpu", "dtype": "float32",
                       "datasets": [{"name": "wikitext2", "samples": 2}],
                       "protocol": {"name": "decoding", "context_tokens": 32, "max_new_tokens": 40},
                       "rates": [0.5], "methods": methods})
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    errors = {c["method"]: c["error"] for c in session.cells.values() if c.get("error")}
    assert not errors and session.status == "finished", errors
    for label in [m["label"] for m in methods]:
        cell = next(c for c in session.cells.values() if c["method"] == label)
        assert cell["ppl"] is not None and cell["kept_fraction"] < 0.8, label
        for s in cell["samples"]:
            assert s["n_tokens"] == 40 and s["compression_points"], label
            if label.endswith("-b12"):
                assert all(sum(layers) == 24 for layers in s["kv_point_layers"]), (label, s["kv_point_layers"])


def _prefill_scores(model, ids, press) -> list:
    """The press's scores of every layer over one plain prefill of ``ids`` (what a prefill press would see)."""
    import torch
    from transformers import DynamicCache

    from workbench import kv_eval

    scores = {}

    def record(module, kwargs, output):
        layer = kwargs["past_key_values"].layers[module.layer_idx]
        scores[module.layer_idx] = press.score(module, kwargs["hidden_states"], layer.keys, layer.values, None, kwargs)

    with torch.inference_mode(), kv_eval.layer_hooks(model, record):
        model(input_ids=torch.tensor([ids]), past_key_values=DynamicCache(), use_cache=True)
    return [scores[i] for i in sorted(scores)]


def _first_point_scores(model, tok, name, params, forced, every):
    """The scores the decoding loop's press gives each layer at the first point of an interval schedule."""
    from workbench.decoding import loop
    from workbench.decoding.schedules import Interval

    evictor = loop.Evictor.for_press(model, name, params, loop.Target(budget=12))
    seen_scores = []
    own = evictor.score

    def spy(module, *args):
        out = own(module, *args)
        seen_scores.append(out.clone())
        return out

    evictor.score = spy
    loop.decode(model, tok, PROMPT, len(forced), set(), Interval(every=every), evictor, forced=forced)
    return seen_scores[: len(evictor.modules)]


@pytest.mark.parametrize("window, used", [(16, 16), (64, 39)])
def test_snapkv_between_steps_scores_as_over_a_prefill_of_the_same_tokens(model_and_tokenizer, window, used):
    """At the first point nothing was evicted yet, so SnapKV's window of the latest queries (with their own
    positions) must score the cache exactly as over a prefill of the tokens seen. With fewer tokens seen than the
    window (32 + 8 < 64 + 1) the window narrows to the tokens held less one (39)."""
    import torch

    from workbench.methods.press_build import build_press

    model, tok = model_and_tokenizer
    forced = [40 + i % 50 for i in range(20)]
    loop_scores = _first_point_scores(model, tok, "snapkv", {"window_size": window, "kernel_size": 5}, forced, every=8)
    direct = _prefill_scores(model, PROMPT + forced[:8], build_press("snapkv", {"window_size": used, "kernel_size": 5}, None))
    assert len(loop_scores) == 2
    for got, want in zip(loop_scores, direct):
        assert got.shape == want.shape == (1, 2, 40)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_expected_attention_between_steps_starts_its_future_queries_at_the_tokens_seen(model_and_tokenizer):
    """With more tokens seen (100 + 8) than hidden states buffered (64), the averaged rotation of the future queries
    must start at position 108 — the press's apply_avg_rope with q_len = seen — not at the buffer's length."""
    import torch
    from kvpress import ExpectedAttentionPress
    from kvpress.utils import get_prerope_query_states

    from workbench.decoding import loop
    from workbench.decoding.schedules import Interval

    model, tok = model_and_tokenizer
    prompt = [5 + i % 100 for i in range(100)]
    forced = [40 + i % 50 for i in range(10)]
    evictor = loop.Evictor.for_press(model, "expected-attention",
                                     registry.resolve_params(presses.PRESSES["expected-attention"], {}), loop.Target(budget=24))
    press = evictor.press
    calls = []
    own = press.get_query_statistics

    def spy(module, hidden_states):
        mu, cov = own(module, hidden_states)
        calls.append((module, hidden_states.clone(), mu.clone(), cov.clone()))
        return mu, cov

    press.get_query_statistics = spy
    out = loop.decode(model, tok, prompt, len(forced), set(), Interval(every=8), evictor, forced=forced)
    assert out.points == [7] and len(calls) == 2
    seen = len(prompt) + 8
    for module, hidden, mu, cov in calls:
        assert hidden.shape[1] == loop.HIDDEN_BUFFER < seen
        with torch.inference_mode():  # the loop's tensors are inference tensors
            q = get_prerope_query_states(module, hidden[:, press.n_sink:])
            mean = q.mean(dim=2, keepdim=True)
            centered = q - mean
            covariance = torch.einsum("bnsi,bnsj->bnij", centered, centered) / centered.shape[2]
            want_mu, want_cov = ExpectedAttentionPress.apply_avg_rope(press, module, mean.squeeze(2), covariance, seen)
            buffer_mu, _ = ExpectedAttentionPress.apply_avg_rope(press, module, mean.squeeze(2), covariance, hidden.shape[1])
        torch.testing.assert_close(mu, want_mu)
        torch.testing.assert_close(cov, want_cov)
        assert not torch.allclose(mu, buffer_mu, atol=1e-4)  # the buffer's length would be another rotation


@pytest.mark.parametrize("name", sorted(n for n in _offline_schedule_presses() if presses.PRESSES[n].traits.future_positions))
def test_every_press_with_future_queries_starts_them_at_the_tokens_seen(model_and_tokenizer, monkeypatch, name):
    """Whatever the press (ExpectedAttention, CAP), the method its entry names gets q_len = the tokens seen at each
    point, though it is handed only the last 64 hidden states."""
    import kvpress

    from workbench.decoding import loop
    from workbench.decoding.schedules import Interval

    model, tok = model_and_tokenizer
    info = presses.PRESSES[name]
    cls, method = getattr(kvpress, info.implementation), info.traits.future_positions
    own, q_lens = getattr(cls, method), []

    @functools.wraps(own)
    def recording(self, *args, **kwargs):
        q_lens.append(inspect.signature(own).bind(self, *args, **kwargs).arguments["q_len"])
        return own(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, recording)
    prompt = [5 + i % 100 for i in range(100)]
    evictor = loop.Evictor.for_press(model, name, registry.resolve_params(info, {}), loop.Target(budget=24))
    out = loop.decode(model, tok, prompt, 20, set(), Interval(every=8), evictor, forced=[40 + i for i in range(20)])
    assert out.points == [7, 15]
    assert q_lens == [len(prompt) + 8] * 2 + [len(prompt) + 16] * 2  # two layers a point


def test_the_window_reaches_only_the_latest_tokens_still_held():
    """After a cut, the entries a query window may read as its own keys: the trailing run of the latest entries kept,
    in every head."""
    import torch

    from workbench.decoding.loop import _latest_kept

    kept = torch.tensor([[[0, 1, 5, 8, 9], [0, 2, 7, 8, 9]]])  # (batch, heads, kept) of 10 entries
    assert _latest_kept(kept, 10, recent=10) == 3 - 1  # 8 and 9 in both heads; 7 in one only
    assert _latest_kept(kept, 10, recent=1) == 1  # never more than were the latest before the cut
    assert _latest_kept(torch.tensor([[[0, 1, 2]]]), 10, recent=10) == 0  # the latest entry was evicted
    assert _latest_kept(torch.tensor([[[6, 7, 8, 9]]]), 10, recent=10) == 4


def test_streaming_llm_between_steps_keeps_its_sinks_and_the_latest_tokens(model_and_tokenizer):
    """Its own score encodes the rate (all equal at ratio 0, and a CPU top-k of equal scores keeps the last ones):
    the loop uses its rate-free score, so the cache holds the first n_sink entries and the most recent ones."""
    import torch

    from workbench.decoding import loop
    from workbench.decoding.schedules import Interval

    model, tok = model_and_tokenizer
    forced = [40 + i % 50 for i in range(30)]
    full = loop.decode(model, tok, PROMPT, len(forced), set(), forced=forced).cache
    out = loop.decode(model, tok, PROMPT, len(forced), set(), Interval(every=8),
                      loop.Evictor.for_press(model, "streaming-llm", {"n_sink": 4}, loop.Target(budget=12)), forced=forced)
    # The first layer's keys depend on the token and its position only (later layers' on the evicted cache too).
    kept, whole = out.cache.layers[0].keys, full.layers[0].keys
    n = kept.shape[2]
    assert n == 12 + 5  # the last point (t = 23) kept 12, then 5 more tokens were fed
    torch.testing.assert_close(kept[:, :, :4], whole[:, :, :4])  # the sinks
    torch.testing.assert_close(kept[:, :, 4:], whole[:, :, -(n - 4):])  # the latest tokens


def test_pyramidkv_between_steps_sets_a_budget_per_layer_averaging_the_target(model_and_tokenizer):
    """PyramidKV's get_layer_budget at the fraction kept of the tokens seen: with window 2 and beta 2, a target of 24
    tokens per layer over 2 layers is 36 for the first layer and 12 for the last (mean 24)."""
    from workbench.decoding import loop
    from workbench.decoding.schedules import Interval

    model, tok = model_and_tokenizer
    forced = [40 + i % 50 for i in range(30)]
    out = loop.decode(model, tok, PROMPT, len(forced), set(), Interval(every=8),
                      loop.Evictor.for_press(model, "pyramidkv", {"window_size": 2, "kernel_size": 5, "beta": 2},
                                             loop.Target(budget=24)), forced=forced)
    assert out.points == [7, 15, 23] and out.point_layers == [[36, 12]] * 3


@pytest.mark.parametrize("press", ["leverage", "non-causal-attn", "kvzap"])
def test_a_press_that_cannot_score_between_steps_is_refused_by_the_dry_run(tiny_llama_dir, tmp_path, press):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "x", "model": str(tiny_llama_dir), "protocol": {"name": "decoding"},
                                "methods": [{"name": "interval", "params": {"press": press}}]}))
    done = subprocess.run([sys.executable, "-m", "workbench", "--preset", str(path), "--dry-run"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "methods[0].params.press" in lines[0] and f"{press} cannot evict between decoding steps" in lines[0]
    assert "hidden state" in lines[0] and "snapkv" in lines[0]  # why, and what to use instead
