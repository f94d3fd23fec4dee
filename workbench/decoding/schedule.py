"""When to compress while decoding: the interface between the decoding loop and a schedule (no torch at import).

The decoding loop generates one token at a time. After it has chosen token ``t + 1`` but before feeding it to
the model, the cache holds the context and generated tokens ``0 … t``; it asks the schedule whether a
*compression point* belongs after token ``t``, and if so compresses the cache there (to the target) before
feeding token ``t + 1``. So a point ``t`` always means "the cache was compressed right after generated token t",
in the records, in the training labels of the point classifier and in the meta-analysis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Step:
    """What a schedule may look at when asked about a point after generated token ``t`` (``index``)."""

    index: int  # t: generated tokens 0 … t are in the cache
    position: int  # absolute position of token t (context tokens + t)
    text: str  # the generated text through token t (decoded)
    next_text: str  # the decoded text of token t + 1, already chosen, not yet fed
    # The frozen model's hidden state of token t at ``Schedule.hidden_layer`` (a torch tensor of shape (d,)),
    # or None when the schedule reads none.
    hidden: Any = None


class Schedule:
    """Decides, token by token, where the compression points are. One object per (method, sample) run:
    ``start`` is called before each generation with that sample's seed."""

    # Index into the model's ``hidden_states`` output the schedule reads (0: embeddings, -1: last layer);
    # None: it reads none and the loop does not ask the model for them.
    hidden_layer: int | None = None

    def start(self, seed: int) -> None:
        """A new generation begins (seeded: schedules that draw random numbers draw the same ones each run)."""

    def is_point(self, step: Step) -> bool:
        raise NotImplementedError

    def describe(self) -> dict:
        """What the schedule is, for the session (its parameters; a learned one: its checkpoint and metrics)."""
        return {}
