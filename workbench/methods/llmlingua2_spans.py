"""Dropped character spans of an LLMLingua-2 cut, from its words and per-word keep labels.

llmlingua reports its cut as words with labels (``fn_labeled_original_prompt``); the workbench locates each word in
the original text, in order, and reports the complement of the kept words as dropped spans. Where a word cannot be
located with only whitespace before it (an [UNK] word, a text changed by the tokenizer's normaliser), there are no
exact spans (None) and the caller aligns the compressed text instead.

The words' places do not depend on the rate (only the labels do), so :class:`WordSpans` locates them once per
text and turns each rate's labels into spans with numpy; :func:`dropped_from_word_labels` parses llmlingua's
labelled string (the reference path) and gives the same spans.
"""

from __future__ import annotations

from workbench.methods.prompt_base import dropped_spans

# Separators for llmlingua-2's word labels: control characters, which neither family's words contain.
WORD_SEP, LABEL_SEP = "\x1e", "\x1f"


def dropped_from_word_labels(text: str, labelled: str) -> list[tuple[int, int]] | None:
    """Exact dropped spans from llmlingua-2's per-word keep labels (words joined by ``WORD_SEP``, each followed by
    ``LABEL_SEP`` and its label), locating each word in ``text`` in order. None when a word cannot be located with
    only whitespace before it (e.g. an [UNK] word), so the caller falls back to aligning the compressed text."""
    if not labelled:
        return [] if not text.strip() else None
    kept, pos = [], 0
    for item in labelled.split(WORD_SEP):
        word, _, label = item.rpartition(LABEL_SEP)
        if not word:
            continue
        at = text.find(word, pos)
        if at < 0 or text[pos:at].strip():
            return None
        if label == "1":
            kept.append((at, at + len(word)))
        pos = at + len(word)
    if text[pos:].strip():
        return None
    return dropped_spans(text, kept)


class WordSpans:
    """The places of a cut's words in ``text`` (characters), found once; :meth:`dropped` gives, for any labels over
    the same words, what :func:`dropped_from_word_labels` gives for the labelled string."""

    def __init__(self, text: str, words: list[str]):
        import numpy as np

        self.text, self.n_words = text, len(words)
        joined = "".join(words)
        # A separator inside a word would change how the labelled string parses: keep that parse's answer.
        self.words = list(words) if (WORD_SEP in joined or LABEL_SEP in joined) else None
        self.located = True
        index = [i for i, word in enumerate(words) if word] if "" in words else range(len(words))
        present = [words[i] for i in index] if "" in words else words
        find, starts, pos = text.find, [], 0
        for word in present:
            at = find(word, pos)
            # str.strip() and str.isspace() agree on what whitespace is
            if at != pos and (at < 0 or not text[pos:at].isspace()):
                self.located = False
                break
            starts.append(at)
            pos = at + len(word)
        if self.located and pos < len(text) and not text[pos:].isspace():
            self.located = False
        self.index = np.asarray(index, dtype=np.int64)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.ends = self.starts + np.fromiter(map(len, present[:len(starts)]), dtype=np.int64, count=len(starts))
        # A dropped span survives dropped_spans' strip() only if it holds a word with more than whitespace: the
        # gaps between located words are whitespace by construction.
        self.solid = ~np.fromiter(map(str.isspace, present), dtype=bool, count=len(present))

    def dropped(self, labels) -> list[tuple[int, int]] | None:
        """Dropped spans for per-word ``labels`` (1 = kept), one per word given to the constructor."""
        import numpy as np

        if self.words is not None:
            return dropped_from_word_labels(self.text, WORD_SEP.join(
                f"{w}{LABEL_SEP}{label}" for w, label in zip(self.words, labels)))
        if self.n_words == 0:
            return [] if not self.text.strip() else None
        if not self.located:
            return None
        keep = np.asarray(labels, dtype=np.int64)[self.index] == 1
        kept = np.flatnonzero(keep)
        solid_dropped = np.concatenate(([0], np.cumsum(self.solid & ~keep)))
        lo = np.concatenate(([0], kept + 1))
        hi = np.concatenate((kept, [len(keep)]))
        starts = np.concatenate(([0], self.ends[kept]))
        ends = np.concatenate((self.starts[kept], [len(self.text)]))
        spans = (solid_dropped[hi] - solid_dropped[lo]) > 0
        return list(zip(starts[spans].tolist(), ends[spans].tolist()))
