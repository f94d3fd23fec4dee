"""The rule-based schedules (no torch): every k tokens, random points, step boundaries. Registry entries in
``workbench.methods.schedules`` name them as builders."""

from __future__ import annotations

import random

from workbench.decoding.boundaries import is_boundary
from workbench.decoding.schedule import Schedule, Step


class Interval(Schedule):
    """A point after every ``every`` generated tokens: t = every − 1, 2·every − 1, … (kvpress's DecodingPress
    compresses after each ``compression_interval`` decoding steps)."""

    def __init__(self, every: int = 32):
        self.every = every

    def is_point(self, step: Step) -> bool:
        return (step.index + 1) % self.every == 0

    def describe(self) -> dict:
        return {"every": self.every}


class RandomPoints(Schedule):
    """Each token is a point with probability 1 / ``every``: the same expected number of points as an interval of
    ``every``, at places unrelated to the text. Seeded by the sample (``start``) and ``seed``: a rerun draws alike."""

    def __init__(self, every: int = 32, seed: int = 0):
        self.every, self.seed = every, seed
        self._rng = random.Random(seed)

    def start(self, seed: int) -> None:
        self._rng = random.Random(seed * 1_000_003 + self.seed)

    def is_point(self, step: Step) -> bool:
        return self._rng.random() < 1.0 / self.every

    def describe(self) -> dict:
        return {"every": self.every, "seed": self.seed}


class StepBoundaries(Schedule):
    """A point where a step of reasoning ends (``boundaries.is_boundary``: a newline, a closed calculator span,
    a sentence's end)."""

    def is_point(self, step: Step) -> bool:
        return is_boundary(step.text, step.next_text)
