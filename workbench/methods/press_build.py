"""Build kvpress press objects from registry entries (imports kvpress: evaluation code only)."""

from __future__ import annotations

from typing import Any

from workbench.methods.presses import PRESSES, PressTraits, compression_ratio


def build_press(name: str, params: dict[str, Any], rate: float | None):
    """Instantiate the kvpress press for one rate (fraction kept). Imports kvpress."""
    import importlib

    import kvpress

    info = PRESSES[name]
    t: PressTraits = info.traits
    if info.builder:
        module, class_name = info.builder.split(":")
        cls = getattr(importlib.import_module(module), class_name)
    else:
        cls = getattr(kvpress, info.implementation)
    kwargs: dict[str, Any] = {}
    for key, value in params.items():
        if key in t.own_params:  # the workbench's, not the press class's
            continue
        if key in info.nested and value is not None:
            if isinstance(value, list):
                value = [build_press(v["name"], v["params"], rate) for v in value]
            else:
                value = build_press(value["name"], value["params"], rate)
        if key in t.kept_lists:
            key, value = t.kept_lists[key], None if value is None else [compression_ratio(v) for v in value]
        kwargs[key] = value
    if info.rate_param and rate is not None and not t.forwards_rate:
        kwargs[info.rate_param] = compression_ratio(rate)
    return cls(**kwargs)
