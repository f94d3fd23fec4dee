"""Rate-free scores for presses whose own score encodes the rate (torch; named by a press's traits).

One prefill can serve every rate only if a press's scores do not depend on the rate; where a press's
own ``score`` folds the rate in, its entry names an equivalent score here whose top-k at any rate is
exactly the set the press keeps at that rate.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

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


@contextmanager
def future_from(press, method: str, seen: int):
    """Within the block the press's ``method`` — whose ``q_len`` argument is the position its expected future queries
    start at (ExpectedAttention's ``apply_avg_rope``) — is called with ``seen`` instead. The press reads ``q_len``
    off the hidden states it is given: in a prefill the tokens seen, but between decoding steps only the buffer of
    the last ones, which would put the future queries near the start of the sequence."""
    own = getattr(press, method)
    signature = inspect.signature(own)
    if "q_len" not in signature.parameters:  # a kvpress that renamed it: fail loudly rather than score from 0
        raise TypeError(f"{type(press).__name__}.{method} takes no q_len: its future positions cannot be set")

    def at_seen(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.arguments["q_len"] = seen
        return own(*call.args, **call.kwargs)

    setattr(press, method, at_seen)  # the instance's attribute shadows the class's method
    try:
        yield
    finally:
        delattr(press, method)
