"""Generation for ``workbench serve``: one loaded model, optionally under a KV press, one request at a time.

The task protocol's own pieces are used, not copies, so that a completion served here is the local evaluation's
answer token for token: the prompt is tokenized as ``task_eval`` tokenizes (no special tokens added), generation
is ``kv_eval.generate`` and stops at ``task_eval``'s stop set. Under a press, the prompt's prefill — every prompt
token but the last — runs under the press through ``evaluate.pressed_caches`` (seeding, head-wise masks,
re-rotated positions and decoding presses as in an evaluation), and generation continues from the compressed
cache, starting with the prompt's last token.

Imports torch: loaded by the serve command after its flags are checked.
"""

from __future__ import annotations

import threading
from contextlib import closing
from dataclasses import dataclass

import torch

from workbench import kv_eval
from workbench.evaluate import pressed_caches
from workbench.plan import MethodSpec, ProtocolSpec
# The task protocol's tokenization and stop set: sharing them is what makes served answers equal local ones.
from workbench.task_eval import _eos as task_stop_ids
from workbench.task_eval import _ids as task_ids

_PROTOCOL = ProtocolSpec(name="task")  # presses run per rate, as the task protocol runs them for one rate


class Cancelled(Exception):
    """The client went away before its generation started or while it ran."""


@dataclass(frozen=True)
class Sampling:
    """What one request asks for: ``max_tokens`` new tokens at most, ``temperature`` 0 = greedy (else softmax
    sampling at that temperature, reproducible with ``seed``), ``stop`` strings that end the text (not included)."""

    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int  # tokens generated, up to and including the one that completed a stop string
    finish_reason: str  # 'stop' (end-of-sequence token or stop string) | 'length' (max_tokens reached)
    kept_fraction: float  # of the prefilled prompt's KV entries (1.0 without a press)


class Engine:
    """A loaded model (``workbench.models.LoadedModel``) and the press it serves under (None: uncompressed).

    ``press`` is a resolved MethodSpec of the kv family (params checked by the registry) and ``rate`` the
    fraction of the prefilled prompt's tokens kept (None for presses driven by their own parameters).
    ``complete`` holds a lock: the one model generates for one request at a time.
    """

    def __init__(self, lm, press: MethodSpec | None = None, rate: float | None = None):
        self.lm, self.press, self.rate = lm, press, rate
        self.stop_ids = task_stop_ids(lm)
        self.lock = threading.Lock()

    # -- prompts ---------------------------------------------------------------------------------------------

    def text_ids(self, text: str) -> list[int]:
        """Token ids of a completion prompt, exactly as the task protocol tokenizes its texts."""
        return task_ids(self.lm, text)

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The tokenizer's chat template with the assistant's turn opened, when it has one; else the messages'
        contents joined by blank lines, tokenized like a completion prompt."""
        tok = self.lm.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return task_ids(self.lm, text)  # the template writes its special tokens itself
        return self.text_ids("\n\n".join(m["content"] for m in messages))

    @property
    def vocab_size(self) -> int:
        return int(self.lm.model.get_input_embeddings().weight.shape[0])

    def decode(self, ids: list[int]) -> str:
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)

    # -- generation ------------------------------------------------------------------------------------------

    def complete(self, ids: list[int], sampling: Sampling, on_text=None, cancelled: threading.Event | None = None) -> Completion:
        """Generate after the prompt ``ids`` (at least one token). ``on_text(piece)`` receives the text as it
        becomes final (streaming); a set ``cancelled`` event stops the generation at the next token (raises
        Cancelled). Blocking: call it from a worker thread."""
        with self.lock:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            text = _TextStream(self, sampling.stop, on_text, cancelled)
            tokens, kept = self._generate(ids, sampling, text.on_token)
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            final = text.finish(tokens)
        reason = "stop" if text.stopped or len(tokens) < sampling.max_tokens else "length"
        return Completion(final, len(ids), len(tokens), reason, kept)

    def _generate(self, ids: list[int], sampling: Sampling, on_token) -> tuple[list[int], float]:
        model = self.lm.model
        device = model.device
        context = torch.tensor([ids[:-1]], dtype=torch.long, device=device)
        last = torch.tensor([ids[-1:]], dtype=torch.long, device=device)
        choose = _sampler(sampling, device)

        def run(cache, start, decoding_press=None):
            tokens, _ = kv_eval.generate(model, cache, last, start, sampling.max_tokens, self.stop_ids,
                                         press=decoding_press, choose=choose, on_token=on_token)
            return tokens

        if len(ids) == 1:  # nothing to prefill, hence nothing to compress
            from transformers import DynamicCache

            return run(DynamicCache(), 0), 1.0
        if self.press is None:
            cache, _ = kv_eval.prefill(model, context)
            return run(cache, context.shape[1]), 1.0
        seed_id = f"serve-seed-{sampling.seed}"  # random presses draw from the request's seed
        caches = pressed_caches(self.lm, seed_id, context, self.press, [self.rate], _PROTOCOL, shared_allowed=False)
        with closing(caches):  # closing it clears the head-wise masks the press left on the model
            _, cache, _, _, start, decoding_press = next(caches)
            kept = kv_eval.kv_budget(model, cache, context.shape[1])["kept_fraction"]
            return run(cache, start, decoding_press), kept


def _sampler(sampling: Sampling, device):
    """None (greedy argmax) at temperature 0, else softmax sampling from a generator seeded by the request."""
    if sampling.temperature <= 0:
        return None
    generator = torch.Generator(device=device)
    if sampling.seed is None:
        generator.seed()
    else:
        generator.manual_seed(sampling.seed)

    def choose(logits):
        probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))

    return choose


class _TextStream:
    """Turns generated tokens into text: cuts at the first stop string and, when streaming, hands on only text
    that can no longer change — held back are a partly decoded character (U+FFFD at the end) and the tail that
    could still become a stop string — so streamed pieces join into exactly the non-streamed text."""

    def __init__(self, engine: Engine, stop: tuple[str, ...], on_text, cancelled):
        self.engine, self.stop, self.on_text, self.cancelled = engine, tuple(s for s in stop if s), on_text, cancelled
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.tokens: list[int] = []
        self.sent = 0
        self.stopped = False
        self.text = ""

    def _cut(self, text: str) -> str:
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return text[: min(hits)]
        return text

    def on_token(self, token: int) -> bool:
        if self.cancelled is not None and self.cancelled.is_set():
            return False
        if not self.stop and self.on_text is None:
            self.tokens.append(token)
            return True  # nothing to look at per token: decode once at the end
        self.tokens.append(token)
        self.text = self._cut(self.engine.decode(self.tokens))
        if self.stopped:
            return False
        if self.on_text is not None:
            ready = len(self.text) - self.hold
            while ready > self.sent and self.text[ready - 1] == "\ufffd":
                ready -= 1
            self._send(ready)
        return True

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            self.on_text(self.text[self.sent : upto])
            self.sent = upto

    def finish(self, tokens: list[int]) -> str:
        if not self.stopped:
            self.text = self._cut(self.engine.decode(tokens))
        if self.on_text is not None:
            self._send(len(self.text))
        return self.text
