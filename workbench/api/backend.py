"""The backend a plan with an ``evaluator`` measures with: a remote model that only generates.

It wraps the plan's local model — still needed to draw the samples (token counts), to run the prompt
compressors that score with the evaluated model, and to estimate token counts — and an :class:`ApiClient`
that answers. It offers only "generate": KV presses need a local cache, so their cells are unavailable
with a remote evaluator (``workbench serve --press`` puts a press behind an API instead).
"""

from __future__ import annotations

import threading
import time

from workbench.api.cache import ResponseCache
from workbench.api.client import ApiClient, Request
from workbench.api.keys import read_key
from workbench.api.prices import price_for

ACTIVITY_INTERVAL_S = 0.1  # at most ten activity events a second reach the runner's listeners


class ApiBackend:
    capabilities = frozenset({"generate"})

    def __init__(self, local, spec, max_cost_usd: float | None, use_cache: bool = True, cache_path=None):
        self.local, self.spec = local, spec
        self.price = price_for(spec)
        self.client = ApiClient(spec, read_key(spec), self.price, ResponseCache(cache_path) if use_cache else None,
                                max_cost_usd)
        self._last_emit = 0.0
        self._emit_lock = threading.Lock()
        self._listener = None

    # -- what the runner and the protocols use -------------------------------------------------------

    @property
    def remote(self) -> ApiClient:
        return self.client

    @property
    def tokenizer(self):
        return self.local.tokenizer

    @property
    def device(self) -> str:
        return self.local.device

    @property
    def dtype(self) -> str:
        return self.local.dtype

    @property
    def load_seconds(self) -> float:
        return self.local.load_seconds

    @property
    def model(self):  # compressors that score with the evaluated model use the local one
        return self.local.model

    @property
    def concurrency(self) -> int:
        return self.spec.max_concurrency

    @property
    def stopped(self) -> dict | None:
        """{"reason": one line, "kind": "refused" (the key) | "budget"} once the client stopped sending."""
        if self.client.stop_reason is None:
            return None
        return {"reason": self.client.stop_reason, "kind": self.client.stop_kind}

    def set_attention(self, impl: str) -> None:
        self.local.set_attention(impl)

    def auto_batch_size(self, *args, **kwargs) -> int:
        return self.spec.max_concurrency

    def describe(self) -> dict:
        out = self.local.describe()
        out["evaluator"] = {"provider": self.spec.provider, "model": self.spec.model, "base_url": self.spec.base_url,
                            "price": None if self.price is None else {"input": self.price.input, "output": self.price.output,
                                                                      "source": self.price.source}}
        return out

    def why_not(self, missing: set[str]) -> str:
        return (f"the evaluator {self.spec.label()} only answers prompts ({', '.join(sorted(missing))} needs a local "
                "cache); to measure a KV press through an API, serve the model under it: workbench serve --press NAME "
                "--rate R, and evaluate against that server")

    def attach(self, session_spent_usd: float, on_activity, cancel: threading.Event) -> None:
        """Start of a run: the session's earlier spend counts against the budget; activity reaches the runner."""
        self.client.stats.session_usd = session_spent_usd
        self.client.cancel = cancel
        self._listener = on_activity
        self.client.on_activity = self._throttled

    def _throttled(self, stats: dict) -> None:
        now = time.monotonic()
        with self._emit_lock:
            if now - self._last_emit < ACTIVITY_INTERVAL_S and not self.client.stop_reason:
                return
            self._last_emit = now
        if self._listener is not None:
            self._listener(stats)

    def activity(self) -> dict:
        return self.client.snapshot()

    def answer_all(self, prompts: list[tuple[str, int]]):
        """[(prompt text, max new tokens)] → outcomes (client.Answer | client.Failure | None), in order."""
        requests = [Request(text, max_new, len(self.local.tokenizer(text, add_special_tokens=False)["input_ids"]))
                    for text, max_new in prompts]
        return self.client.answer_many(requests)

    def close(self) -> None:
        self.client.close()


def load_api_backend(plan, use_cache: bool = True) -> ApiBackend:
    """The plan's local model (for samples and compressors) behind the plan's remote evaluator."""
    from workbench import models

    read_key(plan.evaluator)  # before loading anything: a missing key is said at once (keys.MissingKey)
    local = models.load_model(plan.model, plan.device, plan.dtype)
    return ApiBackend(local, plan.evaluator, plan.max_cost_usd, use_cache=use_cache)
