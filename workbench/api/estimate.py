"""What a plan with an API evaluator will cost, before anything runs (the dry run and the Setup screen).

Requests: one per sample of every cell that is not done and whose family can run with a remote evaluator
(the baseline and the prompt compressors). Input tokens: the samples' real texts where the dataset is on this
machine (counted at ~4 characters a token: the provider's tokenizer is not here), the context scaled by the
rate; output tokens: up to the generation budget. The result is a range: input only (every answer empty)
to input + every answer at its budget. No torch, no network.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.api.prices import price_for, usd

CHARS_PER_TOKEN = 4.0


@dataclass
class Estimate:
    requests: int
    input_tokens: int
    output_tokens_max: int
    usd_min: float | None  # None: the model has no price
    usd_max: float | None
    price_source: str | None
    approximate_inputs: bool  # True where a dataset could not be read and context_tokens stood in

    def text(self) -> str:
        money = ("price unknown (add evaluator.prices)" if self.usd_max is None
                 else f"≈ {usd(self.usd_min)}–{usd(self.usd_max)}")
        return (f"{self.requests:,} requests, ~{self.input_tokens:,} input tokens, ≤ {self.output_tokens_max:,} output "
                f"tokens, {money}")


def _sample_sizes(plan, dataset) -> list[tuple[int, int, int]] | None:
    """[(context tokens, question tokens, answer budget)] per sample, from the dataset itself; None if unreadable."""
    from workbench import tasks

    if dataset.name.startswith("hf:"):
        return None
    p = plan.protocol

    def count(text: str) -> int:
        return max(1, round(len(text) / CHARS_PER_TOKEN))

    try:
        samples = tasks.task_samples(dataset.name, dataset.samples, dataset.seed, count_tokens=count,
                                     context_tokens=p.context_tokens, depths=p.depths, n_shots=p.n_shots)
    except (ValueError, OSError):
        return None
    limit = plan.evaluator.max_tokens
    return [(count(s.context), count(s.prompt_suffix), limit or p.max_new_tokens or tasks.generation_budget(s.task))
            for s in samples]


def estimate(plan, done: set[str] | None = None) -> Estimate:
    """The cost of the plan's cells not in ``done`` (cell keys), answered by ``plan.evaluator``."""
    from workbench import families

    done = done or set()
    requests = inputs = outputs = 0
    approximate = False
    for ds in plan.datasets:
        sizes = _sample_sizes(plan, ds)
        if sizes is None:
            approximate = True
            budget = plan.evaluator.max_tokens or plan.protocol.max_new_tokens or 64
            sizes = [(plan.protocol.context_tokens, 32, budget)] * ds.samples
        for cell in plan.cells():
            if cell.dataset != ds.name or cell.key in done:
                continue
            if cell.family != "baseline" and families.get(cell.family).unavailable(plan.method(cell.method), plan):
                continue
            rate = cell.rate if cell.rate is not None else 1.0
            for ctx, question, budget in sizes:
                requests += 1
                inputs += round(ctx * rate) + question
                outputs += budget
    price = price_for(plan.evaluator)
    return Estimate(requests, inputs, outputs, price.cost(inputs, 0) if price else None,
                    price.cost(inputs, outputs) if price else None, price.source if price else None, approximate)
