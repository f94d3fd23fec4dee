"""The point classifier on the embedded SmolLM2 (slow): trained on rule labels of GSM8K reference reasoning, it
beats both trivial baselines on held-out problems, and the learned-points schedule drives a greedy decoding loop,
saying a point exactly where the classifier's probability of the token's hidden state passes the threshold."""

from __future__ import annotations

import pytest
import torch

from workbench.decoding.schedule import Step
from workbench.points import labels as L


@pytest.fixture(scope="module")
def trained(smollm2):
    from workbench.points.train import FitSettings, TrainSettings, train

    settings = TrainSettings(model="smollm2-135m", texts=36, device="cpu", dtype="float32", fit=FitSettings(epochs=15))
    return train(settings, loaded=smollm2)


def test_the_classifier_beats_both_baselines_on_held_out_problems(trained):
    test = trained["metrics"]["test"]
    assert trained["data"]["test"]["texts"] == 4 and test["points"] > 10
    assert test["never_a_point"]["f1"] == 0.0
    assert test["classifier"]["f1"] > 0.8 > test["always_a_point"]["f1"]
    assert test["classifier"]["accuracy"] > test["never_a_point"]["accuracy"]
    held_out = set(trained["data"]["test"]["problems"])
    assert not held_out & set(trained["data"]["train"]["problems"] + trained["data"]["validation"]["problems"])


def test_the_schedule_drives_a_greedy_decoding_loop(trained, smollm2):
    from workbench.points.classifier import load
    from workbench.points.features import encode
    from workbench.points.schedule import LearnedPoints

    model, tok = smollm2.model, smollm2.tokenizer
    schedule = LearnedPoints(model=model, tokenizer=tok, press="knorm", budget=128)
    layer = schedule.hidden_layer
    mlp, config = load(trained["folder"], model)
    problem = L.problems(60)[55]  # not among the 36 it was trained on
    prompt = torch.tensor([encode(tok, problem.prompt, problem.answer)[0]])

    # greedy decoding, one token at a time (as kv_eval.generate): the point after token t is asked once token t + 1
    # is chosen, with token t's hidden state, before t + 1 is fed
    generated, points, hidden_seen = [], [], []
    with torch.inference_mode():
        out = model(input_ids=prompt, use_cache=True)
        cache, token = out.past_key_values, int(out.logits[0, -1].argmax())
        generated.append(token)
        schedule.start(0)
        for t in range(48):
            position = prompt.shape[1] + t
            out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                        position_ids=torch.tensor([[position]]), output_hidden_states=True)
            hidden = out.hidden_states[layer][0, -1]
            token = int(out.logits[0, -1].argmax())
            step = Step(t, position, tok.decode(generated), tok.decode([token]), hidden=hidden)
            if schedule.is_point(step):
                points.append(t)
            hidden_seen.append(hidden)
            generated.append(token)
        # the same tokens teacher-forced: the classifier's probabilities over their hidden states
        full = model(input_ids=torch.tensor([prompt[0].tolist() + generated]), output_hidden_states=True)
    forced = full.hidden_states[layer][0, prompt.shape[1] : prompt.shape[1] + 48]
    assert torch.allclose(forced, torch.stack(hidden_seen), atol=2e-3)
    probs = mlp.probabilities(forced)
    near = (probs - config["threshold"]).abs() < 1e-3
    expected = [t for t in range(48) if probs[t] >= config["threshold"]]
    assert [t for t in points if not near[t]] == [t for t in expected if not near[t]]
    assert points, "the model's own reasoning has step ends"
    # and the points are mostly where the step-boundary rule puts them on that text
    rule = {t for t, v in enumerate(L.rule_labels(L.token_texts(tok, generated))) if v and t < 48}
    assert len(set(points) & rule) >= 0.6 * max(len(rule), 1), (points, sorted(rule), tok.decode(generated))
