"""KV cache layers with room behind the context (kv_room): the continuation and a generated answer are written in
place instead of concatenated, and every number is what transformers' DynamicCache gives."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama_dir):
    from workbench.models import load_model

    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


def _window(c: int = 96, t: int = 16):
    g = torch.Generator().manual_seed(3)
    return torch.randint(4, 128, (2, c + t + 1), generator=g), c


def test_baseline_continuation_through_room_equals_dynamic_cache_and_writes_in_place(tiny_lm):
    from transformers import DynamicCache

    from workbench import kv_eval, kv_room

    ids, c = _window()
    cont = ids[:, c:]
    dynamic, _ = kv_eval.prefill(tiny_lm.model, ids[:, :c])
    assert all(type(layer) is not kv_room.RoomyLayer for layer in dynamic.layers) and isinstance(dynamic, DynamicCache)
    reference, n, _ = kv_eval.continuation_nlls(tiny_lm.model, dynamic, cont, c)

    roomy, _ = kv_eval.prefill(tiny_lm.model, ids[:, :c], room=cont.shape[1] - 1)
    buffers = [(layer._key_buffer.data_ptr(), layer._value_buffer.data_ptr()) for layer in roomy.layers]
    assert all(layer._key_buffer.shape[-2] == c + n for layer in roomy.layers)
    ours, _, _ = kv_eval.continuation_nlls(tiny_lm.model, roomy, cont, c)
    assert ours == reference  # the same keys and values reach the attention: bit for bit in float32
    # The continuation went into the reserved room: no layer moved to a new buffer.
    assert [(layer._key_buffer.data_ptr(), layer._value_buffer.data_ptr()) for layer in roomy.layers] == buffers
    assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values) for a, b in zip(roomy.layers, dynamic.layers))


# (AdaKV's head-wise masks keep the full cache and are set on the attention modules, untouched by the room; its
# attention patch finds no "fake keys" on this tiny model, see the data README.)
@pytest.mark.parametrize("press_name, params", [("snapkv", {}), ("knorm", {}), ("streaming-llm", {}), ("pyramidkv", {})])
def test_shared_prefill_rates_gathered_into_room_equal_the_concatenating_path(tiny_lm, press_name, params):
    from workbench import kv_eval
    from workbench.methods import presses, registry
    from workbench.methods.press_build import build_press

    params = registry.resolve_params(registry.lookup(press_name), params)
    ids, c = _window()
    ctx, cont = ids[:, :c], ids[:, c:]
    resolved = presses.resolve(press_name, params)
    press = build_press(press_name, params, 0.5)
    shared = kv_eval.shared_prefill(tiny_lm.model, ctx, resolved, press)
    for rate in (1.0, 0.5, 0.25):
        plain, _ = kv_eval.cache_for_rate(tiny_lm.model, shared, rate, resolved)
        roomy, _ = kv_eval.cache_for_rate(tiny_lm.model, shared, rate, resolved, room=cont.shape[1] - 1)
        kept = [layer.keys.shape[-2] for layer in roomy.layers]
        assert kept == [layer.keys.shape[-2] for layer in plain.layers]
        assert all(torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values) for a, b in zip(roomy.layers, plain.layers))
        ptrs = [layer._key_buffer.data_ptr() for layer in roomy.layers]
        a, _, _ = kv_eval.continuation_nlls(tiny_lm.model, plain, cont, c)
        b, _, _ = kv_eval.continuation_nlls(tiny_lm.model, roomy, cont, c)
        assert a == b
        kv_eval.clear_masks(tiny_lm.model)
        assert [layer._key_buffer.data_ptr() for layer in roomy.layers] == ptrs


def test_a_layer_whose_tensors_were_replaced_starts_a_new_buffer_with_the_right_contents():
    """A press that compresses the cache assigns new tensors: the next update must not write into the old buffer."""
    from workbench import kv_room

    g = torch.Generator().manual_seed(0)
    k0, v0 = torch.randn(1, 2, 10, 4, generator=g), torch.randn(1, 2, 10, 4, generator=g)
    layer = kv_room.RoomyLayer(room=8)
    layer.update(k0, v0)
    old = layer._key_buffer.data_ptr()
    # A press keeps entries 2, 5, 7 (a gather: new tensors)
    idx = torch.tensor([2, 5, 7])
    layer.keys, layer.values = layer.keys[:, :, idx], layer.values[:, :, idx]
    k1, v1 = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 2, 3, 4, generator=g)
    keys, values = layer.update(k1, v1)
    assert layer._key_buffer.data_ptr() != old and layer._key_buffer.shape[-2] == 3 + 3 + 8
    assert torch.equal(keys, torch.cat([k0[:, :, idx], k1], dim=-2))
    assert torch.equal(values, torch.cat([v0[:, :, idx], v1], dim=-2))
    # A press that only shortens the front (a view of the same buffer) keeps the buffer.
    ptr = layer._key_buffer.data_ptr()
    layer.keys, layer.values = layer.keys[..., :4, :], layer.values[..., :4, :]
    k2, v2 = torch.randn(1, 2, 1, 4, generator=g), torch.randn(1, 2, 1, 4, generator=g)
    keys, _ = layer.update(k2, v2)
    assert layer._key_buffer.data_ptr() == ptr
    assert torch.equal(keys, torch.cat([k0[:, :, idx], k1[:, :, :1], k2], dim=-2))
    # More than the room: a new, larger buffer, contents intact.
    big = torch.randn(1, 2, 20, 4, generator=g)
    keys, _ = layer.update(big, big)
    assert keys.shape[-2] == 25 and torch.equal(keys[..., 5:, :], big) and layer._key_buffer.shape[-2] == 25 + 8


def test_generation_with_room_made_for_the_answer_matches_a_dynamic_cache(tiny_lm):
    from workbench import kv_eval

    ids, c = _window()
    prompt = ids[:1, c:c + 5]
    tokens = {}
    for room in (0, 1):
        cache, _ = kv_eval.prefill(tiny_lm.model, ids[:1, :c], room=room)
        tokens[room], _ = kv_eval.generate(tiny_lm.model, cache, prompt, c, 12, eos_ids=set())
        assert cache.layers[0].keys.shape[-2] == c + 5 + 11  # the last token's forward pass is skipped
    assert tokens[0] == tokens[1] and len(tokens[0]) == 12
