"""Task-score evaluation: deterministic task samples and the metrics that score a generated answer.

The engine compresses a sample's ``context`` (a prompt compressor rewrites the text; a KV press
evicts from the prefilled context's cache), feeds ``prompt_suffix`` uncompressed, generates greedily
for up to ``generation_budget(task)`` new tokens and calls ``score`` on the generated text.

Tasks: ``gsm8k`` (few-shot maths, accuracy), ``needle`` (needle in a Paul Graham haystack, exact
match), ``meetingbank`` (meeting summary, ROUGE-L F1) and ``qa`` (any SQuAD-style dataset, token F1).
Every score is a float in [0, 1]. This module is pure Python: no torch, no tokenizer import (the
caller hands in ``count_tokens``).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Callable

from workbench.datasets import BUNDLED, Document, load_documents, validate_dataset_spec
from workbench.filememo import identity, remembered

__all__ = ["TASKS", "TaskError", "TaskSample", "generation_budget", "score", "task_for_dataset", "task_samples"]

_BUNDLED_TASKS = {"gsm8k": "gsm8k", "paulgraham": "needle", "meetingbank": "meetingbank"}

NEEDLE_QUESTION = "What is the special magic number mentioned in the essays?"
NEEDLE_SENTENCE = "The special magic number mentioned in the essays is {number}."
NEEDLE_ANSWER_PREFIX = "The special magic number mentioned in the essays is"
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)
DEFAULT_NEEDLE_TOKENS = 2048
MEETING_QUESTION = "Summarize the meeting."


class TaskError(ValueError):
    """A task that cannot be built or scored as asked; the message is one line."""


@dataclass(frozen=True)
class TaskSample:
    """One generation task. ``context`` is what a method compresses; ``prompt_suffix`` never is."""

    sample_id: str            # stable: the same (spec, seed, position, lengths) gives the same id
    task: str                 # 'gsm8k' | 'needle' | 'meetingbank' | 'qa'
    context: str
    question: str             # for question-aware compressors (LongLLMLingua); also inside prompt_suffix
    prompt_suffix: str        # ends where the model starts answering
    answers: tuple[str, ...]  # references; scores take the best over them
    meta: dict = field(default_factory=dict)


def generation_budget(task: str) -> int:
    """Default max new tokens of a task."""
    return _kind(task).budget


def _kind(task: str) -> "TaskKind":
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}: expected one of {', '.join(sorted(TASKS))}")
    return TASKS[task]


# --- which task a dataset supports ------------------------------------------------------------------

def _qa_fields(doc: Document) -> tuple[str, str, tuple[str, ...]] | None:
    """(context, question, answers) of a SQuAD-style record, or None when it lacks one of them."""
    meta = doc.meta
    # load_documents keeps the first of TEXT_KEYS as text, so 'context' is either the text or in meta.
    context = meta["context"] if isinstance(meta.get("context"), str) else doc.text
    question = meta.get("question")
    raw = meta.get("answers", meta.get("answer"))
    if isinstance(raw, dict):  # SQuAD / HF: {'text': [...], 'answer_start': [...]}
        raw = raw.get("text")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(question, str) or not isinstance(raw, (list, tuple)):
        return None
    answers = tuple(str(a) for a in raw if isinstance(a, (str, int, float)))
    # SQuAD v2 unanswerable rows have no answer: nothing to score against, so they are skipped.
    return (context, question, answers) if answers else None


def task_for_dataset(spec: str) -> str | None:
    """task_for_dataset_uncached, remembered per local file (path, size, modification time) so that
    validating a plan again — on every keystroke of the Setup screen — reads no file twice. An ``hf:``
    dataset is not loaded here (no network while validating): it is taken to be question/answer data,
    which drawing its samples checks."""
    if isinstance(spec, str) and spec.startswith("hf:"):
        validate_dataset_spec(spec)
        return "qa"
    return remembered(("task", *identity(spec)), lambda: task_for_dataset_uncached(spec))


def task_for_dataset_uncached(spec: str) -> str | None:
    """The task a dataset spec supports, or None (e.g. wikitext2, tinystories, a .txt file).

    Bundled: gsm8k → 'gsm8k', paulgraham → 'needle', meetingbank → 'meetingbank'. A local .jsonl or
    ``hf:`` dataset with a question and answers in one of its first 10 records is 'qa' (this loads
    the dataset).
    A malformed spec raises ``DatasetError`` rather than answering None.
    """
    validate_dataset_spec(spec)
    if spec in BUNDLED:
        return _BUNDLED_TASKS.get(spec)
    if not (spec.startswith("hf:") or spec.lower().endswith(".jsonl")):
        return None
    # Several records, since a SQuAD v2 file may open with unanswerable (answer-less) questions.
    return "qa" if any(_qa_fields(d) is not None for d in load_documents(spec)[:10]) else None


def task_type(spec: str) -> str:
    """The task type of a dataset spec (one of datasets.TASK_TYPES): a bundled dataset's is declared on its
    registry entry; another's follows the task it supports (``task_for_dataset``: an ``hf:`` dataset is QA),
    and prose without a task is language modelling. A local file that can no longer be read (a session from
    another machine) is taken by its task-less default."""
    if spec in BUNDLED:
        return BUNDLED[spec].task_type
    try:
        task = task_for_dataset(spec)
    except (ValueError, OSError):  # DatasetError is a ValueError: the file is not here
        task = None
    return TASKS[task].task_type if task else "language modelling"


# --- building samples -------------------------------------------------------------------------------

def task_samples(spec: str, n_samples: int, seed: int = 0, *, count_tokens: Callable[[str], int] | None = None,
                 context_tokens: int | None = None, depths: list[float] | None = None,
                 n_shots: int = 4) -> list[TaskSample]:
    """``n_samples`` samples of the task ``task_for_dataset(spec)`` supports; deterministic for
    (spec, n_samples, seed, lengths), and sample i does not depend on n_samples.

    - gsm8k: ``n_shots`` worked examples drawn once with ``random.Random(seed)`` form the context
      ('Question: ...\\nAnswer: ...', solution with '#### N'), shared by every sample as in LLMLingua's
      GSM8K setup; targets are other problems, so a target is never among its shots.
    - needle (spec 'paulgraham'): a haystack of ``context_tokens`` tokens (default 2048, counted with
      ``count_tokens``; None → 1 token ≈ 4 characters) with a needle sentence at a sentence boundary
      nearest ``depths[i % len(depths)]`` (fraction of the haystack's characters, 0 = start,
      1 = end; default 0.1, 0.5, 0.9). Number from ``random.Random(seed + i)``; meta depth,
      context_tokens (the target), needle_offset (characters).
    - meetingbank: transcript → summary (3 bundled rows; asking for more raises ``TaskError``).
    - qa: SQuAD-style records (context, question, answers).
    Raises ``TaskError`` when the spec supports no task or the sizes cannot be met, ``DatasetError``
    when the spec itself cannot be loaded.
    """
    if n_samples < 1:
        raise TaskError(f"n_samples must be >= 1 (got {n_samples})")
    task = task_for_dataset_uncached(spec)
    if task is None:
        raise TaskError(f"{spec}: supports no task-score evaluation (tasks: gsm8k, paulgraham, meetingbank, "
                        "or a .jsonl / hf: dataset with context, question and answers)")
    options = SampleOptions(count_tokens or _approx_tokens, DEFAULT_NEEDLE_TOKENS if context_tokens is None else context_tokens,
                            list(DEFAULT_DEPTHS) if depths is None else list(depths), n_shots)
    return TASKS[task].samples(spec, n_samples, seed, options)


def qa_samples(spec: str, seed: int = 0) -> list[TaskSample]:
    """Every answerable record of a question-answering dataset, in the order ``task_samples(spec, n, seed)`` draws
    them (its first n are that call's samples, for any n): what training a soft compressor on QA reads, holding
    out the first ones. Raises ``TaskError`` when the spec is not a QA set."""
    if task_for_dataset_uncached(spec) != "qa":
        raise TaskError(f"{spec}: not a question-answering dataset (records with context, question and answers)")
    return _record_samples(spec, "qa", len(_qa_rows(load_documents(spec))), seed, _qa_rows, _qa_suffix)


def _shuffled(n: int, seed: int) -> list[int]:
    # A shuffled index list, not random.sample: its first k entries are the same whatever k is, so
    # asking for more samples only appends to the list.
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def _qa_suffix(question: str) -> str:
    return f"\n\nQuestion: {question}\nAnswer:"


# The '<<48/2=24>>' calculator annotations of GSM8K solutions are tool markup, not prose: they cost
# tokens and would teach the model to emit them, so the demonstrations drop them.
_CALC = re.compile(r"<<[^<>]*>>")


def _gsm8k_samples(spec: str, n: int, seed: int, n_shots: int) -> list[TaskSample]:
    docs = load_documents(spec)
    if n_shots < 1:
        raise TaskError(f"gsm8k: n_shots must be >= 1 (got {n_shots}); the shots are what gets compressed")
    if n_shots + n > len(docs):
        raise TaskError(f"{spec}: {len(docs)} problems cannot give {n_shots} shots and {n} distinct targets")
    order = _shuffled(len(docs), seed)
    shots, targets = order[:n_shots], order[n_shots:n_shots + n]
    context = "\n\n".join(f"Question: {docs[j].meta['question']}\nAnswer: {_CALC.sub('', docs[j].meta['answer'])}"
                          for j in shots)
    out = []
    for i, j in enumerate(targets):
        q = docs[j].meta["question"]
        out.append(TaskSample(f"{spec}@seed{seed}#{i}:problem{j}", "gsm8k", context, q, _qa_suffix(q),
                              (docs[j].meta["final"],), {"index": j, "shots": tuple(shots), "n_shots": n_shots}))
    return out


def _meeting_rows(docs: list[Document]) -> list[tuple[int, tuple]]:
    return [(j, (d.text, MEETING_QUESTION, (d.meta["summary"],))) for j, d in enumerate(docs)]


def _qa_rows(docs: list[Document]) -> list[tuple[int, tuple]]:
    # j stays the record's index in the file, even when unanswerable records are skipped
    return [(j, r) for j, r in enumerate(map(_qa_fields, docs)) if r is not None]


def _record_samples(spec: str, task: str, n: int, seed: int, rows_of, suffix_of) -> list[TaskSample]:
    rows = rows_of(load_documents(spec))
    if n > len(rows):
        raise TaskError(f"{spec}: asked for {n} samples but it holds {len(rows)} usable records")
    out = []
    for i, k in enumerate(_shuffled(len(rows), seed)[:n]):
        j, (context, question, answers) = rows[k]
        suffix = suffix_of(question)
        out.append(TaskSample(f"{spec}@seed{seed}#{i}:record{j}", task, context, question, suffix, answers,
                              {"index": j}))
    return out


def _approx_tokens(text: str) -> int:
    """Token count without a tokenizer: 1 token ≈ 4 characters of English prose."""
    return (len(text) + 3) // 4


# A sentence ends with . ! or ? (and closing quotes/brackets) after a lowercase letter, digit or
# closer, so initials like 'U.S.' do not count; the next sentence starts, after whitespace, with a
# capital, digit, opening quote or a '[1]' footnote mark. The bundled essays lost their paragraph
# breaks ('accelerating.We wouldn't'), so a capital right after the stop also counts.
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]\"'”’%])[.!?]+[\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z0-9]|[A-Z]|\s*$)")


def _cut_to_tokens(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` ending at a word end with at most ``budget`` tokens."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    lo, hi = 0, len(ends)  # invariant: the prefix of lo words fits; binary search, since each count is O(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:ends[mid - 1]]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:ends[lo - 1]] if lo else ""


def _haystack(essays: list[str], start: int, budget: int, count_tokens: Callable[[str], int]) -> str:
    """Essays in file order from ``start`` (wrapping round, each at most once), cut to ``budget`` tokens."""
    parts, total = [], 0
    for k in range(len(essays)):
        if total > budget * 1.05 + 16:  # per-essay counts only approximate the joined text's; keep a margin
            break
        essay = essays[(start + k) % len(essays)]
        parts.append(essay)
        total += count_tokens(essay)
    text = "\n\n".join(parts)
    if count_tokens(text) < budget:
        raise TaskError(f"paulgraham: all essays together hold {count_tokens(text)} tokens, fewer than the "
                        f"{budget} the haystack needs; ask for a shorter context")
    return _cut_to_tokens(text, budget, count_tokens)


def _needle_samples(spec: str, n: int, seed: int, count_tokens: Callable[[str], int], context_tokens: int,
                    depths: list[float]) -> list[TaskSample]:
    if not depths or any(not 0.0 <= d <= 1.0 for d in depths):
        raise TaskError(f"needle: depths must be a non-empty list of fractions in [0, 1] (got {depths})")
    needle_tokens = count_tokens(" " + NEEDLE_SENTENCE.format(number=99999) + " ")
    if context_tokens < 4 * needle_tokens:
        raise TaskError(f"needle: context_tokens must be >= {4 * needle_tokens} (got {context_tokens})")
    essays = [d.text for d in load_documents(spec)]
    # One haystack per round over the depth grid, so depths within a round differ only in the needle's
    # position; round r starts at essay order[r] (round 0 at an essay chosen by the seed).
    order = _shuffled(len(essays), seed)
    haystacks: dict[int, tuple[str, list[int]]] = {}
    out = []
    for i in range(n):
        start = order[(i // len(depths)) % len(essays)]
        if start not in haystacks:
            # The haystack leaves room for the needle so that the whole context is ~context_tokens.
            filler = _haystack(essays, start, context_tokens - needle_tokens, count_tokens)
            bounds = sorted({0, *(m.end() for m in _SENTENCE_END.finditer(filler))})
            haystacks[start] = (filler, bounds)
        filler, bounds = haystacks[start]
        rng = random.Random(seed + i)
        number = rng.randint(10000, 99999)
        while str(number) in filler:  # the answer must come from the needle, not the essays
            number = rng.randint(10000, 99999)
        needle = NEEDLE_SENTENCE.format(number=number)
        depth = depths[i % len(depths)]
        pos = min(bounds, key=lambda b: (abs(b - depth * len(filler)), b))
        left, right = filler[:pos], filler[pos:]
        if not left:
            context = needle + " " + right.lstrip()
        else:
            context = left + " " + needle + ("" if right[:1].isspace() or not right else " ") + right
        out.append(TaskSample(
            f"{spec}@seed{seed}#{i}:depth{depth:g}:tokens{context_tokens}", "needle", context, NEEDLE_QUESTION,
            f"\n\nQuestion: {NEEDLE_QUESTION}\nAnswer: {NEEDLE_ANSWER_PREFIX}", (str(number),),
            {"depth": depth, "context_tokens": context_tokens, "needle_offset": context.index(needle),
             "essay": start},
        ))
    return out


# --- metrics ----------------------------------------------------------------------------------------

def score(task: str, generated: str, answers: tuple[str, ...]) -> dict:
    """Score one generation against its references; ``'score'`` is in [0, 1] (best over references).

    - gsm8k: ``metric`` 'accuracy', 1.0 when the extracted final number equals the reference number;
      also ``predicted`` (normalised number or None).
    - needle: 'exact_match', 1.0 when a reference number appears in the generation as a whole number.
    - meetingbank: 'rouge_l', ROUGE-L F1 on lower-cased word tokens; also ``precision``, ``recall``.
    - qa: 'f1', SQuAD token F1; also ``f1`` and ``em`` (exact match after SQuAD normalisation).
    """
    if isinstance(answers, str):
        answers = (answers,)
    kind = _kind(task)
    if not answers:
        raise TaskError(f"{task}: no reference answers to score against")
    return kind.score(generated or "", answers)


def _score_gsm8k(generated: str, answers: tuple[str, ...]) -> dict:
    predicted = extract_number(generated)
    refs = {_normalise_number(a) for a in answers}
    return {"score": float(predicted is not None and predicted in refs), "metric": "accuracy", "predicted": predicted}


def _score_needle(generated: str, answers: tuple[str, ...]) -> dict:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", generated)  # '48,213' still states 48213
    hit = any(re.search(rf"(?<!\d){re.escape(a.strip())}(?!\d)", text) for a in answers)
    return {"score": float(hit), "metric": "exact_match"}


def _score_meeting(generated: str, answers: tuple[str, ...]) -> dict:
    best = max((rouge_l(generated, a) for a in answers), key=lambda r: r["f1"])
    return {"score": best["f1"], "metric": "rouge_l", "precision": best["precision"], "recall": best["recall"]}


def _score_qa(generated: str, answers: tuple[str, ...]) -> dict:
    f1 = max(squad_f1(generated, a) for a in answers)
    em = max(squad_em(generated, a) for a in answers)
    return {"score": f1, "metric": "f1", "f1": f1, "em": em}


# Signed integers or decimals with optional '$' and thousands commas: '-3', '$1,200.00', '0.5'.
_NUMBER = re.compile(r"-?\$?\d(?:[\d,]*\d)?(?:\.\d+)?")


def _normalise_number(text: str) -> str | None:
    """'$1,200.00' → '1200', '-0.50' → '-0.5', '18.' → '18'; None when ``text`` is not a number."""
    try:
        value = Decimal(text.strip().replace("$", "").replace(",", "").rstrip("."))
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))  # also turns -0 into 0
    return format(value.normalize(), "f")


def extract_number(generated: str) -> str | None:
    """The final numeric answer of a GSM8K generation, normalised (see ``_normalise_number``).

    Only the text before a new 'Question:' counts (a few-shot model often goes on to invent the next
    problem). Then, in order: the first number after '####', the first after the last 'answer is',
    the last number of the text.
    """
    text = re.split(r"\n\s*Question:", generated, maxsplit=1)[0]
    if "####" in text:
        found = _NUMBER.search(text.split("####", 1)[1])
        if found:
            return _normalise_number(found.group())
    tail = re.split(r"answer is", text, flags=re.IGNORECASE)
    if len(tail) > 1:
        found = _NUMBER.search(tail[-1])
        if found:
            return _normalise_number(found.group())
    numbers = _NUMBER.findall(text)
    return _normalise_number(numbers[-1]) if numbers else None


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a)·len(b)) time, O(len(b)) memory."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, 1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(generated: str, reference: str) -> dict:
    """ROUGE-L (LCS) precision, recall and F1 over lower-cased alphanumeric word tokens, as
    rouge-score's default tokenizer (no stemming). 0.0 when either side has no token."""
    gen, ref = re.findall(r"[a-z0-9]+", generated.lower()), re.findall(r"[a-z0-9]+", reference.lower())
    lcs = _lcs_length(gen, ref) if gen and ref else 0
    if not lcs:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    p, r = lcs / len(gen), lcs / len(ref)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r)}


_PUNCTUATION = frozenset(string.punctuation)


def _squad_tokens(text: str) -> list[str]:
    """SQuAD normalisation: lower case, drop punctuation, drop articles a/an/the, split on whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def squad_em(generated: str, reference: str) -> float:
    """1.0 when both normalise to the same token sequence."""
    return float(_squad_tokens(generated) == _squad_tokens(reference))


def squad_f1(generated: str, reference: str) -> float:
    """Token-overlap F1 after SQuAD normalisation; when either side is empty, 1.0 only if both are
    (the SQuAD v2 convention, so an empty reference is not unreachable)."""
    gen, ref = _squad_tokens(generated), _squad_tokens(reference)
    if not gen or not ref:
        return float(gen == ref)
    common = sum((Counter(gen) & Counter(ref)).values())
    if not common:
        return 0.0
    p, r = common / len(gen), common / len(ref)
    return 2 * p * r / (p + r)


# --- the tasks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleOptions:
    count_tokens: Callable[[str], int]
    context_tokens: int  # the needle's haystack size
    depths: list[float]  # the needle's depths
    n_shots: int  # GSM8K demonstrations


@dataclass(frozen=True)
class TaskKind:
    """A task: how its samples are drawn from a dataset, how a generation is scored, how long it may be."""

    name: str
    budget: int  # default max new tokens
    samples: Callable[[str, int, int, SampleOptions], list[TaskSample]]
    score: Callable[[str, tuple[str, ...]], dict]
    task_type: str  # datasets.TASK_TYPES: how the analysis groups a dataset of this task


# Default budgets: a GSM8K chain of thought runs ~100-200 tokens; the needle answer is one number.
TASKS: dict[str, TaskKind] = {
    t.name: t
    for t in [
        TaskKind("gsm8k", 256, lambda spec, n, seed, o: _gsm8k_samples(spec, n, seed, o.n_shots), _score_gsm8k, "reasoning"),
        TaskKind("needle", 16, lambda spec, n, seed, o: _needle_samples(spec, n, seed, o.count_tokens, o.context_tokens, o.depths),
                 _score_needle, "retrieval"),
        TaskKind("meetingbank", 128, lambda spec, n, seed, o: _record_samples(spec, "meetingbank", n, seed, _meeting_rows,
                                                                              lambda q: "\n\nSummary:"), _score_meeting,
                 "summarisation"),
        TaskKind("qa", 32, lambda spec, n, seed, o: _record_samples(spec, "qa", n, seed, _qa_rows, _qa_suffix), _score_qa, "QA"),
    ]
}
