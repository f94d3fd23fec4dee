"""The prompt-compressor interface: text in, shorter text out, with a record of what was dropped.

Every compressor (random, naive, selective-context, llmlingua-2, llmlingua-1, longllmlingua)
implements :class:`PromptCompressor`. Rates are fractions of the context *kept*; the achieved
fraction is counted by the caller in the evaluated model's tokenizer, not here.

``compress_rates`` exists for compressors whose scores do not depend on the rate (Selective
Context's self-information, LLMLingua-2's keep probabilities): they score once and cut at every
rate. The default implementation simply calls ``compress`` per rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Compressed:
    """One compression of one text at one rate."""

    text: str
    # Character spans [start, end) of the ORIGINAL text that were dropped (sorted, non-overlapping).
    dropped: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0  # compression latency (model loading excluded)
    # The compressor's own figures, labelled as such (e.g. llmlingua's GPT-tokenizer counts and "11.2x").
    own: dict[str, Any] = field(default_factory=dict)


class PromptCompressor:
    """Base class. Subclasses set ``name`` and implement ``_compress``; heavy models load in ``load``."""

    name = "?"
    # True when one scoring pass serves every rate (compress_rates is then cheaper than R calls).
    shares_scores = False
    supports_question = False
    # True when the method cannot work without a question (LongLLMLingua): it is then unavailable
    # outside the task protocol with question_aware set, and the cell says so.
    requires_question = False
    # Why the achieved kept fraction can miss the rate, for methods that cannot hit it exactly; shown as
    # the cell's reason when a sample misses the rate by more than 0.05.
    rate_caveat: str | None = None

    def __init__(self, **params):
        self.params = params
        self.load_seconds = 0.0

    def load(self, evaluated_model=None) -> None:
        """Load whatever the compressor needs (timed into ``load_seconds``). ``evaluated_model`` is the
        workbench's LoadedModel, for compressors that score with the evaluated model itself."""
        start = time.perf_counter()
        self._load(evaluated_model)
        self.load_seconds = time.perf_counter() - start

    def _load(self, evaluated_model) -> None:
        pass

    def compress(self, text: str, rate: float, question: str | None = None) -> Compressed:
        start = time.perf_counter()
        out = self._compress(text, rate, question)
        out.seconds = time.perf_counter() - start
        return out

    def compress_rates(self, text: str, rates: list[float], question: str | None = None) -> dict[float, Compressed]:
        return {rate: self.compress(text, rate, question) for rate in rates}

    def compress_many(self, texts: list[str], rates: list[float]) -> list[dict[float, Compressed]]:
        """Several texts at every rate: one {rate: Compressed} per text, equal to ``compress_rates`` text by
        text. Compressors whose model can take several texts per forward pass override it (batched scoring)."""
        return [self.compress_rates(text, rates) for text in texts]

    def _compress(self, text: str, rate: float, question: str | None) -> Compressed:
        raise NotImplementedError


def dropped_spans(original: str, kept: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Complement of sorted kept character spans within ``original``."""
    out, pos = [], 0
    for start, end in sorted(kept):
        if start > pos:
            out.append((pos, start))
        pos = max(pos, end)
    if pos < len(original):
        out.append((pos, len(original)))
    return [(a, b) for a, b in out if original[a:b].strip()]


def align_dropped(original: str, compressed: str) -> list[tuple[int, int]]:
    """Dropped spans of ``original`` for a compressor that returns only a string (e.g. llmlingua).

    Greedy left-to-right alignment of the compressed text's words onto the original's words; words of
    the original not matched are dropped. Exact when the compressor only deletes words.
    """
    import re

    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", original)]
    targets = compressed.split()
    kept, i = [], 0
    for target in targets:
        j = i
        while j < len(words) and words[j][2] != target and target not in words[j][2]:
            j += 1
        if j < len(words):
            kept.append((words[j][0], words[j][1]))
            i = j + 1
    return dropped_spans(original, kept)
