"""The two wire protocols: the request each one sends and what is read from its answer.

OpenAI-compatible (OpenAI, DeepSeek, Together, vLLM, SGLang, llama.cpp server, Ollama, ``workbench serve``):
``POST {base_url}/chat/completions`` with one user message, or ``POST {base_url}/completions`` with the raw
prompt. Anthropic: ``POST {base_url}/v1/messages``. No I/O here: the client sends and retries.
"""

from __future__ import annotations

from dataclasses import dataclass


class MalformedResponse(Exception):
    """The server answered 2xx with a body that is not the protocol's answer."""


@dataclass
class Reply:
    text: str
    input_tokens: int | None  # as reported by the API (None: it reported none)
    output_tokens: int | None
    finish_reason: str | None = None


def request(spec, prompt: str, max_tokens: int) -> tuple[str, dict]:
    """(path below base_url, JSON body) for one prompt answered by the evaluator's model."""
    body: dict = {"model": spec.model, "max_tokens": max_tokens, "temperature": spec.temperature}
    if spec.wire == "anthropic":
        body["messages"] = [{"role": "user", "content": prompt}]
        return "/v1/messages", body
    if spec.seed is not None:
        body["seed"] = spec.seed
    if spec.endpoint == "completions":
        body["prompt"] = prompt
        return "/completions", body
    body["messages"] = [{"role": "user", "content": prompt}]
    return "/chat/completions", body


def headers(spec, key: str | None) -> dict[str, str]:
    if spec.wire == "anthropic":
        out = {"anthropic-version": "2023-06-01"}
        if key:
            out["x-api-key"] = key
        return out
    return {"Authorization": f"Bearer {key}"} if key else {}


def _int_or_none(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def parse(spec, data) -> Reply:
    """The answer's text and reported usage. Raises MalformedResponse naming what is missing."""
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(data).__name__}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    if spec.wire == "anthropic":
        blocks = data.get("content")
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise MalformedResponse("no 'content' list in the Messages answer")
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        return Reply(text, _int_or_none(usage.get("input_tokens")), _int_or_none(usage.get("output_tokens")),
                     data.get("stop_reason"))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("no 'choices' in the completion answer")
    choice = choices[0]
    if spec.endpoint == "completions":
        text = choice.get("text")
    else:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    if text is None and spec.endpoint != "completions" and isinstance(choice.get("message"), dict):
        text = ""  # a model that answered nothing (content null) answered the empty string
    if not isinstance(text, str):
        raise MalformedResponse("the first choice holds no text")
    return Reply(text, _int_or_none(usage.get("prompt_tokens")), _int_or_none(usage.get("completion_tokens")),
                 choice.get("finish_reason"))


def error_message(data) -> str | None:
    """The provider's own error message, when the body is one of the usual error shapes."""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        if isinstance(data.get("message"), str):
            return data["message"]
    return None
