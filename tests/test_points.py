"""The compression-point classifier's mechanics on a tiny random Llama with a byte-level tokenizer (so GSM8K
solutions keep their newlines and full stops): labels, the marker alignment, the scores, a training that is
cancelled and resumes, the checkpoint round trip, damaged and foreign checkpoints, the CLI's exit codes, the API
labels through a real HTTP server, and the schedule's decisions."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from workbench.points import labels as L
from workbench.points import scores


def save_bytes_llama(folder, seed: int = 0, hidden_size: int = 64):
    """A random-weight Llama (2 layers) with a byte-level BPE tokenizer trained on a few GSM8K solutions."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from workbench.datasets import load_documents

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    backend.train_from_iterator([d.meta["answer"] + "\n" + d.meta["question"] for d in load_documents("gsm8k")[:300]], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    config = LlamaConfig(vocab_size=backend.get_vocab_size(), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bytes_llama(tmp_path_factory):
    return save_bytes_llama(tmp_path_factory.mktemp("bytes-llama"))


# -- labels, alignment, scores (no model) -----------------------------------------------------------------------

def test_problems_are_drawn_and_split_deterministically():
    a, b = L.problems(20, seed=3), L.problems(30, seed=3)
    assert [p.part for p in a].count("test") == 2 and [p.part for p in a].count("validation") == 2
    assert [p.index for p in a] == [p.index for p in b][:20]  # the first problems of a draw do not depend on n
    assert len({p.index for p in b}) == 30
    assert all("<<" not in p.solution and p.solution.rstrip().split("\n")[-1].startswith("####") for p in a)
    assert any("<<" in p.solution for p in L.problems(20, seed=3, keep_calculator_spans=True))
    with pytest.raises(ValueError, match="texts: expected 3 to 1319"):
        L.problems(2)


def test_markers_are_aligned_back_to_the_reference_even_when_the_copy_differs_a_little():
    ref = "She sold 24 clips.\nThen 48 more.\n#### 72"
    exact = "She sold 24 clips.<COMP>\nThen 48 more.<COMP>\n#### 72"
    assert L.marker_offsets(ref, exact) == [18, 32]
    # a copy with changed spacing and a blank line keeps the markers where they belong in the reference
    loose = "She sold 24 clips. <COMP>\n\nThen 48 more. <COMP>\n#### 72"
    assert L.marker_offsets(ref, loose) == [18, 32]
    with pytest.raises(L.AlignmentError, match="matches"):
        L.marker_offsets(ref, "Something else entirely <COMP> was written here.")
    # tokens "She| sold| 24| clips.|\n|Then| 48| more.|\n|####| 72": a marker after "clips." is a point after that token
    tokens = ["She", " sold", " 24", " clips.", "\n", "Then", " 48", " more.", "\n", "####", " 72"]
    ends = list(np.cumsum([len(t) for t in tokens]))
    assert L.labels_from_offsets(ends, [18, 32]) == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert L.labels_from_offsets(ends, [0, len(ref)]) == [0] * len(tokens)  # before the text, after the last token
    # the step-boundary rule: a line end is one point, on the newline (not also on the full stop before it)
    assert L.rule_labels(tokens) == [0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0]


def test_scores_and_the_threshold_chosen_on_validation():
    labels = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0, 1])
    probs = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.1, 0.75, 0.2, 0.1, 0.7])
    t = scores.best_threshold(labels, probs)
    assert 0.3 < t <= 0.7  # all three points and the 0.75 non-point: the best F1 (6/7) takes them all
    r = scores.report(labels, probs, t)
    assert r["classifier"]["recall"] == 1.0 and r["classifier"]["precision"] == 0.75
    assert r["never_a_point"]["f1"] == 0.0 and r["never_a_point"]["accuracy"] == 0.7
    p = 0.3
    assert r["always_a_point"]["f1"] == pytest.approx(2 * p / (1 + p)) and r["always_a_point"]["accuracy"] == p
    assert scores.best_threshold(np.zeros(4), np.ones(4) / 2) == 0.5


# -- training, checkpoints, the schedule (tiny Llama) -------------------------------------------------------------

def _train(folder, lm, **kw):
    from workbench.points.train import FitSettings, TrainSettings, train

    progress = []
    settings = TrainSettings(model=str(folder), texts=kw.pop("texts", 10), batch_texts=2, device="cpu", dtype="float32",
                             fit=FitSettings(hidden_dim=16, epochs=3), **{k: v for k, v in kw.items() if k in
                                                                          ("labels", "evaluator", "seed")})
    config = train(settings, on_progress=lambda *a: progress.append(a), cancel=kw.get("cancel"),
                   restart=kw.get("restart", False), loaded=lm)
    return config, progress


@pytest.fixture(scope="module")
def trained(bytes_llama):
    """A classifier trained for the tiny model, after a training cancelled midway and resumed."""
    from workbench.kvzap.scorer import fingerprint
    from workbench.models import load_model
    from workbench.points import store

    lm = load_model(str(bytes_llama), device="cpu", dtype="float32")
    cancel = threading.Event()
    progress = []

    def stop_after_four(stage, done, total, message):
        progress.append((stage, done))
        if stage == "features" and done >= 4:
            cancel.set()

    from workbench.points.train import FitSettings, TrainSettings, train

    settings = TrainSettings(model=str(bytes_llama), texts=10, batch_texts=2, device="cpu", dtype="float32",
                             fit=FitSettings(hidden_dim=16, epochs=3))
    with pytest.raises(store.Cancelled, match="rerun resumes"):
        train(settings, on_progress=stop_after_four, cancel=cancel, loaded=lm)
    work = store.work_dir(str(bytes_llama), "rule", 2)
    kept = sorted(p.name for p in (work / "texts").iterdir())
    assert len(kept) == 4 and not store.find(fingerprint(lm.model))  # nothing is saved before the training ends
    config, resumed = _train(bytes_llama, lm)
    return lm, config, resumed, kept


def test_a_cancelled_training_resumes_from_the_texts_it_kept_and_saves_a_whole_checkpoint(trained, bytes_llama):
    from workbench.kvzap.scorer import fingerprint
    from workbench.points import classifier, store

    lm, config, progress, _ = trained
    assert ("features", 4, 10, "resuming: 4 of 10 texts were done by an earlier run and are kept") in progress
    # the resumed run computed only the other six texts
    assert [d for s, d, *_ in progress if s == "features"][1:] == [6, 8, 10]
    folder = store.classifier_dir(str(bytes_llama), "rule", 2)
    assert config["folder"] == str(folder) and not store.work_dir(str(bytes_llama), "rule", 2).exists()
    saved = json.loads((folder / "config.json").read_text())
    assert saved["model"]["fingerprint"] == fingerprint(lm.model) and saved["layer"] == 2
    assert 0 < saved["threshold"] < 1 and saved["labels"]["kind"] == "rule"
    drawn = [i for k in ("train", "validation", "test") for i in saved["data"][k]["problems"]]
    assert sorted(drawn) == sorted(p.index for p in L.problems(10)) and len(set(drawn)) == 10
    test = saved["metrics"]["test"]
    assert test["points"] == saved["data"]["test"]["points"] > 0 and test["never_a_point"]["f1"] == 0.0
    assert store.find(fingerprint(lm.model)) == folder
    _, loaded = classifier.load(folder, lm.model)
    assert loaded["threshold"] == saved["threshold"]


def test_the_schedule_says_a_point_where_the_probability_passes_the_threshold(trained, bytes_llama):
    from workbench.decoding.schedule import Step
    from workbench.points import classifier, store
    from workbench.points.features import answer_hidden, encode
    from workbench.points.schedule import LearnedPoints

    lm, config, *_ = trained
    schedule = LearnedPoints(model=lm.model, tokenizer=lm.tokenizer, press="knorm", budget=64)
    assert schedule.hidden_layer == 2 and schedule.describe()["classifier"] == config["folder"]
    problem = L.problems(12)[11]
    hidden = answer_hidden(lm.model, [encode(lm.tokenizer, problem.prompt, problem.answer)], 2)[0]
    mlp, _ = classifier.load(store.classifier_dir(str(bytes_llama), "rule", 2))
    probs = mlp.probabilities(hidden)
    decided = [schedule.is_point(Step(t, t, "", "", hidden=hidden[t])) for t in range(len(hidden))]
    assert decided == (probs >= config["threshold"]).tolist()
    # a lower threshold given as the method's parameter says a point at least as often
    lower = LearnedPoints(model=lm.model, tokenizer=lm.tokenizer, threshold=float(probs.median()))
    assert sum(lower.is_point(Step(t, t, "", "", hidden=hidden[t])) for t in range(len(hidden))) >= len(hidden) // 2
    with pytest.raises(ValueError, match="threshold"):
        LearnedPoints(model=lm.model, threshold=1.5)
    with pytest.raises(ValueError, match="hidden state"):
        schedule.is_point(Step(0, 0, "", ""))


def test_damaged_and_foreign_checkpoints_are_refused_in_one_line(trained, bytes_llama, tmp_path, capsys):
    import shutil

    from workbench.failures import classify_failure
    from workbench.models import load_model
    from workbench.points import classifier, store
    from workbench.points.cli import main
    from workbench.points.schedule import LearnedPoints

    lm, config, *_ = trained
    good = tmp_path / "good"
    shutil.copytree(config["folder"], good)

    def damaged(name, change):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        return folder

    cases = {
        damaged("truncated", lambda f: (f / "classifier.safetensors").write_bytes((f / "classifier.safetensors").read_bytes()[:100])):
            "damaged, not a safetensors file",
        damaged("no-weights", lambda f: (f / "classifier.safetensors").unlink()): "missing (the classifier's weights)",
        damaged("bad-json", lambda f: (f / "config.json").write_text("{not json")): "not a readable JSON file",
        damaged("bad-threshold", lambda f: (f / "config.json").write_text(json.dumps(
            {**json.loads((f / "config.json").read_text()), "threshold": "high"}))): "field 'threshold' is missing or malformed",
        damaged("other-shape", lambda f: (f / "config.json").write_text(json.dumps(
            {**json.loads((f / "config.json").read_text()), "hidden_dim": 8}))): "do not make the classifier",
    }
    for folder, said in cases.items():
        with pytest.raises(store.CheckpointError) as err:
            classifier.load(folder, lm.model)
        assert str(folder) in str(err.value) and said in str(err.value) and "\n" not in str(err.value)
        assert main(["--check", str(folder), "--model", str(bytes_llama)]) == 2
        assert said in capsys.readouterr().err
        with pytest.raises(store.CheckpointError):  # a run's cell fails with that reason
            LearnedPoints(model=lm.model, classifier=str(folder))
    assert main(["--check", str(good), "--model", str(bytes_llama), "--device", "cpu"]) == 0
    assert "never (majority)" in capsys.readouterr().out

    other = load_model(str(save_bytes_llama(tmp_path / "other", seed=1)), device="cpu", dtype="float32")
    with pytest.raises(store.CheckpointError, match="trained on other weights"):
        LearnedPoints(model=other.model, classifier=str(good))
    assert main(["--check", str(good), "--model", str(tmp_path / "other")]) == 2
    assert "train one with `workbench train-points --model" in capsys.readouterr().err
    narrow = load_model(str(save_bytes_llama(tmp_path / "narrow", hidden_size=32)), device="cpu", dtype="float32")
    with pytest.raises(store.CheckpointError, match="hidden size 64; the loaded model has 2 layers, hidden size 32"):
        LearnedPoints(model=narrow.model, classifier=str(good))
    # no classifier for a model at all: the cell is unavailable, and its reason says how to train one
    with pytest.raises(store.NoClassifier) as missing:
        LearnedPoints(model=other.model)
    status, reason = classify_failure(missing.value, None)
    assert status == "unavailable" and "workbench train-points --model" in reason


def test_the_cli_refuses_bad_input_before_loading_anything(tmp_path, capsys):
    from workbench.points.cli import main

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "x", "evaluator": {"provider": "nope", "model": "m"}}))
    cases = [(["--labels", "api"], "--labels api needs --evaluator"),
             (["--texts", "2"], "expected a whole number of at least 3"),
             (["--texts", "5000"], "the bundled GSM8K holds 1319 problems"),
             (["--evaluator", '{"provider": "openai", "model": "m"}'], "apply to --labels api only"),
             (["--labels", "api", "--evaluator", "{bad"], "--evaluator: not valid JSON"),
             (["--labels", "api", "--evaluator", str(plan)], "field 'evaluator.provider': unknown provider 'nope'"),
             (["--labels", "api", "--evaluator", str(tmp_path / "none.json")], "none.json: cannot be read"),
             (["--model", str(tmp_path / "missing-folder")], "--model"),
             (["--labels", "api", "--evaluator", '{"provider": "openai", "model": "m"}', "--max-cost", "-1"], "--max-cost")]
    for argv, said in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err.splitlines()[-1] and "Traceback" not in err, (argv, err)  # argparse adds its usage above


def test_api_labels_come_from_markers_in_the_model_copy_and_are_paid_for_once(bytes_llama, tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from api_server import FakeApi

    from workbench.models import load_model

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))

    def mark(prompt: str) -> str:  # copies the solution with a marker before each line end, as asked
        return prompt.split("Solution:\n", 1)[1].replace("\n", " <COMP>\n")

    server = FakeApi(answer=mark)
    url = server.start()
    try:
        lm = load_model(str(bytes_llama), device="cpu", dtype="float32")
        evaluator = {"provider": "openai-compatible", "base_url": url, "model": "marker"}
        config, _ = _train(bytes_llama, lm, labels="api", evaluator=evaluator, texts=5)
        assert server.answered == 5 and config["labels"] == {"kind": "api", "rule": None, "evaluator": {
            "provider": "openai-compatible", "model": "marker", "base_url": url}}
        # one point per marked line end: the token holding the character before each marker
        newlines = sum(p.solution.count("\n") for p in L.problems(5))
        assert sum(config["data"][k]["points"] for k in ("train", "validation", "test")) == newlines > 0
        again, _ = _train(bytes_llama, lm, labels="api", evaluator=evaluator, texts=5, restart=True)
        assert server.answered == 5  # the response cache answered the second time
        assert again["data"]["train"]["points"] == config["data"]["train"]["points"]
    finally:
        server.stop()


def test_a_layer_the_model_does_not_have_is_bad_input(bytes_llama, capsys):
    from workbench.points.cli import main

    assert main(["--model", str(bytes_llama), "--layer", "9", "--texts", "3", "--device", "cpu"]) == 2
    assert "--layer: layer 9 is out of range for a model with 2 layers" in capsys.readouterr().err
