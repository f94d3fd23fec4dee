"""Compressors without a model: `random` (the floor, seed 000) and `naive` (rule-based, seed 001).

Both select whole words. The budget is counted in the evaluated model's tokens when a tokenizer
is given to ``load`` (so the achieved kept fraction lands on the rate), else in words.
"""

from __future__ import annotations

import hashlib
import random
import re

from workbench.methods.prompt_base import Compressed, PromptCompressor, dropped_spans

_WORD = re.compile(r"\S+")


class _WordSelector(PromptCompressor):
    """Shared machinery: words with their character spans and their cost in evaluated-model tokens."""

    def _load(self, evaluated_model) -> None:
        self.tokenizer = getattr(evaluated_model, "tokenizer", None)

    def words(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _WORD.finditer(text)]

    def costs(self, text: str, words: list[tuple[int, int]]) -> list[int]:
        """Tokens each word costs in the evaluated model's tokenizer (1 per word without one)."""
        if not words:
            return []
        tok = getattr(self, "tokenizer", None)
        if tok is None:
            return [1] * len(words)
        # One batched call: " word" is how a word mid-text is tokenized by BPE tokenizers.
        ids = tok([" " + text[a:b] for a, b in words], add_special_tokens=False)["input_ids"]
        return [max(1, len(x)) for x in ids]

    @staticmethod
    def render(text: str, kept: list[tuple[int, int]]) -> str:
        return " ".join(text[a:b] for a, b in sorted(kept))


class RandomCompressor(_WordSelector):
    """Keep random words up to the budget; the draw is seeded from a hash of the text (deterministic)."""

    name = "random"

    def _compress(self, text, rate, question):
        words = self.words(text)
        costs = self.costs(text, words)
        budget = rate * sum(costs)
        seed = self.params.get("seed")
        if seed is None:
            seed = int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
        order = list(range(len(words)))
        random.Random(seed).shuffle(order)
        chosen, spent = [], 0
        for i in order:
            if spent + costs[i] > budget and chosen:
                continue
            chosen.append(i)
            spent += costs[i]
            if spent >= budget:
                break
        kept = [words[i] for i in sorted(chosen)]
        return Compressed(self.render(text, kept), dropped_spans(text, kept))


# Rules of the naive compressor, gentlest first: each stage runs only while the text is over budget.
_FILLERS = [
    "it is important to note that", "it should be noted that", "as a matter of fact", "at the end of the day",
    "in order to", "due to the fact that", "for the purpose of", "in the event that", "needless to say",
    "basically", "actually", "literally", "really", "very", "just", "quite", "simply", "of course",
    "you know", "i mean", "kind of", "sort of", "in fact", "indeed", "perhaps", "somewhat", "rather",
]
_STOP_WORDS = [  # most frequent English function words first: dropping them costs the least meaning
    "the", "a", "an", "of", "to", "and", "in", "that", "is", "was", "for", "on", "with", "as", "by", "at", "it",
    "from", "this", "be", "are", "were", "which", "or", "has", "had", "have", "its", "their", "his", "her",
    "been", "also", "into", "than", "then", "there", "these", "those", "such", "would", "could", "will", "can",
    "about", "after", "before", "over", "while", "during", "where", "when", "who", "whom", "whose", "he", "she",
    "they", "we", "i", "you", "him", "them", "our", "your", "my", "not", "but", "so", "if", "all", "some", "any",
]
_PUNCT_ONLY = re.compile(r"^[^\w]+$")


class NaiveCompressor(_WordSelector):
    """Rule-based: filler phrases, then stop words (by frequency), then punctuation-only tokens.

    It never touches content words, so it cannot go below what those cost: past that point it keeps
    what is left and says so (``own['rules_exhausted']``), which the cell reports as its reason.
    """

    name = "naive"

    def _compress(self, text, rate, question):
        words = self.words(text)
        costs = self.costs(text, words)
        total = sum(costs)
        budget = rate * total
        alive = [True] * len(words)
        spent = total
        lowered = [text[a:b].lower().strip(".,;:!?\"'()[]") for a, b in words]

        def drop(i):
            nonlocal spent
            if alive[i]:
                alive[i] = False
                spent -= costs[i]

        # 1. filler phrases (multi-word first: they are listed longest first)
        for phrase in _FILLERS:
            parts = phrase.split()
            for i in range(len(words) - len(parts) + 1):
                if spent <= budget:
                    break
                if all(alive[i + k] and lowered[i + k] == parts[k] for k in range(len(parts))):
                    for k in range(len(parts)):
                        drop(i + k)
        # 2. stop words, most frequent first; 3. punctuation-only tokens (e.g. WikiText's " @-@ ")
        for rule in [*([w] for w in _STOP_WORDS), None]:
            for i in range(len(words)):
                if spent <= budget:
                    break
                if rule is None:
                    if _PUNCT_ONLY.match(text[words[i][0]:words[i][1]]):
                        drop(i)
                elif lowered[i] == rule[0]:
                    drop(i)
            if spent <= budget:
                break
        kept = [w for w, a in zip(words, alive) if a]
        own = {"rules_exhausted": spent > budget + 0.05 * total, "kept_by_rules": spent / total if total else 1.0}
        return Compressed(self.render(text, kept), dropped_spans(text, kept), own=own)
