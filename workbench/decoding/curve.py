"""The KV budget over decoding steps, in a compact form (no torch): what sessions record and plots draw.

A curve is a list of rows ``[step, mean, min, max]``: the tokens per layer the cache holds (mean, least and most
over layers) once generated token ``step`` has been fed and the schedule has decided about a point after it.
Between two rows the cache grows by one token per step, so only the rows where that rule breaks are kept: the
first step, the state just *before* and just *after* each compression point (two rows at one step: the drop),
and the last step. :func:`expand` gives the tokens per layer at every step back.
"""

from __future__ import annotations

from itertools import pairwise


def row(step: int, sizes: list[int]) -> list:
    """One row from the per-layer token counts."""
    return [step, sum(sizes) / len(sizes), min(sizes), max(sizes)]


def expand(curve: list[list]) -> dict[int, float]:
    """{step: mean tokens per layer held after that step's point decision}, for every step the curve spans."""
    out: dict[int, float] = {}
    for (s0, m0, *_), (s1, *_) in pairwise(curve):
        for s in range(s0, s1):
            out[s] = m0 + (s - s0)
    if curve:
        out[curve[-1][0]] = curve[-1][1]
    return out


def mean_tokens(curve: list[list]) -> float | None:
    """Mean tokens per layer over all steps (the area under the curve per step)."""
    values = list(expand(curve).values())
    return sum(values) / len(values) if values else None
