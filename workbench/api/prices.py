"""What a request costs: the shipped, dated price table (prices.json), overridable per plan.

Prices are US dollars per million tokens. A self-hosted OpenAI-compatible server costs nothing unless the
plan gives prices; a provider model missing from the table has no price (its spend is unknown, and a
``max_cost_usd`` cannot be enforced for it: validation says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Price:
    input: float  # $ per million input (prompt) tokens
    output: float  # $ per million output (completion) tokens
    source: str  # where the figures come from, shown beside estimates

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


def usd(amount: float) -> str:
    """Dollars as people read them: cents for sums, more digits for the fractions of a cent one request costs."""
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


@lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(resources.files("workbench.api").joinpath("prices.json").read_text(encoding="utf-8"))


def price_for(spec) -> Price | None:
    """The price of the evaluator's model: the plan's override, the shipped table, free when self-hosted, else None."""
    if spec.prices is not None:
        return Price(spec.prices["input"], spec.prices["output"], "the plan's evaluator.prices")
    if spec.provider == "openai-compatible":
        return Price(0.0, 0.0, "self-hosted (no charge; set evaluator.prices to account for one)")
    data = table()
    entry = data["models"].get(spec.provider, {}).get(spec.model)
    if entry is None:
        return None
    return Price(entry["input"], entry["output"], f"the shipped price table of {data['as_of']}")
