"""KV-cache eviction on one sample, in torch: prefill under a press, then score a continuation.

Two ways to get a pruned cache for a rate (fraction of context tokens kept):

* per rate: ``with press(model)`` around the prefill, exactly as kvpress runs it;
* shared prefill: one plain prefill that keeps the full cache and records each layer's scores,
  then a top-k gather per rate. A press scores a layer's entries after that layer's attention has
  run on the full context, so the hidden states reaching the next layer, hence all scores, do not
  depend on the rate: the gather reproduces the per-rate cache exactly for score-based presses.

Scoring (protocol ``context-continuation``): the continuation's T tokens are fed on top of the
pruned cache, positions continuing from the original context length C, and the NLL of tokens
C+1..C+T is summed: every scored token is predicted through the compressed cache. Protocol
``chunked`` (seed 004): the whole window is fed in chunks and the cache compressed after every chunk.

Everything here runs under ``torch.inference_mode()``; torch is imported by the caller's first use.
"""

from __future__ import annotations

import time
import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from workbench import kv_room
from workbench.methods.presses import ResolvedPress, compression_ratio


def _language_model(model):
    if hasattr(model, "get_base_model"):  # a peft wrapper: a learned run's LoRA adapters, on while it is measured
        model = model.get_base_model()
    return model.model.language_model if hasattr(model.model, "language_model") else model.model


def attention_modules(model) -> list:
    lm = _language_model(model)
    modules = []
    for layer in lm.layers:
        # Presses read module.rotary_emb (kvpress's own context manager sets it the same way).
        layer.self_attn.rotary_emb = lm.rotary_emb
        modules.append(layer.self_attn)
    return modules


def clear_masks(model) -> None:
    """Forget head-wise masks (AdaKV family) so they cannot leak into the next evaluation."""
    for module in attention_modules(model):
        module.masked_key_indices = None


def seed_sample(sample_id: str) -> None:
    """Seed torch from the sample id: random presses draw the same numbers on every path and rerun."""
    torch.manual_seed(zlib.crc32(sample_id.encode()))


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


@contextmanager
def layer_hooks(model, fn):
    """Call fn(module, kwargs, output) after every attention layer's forward."""
    handles = [
        m.register_forward_hook(lambda mod, args, kwargs, out: fn(mod, kwargs, out), with_kwargs=True)
        for m in attention_modules(model)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _is_prefill(kwargs, q_len: int) -> bool:
    return int(kwargs["cache_position"][-1]) + 1 == q_len


# ---------------------------------------------------------------------------------------------
# Prefill and continuation


def prefill(model, context_ids: torch.Tensor, press=None, room: int = 0) -> tuple[DynamicCache, float]:
    """Prefill ``context_ids`` (1, C) into a fresh cache, under ``press`` if given. Returns (cache, seconds).
    ``room``: positions reserved behind the context for what follows it (see kv_room)."""
    cache = kv_room.roomy_cache(room) if room else DynamicCache()
    _sync(model)
    start = time.perf_counter()
    with torch.inference_mode(), (press(model) if press is not None else nullcontext()):
        # logits_to_keep=1: the prefill's own logits are not scored, so skip the (C × vocab) projection.
        model(input_ids=context_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    _sync(model)
    return cache, time.perf_counter() - start


def _uniform_layers(cache) -> bool:
    return len({layer.keys.shape[-2] for layer in cache.layers}) == 1


def continuation_nll(model, cache, continuation_ids: torch.Tensor, start_position: int, press=None,
                     stepwise: bool = False) -> tuple[float, int, float]:
    """Teacher-forced NLL of continuation_ids[:, 1:] given the cache (positions from ``start_position``).

    ``continuation_ids`` is (1, T+1). Returns (nll_sum in nats, tokens scored T, seconds). One forward
    pass, or one per token when ``stepwise`` (decoding presses run under ``press`` then) or when the
    layers hold caches of different lengths (a single attention mask cannot describe them).
    """
    nlls, n, seconds = continuation_nlls(model, cache, continuation_ids, start_position, press, stepwise)
    return nlls[0], n, seconds


def continuation_nlls(model, cache, continuation_ids: torch.Tensor, start_position: int, press=None,
                      stepwise: bool = False) -> tuple[list[float], int, float]:
    """continuation_nll for a batch: ``continuation_ids`` is (B, T+1) over a cache of B rows of equal
    length (no padding, so each row's NLL is what it would be alone). Returns ([nll_sum per row], T, seconds)."""
    inputs, targets = continuation_ids[:, :-1], continuation_ids[:, 1:]
    n = inputs.shape[1]
    positions = torch.arange(start_position, start_position + n, device=inputs.device).unsqueeze(0).expand(inputs.shape[0], -1)
    stepwise = stepwise or not _uniform_layers(cache)
    _sync(model)
    start = time.perf_counter()
    with torch.inference_mode():
        if not stepwise:
            logits = model(input_ids=inputs, past_key_values=cache, position_ids=positions, use_cache=True).logits
        else:
            parts = []
            with press(model) if press is not None else nullcontext():
                for i in range(n):
                    out = model(input_ids=inputs[:, i : i + 1], past_key_values=cache, position_ids=positions[:, i : i + 1], use_cache=True)
                    parts.append(out.logits)
            logits = torch.cat(parts, dim=1)
        nll = token_nlls(logits, targets).sum(dim=1).tolist()
    _sync(model)
    return nll, n, time.perf_counter() - start


def token_nlls(logits: torch.Tensor, targets: torch.Tensor, rows_per_block: int = 128) -> torch.Tensor:
    """Per-token NLL (nats) of ``targets`` (B, T) under ``logits`` (B, T, V), as float64 (B, T).

    The log-softmax is taken in float64 over the natural (tokens, vocab) layout, a block of tokens at a
    time (bounded memory): in float32, a reduction over 49k classes loses up to 2e-5 nats per token, and
    over a strided (vocab, tokens) view — cross_entropy over logits transposed to (B, V, T), as the engine
    did before — about 1.4e-4 of a sample's NLL."""
    b, t, v = logits.shape
    flat, wanted = logits.reshape(b * t, v), targets.reshape(b * t)
    out = torch.empty(b * t, dtype=torch.float64, device=logits.device)
    for begin in range(0, b * t, rows_per_block):
        block = flat[begin : begin + rows_per_block].double()
        picked = block.gather(1, wanted[begin : begin + rows_per_block, None]).squeeze(1)
        out[begin : begin + rows_per_block] = torch.logsumexp(block, dim=-1) - picked
    return out.view(b, t)


def kv_budget(model, cache, context_tokens: int) -> dict:
    """What the cache holds after compressing a context of ``context_tokens``.

    Physical: tensor sizes. Logical: entries that attention can still see — presses of the AdaKV
    family keep masked entries in the tensors (no memory saved), so the two differ there. For a cache
    of several rows (a batch of samples of equal length), the figures are per row.
    """
    layers = cache.layers
    n_layers = len(layers)
    rows, n_heads = layers[0].keys.shape[:2]
    physical_entries = sum(layer.keys.shape[-2] for layer in layers) * n_heads
    physical_bytes = sum(l.keys.numel() * l.keys.element_size() + l.values.numel() * l.values.element_size() for l in layers) // rows
    masked = 0
    for module in attention_modules(model):
        idx = getattr(module, "masked_key_indices", None)
        if idx is not None:
            masked += int(idx[0].numel()) // rows  # every row masks the same number of entries
    logical_entries = physical_entries - masked
    return {
        "kept_fraction": logical_entries / (n_layers * n_heads * context_tokens),
        "kept_fraction_physical": physical_entries / (n_layers * n_heads * context_tokens),
        "kv_tokens_per_layer": logical_entries / (n_layers * n_heads),
        "kv_bytes": int(round(physical_bytes * logical_entries / physical_entries)) if physical_entries else 0,
        "kv_bytes_physical": int(physical_bytes),
    }


# ---------------------------------------------------------------------------------------------
# Shared prefill: full cache + scores once, a gather per rate


def compute_n_kept(k_len: int, removed_fraction: float) -> int:
    """kvpress's rounding (kvpress.utils.compute_n_kept), repeated so the gather matches it exactly."""
    if removed_fraction >= 1.0:
        return 0
    return max(1, int(k_len * (1 - removed_fraction)))


def score_function(traits, press):
    """The rate-independent score of a press (``traits``: its PressTraits): its own ``score``, or the
    equivalent rate-free score its traits name where its own encodes the rate."""
    if traits.rate_free_score:
        import importlib

        module, name = traits.rate_free_score.split(":")
        return getattr(importlib.import_module(module), name)(press)
    return press.score


@dataclass
class SharedPrefill:
    keys: list
    values: list
    scores: list
    seconds: float
    press: object  # the press, for its per-layer budget (PyramidKV) and its head-wise selection (AdaKV)


def shared_prefill(model, context_ids: torch.Tensor, resolved: ResolvedPress, press) -> SharedPrefill:
    """One plain prefill that records every layer's scores and keeps the full cache."""
    scorer = press.press if resolved.scores_from_inner else press
    score = score_function(resolved.score_traits, scorer)
    press.post_init_from_model(model)
    scores: dict[int, torch.Tensor] = {}

    def record(module, kwargs, output):
        hidden_states = kwargs["hidden_states"]
        if not _is_prefill(kwargs, hidden_states.shape[1]):
            return
        layer = kwargs["past_key_values"].layers[module.layer_idx]
        scores[module.layer_idx] = score(module, hidden_states, layer.keys, layer.values, output[1], kwargs)

    with layer_hooks(model, record):
        cache, seconds = prefill(model, context_ids)
    n = len(cache.layers)
    return SharedPrefill(
        keys=[cache.layers[i].keys for i in range(n)],
        values=[cache.layers[i].values for i in range(n)],
        scores=[scores[i] for i in range(n)],
        seconds=seconds,
        press=press,
    )


def cache_for_rate(model, shared: SharedPrefill, rate: float, resolved: ResolvedPress,
                   room: int = 0) -> tuple[DynamicCache, float]:
    """The cache the press would have left at this rate. Returns (cache, seconds spent selecting).
    ``room``: positions reserved behind the kept entries for the continuation (the selection is gathered straight
    into the front of the reserved buffers, see kv_room)."""
    removed = compression_ratio(rate)
    modules = attention_modules(model)
    layers = []
    start = time.perf_counter()
    with torch.inference_mode():
        for i, (k, v, s) in enumerate(zip(shared.keys, shared.values, shared.scores)):
            indices = None
            if resolved.traits.headwise_mask:
                modules[i].masked_key_indices = _headwise_mask(s, removed, shared.press.alpha_safeguard) if removed > 0 else None
            elif removed > 0:  # ScorerPress.compress leaves the cache untouched at compression_ratio 0
                n_kept = _layer_budget(shared.press, resolved, modules[i], k.shape[2], removed)
                indices = s.topk(n_kept, dim=-1).indices
            layer = kv_room.RoomyLayer.reserved(k, v, k.shape[2] if indices is None else indices.shape[-1], room)
            if indices is None:
                layer.keys.copy_(k)
                layer.values.copy_(v)
            else:
                keep_entries(k, v, indices, out=(layer.keys, layer.values))
            layers.append(layer)
    cache = kv_room.cache_of(layers)
    _sync(model)
    return cache, time.perf_counter() - start


def keep_entries(keys: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                 out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """keys/values (B, H, L, D) restricted to ``indices`` (B, H, n), in that order, as kvpress selects them,
    into ``out`` (two (B, H, n, D) tensors) if given.
    (A gather with the index expanded over D: on an H100 it beat index_select of whole D-vectors, 0.23 vs
    0.34 ms for one layer of 8 × 8k entries, since the expanded index stays in cache.)"""
    idx = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
    if out is not None:
        v_idx = idx if values.shape[-1] == keys.shape[-1] else indices.unsqueeze(-1).expand(-1, -1, -1, values.shape[-1])
        return torch.gather(keys, 2, idx, out=out[0]), torch.gather(values, 2, v_idx, out=out[1])
    return keys.gather(2, idx).contiguous(), values.gather(2, idx).contiguous()


def _layer_budget(press, resolved: ResolvedPress, module, k_len: int, removed: float) -> int:
    """Entries a layer keeps: kvpress's rounding, or the press's own per-layer budget for this rate."""
    if resolved.traits.layer_budget:
        press.compression_ratio = removed  # get_layer_budget reads the ratio from the press
        return press.get_layer_budget(module, k_len)
    return compute_n_kept(k_len, removed)


def _headwise_mask(scores: torch.Tensor, removed: float, alpha_safeguard: float):
    """AdaKVPress.compress's selection (kvpress 0.5.5), applied to stored scores: masked (batch, head, seq) indices."""
    scores = scores.clone()  # AdaKV writes into the scores; the stored ones serve the other rates
    bsz, n_heads, k_len = scores.shape
    n_kept = compute_n_kept(k_len, removed)
    n_safe = int(n_kept * alpha_safeguard)
    if alpha_safeguard > 0:
        n_safe = max(1, n_safe) if n_kept > 0 else 0
    top = torch.topk(scores, n_safe, dim=-1).indices
    scores.scatter_(-1, top, torch.finfo(scores.dtype).max)
    n_pruned = n_heads * (k_len - n_kept)
    indices = torch.topk(-scores.reshape(bsz, -1), n_pruned, dim=1).indices.flatten()
    batch = torch.arange(bsz).repeat_interleave(n_pruned)
    return batch, indices // k_len, indices % k_len


# ---------------------------------------------------------------------------------------------
# Chunked protocol


def chunked_nll(model, ids: torch.Tensor, chunk_size: int, resolved: ResolvedPress | None = None, press=None,
                rate: float | None = None) -> tuple[float, int, DynamicCache, float]:
    """NLL of ids[:, 1:] with the text fed ``chunk_size`` tokens at a time (seed 004's protocol).

    After every chunk the cache is compressed so that it holds ``rate`` of the tokens seen so far
    (score-based presses, through their rate-independent scores), or by the press's own decoding
    hook (threshold presses such as DMS). chunk_size=1 is exact; larger chunks are faster and let
    the tokens inside a chunk see each other uncompressed. Returns (nll_sum, tokens, cache, seconds).
    """
    n_total = ids.shape[1]
    cache = DynamicCache()
    per_chunk_press = None
    hook = nullcontext()
    if press is not None:
        if resolved.traits.decoding:
            per_chunk_press = press  # compresses non-prefill passes itself
        elif resolved.traits.scorer and rate is not None:
            score = score_function(resolved.traits, press)
            press.post_init_from_model(model)
            seen = {"n": 0}

            def compress(module, kwargs, output):
                layer = kwargs["past_key_values"].layers[module.layer_idx]
                target = compute_n_kept(seen["n"], compression_ratio(rate))
                if layer.keys.shape[2] <= target:
                    return
                s = score(module, kwargs["hidden_states"], layer.keys, layer.values, output[1], kwargs)
                layer.keys, layer.values = keep_entries(layer.keys, layer.values, s.topk(target, dim=-1).indices)

            hook = layer_hooks(model, compress)
        else:  # families.kv refuses such cells before they run
            raise ValueError(f"{resolved.name}: the chunked protocol needs a score-based or decoding press")
    nll, scored = 0.0, 0
    _sync(model)
    start = time.perf_counter()
    with torch.inference_mode(), hook:
        for begin in range(0, n_total - 1, chunk_size):
            end = min(begin + chunk_size, n_total - 1)
            if press is not None and per_chunk_press is None:
                seen["n"] = end
            positions = torch.arange(begin, end, device=ids.device).unsqueeze(0)
            with per_chunk_press(model) if per_chunk_press is not None else nullcontext():
                logits = model(input_ids=ids[:, begin:end], past_key_values=cache, position_ids=positions, use_cache=True).logits
            nll += token_nlls(logits, ids[:, begin + 1 : end + 1]).sum().item()
            scored += end - begin
    _sync(model)
    return nll, scored, cache, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Greedy generation after a (compressed) context, for task scores


def generate(model, cache, prompt_ids: torch.Tensor, start_position: int, max_new_tokens: int, eos_ids: set[int],
             press=None, choose=None, on_token=None) -> tuple[list[int], float]:
    """Feed ``prompt_ids`` (1, Q) — the uncompressed question — on top of the cache, then decode greedily.

    Positions continue from ``start_position``. Decoding presses run under ``press`` (they compress while
    decoding). ``choose(logits)`` picks the next token from the last position's logits (V,) instead of the
    argmax (``workbench serve`` samples with it when a temperature is asked for); ``on_token(token)`` sees each
    generated token as it comes and stops decoding when it returns False (a stop string, a client gone).
    Returns (generated token ids without the stop token, seconds).
    """
    positions = torch.arange(start_position, start_position + prompt_ids.shape[1], device=prompt_ids.device).unsqueeze(0)
    out: list[int] = []
    _sync(model)
    start = time.perf_counter()
    stepwise = not _uniform_layers(cache)
    with torch.inference_mode(), (press(model) if press is not None else nullcontext()):
        # The question and the answer are written behind the context in place, not concatenated once per token.
        kv_room.make_room(cache, prompt_ids.shape[1] + max_new_tokens)
        if stepwise:  # layers of different lengths: one token at a time (see continuation_nll)
            for i in range(prompt_ids.shape[1]):
                logits = model(input_ids=prompt_ids[:, i : i + 1], past_key_values=cache, position_ids=positions[:, i : i + 1],
                               use_cache=True, logits_to_keep=1).logits
        else:
            logits = model(input_ids=prompt_ids, past_key_values=cache, position_ids=positions, use_cache=True, logits_to_keep=1).logits
        position = start_position + prompt_ids.shape[1]
        for _ in range(max_new_tokens):
            token = int(logits[0, -1].argmax()) if choose is None else int(choose(logits[0, -1]))
            if token in eos_ids:
                break
            out.append(token)
            if (on_token is not None and on_token(token) is False) or len(out) == max_new_tokens:
                break  # the last token's forward pass would compute logits nobody reads
            step = torch.tensor([[token]], device=prompt_ids.device)
            logits = model(input_ids=step, past_key_values=cache, position_ids=torch.tensor([[position]], device=prompt_ids.device),
                           use_cache=True, logits_to_keep=1).logits
            position += 1
    _sync(model)
    return out, time.perf_counter() - start
