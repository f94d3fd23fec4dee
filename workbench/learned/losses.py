"""The training terms of a soft compressor, in torch, and the index arithmetic they share with evaluation.

One row of the evaluated model's input is ``[s_0 … s_{k-1}, c_0 … c_{T-1}]``: k soft vectors, then the
continuation's first T tokens (a window holds C context tokens and T+1 continuation tokens c_0 … c_T). As in
evaluation (``kv_eval.continuation_nlls``), c_0 is read, not scored, and position k+j predicts c_{j+1}:
the teacher-forcing targets are the tokens right after each input position (seed 002's off-by-one bug took
the targets one position early).

Terms (weights in the training plan, default 0.5 / 0.3 / 0.2 / 0):

* ``teacher_forcing``: mean NLL of c_1 … c_T given the soft vectors — the evaluation's ΔPPL objective.
* ``generation``: seed 002 adds a term "matching the evaluation objective (greedy decoding)". Here: the model
  first decodes g tokens greedily itself from the soft vectors and c_0 (no gradient); the row is then
  ``[s, c_0, ĉ_1 … ĉ_g, c_{g+1} … c_{T-1}]`` and the term is the mean NLL of the reference's later part
  c_{g+1} … c_T. The soft vectors must carry what keeps the reference predictable after the model's own
  greedy tokens, which is what a task's greedy answer needs; its row has the teacher-forcing row's length,
  so both go through the model in one batch.
* ``contrastive``: InfoNCE between the model's mean last hidden state over the soft positions and its mean last
  hidden state over the uncompressed context (no gradient), against the batch's other windows: keeps the soft
  vectors of different contexts apart (seed 002: "prevent representation collapse"). Mean pooling, not the
  first position: a causal model's first position has seen one token only.
* ``distillation`` (default weight 0): KL from the uncompressed model's next-token distribution to the
  compressed one's, at *aligned* positions — the logits predicting c_{j+1} on both sides (``aligned_logits``):
  seed 002 dropped its KL term because its positions were misaligned.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def tf_positions(k: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input positions, index into the continuation of their targets) for a row of k soft vectors and the
    continuation's first t tokens: position k+j predicts continuation token j+1, for j = 0 … t-1."""
    positions = torch.arange(k, k + t)
    return positions, positions - k + 1


def teacher_forcing_nll(logits: torch.Tensor, continuation: torch.Tensor, k: int) -> torch.Tensor:
    """Per-row mean NLL (nats/token) of continuation[:, 1:] given logits of the row ``[soft (k), continuation[:, :-1]]``.

    ``logits`` (B, k+T, V), ``continuation`` (B, T+1). Log-softmax in float32 over the (tokens, vocab) layout."""
    t = continuation.shape[1] - 1
    positions, target_index = tf_positions(k, t)
    picked = logits[:, positions.to(logits.device)].float()
    targets = continuation[:, target_index.to(continuation.device)]
    nll = F.cross_entropy(picked.reshape(-1, picked.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape).mean(dim=1)


def generation_row(continuation: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """The generation term's continuation tokens: c_0, the g greedy tokens ĉ_1 … ĉ_g, then c_{g+1} … c_T (T+1 ids,
    the last one only a target) — the same length as the reference."""
    g = generated.shape[1]
    return torch.cat([continuation[:, :1], generated, continuation[:, 1 + g:]], dim=1)


def generation_nll(logits: torch.Tensor, continuation: torch.Tensor, k: int, g: int) -> torch.Tensor:
    """Per-row mean NLL of the reference's later part c_{g+1} … c_T, from logits of the row
    ``[soft (k), generation_row(...)[:, :-1]]``: positions k+g … k+T-1."""
    t = continuation.shape[1] - 1
    positions, target_index = tf_positions(k, t)
    positions, target_index = positions[g:], target_index[g:]
    picked = logits[:, positions.to(logits.device)].float()
    targets = continuation[:, target_index.to(continuation.device)]
    nll = F.cross_entropy(picked.reshape(-1, picked.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape).mean(dim=1)


@torch.no_grad()
def greedy_tokens(model, soft: torch.Tensor, first: torch.Tensor, g: int) -> torch.Tensor:
    """(B, g) tokens the model decodes greedily after the soft vectors (B, k, d) and the first token (B, 1)."""
    from transformers import DynamicCache

    if g == 0:
        return first[:, :0]
    embed = model.get_input_embeddings()
    cache = DynamicCache()
    inputs = torch.cat([soft, embed(first)], dim=1)
    out = []
    for _ in range(g):
        logits = model(inputs_embeds=inputs, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
        out.append(nxt)
        inputs = embed(nxt)
    return torch.cat(out, dim=1)


def aligned_logits(teacher_logits: torch.Tensor, teacher_context: int, student_logits: torch.Tensor, k: int,
                   t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's and the student's logits that predict the same tokens c_1 … c_t.

    Teacher row: ``[x_0 … x_{C-1}, c_0 … c_{t-1}]`` (C = ``teacher_context``), student row: ``[s_0 … s_{k-1}, c_0 …]``.
    Continuation token j sits at C+j in one and k+j in the other, so the logits predicting c_{j+1} are at C+j and
    k+j: (B, t, V) each."""
    return teacher_logits[:, teacher_context:teacher_context + t], student_logits[:, k:k + t]


def distillation_kl(teacher_logits, teacher_context: int, student_logits, k: int, t: int) -> torch.Tensor:
    """Per-row mean KL(teacher ‖ student) over the t aligned positions (nats/token)."""
    tl, sl = aligned_logits(teacher_logits, teacher_context, student_logits, k, t)
    tlog, slog = F.log_softmax(tl.float(), dim=-1), F.log_softmax(sl.float(), dim=-1)
    return (tlog.exp() * (tlog - slog)).sum(dim=-1).mean(dim=1)


def contrastive_infonce(summary: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over a batch: row i's ``summary`` (B, d) should be nearest (cosine) to ``target`` i among the batch's."""
    s, t = F.normalize(summary.float(), dim=-1), F.normalize(target.float(), dim=-1)
    logits = s @ t.t() / temperature
    return F.cross_entropy(logits, torch.arange(len(s), device=s.device))
