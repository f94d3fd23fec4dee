"""Work units: what the runner hands a method family, as plain data that can be pickled and sent elsewhere.

A unit is (model, dataset, method, sample group, rates still to do). Samples go together when they are
consecutive, of the same length and need the same rates — and only when the method can measure several
at once with unchanged results (``batch_size`` > 1 and a batchable method); otherwise one sample a unit.
What is already recorded in the session is never scheduled again, so a resumed run does only the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unit:
    model: str
    dataset: str
    method: str  # the method's label (the cells' "method")
    family: str
    sample_ids: tuple[str, ...]
    rates: tuple  # rates still to do for these samples (None: a threshold-driven method's one cell)


def units(model: str, dataset: str, method: str, family: str, samples: list, done: dict, batch_size: int) -> list[Unit]:
    """Units for one method on one dataset's ``samples`` (objects with ``sample_id``, and ``input_ids`` where they are
    token windows; question/answer samples, answered concurrently by an API, group whatever their length).

    ``done`` maps each rate to be measured to the sample ids its cell already holds."""
    groups: list[tuple[list, list]] = []
    for sample in samples:
        todo = [r for r in done if sample.sample_id not in done[r]]
        if not todo:
            continue
        last = groups[-1] if groups else None
        if (last is not None and batch_size > 1 and last[1] == todo and len(last[0]) < batch_size
                and _length(last[0][0]) == _length(sample)):
            last[0].append(sample)
        else:
            groups.append(([sample], todo))
    return [Unit(model, dataset, method, family, tuple(s.sample_id for s in group), tuple(todo)) for group, todo in groups]


def _length(sample) -> int | None:
    ids = getattr(sample, "input_ids", None)
    return None if ids is None else len(ids)


def batch_size(plan, backend, concurrent: bool = False) -> int:
    """Samples measured together where that leaves results unchanged (protocols that batch only), or answered at
    once by a backend that answers concurrently (an API: whatever the protocol, its requests are independent)."""
    p = plan.protocol
    if concurrent:
        return backend.concurrency
    if not _protocol_info(p.name).batches:
        return 1
    if plan.batch_size != "auto":
        return int(plan.batch_size)
    return backend.auto_batch_size(p.context_tokens, p.continuation_tokens)


def _protocol_info(name: str):
    from workbench import protocols

    return protocols.info(name)
