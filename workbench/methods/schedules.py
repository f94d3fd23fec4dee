"""Decoding schedules (seed 003): *when* the cache is compressed while the model generates, described without
importing torch.

A schedule entry is a method of the ``decoding`` family. Every entry takes the same three things besides its own
parameters: ``press`` — the score-based press that decides *what* is evicted at a point (a nested press spec);
the plan's **rate** — at a point after generated token t, the cache keeps that fraction of the tokens seen so far
(context + generated, every layer alike); or ``budget`` — a fixed number of tokens per layer kept at each point,
which makes the method driven by it (no rates, as a threshold press is). ``builder`` names the
:class:`workbench.decoding.schedule.Schedule` subclass, built with the resolved parameters its ``__init__``
accepts (plus ``model=``/``tokenizer=`` when it takes them). The engine reads the entry's ``nested`` (the press)
and ``rates_unless`` (the budget) fields, never a schedule's name.
"""

from __future__ import annotations

from workbench.methods.info import MethodInfo, ParamRule

RATE = "rate"
PRESS = "press"
BUDGET = "budget"
DEFAULT_PRESS = "knorm"  # scores keys alone: no hidden states, no hub, fast at every step

_EVERY = ParamRule(kind=int, minimum=1)
_COMMON_RULES = {BUDGET: ParamRule(kind=int, minimum=1, optional=True)}


def schedule_entry(name: str, builder: str, summary: str, params: dict | None = None, rules: dict | None = None,
                   aliases: tuple = ()) -> MethodInfo:
    """A decoding-family entry: its own parameters plus the common press / rate / budget."""
    return MethodInfo(
        name=name, family="decoding", summary=summary,
        params={RATE: None, PRESS: DEFAULT_PRESS, BUDGET: None, **(params or {})},
        rate_param=RATE, nested=(PRESS,), implementation=builder.split(":")[1], builder=builder,
        rules={**_COMMON_RULES, **(rules or {})}, rates_unless=BUDGET, aliases=aliases,
    )


SCHEDULES: dict[str, MethodInfo] = {
    i.name: i
    for i in [
        schedule_entry("interval", "workbench.decoding.schedules:Interval",
                       "compress every `every` generated tokens (kvpress DecodingPress's compression interval)",
                       {"every": 32}, {"every": _EVERY}, aliases=("fixed-interval",)),
        schedule_entry("random-points", "workbench.decoding.schedules:RandomPoints",
                       "compress at random points, one every `every` tokens on average (seeded per sample)",
                       {"every": 32, "seed": 0}, {"every": _EVERY, "seed": ParamRule(kind=int, minimum=0)},
                       aliases=("random-schedule",)),
        schedule_entry("step-boundaries", "workbench.decoding.schedules:StepBoundaries",
                       "compress where a step of reasoning ends: a newline, a closed <<…>> span, a sentence's end",
                       aliases=("boundaries",)),
        schedule_entry("learned-points", "workbench.points.schedule:LearnedPoints",
                       "compress where a classifier on the model's hidden states predicts that a step of reasoning "
                       "ended (train it with workbench train-points)",
                       {"classifier": None, "threshold": None},
                       {"classifier": ParamRule(kind=str, optional=True, folder="workbench.points.store:check_files"),
                        "threshold": ParamRule(kind=float, minimum=0.0, maximum=1.0, open_minimum=True, optional=True)}),
    ]
}


def between_steps(info: MethodInfo) -> str | None:
    """Why the press ``info`` cannot evict between decoding steps, or None where it can: a schedule takes a press
    that gives one score per KV entry not encoding the rate (a ScorerPress), needs no attention weights (none exist
    between steps) and can score from the last hidden states (see ``PressTraits.not_between_steps``)."""
    t = info.traits
    if not t.scorer or info.nested:
        return "a schedule evicts by one score per KV entry, and it is not a score-based press"
    if info.attention == "eager":
        return "it needs attention weights, which no forward computes between decoding steps"
    if t.per_rate_reason is not None and not t.not_between_steps:
        return f"its scores depend on the rate ({t.per_rate_reason})"
    return t.not_between_steps


def check_press(params: dict, where: str) -> None:
    """Refuse a nested press that cannot evict between decoding steps (see :func:`between_steps`). Raises
    ValueError naming the field (``.press: …``)."""
    from workbench.methods import presses

    spec = params.get(PRESS)
    if isinstance(spec, list):  # a wrapper's list of presses: a schedule evicts by one press's scores
        raise ValueError(f"{where}.{PRESS}: expected one press (a name or {{\"name\": ..., \"params\": ...}}), got a list")
    if not isinstance(spec, dict):
        return
    reason = between_steps(presses.PRESSES[spec["name"]])
    if reason is not None:
        usable = ", ".join(sorted(n for n, p in presses.PRESSES.items() if between_steps(p) is None))
        raise ValueError(f"{where}.{PRESS}: {spec['name']} cannot evict between decoding steps: {reason} "
                         f"(use one of: {usable})")
