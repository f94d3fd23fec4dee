"""workbench.tasks on the real bundled files (no model): deterministic task samples and the metrics,
checked against values computed by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from workbench.datasets import load_documents
from workbench.tasks import (
    NEEDLE_SENTENCE, TASKS, TaskError, TaskSample, extract_number, generation_budget, rouge_l, score,
    squad_em, squad_f1, task_for_dataset, task_samples,
)


def words(text: str) -> int:
    """A whitespace 'tokenizer', so lengths in the needle tests are exact and need no model."""
    return len(text.split())


# --- which task -----------------------------------------------------------------------------------

def test_task_for_dataset(tmp_path):
    assert task_for_dataset("gsm8k") == "gsm8k"
    assert task_for_dataset("paulgraham") == "needle"
    assert task_for_dataset("meetingbank") == "meetingbank"
    assert task_for_dataset("wikitext2") is None
    squad = tmp_path / "squad.jsonl"
    squad.write_text(json.dumps({"context": "Paris is in France.", "question": "Where is Paris?",
                                 "answers": {"text": ["France"], "answer_start": [12]}}) + "\n")
    assert task_for_dataset(str(squad)) == "qa"
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"text": "no question here"}) + "\n")
    assert task_for_dataset(str(plain)) is None
    with pytest.raises(TaskError, match="supports no task"):
        task_samples(str(plain), 1)


def test_generation_budgets():
    assert {t: generation_budget(t) for t in TASKS} == {"gsm8k": 256, "needle": 16, "meetingbank": 128, "qa": 32}
    with pytest.raises(TaskError):
        generation_budget("summarise")


# --- gsm8k ----------------------------------------------------------------------------------------

def test_gsm8k_samples_few_shot_without_target():
    docs = load_documents("gsm8k")
    samples = task_samples("gsm8k", 20, seed=3, n_shots=4)
    assert len({s.sample_id for s in samples}) == 20
    for s in samples:
        target = docs[s.meta["index"]]
        assert s.task == "gsm8k" and s.question == target.meta["question"]
        assert s.prompt_suffix == f"\n\nQuestion: {target.meta['question']}\nAnswer:"
        # The reference is the number after '####' in the solution.
        assert s.answers == (target.meta["answer"].rsplit("####", 1)[1].strip().replace(",", ""),)
        assert s.meta["index"] not in s.meta["shots"] and len(s.meta["shots"]) == 4
        assert target.meta["question"] not in s.context
        assert s.context.count("Question: ") == 4 and s.context.count("\nAnswer: ") == 4
        assert s.context.startswith("Question: ") and "####" in s.context and "<<" not in s.context
        for j in s.meta["shots"]:
            assert docs[j].meta["question"] in s.context


def test_gsm8k_deterministic():
    a, b = task_samples("gsm8k", 5, seed=0), task_samples("gsm8k", 5, seed=0)
    assert a == b
    assert task_samples("gsm8k", 5, seed=1) != a
    # Asking for more samples only appends.
    assert task_samples("gsm8k", 8, seed=0)[:5] == a
    with pytest.raises(TaskError):
        task_samples("gsm8k", 2, n_shots=0)


# --- needle ---------------------------------------------------------------------------------------

def test_needle_depths_and_length():
    depths = [0.0, 0.25, 0.5, 0.75, 1.0]
    samples = task_samples("paulgraham", 10, seed=7, count_tokens=words, context_tokens=1500, depths=depths)
    for i, s in enumerate(samples):
        assert s.task == "needle" and s.meta["depth"] == depths[i % 5] and s.meta["context_tokens"] == 1500
        (number,) = s.answers
        assert re.fullmatch(r"\d{5}", number)
        needle = NEEDLE_SENTENCE.format(number=number)
        assert s.context.count(needle) == 1 and s.context.count(number) == 1
        offset = s.context.index(needle)
        assert offset == s.meta["needle_offset"]
        assert abs(offset / len(s.context) - s.meta["depth"]) < 0.03
        # At a sentence boundary: what precedes the needle ends a sentence (or nothing precedes it).
        before = s.context[:offset].rstrip()
        assert before == "" or before[-1] in ".!?\"')]”’"
        # The extra token is a word the essays glued to the previous sentence ('end.Next'), split by the needle.
        assert 1500 <= words(s.context) <= 1501
        assert s.prompt_suffix.endswith("Answer: The special magic number mentioned in the essays is")
        assert s.question in s.prompt_suffix
    # One haystack per round over the depth grid; the next round starts elsewhere.
    assert samples[0].meta["essay"] == samples[4].meta["essay"] != samples[5].meta["essay"]


def test_needle_deterministic_and_default_tokens():
    a = task_samples("paulgraham", 3, seed=0, count_tokens=words, context_tokens=800)
    assert a == task_samples("paulgraham", 3, seed=0, count_tokens=words, context_tokens=800)
    assert [s.meta["depth"] for s in a] == [0.1, 0.5, 0.9]
    b = task_samples("paulgraham", 3, seed=1, count_tokens=words, context_tokens=800)
    assert [s.answers for s in a] != [s.answers for s in b] and a[0].context != b[0].context
    # Without count_tokens, 1 token ≈ 4 characters.
    (c,) = task_samples("paulgraham", 1, seed=0, context_tokens=1000)
    assert 3900 <= len(c.context) <= 4000
    with pytest.raises(TaskError):
        task_samples("paulgraham", 1, count_tokens=words, context_tokens=2000, depths=[1.5])
    with pytest.raises(TaskError, match="fewer than"):
        task_samples("paulgraham", 1, count_tokens=words, context_tokens=10_000_000)


# --- meetingbank and qa ---------------------------------------------------------------------------

def test_meetingbank_samples():
    docs = load_documents("meetingbank")
    samples = task_samples("meetingbank", 3, seed=0)
    assert sorted(s.meta["index"] for s in samples) == [0, 1, 2]
    for s in samples:
        assert s.context == docs[s.meta["index"]].text and s.answers == (docs[s.meta["index"]].meta["summary"],)
        assert s.question == "Summarize the meeting." and s.prompt_suffix == "\n\nSummary:"
    assert samples == task_samples("meetingbank", 3, seed=0)
    assert [s.sample_id for s in task_samples("meetingbank", 3, seed=1)] != [s.sample_id for s in samples]
    with pytest.raises(TaskError, match="holds 3"):
        task_samples("meetingbank", 4)


def test_qa_samples_from_jsonl(tmp_path):
    rows = [
        {"context": "The Broncos won Super Bowl 50.", "question": "Who won?", "answers": {"text": ["Denver Broncos", "Broncos"]}},
        {"context": "Unanswerable.", "question": "Why?", "answers": {"text": []}},  # SQuAD v2 style: skipped
        {"context": "Water boils at 100 C.", "question": "At what temperature?", "answers": ["100 C"]},
    ]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = task_samples(str(path), 2, seed=0)
    by_index = {s.meta["index"]: s for s in samples}
    assert set(by_index) == {0, 2}
    s = by_index[0]
    assert s == TaskSample(s.sample_id, "qa", "The Broncos won Super Bowl 50.", "Who won?",
                           "\n\nQuestion: Who won?\nAnswer:", ("Denver Broncos", "Broncos"), {"index": 0})
    assert by_index[2].answers == ("100 C",)
    with pytest.raises(TaskError):
        task_samples(str(path), 3)


# --- metrics --------------------------------------------------------------------------------------

@pytest.mark.parametrize("generated, expected", [
    ("She pays $1,200.00 in total.", "1200"),
    ("48 / 2 = 24 clips in May.\n#### 72", "72"),
    ("#### 72\n\nQuestion: Tom has 5 apples.\nAnswer: 5", "72"),
    ("The answer is 18.", "18"),
    ("So the answer is 18. Check: 18 + 2 = 20", "18"),
    ("3 apples and 5 pears make 8", "8"),
    ("The temperature falls to -3 degrees", "-3"),
    ("It costs 0.50 dollars", "0.5"),
    ("18.0", "18"),
    ("no digits at all", None),
])
def test_extract_number(generated, expected):
    assert extract_number(generated) == expected


def test_gsm8k_accuracy():
    assert score("gsm8k", "So she makes 9 * 2 = $18.\n#### 18", ("18",)) == {
        "score": 1.0, "metric": "accuracy", "predicted": "18"}
    assert score("gsm8k", "The answer is $1,200.", ("1200",))["score"] == 1.0
    assert score("gsm8k", "The answer is 17.", ("18",))["score"] == 0.0
    assert score("gsm8k", "I don't know", ("18",)) == {"score": 0.0, "metric": "accuracy", "predicted": None}


def test_needle_exact_match():
    assert score("needle", " 48213.", ("48213",)) == {"score": 1.0, "metric": "exact_match"}
    assert score("needle", " 48,213", ("48213",))["score"] == 1.0
    assert score("needle", " 482135", ("48213",))["score"] == 0.0
    assert score("needle", " 4821", ("48213",))["score"] == 0.0


def test_rouge_l_by_hand():
    # gen: police killed the gunman (4); ref: the gunman was killed by police (6).
    # LCS = 'the gunman' = 2 → P = 2/4, R = 2/6, F1 = 2·(1/2)(1/3) / (1/2 + 1/3) = 0.4.
    r = rouge_l("Police killed the gunman.", "The gunman was killed by police")
    assert r["precision"] == pytest.approx(0.5) and r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(0.4)
    # the cat sat on the mat / the cat was on the mat: LCS 'the cat on the mat' = 5 of 6 each side.
    assert rouge_l("the cat sat on the mat", "The cat was on the mat")["f1"] == pytest.approx(5 / 6)
    assert rouge_l("", "anything")["f1"] == 0.0
    s = score("meetingbank", "Police killed the gunman.", ("nothing shared", "The gunman was killed by police"))
    assert s["metric"] == "rouge_l" and s["score"] == pytest.approx(0.4) and s["recall"] == pytest.approx(1 / 3)


def test_squad_f1_em():
    # 'the Broncos' → ['broncos']; 'Denver Broncos' → ['denver', 'broncos']: P = 1, R = 1/2, F1 = 2/3.
    assert squad_f1("the Broncos", "Denver Broncos") == pytest.approx(2 / 3)
    assert squad_em("the Broncos", "Denver Broncos") == 0.0
    assert squad_em("Denver Broncos!", "denver  broncos") == 1.0
    assert squad_f1("an apple a day", "apple day") == 1.0
    assert squad_f1("cats", "dogs") == 0.0
    s = score("qa", " the Broncos", ("Denver Broncos", "Broncos"))
    assert s == {"score": 1.0, "metric": "f1", "f1": 1.0, "em": 1.0}
    s = score("qa", "Santa Clara, California", ("Levi's Stadium in Santa Clara",))
    # ['santa', 'clara', 'california'] vs ['levis', 'stadium', 'in', 'santa', 'clara']: 2 shared,
    # P = 2/3, R = 2/5, F1 = 2·(2/3)(2/5) / (2/3 + 2/5) = 0.5.
    assert s["f1"] == pytest.approx(0.5) and s["em"] == 0.0


def test_score_rejects_bad_input():
    with pytest.raises(TaskError):
        score("translation", "x", ("y",))
    with pytest.raises(TaskError):
        score("qa", "x", ())


# --- imports --------------------------------------------------------------------------------------

def test_import_loads_no_heavy_library():
    code = ("import sys, workbench.tasks; "
            "print(' '.join(m for m in ('torch', 'transformers', 'datasets', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
