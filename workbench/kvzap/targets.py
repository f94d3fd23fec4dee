"""KVzip+ target scores and the matching hidden states, for training a KVzap scorer (torch, kvpress).

The targets are computed by kvpress's own ``KVzipPress`` with ``kvzip_plus_normalization=True``: the context
is prefilled, then replayed after "Repeat the previous context exactly."; each KV entry's score is the largest
attention a replay query gives it (×‖W_O v‖ / ‖h‖, the "+" normalisation). The press keeps those scores in
``score_val`` and would then compress; here its last step records them instead. As in kvpress's
``kvzap/train.py``, the scorer learns their natural logarithm, and its input is what the press sees at
inference: the hidden states entering each attention layer (after the input norm), one row per context token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from kvpress import KVzipPress


# log(0) is -inf; a softmax weight this small is "never attended" for any threshold a user would pick.
_SMALLEST_SCORE = 1e-30


class _RecordingKVzip(KVzipPress):
    """KVzipPress whose final compression step keeps the scores it computed and evicts nothing."""

    captured: torch.Tensor | None = None

    def compress_post(self, model):
        self.captured = self.score_val[:, 0].float().clone()  # (layers, kv heads, context tokens)


def chat_prefix_ids(tokenizer) -> list[int]:
    """The tokens a chat template puts before a user's message: KVzipPress scores the context after them (its
    ``prefix_length``), as kvpress's pipeline feeds contexts inside the template."""
    if getattr(tokenizer, "chat_template", None) is None:
        return []
    dummy = "dummy context"
    separator = "\n" + "#" * len(dummy)
    text = tokenizer.apply_chat_template([{"role": "user", "content": dummy + separator}], add_generation_prompt=True,
                                         tokenize=False, enable_thinking=False)
    return tokenizer.encode(text.split(separator)[0].split(dummy)[0], add_special_tokens=False)


@dataclass
class TextTargets:
    hidden: torch.Tensor  # (n_tokens, layers, hidden size), float16 (halves memory; values are post-norm)
    scores: torch.Tensor  # (n_tokens, layers, kv heads), float32: log KVzip+ score


def text_targets(model, tokenizer, text_ids: list[int], n_tokens: int, generator: torch.Generator) -> TextTargets:
    """KVzip+ log-scores of ``n_tokens`` randomly drawn tokens of one text (token ids), with their hidden states."""
    prefix = chat_prefix_ids(tokenizer)
    ids = torch.tensor([prefix + list(text_ids)], dtype=torch.long, device=model.device)
    hidden: dict[int, torch.Tensor] = {}

    def record(module, args, kwargs, output):
        if module.layer_idx not in hidden:  # the prefill only: the replay passes come later
            hidden[module.layer_idx] = kwargs["hidden_states"][0, len(prefix):].detach()

    logging.getLogger("kvpress.presses.kvzip_press").setLevel(logging.ERROR)  # its cost warning, once per text
    press = _RecordingKVzip(compression_ratio=0.5, kvzip_plus_normalization=True)
    with torch.inference_mode():
        with press(model):
            if press.prefix_length != len(prefix):
                raise RuntimeError(f"KVzipPress expects a chat prefix of {press.prefix_length} tokens, the workbench built "
                                   f"{len(prefix)}: the two disagree on this tokenizer's chat template")
            handles = [layer.self_attn.register_forward_hook(record, with_kwargs=True) for layer in _layers(model)]
            try:
                model(input_ids=ids, use_cache=True, past_key_values=_new_cache(), logits_to_keep=1)
            finally:
                for h in handles:
                    h.remove()
    if press.captured is None:
        raise RuntimeError("KVzipPress computed no scores (an empty text?)")
    scores = press.captured[:, :, len(prefix):]  # (L, H, T)
    n_text = scores.shape[-1]
    pick = torch.randperm(n_text, generator=generator)[:n_tokens].sort().values
    layers = len(hidden)
    x = torch.stack([hidden[i][pick.to(hidden[i].device)].float().cpu() for i in range(layers)], dim=1)
    y = scores[:, :, pick.to(scores.device)].permute(2, 0, 1).cpu()
    return TextTargets(hidden=x.to(torch.float16), scores=torch.log(y.clamp_min(_SMALLEST_SCORE)))


def _layers(model):
    return (model.model.language_model if hasattr(model.model, "language_model") else model.model).layers


def _new_cache():
    from transformers import DynamicCache

    return DynamicCache()
