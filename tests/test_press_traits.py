"""The press registry's traits against kvpress itself: what a press declares is what its class does."""

from __future__ import annotations

import pytest

from workbench.methods import presses
from workbench.methods.info import ParamError
from workbench.methods.registry import lookup, resolve_params
from workbench.plan import PlanError, parse_plan


def _cls(name):
    import kvpress

    return getattr(kvpress, presses.PRESSES[name].implementation)


@pytest.mark.parametrize("name", sorted(presses.PRESSES))
def test_scorer_and_decoding_traits_match_the_classes(name):
    import kvpress

    cls, traits = _cls(name), presses.PRESSES[name].traits
    assert traits.scorer == issubclass(cls, kvpress.ScorerPress), name
    if issubclass(cls, kvpress.DecodingPress):
        assert traits.decoding, name


RATE_DRIVEN = sorted(n for n, i in presses.PRESSES.items() if i.rate_param == presses.CR and not i.needs_hub)


@pytest.mark.parametrize("name", RATE_DRIVEN)
def test_the_rate_reaches_kvpress_as_the_fraction_removed(name):
    """Built at rate 0.3 (kept), every press — a wrapper through its inner press — removes 0.7."""
    from workbench.methods.press_build import build_press

    info = lookup(name, "kv")
    press = build_press(name, resolve_params(info, {}), 0.3)
    if hasattr(press, "presses"):  # ComposedPress reports its ratio only after a forward pass: each inner press
        for inner in press.presses:
            rate_param = lookup(type(inner).__name__, "kv").rate_param
            assert getattr(inner, rate_param) == pytest.approx(0.7), (name, type(inner).__name__)
    else:
        assert press.compression_ratio == pytest.approx(0.7), name


@pytest.mark.parametrize("name", sorted(presses.PRESSES))
def test_every_parameter_is_one_the_press_class_takes(name):
    import inspect

    info = presses.PRESSES[name]
    if info.builder:  # the workbench's subclass of the kvpress class: it takes the class's parameters and its own
        import importlib

        module, cls = info.builder.split(":")
        built = getattr(importlib.import_module(module), cls)
        assert issubclass(built, _cls(name))
        accepted = set(inspect.signature(built).parameters)
    else:
        accepted = set(inspect.signature(_cls(name)).parameters)
    ours = {info.traits.kept_lists.get(p, p) for p in info.params
            if not (p == info.rate_param and info.traits.forwards_rate) and p not in info.traits.own_params}
    assert ours <= accepted, f"{name}: {sorted(ours - accepted)} are not parameters of {info.implementation}"


def test_one_conversion_of_rates():
    assert presses.compression_ratio(0.25) == 0.75 and presses.compression_ratio(1.0) == 0.0
    assert presses.compression_ratio(0.7) == 0.3  # rounded: 1 - 0.7 is 0.30000000000000004 in floats


def test_per_layer_rates_are_given_kept_and_reach_kvpress_removed():
    from workbench.methods.press_build import build_press

    info = lookup("per-layer-compression", "kv")
    press = build_press("per-layer-compression", resolve_params(info, {"kept_rates": [1.0, 0.25]}), None)
    assert press.compression_ratios == [0.0, 0.75]
    with pytest.raises(ParamError, match="at most 1"):
        resolve_params(info, {"kept_rates": [0.5, 1.5]})


@pytest.mark.parametrize("wrapper", sorted(n for n, i in presses.PRESSES.items() if i.traits.wraps == "scorer"))
def test_wrappers_that_need_a_scorer_refuse_others_before_kvpress_would(wrapper):
    """kvpress asserts `isinstance(press, ScorerPress)` at run time; the plan refuses it up front, naming the field."""
    nested = presses.PRESSES[wrapper].nested[0]
    plan = {"name": "w", "model": "smollm2-135m", "methods": [{"name": wrapper, "params": {nested: "think"}}]}
    with pytest.raises(PlanError, match=rf"methods\[0\]\.params\.{nested}.*cannot wrap think"):
        parse_plan(plan)


@pytest.mark.parametrize("params,field,words", [
    ({"window_size": "big"}, "window_size", "whole number"),
    ({"window_size": -5}, "window_size", "at least 1"),
    ({"window_size": 8.0}, "window_size", "whole number"),
    ({"kernel_size": True}, "kernel_size", "whole number"),
])
def test_parameter_types_and_ranges_are_checked_from_the_registry(params, field, words):
    with pytest.raises(PlanError) as err:
        parse_plan({"name": "p", "model": "smollm2-135m", "methods": [{"name": "snapkv", "params": params}]})
    assert f"methods[0].params.{field}" in str(err.value) and words in str(err.value)


def test_nested_parameters_name_their_full_field():
    bad = {"name": "adakv", "params": {"press": {"name": "snapkv", "params": {"window_size": 0}}}}
    with pytest.raises(PlanError, match=r"methods\[0\]\.params\.press\.params\.window_size"):
        parse_plan({"name": "p", "model": "smollm2-135m", "methods": [bad]})
    unknown = {"name": "adakv", "params": {"press": "no-such-press"}}
    with pytest.raises(PlanError, match=r"methods\[0\]\.params\.press\.name.*unknown method"):
        parse_plan({"name": "p", "model": "smollm2-135m", "methods": [unknown]})


def test_resolved_traits_follow_parameters_and_nesting():
    cur = presses.resolve("cur", resolve_params(lookup("cur", "kv"), {"use_random_leverage": True}))
    assert cur.random
    finch = presses.resolve("finch", resolve_params(lookup("finch", "kv"), {"rerotate_keys": False}))
    assert not finch.rerotates_keys
    adakv_streaming = presses.resolve("adakv", resolve_params(lookup("adakv", "kv"), {"press": "streaming-llm"}))
    assert adakv_streaming.per_rate_reason == "inner press streaming-llm runs per rate"
    adakv_snapkv = presses.resolve("adakv", resolve_params(lookup("adakv", "kv"), {"press": "snapkv"}))
    assert adakv_snapkv.per_rate_reason is None and adakv_snapkv.scores_from_inner
    compactor = presses.resolve("compactor", resolve_params(lookup("compactor", "kv"), {"blending": 0.5}))
    assert compactor.per_rate_reason is None
    duo = presses.resolve("duo-attention", resolve_params(lookup("duo-attention", "kv"), {"on_the_fly_scoring": True}))
    assert duo.hub_reason is None
