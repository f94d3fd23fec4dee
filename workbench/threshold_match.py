"""Rate-matched thresholds: the per-sample threshold at which a threshold press (DMS over KVzap, …) keeps a rate.

A threshold press evicts every entry whose score falls below its threshold, outside a sliding window of recent
tokens, so what it keeps depends on the text. To put it in the same rate sweep as the score-based presses, a
rate-matched cell first scores the sample's entries with the press's own scorer in one plain prefill, then
sets the threshold so that exactly ``(1 − rate)`` of all entries (layers × KV heads × tokens) fall below it
among those the window does not protect — one threshold for every layer and head, as the press uses it. The
press then runs unchanged with that threshold. Under ``context-continuation`` the prefill it compresses is the
one scored, so the kept fraction meets the rate (ties aside); under ``chunked``, later chunks are scored
through an already compressed cache, so it lands near the rate. Either way the measured kept fraction is recorded.
(torch; imported by the evaluation code.)
"""

from __future__ import annotations

import math

import torch

from workbench import kv_eval


def match_threshold(model, press, ids: torch.Tensor, rate: float, threshold_param: str) -> float | None:
    """Set ``press.<threshold_param>`` so the press keeps ``rate`` of the entries of ``ids`` (1, N). Returns the
    threshold (None where no finite one exists: nothing or everything outside the window must go)."""
    press.post_init_from_model(model)
    scorer = press.press
    scores: dict[int, torch.Tensor] = {}

    def record(module, kwargs, output):
        layer = kwargs["past_key_values"].layers[module.layer_idx]
        scores[module.layer_idx] = scorer.score(module, kwargs["hidden_states"], layer.keys, layer.values, None, kwargs)

    with kv_eval.layer_hooks(model, record):
        kv_eval.prefill(model, ids)
    n = ids.shape[1]
    protected = min(int(press.sliding_window_size), n)
    every = sum(s.numel() for s in scores.values())
    to_drop = int(round((1.0 - rate) * every))
    eligible = torch.cat([s[..., : n - protected].reshape(-1).float() for s in scores.values()])
    if to_drop <= 0:
        threshold = -math.inf
    elif to_drop >= eligible.numel():
        threshold = math.inf  # the window alone holds more than the rate: evict all it can, report what it kept
    else:
        # Entries strictly below the (to_drop+1)-th smallest score: exactly to_drop of them without ties.
        threshold = float(eligible.kthvalue(to_drop + 1).values)
    setattr(press, threshold_param, threshold)
    return threshold if math.isfinite(threshold) else None


def scorer_used(press) -> str | None:
    """Which scorer a press (or the press it wraps) says it used, if it says (the KVzap press does)."""
    while press is not None:
        if getattr(press, "scorer_used", None):
            return press.scorer_used
        press = getattr(press, "press", None)
    return None
