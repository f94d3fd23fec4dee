"""The plan's ``evaluator`` block: which remote model answers, and how hard the workbench may push it.

The API key is never part of the block: the block names the environment variable that holds it
(``api_key_env``, a default per provider), read at run time by the client. No I/O and no httpx here.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Provider:
    name: str
    wire: str  # "openai" (chat/completions) | "anthropic" (Messages)
    base_url: str | None  # None: the plan must give one (self-hosted servers)
    api_key_env: str | None  # None: no key needed unless the plan names a variable
    summary: str


PROVIDERS: dict[str, Provider] = {p.name: p for p in [
    Provider("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "OpenAI"),
    Provider("anthropic", "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", "Anthropic Messages API"),
    Provider("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", "DeepSeek (OpenAI-compatible)"),
    Provider("together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "Together AI (OpenAI-compatible)"),
    Provider("openai-compatible", "openai", None, None,
             "any OpenAI-compatible server: vLLM, SGLang, llama.cpp server, Ollama, workbench serve"),
]}
ENDPOINTS = ("chat", "completions")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS = {"provider", "model", "base_url", "api_key_env", "endpoint", "max_concurrency", "temperature", "max_tokens",
         "timeout_s", "max_retries", "prices", "seed"}


class EvaluatorError(ValueError):
    """A bad field of the evaluator block: ``field`` is relative to the block ('' for the block itself)."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(message)


@dataclass
class EvaluatorSpec:
    provider: str
    model: str
    base_url: str
    api_key_env: str | None = None
    endpoint: str = "chat"  # OpenAI wire only: /chat/completions or /completions (raw prompt)
    max_concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int | None = None  # None: the task's own generation budget
    timeout_s: float = 60.0  # per request
    max_retries: int = 5  # on 429, 5xx and timeouts
    seed: int | None = None
    # {"input": $ per million input tokens, "output": $ per million output tokens}: overrides the shipped table.
    prices: dict[str, float] | None = field(default=None)

    @property
    def wire(self) -> str:
        return PROVIDERS[self.provider].wire

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        return f"{self.provider}:{self.model}"


def _number(value: Any, name: str, minimum: float, maximum: float, integer: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and isinstance(value, int)
    if not ok or not minimum <= value <= maximum:
        kind = "a whole number" if integer else "a number"
        raise EvaluatorError(name, f"expected {kind} from {minimum:g} to {maximum:g}, got {value!r}")
    return value


def parse_evaluator(value: Any) -> EvaluatorSpec | None:
    """The evaluator block of a plan, resolved (defaults of its provider filled in). Raises EvaluatorError."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EvaluatorError("", "expected an object with 'provider' and 'model' (or null for the local model)")
    unknown = set(value) - _KEYS
    if unknown:
        raise EvaluatorError("", f"unknown key(s) {sorted(unknown, key=str)}; allowed: {', '.join(sorted(_KEYS))}")
    provider = value.get("provider", "openai-compatible" if "base_url" in value else None)
    if not isinstance(provider, str) or provider not in PROVIDERS:  # a list or object would not even hash
        raise EvaluatorError("provider", f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    p = PROVIDERS[provider]
    model = value.get("model")
    if not isinstance(model, str) or not model.strip():
        raise EvaluatorError("model", "expected the provider's model name, e.g. \"gpt-4o-mini\"")
    base_url = value.get("base_url", p.base_url)
    if base_url is None:
        raise EvaluatorError("base_url", f"provider {provider} needs a base_url, e.g. \"http://127.0.0.1:8000/v1\"")
    if not isinstance(base_url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", base_url):
        raise EvaluatorError("base_url", f"expected an http(s) URL, got {base_url!r}")
    key_env = value.get("api_key_env", p.api_key_env)
    if key_env is not None and (not isinstance(key_env, str) or not _ENV_NAME.fullmatch(key_env)):
        # Never echo the value: someone may have pasted the key itself here.
        raise EvaluatorError("api_key_env", "expected the NAME of an environment variable holding the key "
                             "(e.g. OPENAI_API_KEY), not the key itself")
    endpoint = value.get("endpoint", "chat")
    if endpoint not in ENDPOINTS or (endpoint == "completions" and p.wire != "openai"):
        allowed = ENDPOINTS if p.wire == "openai" else ("chat",)
        raise EvaluatorError("endpoint", f"expected one of {', '.join(allowed)} for provider {provider}, got {endpoint!r}")
    spec = EvaluatorSpec(provider=provider, model=model.strip(), base_url=base_url.rstrip("/"), api_key_env=key_env,
                         endpoint=endpoint)
    spec.max_concurrency = _number(value.get("max_concurrency", spec.max_concurrency), "max_concurrency", 1, 256, True)
    spec.temperature = float(_number(value.get("temperature", spec.temperature), "temperature", 0, 2))
    if value.get("max_tokens") is not None:
        spec.max_tokens = _number(value["max_tokens"], "max_tokens", 1, 1_000_000, True)
    spec.timeout_s = float(_number(value.get("timeout_s", spec.timeout_s), "timeout_s", 0.1, 3600))
    spec.max_retries = _number(value.get("max_retries", spec.max_retries), "max_retries", 0, 50, True)
    if value.get("seed") is not None:
        spec.seed = _number(value["seed"], "seed", 0, 2**63 - 1, True)
    prices = value.get("prices")
    if prices is not None:
        if not isinstance(prices, dict) or set(prices) != {"input", "output"}:
            raise EvaluatorError("prices", "expected {\"input\": $ per million input tokens, \"output\": $ per million "
                                 "output tokens}")
        spec.prices = {k: float(_number(prices[k], f"prices.{k}", 0, 1e6)) for k in ("input", "output")}
    return spec


def parse_max_cost(value: Any) -> float | None:
    """``max_cost_usd``: None (no cap) or a positive number of US dollars."""
    if value is None:
        return None
    return float(_number(value, "max_cost_usd", 0, 1e9))
