"""Rate-free scores for presses whose own score encodes the rate (torch; named by a press's traits).

One prefill can serve every rate only if a press's scores do not depend on the rate; where a press's
own ``score`` folds the rate in, its entry names an equivalent score here whose top-k at any rate is
exactly the set the press keeps at that rate.
"""

from __future__ import annotations

import torch


def streaming_positions(press):
    """StreamingLLM keeps the ``n_sink`` first entries and the most recent ones: the position itself is a score
    whose top-k is exactly that set, whatever the rate."""
    n_sink = press.n_sink

    def positional(module, hidden_states, keys, values, attentions, kwargs):
        bsz, heads, k_len, _ = keys.shape
        scores = torch.arange(k_len, device=keys.device, dtype=torch.float32).expand(bsz, heads, k_len).clone()
        scores[..., :n_sink] = float("inf")
        return scores

    return positional
