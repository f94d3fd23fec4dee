"""The family interface the runner schedules through (no torch at import)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any


class UnsupportedMethod(Exception):
    """This method cannot be measured here (with this protocol or backend): recorded as the cell's reason,
    the cell is 'unavailable', not failed."""


class SampleFailed(Exception):
    """In place of a sample's record: this sample alone could not be measured (an API request that failed for
    good). Its cell keeps the other samples, ends in error naming the reason, and a resumed run retries it."""


class Measurer:
    """A method made ready on a backend (models loaded, attention set): measures groups of samples.

    ``measure(samples, rates)`` returns one {rate: sample record} per sample. ``batchable``: several samples
    of one length may be passed at once with unchanged results. ``hub_reason``: why it needs the Hugging
    Face hub, if it does (failures that look like the hub being out of reach make cells unavailable).
    """

    batchable = False
    hub_reason: str | None = None
    load_seconds: float | None = None
    # Set by the runner before measuring: live(data) reports what a sample shows while it is measured (a decoding
    # cell's KV budget curve so far), as a "live" event. None: nobody listens (a test; a Ray worker sends them to
    # the driver's live queue when its family ``reports_live``).
    live = None

    def measure(self, samples: list, rates: list) -> list[dict]:
        raise NotImplementedError

    def guard(self):
        """Context held while measuring (e.g. hub access local-cache-only when the hub is out of reach)."""
        if not self.hub_reason:
            return nullcontext()
        from workbench.hub import offline_unless_hub_reachable

        return offline_unless_hub_reachable()


class Family:
    """A kind of compression. Subclasses set ``name`` and ``needs`` and implement ``open``."""

    name = "?"
    # Whether its measurers report live figures while a sample is measured (``Measurer.live``): a distributed run
    # then carries them from the workers to the driver.
    reports_live = False

    def needs(self, plan) -> frozenset[str]:
        """What the backend must offer: "prefill" (a context into a cache), "score" (NLL of a continuation
        through a cache), "generate" (text after a context). By default, what the plan's protocol uses."""
        from workbench import protocols

        return protocols.info(plan.protocol.name).needs

    def check_params(self, info, params: dict[str, Any], where: str) -> None:
        """Static checks beyond the parameter rules (composition of nested methods). Raises ValueError."""

    def method_rates(self, params: dict[str, Any], rates: list | None) -> list | None:
        """The method's rates given its resolved params and the rates the plan listed for it (None: the plan's).
        Raises ValueError ('field: message') when they cannot be."""
        return rates

    def attention(self, method) -> str | None:
        """Attention implementation the method needs ('eager' | 'sdpa' | 'conflict' | None: any)."""
        return None

    def hub_reason(self, method) -> str | None:
        """Why the method needs artefacts from the Hugging Face hub, if it does: failures that look like the hub
        being out of reach then make its cells unavailable (with this reason), not failed."""
        return None

    def path(self, method, plan) -> tuple[str, str | None]:
        """(how its cells are computed, why not the faster way) — shown in the dry run and on cells."""
        return "per-rate", None

    def unavailable(self, method, plan) -> str | None:
        """Why this method cannot be measured under the plan's protocol (None: it can). Static."""
        return None

    def invalid(self, method, protocol) -> str | None:
        """Why the plan itself is wrong to ask for this method under this protocol (a validation error)."""
        return None

    def open(self, backend, method, plan, rates: list, samples: list) -> Measurer:
        """Make the method ready on the backend for these rates (still to do) on this dataset's samples. Raises: its cells fail, or are
        unavailable (UnsupportedMethod, or the hub out of reach for a method that needs it)."""
        raise NotImplementedError
