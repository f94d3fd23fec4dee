"""The question-answering objective of learned soft compressors (workbench.learned.qa): rows, targets, padding,
held-out questions, training, resume, and plan errors. Tiny random Llama; a small SQuAD-shaped .jsonl written here."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading

import pytest

torch = pytest.importorskip("torch")

_LORA = {"r": 2, "alpha": 4, "dropout": 0.1}
_PLACES = ["mat", "house", "tree", "water", "moon", "sun"]
_ANIMALS = ["cat", "dog"]


def _qa_file(path, n: int = 30):
    """n records: a context of 14–40 words saying where an animal sat, the question, the place as the answer."""
    rng = random.Random(0)
    filler = ["the", "big", "red", "day", "was", "slow", "and", "the", "people", "said", "it", "was", "a", "fast", "year"]
    rows = []
    for i in range(n):
        animal, place = rng.choice(_ANIMALS), rng.choice(_PLACES)
        pad = " ".join(rng.choice(filler) for _ in range(rng.randint(8, 34)))
        rows.append({"id": i, "context": f"{pad} the {animal} sat on the {place} .",
                     "question": f"where was the {animal}", "answers": {"text": [place], "answer_start": [0]}})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory):
    return _qa_file(tmp_path_factory.mktemp("qa") / "where.jsonl")


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench import models

    return models.load_model(str(tiny_llama_dir), "cpu", "float32")


def _plan(model_dir, data, name="qa-run", **over):
    from workbench.learned.config import parse_train_config

    doc = {"name": name, "model": str(model_dir), "architecture": "cross-attention", "rate": 0.25, "context_tokens": 48,
           "dataset": str(data), "held_out": 6, "eval_windows": 6, "steps": 6, "batch_size": 3, "warmup_steps": 1,
           "eval_every": 3, "checkpoint_every": 3, "generation_prefix_tokens": 2, "lr_compressor": 0.01,
           "device": "cpu", "dtype": "float32", "seed": 1}
    doc.update(over)
    return parse_train_config(doc, "test plan")


def test_the_objective_follows_the_dataset_and_a_text_set_refuses_qa(tiny_llama_dir, qa_jsonl):
    from workbench.learned.config import PlanError

    assert _plan(tiny_llama_dir, qa_jsonl).objective == "qa"
    assert _plan(tiny_llama_dir, "wikitext2", continuation_tokens=12).objective == "lm"
    assert _plan(tiny_llama_dir, qa_jsonl, objective="lm").objective == "lm"  # the contexts read as text
    with pytest.raises(PlanError, match=r"test plan: field 'objective': the qa objective needs question-answering records"):
        _plan(tiny_llama_dir, "wikitext2", objective="qa")
    with pytest.raises(PlanError, match=r"'objective': expected one of lm, qa"):
        _plan(tiny_llama_dir, qa_jsonl, objective="squad")
    with pytest.raises(PlanError, match=r"loss_weights.distillation"):
        _plan(tiny_llama_dir, qa_jsonl, loss_weights={"distillation": 0.1})


def test_cli_names_the_file_and_field_of_a_qa_objective_on_text(tiny_llama_dir, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "x", "model": str(tiny_llama_dir), "dataset": "wikitext2", "objective": "qa"}))
    proc = subprocess.run([sys.executable, "-m", "workbench", "train", str(plan)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert str(plan) in proc.stderr and "objective" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_answer_targets_are_the_tokens_right_after_each_input_position():
    """Hand-computed: 2 soft vectors, question (10, 11, 12), answer (20, 21) + EOS 2. The model reads
    [s0, s1, 10, 11, 12, 20, 21]; position 4 (token 12) predicts 20, position 5 predicts 21, position 6 predicts EOS."""
    from workbench.learned import qa

    positions, index = qa.answer_positions(k=2, q=3, a=3)
    assert positions.tolist() == [4, 5, 6] and index.tolist() == [0, 1, 2]
    sequence = ["s0", "s1", 10, 11, 12, 20, 21, 2]  # the full answer appended: each target is the next input
    answer = [20, 21, 2]
    assert [sequence[p + 1] for p in positions.tolist()] == [answer[j] for j in index.tolist()]


def test_a_batch_is_right_padded_masked_and_scores_each_answer_token_where_it_is_predicted(tiny_lm):
    """Hand-built: row A = 2 soft vectors, question (10, 11, 12), answer (20, 21, EOS 2); row B = 3 soft vectors,
    question (30,), answer (40, 2). A is 2 + 3 + 2 = 7 inputs long, B 3 + 1 + 1 = 5 (+ 2 padding). A's answer is
    predicted at positions 4, 5, 6, B's at 3, 4: the NLLs equal log-softmax read off each row's own unpadded
    forward at those hand-written positions."""
    from workbench.learned import qa

    model = tiny_lm.model
    embed = model.get_input_embeddings()
    torch.manual_seed(0)
    soft_a, soft_b = torch.randn(1, 2, 64) * 0.02, torch.randn(1, 3, 64) * 0.02
    q_a, a_a = torch.tensor([10, 11, 12]), torch.tensor([20, 21, 2])
    q_b, a_b = torch.tensor([30]), torch.tensor([40, 2])
    batch = qa._assemble(model, [soft_a, soft_b], [torch.cat([q_a, a_a[:-1]]), torch.cat([q_b, a_b[:-1]])],
                         [(3, a_a), (1, a_b)])
    assert batch.mask.tolist() == [[1] * 7, [1] * 5 + [0] * 2]
    assert batch.embeds.shape == (2, 7, 64) and not batch.embeds[1, 5:].any()
    assert torch.equal(batch.embeds[0, 2:], embed(torch.tensor([10, 11, 12, 20, 21])))
    assert torch.equal(batch.embeds[1, :3], soft_b[0]) and torch.equal(batch.embeds[1, 3:5], embed(torch.tensor([30, 40])))
    assert [p.tolist() for p, _ in batch.picks] == [[4, 5, 6], [3, 4]]

    with torch.no_grad():
        nlls = qa._row_nlls(model(inputs_embeds=batch.embeds, attention_mask=batch.mask).logits, batch.picks)
        for i, (row, positions, answer) in enumerate([(batch.embeds[0, :7], [4, 5, 6], [20, 21, 2]),
                                                      (batch.embeds[1, :5], [3, 4], [40, 2])]):
            logp = torch.log_softmax(model(inputs_embeds=row[None]).logits[0].double(), dim=-1)
            by_hand = -sum(float(logp[p, t]) for p, t in zip(positions, answer)) / len(answer)
            assert float(nlls[i]) == pytest.approx(by_hand, rel=1e-5)
            # One place later (seed 002's off-by-one) reads another number.
            shifted = -sum(float(logp[p + 1, t]) for p, t in zip(positions[:-1], answer[:-1])) / (len(answer) - 1)
            assert abs(shifted - by_hand) > 1e-3


def test_a_rows_loss_is_the_same_alone_and_right_padded_in_a_batch(tiny_lm, qa_jsonl):
    from workbench.learned import architectures, qa

    cfg = _plan(tiny_lm.spec, qa_jsonl)
    train, _, _ = qa.qa_rows(cfg, tiny_lm.tokenizer)
    rows = sorted(train[:3], key=lambda r: len(r.context))
    assert len({len(r.context) for r in rows}) > 1  # rows of different lengths: padding is exercised
    torch.manual_seed(0)
    compressor = architectures.build("cross-attention", 64, cfg.rate, cfg.context_tokens)
    together = qa.validation_loss(tiny_lm.model, compressor, rows, cfg, "cpu")
    tokens = [len(r.answer) for r in rows]
    alone = [qa.validation_loss(tiny_lm.model, compressor, [r], cfg, "cpu") for r in rows]
    assert together == pytest.approx(sum(a * t for a, t in zip(alone, tokens)) / sum(tokens), rel=1e-5)


def test_held_out_questions_are_what_a_task_plan_reads_and_training_never_sees_them(tiny_lm, qa_jsonl):
    from workbench import tasks
    from workbench.learned import qa

    cfg = _plan(tiny_lm.spec, qa_jsonl, held_out=8)
    train, held, skipped = qa.qa_rows(cfg, tiny_lm.tokenizer)
    assert skipped == 0 and len(train) + len(held) == 30
    for n in (1, 5, 8):
        plan_ids = {s.sample_id for s in tasks.task_samples(str(qa_jsonl), n, 0)}
        assert plan_ids <= {r.sample_id for r in held} and not plan_ids & {r.sample_id for r in train}
    row = held[0]
    sample = tasks.task_samples(str(qa_jsonl), 1, 0)[0]
    tok = tiny_lm.tokenizer
    assert list(row.question) == tok(sample.prompt_suffix, add_special_tokens=False)["input_ids"]
    assert list(row.answer) == tok(" " + sample.answers[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    # Contexts longer than context_tokens are skipped, and counted.
    short = _plan(tiny_lm.spec, qa_jsonl, context_tokens=30, held_out=2, eval_windows=2)
    a, b, skipped = qa.qa_rows(short, tiny_lm.tokenizer)
    assert skipped > 0 and len(a) + len(b) + skipped == 30
    assert all(len(r.context) <= 30 for r in a + b)


def test_qa_training_lowers_the_held_out_answer_loss_resumes_exactly_and_is_measured_by_the_task_protocol(
        tiny_llama_dir, qa_jsonl):
    from workbench import models, runner
    from workbench.learned import qa
    from workbench.learned.measure import SoftPrefixer
    from workbench.learned.train import Cancelled, train
    from workbench.plan import parse_plan

    events: list = []
    # With LoRA adapters (and their dropout): trained beside the compressor, resumed, and put on for measuring.
    whole = train(_plan(tiny_llama_dir, qa_jsonl, "qa-whole", lora=_LORA), events.append, restart=True)
    val = [e["val_loss"] for e in whole["curves"]["val"]]
    assert [e["step"] for e in whole["curves"]["val"]] == [0, 3, 6]
    assert val[-1] < val[0]
    terms = whole["curves"]["train"][0]["terms"]
    assert terms["teacher_forcing"] > 0 and terms["generation"] > 0 and terms["contrastive"] > 0
    assert whole["config"]["objective"] == "qa" and whole["windows"]["skipped_longer_than_context"] == 0
    assert all(0.0 <= e["val_f1"] <= 1.0 and 0.0 <= e["val_em"] <= e["val_f1"] for e in whole["curves"]["val"])
    # Both faces show it: the Train view's log and the summary `workbench train` prints.
    from screens.learned_flows import LearnedState
    from workbench.learned.cli import summary

    state = LearnedState()
    for e in events:
        state.apply(e)
    assert f"answer F1 {whole['curves']['val'][-1]['val_f1']:.3f}" in [t for _, t in state.log if "step 6:" in t][0]
    assert " step  val NLL  val PPL  ans F1  ans EM" in summary(whole).splitlines()

    cancel = threading.Event()
    with pytest.raises(Cancelled):
        train(_plan(tiny_llama_dir, qa_jsonl, "qa-split", lora=_LORA),
              lambda e: cancel.set() if e["kind"] == "checkpoint" and e["step"] == 3 else None, cancel, restart=True)
    resumed = train(_plan(tiny_llama_dir, qa_jsonl, "qa-split", lora=_LORA))
    a, b = whole["curves"], resumed["curves"]
    for x, y in zip(a["train"] + a["val"], b["train"] + b["val"]):
        v, w = x.get("loss", x.get("val_loss")), y.get("loss", y.get("val_loss"))
        assert abs(v - w) <= 1e-6 * abs(v)

    # The task protocol measures the trained run on the held-out questions it answered during training: the same
    # prompt, budget and scorer, so the same F1 as the run's last validation (one number, one computation).
    plan = parse_plan({"name": "qa-learned", "model": str(tiny_llama_dir),
                       "datasets": [{"name": str(qa_jsonl), "samples": qa.ANSWERED}], "protocol": {"name": "task"},
                       "methods": [{"name": "learned", "params": {"checkpoint": "qa-whole"}}]})
    cell = {c["method"]: c for c in runner.run(plan).cells.values()}["learned"]
    assert cell["status"] == "done", cell.get("error")
    assert cell["metric"] == "f1"
    assert cell["score"] == pytest.approx(whole["curves"]["val"][-1]["val_f1"], abs=1e-9)
    # Random weights answer with F1 0 on both sides: the answers themselves (token for token) are the check.
    lm = models.load_model(str(tiny_llama_dir), "cpu", "float32")
    prefixer = SoftPrefixer(lm, "qa-whole")
    _, held, _ = qa.qa_rows(_plan(tiny_llama_dir, qa_jsonl), lm.tokenizer)
    with prefixer.model() as model:  # the run's adapters on
        ours = qa.answer_scores(lm, model, prefixer.compressor, held)
    assert ours["f1"] == whole["curves"]["val"][-1]["val_f1"]
    by_id = {s["sample_id"]: s["generated"] for s in cell["samples"]}
    assert ours["answers"] == [by_id[r.sample_id] for r in held[:qa.ANSWERED]] and any(ours["answers"])
    # A run with adapters is measured under the context-continuation protocol too (peft's wrapper on the model).
    plan = parse_plan({"name": "qa-learned-ppl", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 2}],
                       "protocol": {"name": "context-continuation", "context_tokens": 32, "continuation_tokens": 8},
                       "methods": [{"name": "learned", "params": {"checkpoint": "qa-whole"}}]})
    cell = {c["method"]: c for c in runner.run(plan).cells.values()}["learned"]
    assert cell["status"] == "done", cell.get("error")


def test_a_checkpoint_of_the_lm_objective_does_not_resume_as_qa(tiny_llama_dir, qa_jsonl):
    from workbench.learned.train import RunMismatch, train

    train(_plan(tiny_llama_dir, qa_jsonl, "switch", objective="lm", continuation_tokens=8, steps=1, checkpoint_every=1,
                eval_every=1), restart=True)
    with pytest.raises(RunMismatch, match=r"started with another plan; it differs in objective \('lm' then, 'qa' now\);"):
        train(_plan(tiny_llama_dir, qa_jsonl, "switch", continuation_tokens=8, steps=1, checkpoint_every=1, eval_every=1))
