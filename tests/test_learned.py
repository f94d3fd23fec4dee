"""Learned soft compressors on a tiny random-weight Llama: the four architectures' shapes and sizes, the index
arithmetic seed 002 got wrong (teacher-forcing targets, aligned distillation), resume to the same curve,
checkpoints refused when corrupted or made for something else, a plan measuring a trained run through the runner,
and the CLI's bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import torch

from workbench.learned import architectures, losses

D = 64


def _plan(model_dir, name="tiny-run", **over):
    from workbench.learned.config import parse_train_config

    doc = {"name": name, "model": str(model_dir), "architecture": "cross-attention", "rate": 0.125, "context_tokens": 32,
           "continuation_tokens": 12, "dataset": "wikitext2", "held_out": 4, "eval_windows": 2, "steps": 6,
           "batch_size": 2, "warmup_steps": 1, "eval_every": 2, "checkpoint_every": 3, "generation_prefix_tokens": 3,
           "lr_compressor": 0.003, "device": "cpu", "dtype": "float32", "seed": 1}
    doc.update(over)
    return parse_train_config(doc, "test plan")


# --- architectures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_each_architecture_maps_c_embeddings_to_round_rate_c_soft_vectors(name):
    torch.manual_seed(0)
    m = architectures.build(name, D, 0.125, 64)
    assert m(torch.randn(3, 64, D)).shape == (3, 8, D)
    assert m(torch.randn(2, 100, D)).shape == (2, 12, D)  # another length: k = round(12.5) = 12 (banker's rounding)
    assert m.spec() == {"architecture": name, "d": D, "rate": 0.125, "context_tokens": 64}


@pytest.mark.parametrize("name", list(architectures.ARCHITECTURES))
def test_an_untrained_compressor_selects_every_stride_th_token_embedding(name):
    """The initialisation every trained compressor is compared with: soft vector j ≈ embedding of token ⌊j·C/k⌋."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, D)
    out = architectures.build(name, D, 0.125, 64)(x)
    assert (out - x[:, ::8]).abs().max().item() < 0.05 * x.abs().max().item()


def test_soft_length_is_round_rate_times_c():
    assert [architectures.soft_length(0.125, c) for c in (512, 256, 100, 4)] == [64, 32, 12, 1]


def test_parameter_counts_match_the_architectures_written_out():
    d, k, ff = D, 8, 2 * D
    linear = d * d + d
    counts = {name: architectures.build(name, d, 0.125, 64).n_params() for name in architectures.ARCHITECTURES}
    assert counts["pooling"] == (d + 1) + 8  # a score per position + a bias per place in an 8-wide window
    assert counts["conv"] == (d * 8 + d) + linear  # depthwise kernel 8 + bias, pointwise mix
    feed_forward = 2 * d + (d * ff + ff) + (ff * d + d)
    sharpness = 1  # the locality prior's one learned scalar
    assert counts["cross-attention"] == k * d + 2 * d + 2 * linear + sharpness + feed_forward
    assert counts["gist"] == k * d + 2 * 2 * d + 2 * linear + sharpness + (2 * d + 4 * linear) + feed_forward
    assert counts["pooling"] < counts["conv"] < counts["cross-attention"] < counts["gist"]


# --- the index arithmetic --------------------------------------------------------------------------------


def test_teacher_forcing_targets_are_the_tokens_right_after_each_input_position():
    # Row: [s0 s1 s2 | c0 c1 c2] with continuation c0..c3 = 10, 11, 12, 13 (T = 3, k = 3).
    positions, target_index = losses.tf_positions(3, 3)
    assert positions.tolist() == [3, 4, 5] and target_index.tolist() == [1, 2, 3]  # c0 predicts c1, … c2 predicts c3
    cont = torch.tensor([[10, 11, 12, 13]])
    row = [None, None, None, 10, 11, 12]  # what sits at each position; position p's target is the next token
    logits = torch.full((1, 6, 16), -30.0)
    for p, nxt in zip(range(3, 6), [11, 12, 13]):
        assert row[p] + 1 == nxt
        logits[0, p, nxt] = 30.0
    assert losses.teacher_forcing_nll(logits, cont, 3).item() < 1e-6
    shifted = torch.full((1, 6, 16), -30.0)  # seed 002's bug: each target one position early
    for p, nxt in zip(range(2, 5), [11, 12, 13]):
        shifted[0, p, nxt] = 30.0
    assert losses.teacher_forcing_nll(shifted, cont, 3).item() > 10


def test_generation_row_keeps_the_reference_after_the_greedy_prefix():
    cont = torch.tensor([[10, 11, 12, 13, 14]])
    row = losses.generation_row(cont, torch.tensor([[7, 8]]))
    assert row.tolist() == [[10, 7, 8, 13, 14]]
    logits = torch.full((1, 2 + 4, 16), -30.0)  # k = 2; positions 2+2, 2+3 predict c3, c4
    logits[0, 4, 13] = logits[0, 5, 14] = 30.0
    assert losses.generation_nll(logits, cont, 2, 2).item() < 1e-6


def test_distillation_compares_logits_at_aligned_positions(tiny_lm):
    """With the context's own embeddings as 'soft vectors' the student's row is the teacher's: at aligned positions
    the KL is 0; one position off (seed 002's misalignment), it is not."""
    model = tiny_lm.model
    torch.manual_seed(0)
    ids = torch.randint(4, 100, (2, 20 + 6 + 1))
    c, t = 20, 6
    with torch.no_grad():
        teacher = model(input_ids=ids[:, :-1]).logits
        student_soft = model.get_input_embeddings()(ids[:, :c])
        from workbench.learned.soft import forward_rows

        student = forward_rows(model, student_soft, ids[:, c:-1]).logits
    assert losses.distillation_kl(teacher, c, student, c, t).abs().max().item() < 1e-5
    tl, sl = losses.aligned_logits(teacher, c, student, c, t)
    assert tl.shape == sl.shape == (2, t, teacher.shape[-1])
    assert losses.distillation_kl(teacher, c - 1, student, c, t).min().item() > 1e-3


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench import models

    return models.load_model(str(tiny_llama_dir), "cpu", "float32")


# --- training, resume, checkpoints -----------------------------------------------------------------------


def test_resume_from_a_checkpoint_gives_the_uninterrupted_curve(tiny_llama_dir):
    """Same seed on a CPU: a run cancelled after its step-3 checkpoint and resumed gives the uninterrupted run's
    train and validation curves to 1e-6 (relative)."""
    from workbench.learned.train import Cancelled, train

    whole = train(_plan(tiny_llama_dir, "whole"), restart=True)
    cancel = threading.Event()

    def stop_after_first_checkpoint(e):
        if e["kind"] == "checkpoint" and e["step"] == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        train(_plan(tiny_llama_dir, "split"), stop_after_first_checkpoint, cancel, restart=True)
    events = []
    resumed = train(_plan(tiny_llama_dir, "split"), events.append)
    assert events[0]["kind"] == "start" and events[0]["resumed_from"] == 3
    assert [e["step"] for e in events if e["kind"] == "step"] == [4, 5, 6]
    a, b = whole["curves"], resumed["curves"]
    assert [e["step"] for e in a["train"]] == [e["step"] for e in b["train"]] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a["train"] + a["val"], b["train"] + b["val"]):
        v, w = x.get("loss", x.get("val_loss")), y.get("loss", y.get("val_loss"))
        assert abs(v - w) <= 1e-6 * abs(v)
    assert a["train"][0]["loss"] != a["train"][-1]["loss"]  # it did train


def test_training_never_reads_the_windows_an_evaluation_plan_draws(tiny_lm, tiny_llama_dir):
    """Held out: the windows lm_samples draws with the held-out seed, any count up to held_out — what a comparison
    plan on the same dataset, lengths and seed reads."""
    from workbench import datasets
    from workbench.learned.train import _windows

    cfg = _plan(tiny_llama_dir, held_out=8)
    train_windows, held = _windows(tiny_lm, cfg)
    seen = {w.input_ids for w in train_windows}
    for n in (1, 4, 8):
        plan_windows = datasets.lm_samples("wikitext2", tiny_lm.tokenizer, n, 32, 12, 0)
        assert {w.input_ids for w in plan_windows} <= {w.input_ids for w in held} and not seen & {w.input_ids for w in plan_windows}
    assert len(train_windows) + len(held) == datasets.window_count("wikitext2", tiny_lm.tokenizer, 32, 12)


def test_step_events_carry_the_documented_fields(tiny_llama_dir):
    from workbench.learned.train import train

    events = []
    record = train(_plan(tiny_llama_dir, "events", steps=2, checkpoint_every=2), events.append, restart=True)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "checkpoint" in kinds and "eval" in kinds
    step = next(e for e in events if e["kind"] == "step")
    assert set(step) >= {"step", "total_steps", "loss", "terms", "lr", "samples_per_s", "eta_s"}
    assert set(step["terms"]) == {"teacher_forcing", "generation", "contrastive"} and set(step["lr"]) == {"compressor", "lora"}
    json.dumps(events)  # JSON-safe
    assert record["params"]["compressor"] > 0 and record["params"]["lora"] == 0


def _trained(tiny_llama_dir, name="trained", **over):
    from workbench.learned.train import train

    return train(_plan(tiny_llama_dir, name, steps=2, checkpoint_every=2, **over), restart=True)


def test_a_corrupted_or_mismatched_checkpoint_is_refused_naming_the_file(tiny_llama_dir, tiny_lm):
    from pathlib import Path

    from workbench.kvzap.scorer import fingerprint
    from workbench.learned import checkpoint, store
    from workbench.learned.store import CheckpointError

    record = _trained(tiny_llama_dir, "to-break")
    folder = Path(record["checkpoint"])
    fp = fingerprint(tiny_lm.model)
    checkpoint.load_compressor(folder, tiny_lm.model, fp, "cpu")  # whole: loads

    state = json.loads((folder / store.STATE).read_text())
    with pytest.raises(CheckpointError, match="trained on another model"):
        checkpoint.load_compressor(folder, tiny_lm.model, "0" * 16, "cpu")
    (folder / store.STATE).write_text(json.dumps({**state, "compressor": {**state["compressor"], "architecture": "gist"}}))
    with pytest.raises(CheckpointError, match=r"compressor\.safetensors: does not fit a gist compressor"):
        checkpoint.load_compressor(folder, tiny_lm.model, fp, "cpu")
    (folder / store.STATE).write_text(json.dumps(state))
    (folder / store.COMPRESSOR).write_bytes(b"\x00garbage" * 8)
    with pytest.raises(CheckpointError, match=r"compressor\.safetensors: corrupted"):
        checkpoint.load_compressor(folder, tiny_lm.model, fp, "cpu")


def test_cli_resume_onto_a_corrupted_checkpoint_exits_2_naming_it(tiny_llama_dir, tmp_path):
    from pathlib import Path

    from workbench.learned import store

    record = _trained(tiny_llama_dir, "cli-corrupt")
    (Path(record["checkpoint"]) / store.OPTIMIZER).write_bytes(b"not safetensors")
    # Another step count is another plan: refused, naming config.json; the same plan resumes onto the broken file.
    from workbench.learned.train import RunMismatch, train

    with pytest.raises(RunMismatch, match=r"config\.json.*--restart"):
        train(_plan(tiny_llama_dir, "cli-corrupt", steps=4, checkpoint_every=2))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(tiny_llama_dir, "cli-corrupt", steps=2, checkpoint_every=2).to_dict()))
    import shutil

    ckpt = Path(record["checkpoint"])
    shutil.copytree(ckpt, ckpt.parent / "checkpoint-1")  # an earlier step to resume from, with the broken optimiser
    shutil.rmtree(ckpt)
    out = _cli("train", str(plan))
    assert out.returncode == 2, out.stderr
    assert "optimizer.safetensors: corrupted" in out.stderr and "Traceback" not in out.stderr


def _cli(*args):
    import os

    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "architecture": "lstm"}))
    out = _cli("train", str(bad))
    assert out.returncode == 2 and str(bad) in out.stderr and "'architecture'" in out.stderr and "gist" in out.stderr
    bad.write_text(json.dumps({"name": "x", "rate": 1.5}))
    out = _cli("train", str(bad))
    assert out.returncode == 2 and "'rate'" in out.stderr
    out = _cli("train", str(tmp_path / "missing.json"))
    assert out.returncode == 2 and "missing.json" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _cli("train", "no-such-preset")
    assert out.returncode == 2 and "train-cpu-gist" in out.stderr  # the training presets are listed
    out = _cli("--preset", "train-cpu-gist", "--dry-run")
    assert out.returncode == 2 and "workbench train train-cpu-gist" in out.stderr


def test_training_presets_parse_and_are_not_comparison_presets():
    from workbench.learned.config import load_train_plan, train_preset_names
    from workbench.plan import preset_names

    names = train_preset_names()
    assert {f"train-cpu-{a}" for a in architectures.ARCHITECTURES} <= set(names) and "train-gpu-gist" in names
    assert not set(names) & set(preset_names())
    for n in names:
        cfg = load_train_plan(n)
        assert cfg.name == n and cfg.loss_weights["teacher_forcing"] == 0.5


# --- measured in a plan ------------------------------------------------------------------------------------


def test_a_plan_with_learned_methods_runs_through_the_runner_and_records_delta_ppl(tiny_llama_dir):
    from workbench import runner
    from workbench.plan import PlanError, parse_plan

    record = _trained(tiny_llama_dir, "in-a-plan")
    doc = {"name": "learned-tiny", "model": str(tiny_llama_dir), "datasets": [{"name": "wikitext2", "samples": 2, "seed": 0}],
           "protocol": {"name": "context-continuation", "context_tokens": 32, "continuation_tokens": 12}, "rates": [0.125],
           "methods": [{"name": "learned", "params": {"checkpoint": "in-a-plan"}, "label": "xattn"},
                       {"name": "learned", "params": {"checkpoint": "in-a-plan", "untrained": True}, "label": "xattn-0"},
                       {"name": "random", "family": "prompt"}]}
    plan = parse_plan(doc)
    assert plan.method("xattn").rates == [0.125]
    cells = {c["method"]: c for c in runner.run(plan).cells.values()}
    trained, untrained = cells["xattn"], cells["xattn-0"]
    for c in (trained, untrained):
        assert c["status"] == "done" and c["family"] == "learned" and c["rate"] == 0.125
        assert c["delta_ppl"] is not None and c["kept_fraction"] == pytest.approx(4 / 32)
        assert c["compressor_params"] == record["params"]["compressor"] and c["compression_seconds"] > 0
        assert c["tokens_scored"] == cells["baseline"]["tokens_scored"]  # the same continuation tokens
    assert trained["ppl"] != untrained["ppl"]
    assert trained["samples"][0]["own"]["step"] == 2 and untrained["samples"][0]["own"]["untrained"] is True

    from workbench import tables

    assert {"compress", "params"} <= {c.key for c in tables.columns_for(list(cells.values()))}
    with pytest.raises(PlanError, match=r"methods\[0\]\.rates.*trained at rate 0\.125"):
        parse_plan({**doc, "methods": [{"name": "learned", "params": {"checkpoint": "in-a-plan"}, "rates": [0.5]}]})
    with pytest.raises(PlanError, match=r"methods\[0\]\.params\.checkpoint.*no trained compressor 'nope'"):
        parse_plan({**doc, "methods": [{"name": "learned", "params": {"checkpoint": "nope"}}]})
    # The saved session's plan has the rate written out: it opens without the run (its cells fail when rerun).
    gone = parse_plan({**doc, "methods": [{"name": "learned", "params": {"checkpoint": "nope"}, "rates": [0.125]}]})
    assert gone.methods[0].rates == [0.125]


def test_the_task_protocol_measures_a_learned_method(tiny_llama_dir, tmp_path):
    from workbench import runner
    from workbench.plan import parse_plan

    _trained(tiny_llama_dir, "for-qa")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"context": "the cat sat on the mat and the dog ran in the house " * 4,
                                        "question": "where did the cat sit", "answers": ["on the mat"]}) for _ in range(2)))
    plan = parse_plan({"name": "learned-qa", "model": str(tiny_llama_dir), "datasets": [{"name": str(qa), "samples": 2}],
                       "protocol": {"name": "task", "max_new_tokens": 4},
                       "methods": [{"name": "learned", "params": {"checkpoint": "for-qa"}}]})
    cells = {c["method"]: c for c in runner.run(plan).cells.values()}
    cell = cells["learned"]
    assert cell["status"] == "done", cell.get("error")
    assert cell["score"] is not None and cell["metric"] and cell["compressor_params"] > 0
    assert cell["samples"][0]["compressed_tokens"] == round(0.125 * cell["samples"][0]["context_tokens"])


def test_a_qa_training_plan_offline_says_the_set_cannot_be_downloaded(tiny_llama_dir, monkeypatch):
    from workbench.datasets import DatasetError
    from workbench.learned.train import train

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match=r"hf:squad: the Hugging Face hub is out of reach.*cannot be downloaded here.*wikitext2"):
        train(_plan(tiny_llama_dir, "squad-offline", dataset="hf:squad"), restart=True)


def test_the_rate_column_keeps_a_third_decimal_where_two_would_round_it():
    from workbench import tables

    assert tables.rate(0.125) == "0.125" and tables.rate(0.5) == "0.50" and tables.rate(1.0) == "1.00"
    assert tables.rate(0.2 + 0.1) == "0.30"  # float noise is not a third decimal
