"""Method families: what a kind of compression does, measured through a backend under a protocol.

A family (baseline, kv, prompt; api, learned, decoding next) owns its traits and how it measures a work
unit. Adding a family is one module here and one entry in :data:`FAMILIES`; the runner only schedules
units and records what the family returns. Importing this package loads no torch.
"""

from __future__ import annotations

import importlib

from workbench.families.base import Family, Measurer, SampleFailed, UnsupportedMethod

FAMILIES: dict[str, str] = {
    "baseline": "workbench.families.baseline:BaselineFamily",
    "kv": "workbench.families.kv:KVFamily",
    "prompt": "workbench.families.prompt:PromptFamily",
    "decoding": "workbench.families.decoding:DecodingFamily",
    "learned": "workbench.families.learned:LearnedFamily",
}
_loaded: dict[str, Family] = {}


def get(name: str) -> Family:
    """The family object for a method's ``family`` field."""
    if name not in _loaded:
        module, cls = FAMILIES[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


__all__ = ["FAMILIES", "Family", "Measurer", "SampleFailed", "UnsupportedMethod", "get"]
