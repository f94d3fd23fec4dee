"""Where the compression points are in reference reasoning: the texts, and their labels (no torch).

Texts are the bundled GSM8K's worked solutions (its only split is the test split, so the problems are shuffled
with a seed and cut 80/10/10 into training, validation and held-out problems; the config of a classifier lists
them). Each text is laid out as the task protocol asks a GSM8K question — ``Question: …\\nAnswer:`` followed by the
solution — so the hidden states resemble those of the model answering. The solution keeps its ``#### N`` line and,
by default, drops the ``<<…>>`` calculator spans, as the task's few-shot examples do (the model does not write them
while answering); ``keep_calculator_spans`` keeps them.

Labels, one per solution token t: 1 when a compression point belongs right after token t.

* ``rule``: the step-boundary rule of the ``step-boundaries`` schedule (``decoding.boundaries``), offline;
* ``api``: an API model copies the solution with ``<COMP>`` markers inserted (seed 003's data generation, its
  prompt adapted to mark given reasoning instead of writing new), through ``workbench.api`` (retries, response
  cache, budget); the marked copy is aligned back to the solution character by character (difflib), and each
  marker becomes a point after the token holding the character just before it.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass

from workbench.decoding.boundaries import boundary_points

MARKER = "<COMP>"
SPLIT = (0.8, 0.1, 0.1)  # training, validation (threshold), held-out problems
_CALC = re.compile(r"<<[^<>]*>>")

API_PROMPT = """Below is a worked solution to a math problem. Copy the solution exactly, character for character, \
and insert the marker <COMP> at each natural checkpoint of the reasoning, where what came before could be summarised:

- after completing a calculation (e.g. "2 x 3 = 6 <COMP>");
- after establishing a key fact from the problem;
- at the end of each reasoning phase.

Do not insert <COMP> in the middle of a calculation. Do not change, add or remove anything else. Aim for 3-6 markers.

Problem: {question}

Solution:
{solution}"""


@dataclass(frozen=True)
class Problem:
    index: int  # the problem's line in the bundled gsm8k/test.jsonl
    question: str
    solution: str  # the worked solution as the classifier sees it (ends with '#### N')
    part: str  # "train" | "validation" | "test"

    @property
    def prompt(self) -> str:
        return f"Question: {self.question}\nAnswer:"

    @property
    def answer(self) -> str:
        """The solution as the model would write it after the prompt (a leading space, as generated text has)."""
        return " " + self.solution


def problems(n: int, seed: int = 0, keep_calculator_spans: bool = False) -> list[Problem]:
    """``n`` GSM8K problems drawn with ``seed``, cut 80/10/10 into parts (at least one validation and one held-out
    problem once n ≥ 3). Deterministic; the first problems of the draw do not depend on n."""
    from workbench.datasets import load_documents

    docs = load_documents("gsm8k")
    if not 3 <= n <= len(docs):
        raise ValueError(f"texts: expected 3 to {len(docs)} problems (the bundled GSM8K), got {n}")
    order = list(range(len(docs)))
    random.Random(f"points:{seed}").shuffle(order)
    n_val = max(1, round(n * SPLIT[1]))
    n_test = max(1, round(n * SPLIT[2]))
    parts = ["test"] * n_test + ["validation"] * n_val + ["train"] * (n - n_val - n_test)
    out = []
    for part, j in zip(parts, order[:n]):
        solution = docs[j].meta["answer"].strip()
        if not keep_calculator_spans:
            solution = _CALC.sub("", solution)
        out.append(Problem(j, docs[j].meta["question"].strip(), solution, part))
    return out


def token_ends(tokenizer, ids: list[int]) -> list[int]:
    """Character offset where each token's text ends in the decoded text of ``ids`` (decoded prefixes, so a
    character split over tokens is placed where it becomes whole)."""
    return [len(tokenizer.decode(ids[: t + 1])) for t in range(len(ids))]


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token's own decoded text, as a decoding loop sees the next token (``Step.next_text``)."""
    return [tokenizer.decode([i]) for i in ids]


def rule_labels(texts: list[str]) -> list[int]:
    """0/1 per token: the step-boundary rule (the last token is never a point)."""
    points = set(boundary_points(texts))
    return [int(t in points) for t in range(len(texts))]


class AlignmentError(ValueError):
    """The API model's copy is not the solution with markers: too much of it differs."""


def marker_offsets(reference: str, marked: str, min_matched: float = 0.9) -> list[int]:
    """Character offsets in ``reference`` where ``marked`` (the reference copied with ``<COMP>`` markers, perhaps
    with small changes) puts a marker. The copy without markers is aligned to the reference (difflib); a marker
    inside changed text goes to the end of the last matching stretch before it. Raises AlignmentError when less
    than ``min_matched`` of the reference's characters are matched."""
    plain, where = [], []
    for i, piece in enumerate(marked.split(MARKER)):
        if i:
            where.append(sum(map(len, plain)))
        plain.append(piece)
    copy = "".join(plain)
    matcher = difflib.SequenceMatcher(None, reference, copy, autojunk=False)
    blocks = matcher.get_matching_blocks()
    matched = sum(b.size for b in blocks)
    if matched < min_matched * len(reference):
        raise AlignmentError(f"the marked copy matches {matched}/{len(reference)} characters of the solution")
    out = []
    for p in where:
        mapped = 0
        for a, b, size in blocks:
            if b <= p <= b + size:
                mapped = a + (p - b)
                break
            if b + size <= p:
                mapped = a + size
        out.append(mapped)
    return sorted(set(out))


def labels_from_offsets(ends: list[int], offsets: list[int]) -> list[int]:
    """0/1 per token: a marker at character c is a point after the token holding character c − 1 (the last one
    before the marker). Markers before the first character or after the last token are dropped."""
    labels = [0] * len(ends)
    t = 0
    for c in sorted(offsets):
        if c <= 0:
            continue
        while t < len(ends) and ends[t] < c:
            t += 1
        if t < len(ends) - 1:
            labels[t] = 1
    return labels


def api_requests(problems_: list[Problem], count_tokens) -> list[tuple[str, int, int]]:
    """(prompt, max new tokens, prompt tokens estimate) per problem: room for the copy and a marker per line."""
    out = []
    for p in problems_:
        prompt = API_PROMPT.format(question=p.question, solution=p.solution)
        n = count_tokens(p.solution)
        out.append((prompt, int(n * 1.5) + 64, count_tokens(prompt)))
    return out
