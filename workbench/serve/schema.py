"""The request bodies ``workbench serve`` accepts (OpenAI's completions and chat completions) and its error shape.

Fields a client commonly sends but the server does not act on are accepted (extra fields are ignored, as
OpenAI-compatible servers do), except where ignoring them would change the answer without saying so
(``n`` > 1, ``best_of``, ``logprobs``, ``echo``, ``top_p`` < 1): those are refused with 400 naming the field.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

MAX_STOP = 4  # OpenAI's limit


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: StrictBool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: StrictStr
    temperature: Union[StrictFloat, StrictInt] = Field(1.0, ge=0, le=2)
    seed: StrictInt | None = None
    stop: Union[StrictStr, list[StrictStr], None] = None
    n: StrictInt = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    top_p: Union[StrictFloat, StrictInt] = Field(1.0, gt=0, le=1)
    logprobs: Union[StrictBool, StrictInt, None] = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n):
        if n != 1:
            raise ValueError("only n = 1 is served (one model, one answer per request)")
        return n

    @field_validator("top_p")
    @classmethod
    def _no_nucleus(cls, top_p):
        if top_p != 1:
            raise ValueError("nucleus sampling is not served: leave top_p at 1")
        return top_p

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs):
        if logprobs not in (None, False, 0):
            raise ValueError("log-probabilities are not served")
        return logprobs

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop):
        if isinstance(stop, list) and len(stop) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return stop

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


TokenIds = list[StrictInt]


class CompletionRequest(_Common):
    """POST /v1/completions. ``prompt``: a string, or token ids (the exact ids a harness tokenized itself), or a
    list holding one of either (one prompt per request)."""

    prompt: Union[StrictStr, TokenIds, list[StrictStr], list[TokenIds]]
    max_tokens: StrictInt = Field(16, ge=1)  # OpenAI's default for completions
    echo: StrictBool = False
    best_of: StrictInt | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise ValueError("one prompt per request (send several requests)")
            prompt = prompt[0]
        if len(prompt) == 0:
            raise ValueError("the prompt is empty")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo):
        if echo:
            raise ValueError("echo is not served")
        return echo

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, best_of):
        if best_of not in (None, 1):
            raise ValueError("only best_of = 1 is served")
        return best_of


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: StrictStr
    content: Union[StrictStr, list[TextPart]]

    def as_dict(self) -> dict:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class ChatRequest(_Common):
    """POST /v1/chat/completions. ``max_completion_tokens`` (newer clients) and ``max_tokens`` mean the same."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)

    def budget(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


def validation_error(errors: list[dict]) -> ApiError:
    """pydantic's first error as one 400 naming the field (``messages.0.content``, ``max_tokens``, ``body``)."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request body", "type": ""}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Union members show up in the location ('str', 'list[int]'): name the field, not pydantic's branches.
    loc = [p for p in loc if not (p.startswith(("list[", "str", "int", "float", "bool", "function-")) or "[" in p)]
    param = ".".join(loc) or "body"
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    return ApiError(400, f"{param}: {msg}", param=param)
