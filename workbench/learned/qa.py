"""The question-answering objective (seed 002's SQuAD setting), in torch: the context is compressed into soft
vectors, the question follows as ordinary tokens, and the loss is on the answer.

A row is ``[s_0 … s_{k-1}, q_0 … q_{Q-1}, a_0 … a_{A-1}]``: k = round(rate × context tokens) soft vectors, the
question as the task protocol prompts it (``tasks`` "\\n\\nQuestion: …\\nAnswer:", tokenized alone, as the
evaluation feeds it), then the first reference answer (" " + text, tokenized alone) and the end-of-sequence token.
Input position k+Q-1+j predicts a_j (the teacher-forcing targets are the tokens right after each input position:
``answer_positions``). Contexts have different lengths, so the compressor runs per row and the rows are
right-padded into one batch, the padding masked out of the attention and of every loss.

Terms (the plan's weights, as for language-modelling windows):

* ``teacher_forcing``: mean NLL of a_0 … a_{A-1} per row.
* ``generation``: the model first answers greedily itself (no gradient) for g = min(generation_prefix_tokens,
  A - 1) tokens; the row is then ``[s, q, â_0 … â_{g-1}, a_g … a_{A-2}]`` and the term is the NLL of the reference's
  later part a_g … a_{A-1} (with A - 1 = 0, the row's teacher-forcing NLL): what evaluation's greedy answer needs.
* ``contrastive``: InfoNCE between the mean last hidden state over a row's soft positions and over its uncompressed
  context (no gradient), against the batch's other rows.

Validation: the held-out questions' mean answer NLL, and the SQuAD token F1 / exact match of the greedy answers to
the first ``ANSWERED`` of them, measured as the task protocol measures a learned method (``answer_scores``): the
number a comparison plan reports, on a few questions.

Samples come from ``tasks.qa_samples``: the first ``held_out`` of the order the task protocol draws with
``held_out_seed`` are held out (an evaluation plan on this set with that seed and at most that many samples reads
only held-out questions); contexts longer than ``context_tokens`` are skipped (counted in the run record).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from workbench.learned import losses, soft


@dataclass(frozen=True)
class QARow:
    sample_id: str
    context: tuple[int, ...]
    question: tuple[int, ...]
    answer: tuple[int, ...]  # the first reference answer's tokens, then end-of-sequence
    sample: object = field(default=None, compare=False, repr=False)  # the task protocol's TaskSample (F1 of answers)


def qa_rows(cfg, tokenizer) -> tuple[list[QARow], list[QARow], int]:
    """(training rows, held-out rows, contexts skipped as longer than context_tokens)."""
    from workbench import datasets, tasks

    eos = tokenizer.eos_token_id
    if eos is None:
        raise datasets.DatasetError(f"{cfg.model}: its tokenizer has no end-of-sequence token to end answers with")

    def ids(texts: list[str]) -> list[tuple[int, ...]]:
        # One batched call per field: a SQuAD-sized set is ~90k records, tokenized once per run.
        return [tuple(row) for row in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []

    try:
        samples = tasks.qa_samples(cfg.dataset, cfg.held_out_seed)
    except tasks.TaskError as err:
        raise datasets.DatasetError(str(err)) from None
    contexts = ids([s.context for s in samples])
    questions = ids([s.prompt_suffix for s in samples])
    answers = ids([" " + s.answers[0].strip() for s in samples])
    rows: list[QARow | None] = []
    for s, context, question, answer in zip(samples, contexts, questions, answers):
        if len(context) > cfg.context_tokens or not context:
            rows.append(None)
            continue
        rows.append(QARow(s.sample_id, context, question, answer + (eos,), s))
    held = [r for r in rows[:cfg.held_out] if r is not None]
    train = [r for r in rows[cfg.held_out:] if r is not None]
    skipped = sum(r is None for r in rows)
    if not held:
        raise datasets.DatasetError(f"{cfg.dataset}: none of the first {cfg.held_out} questions has a context of at most "
                                    f"{cfg.context_tokens} tokens to hold out; raise context_tokens")
    if len(train) < cfg.batch_size:
        raise datasets.DatasetError(f"{cfg.dataset}: {len(train)} training questions with contexts of at most "
                                    f"{cfg.context_tokens} tokens after {cfg.held_out} held out; fewer than a batch")
    return train, held, skipped


def answer_positions(k: int, q: int, a: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input positions, index into the answer of their targets) for a row of k soft vectors, q question tokens and
    an answer of a tokens: position k+q-1+j predicts answer token j, for j = 0 … a-1."""
    positions = torch.arange(k + q - 1, k + q - 1 + a)
    return positions, torch.arange(a)


@dataclass
class _Batch:
    embeds: torch.Tensor   # (R, L, d): rows right-padded with zeros
    mask: torch.Tensor     # (R, L) 1 where a row has an input
    picks: list            # per row: (input positions, targets)
    soft_lengths: list     # per row: k


def _assemble(model, softs: list, token_rows: list, targets: list) -> _Batch:
    """Right-padded rows ``[soft, tokens]``; ``targets`` per row: (tokens read before the scored answer part, its
    ids) — the answer part's first token is predicted at the last of those, see ``answer_positions``."""
    embed = model.get_input_embeddings()
    parts = [torch.cat([s, embed(t.unsqueeze(0)).to(s.dtype)], dim=1)[0] for s, t in zip(softs, token_rows)]
    length = max(p.shape[0] for p in parts)
    d = parts[0].shape[-1]
    embeds = parts[0].new_zeros((len(parts), length, d))
    mask = torch.zeros((len(parts), length), dtype=torch.long, device=embeds.device)
    for i, p in enumerate(parts):
        embeds[i, :p.shape[0]] = p
        mask[i, :p.shape[0]] = 1
    picks = [(answer_positions(s.shape[1], before, len(tg))[0].to(embeds.device), tg)
             for s, (before, tg) in zip(softs, targets)]
    return _Batch(embeds, mask, picks, [s.shape[1] for s in softs])


def _row_nlls(logits: torch.Tensor, picks: list) -> torch.Tensor:
    """Per-row mean NLL (nats/token) of each row's targets at its positions (log-softmax in float32)."""
    out = []
    for i, (positions, targets) in enumerate(picks):
        out.append(F.cross_entropy(logits[i, positions].float(), targets, reduction="mean"))
    return torch.stack(out)


def _greedy_answer(model, soft_row: torch.Tensor, question: torch.Tensor, g: int) -> torch.Tensor:
    """g tokens the model answers greedily after ``[soft, question]`` (no gradient): (g,) ids."""
    if g <= 0:
        return question.new_zeros((0,))
    with torch.no_grad():
        out = losses.greedy_tokens(model, torch.cat([soft_row, model.get_input_embeddings()(question[:-1].unsqueeze(0))
                                                     .to(soft_row.dtype)], dim=1), question[-1:].unsqueeze(0), g)
    return out[0]


def compute_loss(model, compressor, rows: list[QARow], cfg, device) -> tuple[torch.Tensor, dict]:
    """The weighted loss of one micro-batch of QA rows and its terms (floats, nats)."""
    w = cfg.loss_weights
    t = {name: [torch.tensor(getattr(r, name), dtype=torch.long, device=device) for r in rows]
         for name in ("context", "question", "answer")}
    softs = [soft.soft_vectors(model, compressor, c.unsqueeze(0)) for c in t["context"]]
    token_rows, targets = [], []
    for s, q, a in zip(softs, t["question"], t["answer"]):
        token_rows.append(torch.cat([q, a[:-1]]))
        targets.append((len(q), a))
    n = len(rows)
    if w["generation"] > 0:
        for s, q, a in zip(softs, t["question"], t["answer"]):
            g = min(cfg.generation_prefix_tokens, len(a) - 1)
            own = _greedy_answer(model, s.detach(), q, g)
            token_rows.append(torch.cat([q, own, a[g:-1]]))
            targets.append((len(q) + g, a[g:]))
        softs = softs + softs
    batch = _assemble(model, softs, token_rows, targets)
    out = model(inputs_embeds=batch.embeds, attention_mask=batch.mask, output_hidden_states=w["contrastive"] > 0,
                use_cache=False)
    nlls = _row_nlls(out.logits, batch.picks)
    terms: dict[str, torch.Tensor] = {"teacher_forcing": nlls[:n].mean()}
    if w["generation"] > 0:
        terms["generation"] = nlls[n:].mean()
    if w["contrastive"] > 0:
        hidden = out.hidden_states[-1]
        summary = torch.stack([hidden[i, :batch.soft_lengths[i]].float().mean(dim=0) for i in range(n)])
        with torch.no_grad():
            target = torch.stack([model(input_ids=c.unsqueeze(0), output_hidden_states=True, use_cache=False)
                                  .hidden_states[-1][0].float().mean(dim=0) for c in t["context"]])
        terms["contrastive"] = losses.contrastive_infonce(summary, target, cfg.contrastive_temperature)
    total = sum(w[name] * value for name, value in terms.items())
    report = {name: float(terms[name].detach()) if name in terms else 0.0 for name in ("teacher_forcing", "generation", "contrastive")}
    return total, report


@torch.no_grad()
def validation_loss(model, compressor, rows: list[QARow], cfg, device) -> float:
    """Mean answer NLL (nats/token) of held-out questions given the soft vectors and the question."""
    total, n = 0.0, 0
    for i in range(0, len(rows), cfg.batch_size):
        chunk = rows[i:i + cfg.batch_size]
        softs, token_rows, targets = [], [], []
        for r in chunk:
            s = soft.soft_vectors(model, compressor, torch.tensor([r.context], device=device))
            a = torch.tensor(r.answer, device=device)
            softs.append(s)
            token_rows.append(torch.cat([torch.tensor(r.question, device=device), a[:-1]]))
            targets.append((len(r.question), a))
        batch = _assemble(model, softs, token_rows, targets)
        logits = model(inputs_embeds=batch.embeds, attention_mask=batch.mask, use_cache=False).logits
        for j, (positions, tg) in enumerate(batch.picks):
            total += float(F.cross_entropy(logits[j, positions].float(), tg, reduction="sum"))
            n += len(tg)
    return total / n


ANSWERED = 4  # held-out questions answered greedily at each evaluation (a few: generation costs a forward per token)


def answer_scores(lm, model, compressor, rows: list[QARow]) -> dict:
    """{"f1", "em", "answers"}: mean SQuAD token F1 and exact match (in [0, 1]) of the greedy answers (texts) to the
    first ``ANSWERED`` rows, measured as the task protocol measures a learned method (``task_eval.evaluate_soft``): the soft vectors
    prefilled, the question's tokens behind them, greedy decoding up to the task's budget or end-of-sequence,
    ``tasks.score``. Its own short loop rather than ``kv_eval.generate``, which would close an import circle
    (learned → kv_eval → methods → learned); a test holds the two to the same number."""
    from workbench import tasks
    from workbench.learned import measure

    eos = {lm.tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)}
    eos = {i for e in eos for i in (e if isinstance(e, (list, tuple)) else [e]) if i is not None}
    device = model.get_input_embeddings().weight.device
    f1 = em = 0.0
    answers = []
    for r in rows[:ANSWERED]:
        cache, _, _, _ = measure.prefill(model, compressor, torch.tensor([r.context], device=device))
        tokens: list[int] = []
        with torch.inference_mode():  # positions follow the cache: k soft vectors, then the question
            logits = model(input_ids=torch.tensor([r.question], device=device), past_key_values=cache, use_cache=True,
                           logits_to_keep=1).logits
            for _ in range(tasks.generation_budget("qa")):
                token = int(logits[0, -1].argmax())
                if token in eos:
                    break
                tokens.append(token)
                logits = model(input_ids=torch.tensor([[token]], device=device), past_key_values=cache, use_cache=True,
                               logits_to_keep=1).logits
        answers.append(lm.tokenizer.decode(tokens, skip_special_tokens=True))
        scores = tasks.score("qa", answers[-1], r.sample.answers)
        f1, em = f1 + scores["f1"], em + scores["em"]
    return {"f1": f1 / len(answers), "em": em / len(answers), "answers": answers}
