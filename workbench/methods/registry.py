"""One registry over every method family, cheap to import (no torch, no kvpress).

A method is described by a :class:`~workbench.methods.info.MethodInfo`: its name, family, parameters with
defaults, types and ranges, its traits, and how the workbench's **rate** (fraction of tokens kept) reaches
it. The registry finds methods by name and resolves their parameters (nested presses included); the plan
validates against it before anything heavy is imported.
"""

from __future__ import annotations

from typing import Any

from workbench.methods import learned, presses, prompt, schedules
from workbench.methods.info import NO_RULE, MethodInfo, ParamError

FAMILIES = ("kv", "prompt", "decoding", "learned")
_MAX_NESTING = 8  # presses inside presses: deeper is a mistake (or a hostile file), not a method


def resolve_params(info: MethodInfo, given: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """Defaults filled in, unknown names refused, types and ranges checked, nested method specs resolved.
    Raises ParamError naming the parameter."""
    if info.rate_param and info.rate_param in given:
        raise ParamError(info.rate_param, f"{info.name}: '{info.rate_param}' is set by the plan's rates (rate = fraction kept); "
                                          "list rates instead")
    unknown = set(given) - set(info.params)
    if unknown:
        allowed = ", ".join(p for p in info.params if p != info.rate_param) or "none"
        raise ParamError(sorted(unknown)[0], f"unknown parameter(s) {sorted(unknown)} for {info.name}; parameters: {allowed}")
    out: dict[str, Any] = {}
    for key, default in info.params.items():
        if key == info.rate_param:
            continue
        value = given.get(key, default)
        if key in info.nested and value is not None:
            if depth >= _MAX_NESTING:
                raise ParamError(key, f"presses nested more than {_MAX_NESTING} deep")
            value = (
                [resolve_nested(v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value)]
                if isinstance(value, list)
                else resolve_nested(value, key, depth + 1)
            )
        elif key not in info.nested:
            value = info.rules.get(key, NO_RULE).check(value, default, key)
        out[key] = value
    return out


def resolve_nested(spec: Any, where: str, depth: int = 1) -> dict[str, Any]:
    """A wrapped method given as a name or {"name":..., "params":...}, resolved like a top-level one."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or set(spec) - {"name", "params"}:
        raise ParamError(where, "expected a press name or an object with 'name' and 'params'")
    try:
        info = lookup(spec["name"], "kv")
    except KeyError as err:
        raise ParamError(f"{where}.name", err.args[0]) from None
    given = spec.get("params", {})
    if not isinstance(given, dict):
        raise ParamError(f"{where}.params", "params must be an object")
    try:
        params = resolve_params(info, given, depth)
    except ParamError as err:
        raise ParamError(f"{where}.params.{err.field}", str(err)) from None
    return {"name": info.name, "params": params}


def _normalise(name: str) -> str:
    n = name.strip().lower().replace("_", "-").replace(" ", "-")
    for suffix in ("-press", "press"):
        if n.endswith(suffix) and len(n) > len(suffix):
            n = n[: -len(suffix)]
    return n


def _tables() -> dict[str, dict[str, MethodInfo]]:
    return {"kv": presses.PRESSES, "prompt": prompt.COMPRESSORS, "decoding": schedules.SCHEDULES, "learned": learned.LEARNED}


def all_methods(family: str | None = None) -> list[MethodInfo]:
    return [info for fam, table in _tables().items() if family in (None, fam) for info in table.values()]


def lookup(name: str, family: str | None = None) -> MethodInfo:
    """Find a method by name (case, '_'/'-' and a 'Press' suffix do not matter). Raises KeyError with advice."""
    if family is not None and family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    wanted = _normalise(name)
    found = []
    for fam, table in _tables().items():
        if family not in (None, fam):
            continue
        for info in table.values():
            keys = {_normalise(info.name), _normalise(info.implementation), *(_normalise(a) for a in info.aliases)}
            if wanted in keys:
                found.append(info)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        fams = " or ".join(f'"{i.family}"' for i in found)
        raise KeyError(f"{name!r} names methods of several families: set \"family\": {fams}")
    names = ", ".join(sorted(i.name for i in all_methods(family)))
    raise KeyError(f"unknown method {name!r}; known methods: {names}")
