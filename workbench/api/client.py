"""Sending prompts to a remote model: httpx for HTTP, tenacity for retries, a thread pool for concurrency.

Behaviour under real API conditions (each outcome is per request unless it says otherwise):

* at most ``max_concurrency`` requests in flight;
* 429, 5xx, timeouts and dropped connections are retried ``max_retries`` times with exponential backoff
  and jitter; a ``Retry-After`` header is honoured (seconds or an HTTP date);
* 401/403 stop the whole run before another request is sent (``stop_reason``), with one message;
* 404 (an unknown model) raises :class:`ModelNotFound`: the method's cells fail with the reason;
* a malformed body, a refused connection, a 400, or retries exhausted fail that request only;
* the budget (``max_cost_usd``) is checked before each request with an upper bound of its cost: the run
  stops before a request could cross it (``stop_reason``), never after;
* every answer is committed to the response cache before it is used: nothing is paid for twice.

The API key is read from the environment by the caller and held in the httpx client's headers only;
it never enters a message, a log line, a cache key or a record.
"""

from __future__ import annotations

import email.utils
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import tenacity

from workbench.api import wire
from workbench.api.cache import ResponseCache, request_key
from workbench.api.prices import Price
from workbench.secrets import scrub

# Backoff when the server gives no Retry-After: 0.5 s, 1 s, 2 s … with jitter, at most 30 s a wait.
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.5, 30.0
RETRY_AFTER_MAX_S = 300.0  # a Retry-After longer than this is taken as this (the run stays cancellable)
_BACKOFF = tenacity.wait_exponential_jitter(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S)


class ApiError(Exception):
    """A request that failed for good; ``str()`` is one line without secrets."""


class Retryable(ApiError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotFound(ApiError):
    """404: the model (or the endpoint) does not exist at this base_url: every request would fail alike."""


@dataclass
class Request:
    prompt: str
    max_tokens: int
    input_tokens_estimate: int  # counted with the local tokenizer: for the budget and for unreported usage


@dataclass
class Answer:
    text: str
    input_tokens: int
    output_tokens: int
    usage_reported: bool
    cost_usd: float | None
    seconds: float
    cached: bool
    finish_reason: str | None = None


@dataclass
class Failure:
    message: str


@dataclass
class Stats:
    """Live counters of this run (the progress line): requests answered, in flight, sleeping on a rate limit."""

    done: int = 0
    cached: int = 0
    failed: int = 0
    in_flight: int = 0
    waiting: int = 0
    retries: int = 0
    spent_usd: float = 0.0  # paid in this run (cache hits cost nothing now)
    session_usd: float = 0.0  # the session's spend: earlier runs' records + this run's answers
    budget_usd: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


class ApiClient:
    def __init__(self, spec, key: str | None, price: Price | None, cache: ResponseCache | None = None,
                 max_cost_usd: float | None = None, transport: httpx.BaseTransport | None = None):
        self.spec, self.price, self.cache = spec, price, cache
        self.max_cost_usd = max_cost_usd
        self.stats = Stats(budget_usd=max_cost_usd)
        self.stop_reason: str | None = None
        self.stop_kind: str | None = None  # "refused" (401/403) | "budget"
        self.cancel = threading.Event()
        self.on_activity = lambda stats: None
        self._lock = threading.Lock()
        self._reserved = 0.0
        self._http = httpx.Client(base_url=spec.base_url, headers=wire.headers(spec, key), timeout=spec.timeout_s,
                                  limits=httpx.Limits(max_connections=spec.max_concurrency,
                                                      max_keepalive_connections=spec.max_concurrency),
                                  transport=transport)
        self._pool = ThreadPoolExecutor(max_workers=spec.max_concurrency, thread_name_prefix="api")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    # -- the public operation ---------------------------------------------------------------------

    def answer_many(self, requests: list[Request]) -> list[Answer | Failure | None]:
        """One outcome per request, in order: an Answer, a Failure (that request only), or None when it was
        not sent because the run is stopping (cancelled, budget reached, key refused). Raises ModelNotFound."""
        outcomes = list(self._pool.map(self._outcome, requests))
        missing = next((o for o in outcomes if isinstance(o, ModelNotFound)), None)
        if missing is not None:
            raise missing
        return outcomes

    # -- one request --------------------------------------------------------------------------------

    def _outcome(self, req: Request):
        path, body = wire.request(self.spec, req.prompt, req.max_tokens)
        key = request_key(self.spec.provider, self.spec.base_url, self.spec.model, body)
        stored = self.cache.get(key) if self.cache is not None else None
        if stored is not None:
            answer = self._answer(wire.Reply(**stored["reply"]), req, stored["seconds"], cached=True)
            self._count(done=1, cached=1, session_usd=answer.cost_usd or 0.0)
            return answer
        if self.cancel.is_set() or self.stop_reason:
            return None
        try:
            reservation = self._reserve(req)
        except _OverBudget as over:
            self._stop(str(over), "budget")
            return None
        self._count(in_flight=1)
        start = time.perf_counter()
        try:
            reply = self._send_with_retries(path, body)
        except ModelNotFound as err:
            self._count(in_flight=-1, failed=1)
            self._release(reservation, 0.0)
            return err
        except _Refused as err:
            self._count(in_flight=-1, failed=1)
            self._release(reservation, 0.0)
            self._stop(str(err), "refused")
            return None
        except (ApiError, httpx.HTTPError, wire.MalformedResponse, ValueError) as err:
            self._count(in_flight=-1, failed=1)
            self._release(reservation, 0.0)
            return Failure(_one_line(err))
        seconds = time.perf_counter() - start
        if self.cache is not None:
            self.cache.put(key, {"reply": reply.__dict__, "seconds": seconds})
        answer = self._answer(reply, req, seconds, cached=False)
        paid = answer.cost_usd or 0.0
        self._release(reservation, paid)
        self._count(in_flight=-1, done=1, spent_usd=paid, session_usd=paid)
        return answer

    def _answer(self, reply: wire.Reply, req: Request, seconds: float, cached: bool) -> Answer:
        reported = reply.input_tokens is not None and reply.output_tokens is not None
        n_in = reply.input_tokens if reply.input_tokens is not None else req.input_tokens_estimate
        n_out = reply.output_tokens if reply.output_tokens is not None else max(1, len(reply.text) // 4)
        cost = self.price.cost(n_in, n_out) if self.price is not None else None
        return Answer(reply.text, n_in, n_out, reported, cost, seconds, cached, reply.finish_reason)

    def _send_with_retries(self, path: str, body: dict) -> wire.Reply:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type((Retryable, httpx.TimeoutException, httpx.RemoteProtocolError,
                                                    httpx.ReadError, httpx.WriteError)),
            wait=self._wait, stop=tenacity.stop_after_attempt(self.spec.max_retries + 1), sleep=self._sleep,
            before_sleep=lambda state: self._count(retries=1), reraise=True)
        return retrying(self._send_once, path, body)

    def _send_once(self, path: str, body: dict) -> wire.Reply:
        if self.stop_reason or self.cancel.is_set():
            raise ApiError(self.stop_reason or "cancelled")
        response = self._http.post(path, json=body)
        status = response.status_code
        if status in (401, 403):
            raise _Refused(f"the API refused the key ({status}{self._said(response)}); check ${self.spec.api_key_env} "
                           f"for {self.spec.provider} — the run stopped before sending anything more")
        if status == 404:
            raise ModelNotFound(f"404 from {self.spec.base_url}: model {self.spec.model!r} (or the endpoint) does not "
                                f"exist there{self._said(response)}")
        if status == 429 or status >= 500:
            raise Retryable(f"{status} from the API{self._said(response)}", _retry_after(response))
        if status >= 400:
            raise ApiError(f"{status} from the API{self._said(response)}")
        try:
            data = response.json()
        except ValueError:
            raise wire.MalformedResponse(f"the API answered {status} with a body that is not JSON") from None
        return wire.parse(self.spec, data)

    @staticmethod
    def _said(response: httpx.Response) -> str:
        try:
            message = wire.error_message(response.json())
        except ValueError:
            message = None
        return f": {scrub(message)[:200]}" if message else ""

    def _wait(self, state: tenacity.RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, Retryable) and err.retry_after is not None:
            return err.retry_after
        return _BACKOFF(state)

    def _sleep(self, seconds: float) -> None:
        self._count(waiting=1, in_flight=-1)
        try:
            self.cancel.wait(seconds)  # a cancelled run does not sit out a long Retry-After
        finally:
            self._count(waiting=-1, in_flight=1)

    # -- accounting ---------------------------------------------------------------------------------

    def _reserve(self, req: Request) -> float:
        """An upper bound of the request's cost, held against the budget until the answer's real cost is known."""
        if self.max_cost_usd is None or self.price is None:
            return 0.0
        # The provider's tokenizer may count more than ours: a quarter more, and the whole output budget.
        bound = self.price.cost(int(req.input_tokens_estimate * 1.25) + 16, req.max_tokens)
        with self._lock:
            committed = self.stats.session_usd + self._reserved
            if committed + bound > self.max_cost_usd:
                raise _OverBudget(f"stopped before crossing max_cost_usd: ${self.stats.session_usd:.4f} spent of "
                                  f"${self.max_cost_usd:.4f}, the next request could cost up to ${bound:.4f}")
            self._reserved += bound
        return bound

    def _release(self, reservation: float, paid: float) -> None:
        with self._lock:
            self._reserved -= reservation

    def _stop(self, reason: str, kind: str) -> None:
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason, self.stop_kind = reason, kind
        self.on_activity(self.snapshot())

    def _count(self, **deltas) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + delta)
            snapshot = self.stats.as_dict()
        self.on_activity(snapshot)

    def snapshot(self) -> dict:
        with self._lock:
            return self.stats.as_dict()


class _Refused(ApiError):
    """401/403: the key is wrong or lacks access; no request can succeed."""


class _OverBudget(Exception):
    pass


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, httpx.ConnectError):
        text = f"could not connect: {text}"
    elif isinstance(err, httpx.TimeoutException):
        text = f"timed out after retries: {text or 'no answer'}"
    return scrub(text.splitlines()[0])[:300]
