"""Prefill contexts of different lengths together: length-sorted batches, right padding, explicit positions.

Prompt compressors leave every sample with a context of its own length, so their prefills cannot share a
forward pass the way the baseline's equal-length windows do. Here contexts are sorted by length (little
padding per batch) and right-padded; the attention mask hides the padding and each row's continuation gets
the positions that follow *its own* context (``len(context) + i``), so a row sees exactly what it would see
alone: its NLL equals the single-sample NLL up to float rounding (tested to 1e-5 in float32).

Right padding rather than left: no real token's query row is ever fully masked (a fully masked softmax row
gives NaN, which ``0 × NaN`` would carry into the real rows), and every context starts at position 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class RowResult:
    """One context's outcome: NLL of its continuation (nats, summed over ``n_tokens``), and its share of the
    batch's prefill and scoring seconds (split by rows)."""

    nll_sum: float
    n_tokens: int
    prefill_seconds: float
    scoring_seconds: float
    context_tokens: int   # real (unpadded) entries per layer and head this row's cache holds
    batch: int            # rows in its forward pass
    budget: dict | None = None  # kv_eval.kv_budget's figures for this row alone (when context_tokens was given)


def padded_nlls(model, contexts: list[list[int]], continuations: list[list[int]], batch_size: int = 8,
                pad_id: int = 0, context_tokens: int | None = None) -> list[RowResult]:
    """What ``kv_eval.prefill`` + ``kv_eval.continuation_nll`` give for each (context, continuation) pair, in
    batches: ``continuations[i]`` (T+1 token ids, the same T for every pair) is fed from position
    ``len(contexts[i])`` and its last T tokens are scored. ``batch_size`` contexts per forward pass, longest
    first. Results in the order of ``contexts``. With ``context_tokens`` (the uncompressed context's length),
    each row also gets its KV budget: the padded cache's figures scaled to the row's own entries (every figure
    is proportional to the entries a row holds; no press runs here)."""
    import torch
    from transformers import DynamicCache

    from workbench.kv_eval import _sync, kv_budget, token_nlls

    device = model.device
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    out: list[RowResult | None] = [None] * len(contexts)
    for at in range(0, len(order), batch_size):
        rows = order[at:at + batch_size]
        lengths = [len(contexts[i]) for i in rows]
        width = max(lengths)
        ctx = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ctx[r, :lengths[r]] = torch.tensor(contexts[i], dtype=torch.long)
            mask[r, :lengths[r]] = 1
        cont = torch.tensor([continuations[i] for i in rows], dtype=torch.long)
        ctx, mask, cont = ctx.to(device), mask.to(device), cont.to(device)
        inputs, targets = cont[:, :-1], cont[:, 1:]
        n = inputs.shape[1]
        positions = torch.tensor(lengths, device=device).unsqueeze(1) + torch.arange(n, device=device).unsqueeze(0)
        cache = DynamicCache()
        _sync(model)
        start = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=ctx, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1,
                  position_ids=torch.arange(width, device=device).unsqueeze(0).expand(len(rows), -1))
            _sync(model)
            prefill_s = time.perf_counter() - start
            start = time.perf_counter()
            padded_budget = kv_budget(model, cache, context_tokens) if context_tokens else None
            full_mask = torch.cat([mask, torch.ones_like(inputs)], dim=1)
            logits = model(input_ids=inputs, attention_mask=full_mask, past_key_values=cache, position_ids=positions,
                           use_cache=True).logits
            nll = token_nlls(logits, targets).sum(dim=1).tolist()
        _sync(model)
        scoring_s = time.perf_counter() - start
        for r, i in enumerate(rows):
            budget = None
            if padded_budget is not None:
                scale = lengths[r] / width
                budget = {k: (round(v * scale) if isinstance(v, int) else v * scale) for k, v in padded_budget.items()}
            out[i] = RowResult(nll[r], n, prefill_s / len(rows), scoring_s / len(rows), lengths[r], len(rows), budget)
    return out
