"""One registry over every method family, cheap to import (no torch, no kvpress).

A method is described by a :class:`MethodInfo`: its name, family, parameters with defaults, and
how the workbench's **rate** (fraction of tokens kept) reaches it. Families register their
methods here; the plan validates names and parameters against this table before anything heavy
is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("kv", "prompt")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    summary: str
    # Parameter name -> default. A value of NESTED means "another method spec" (a wrapped press).
    params: dict[str, Any] = field(default_factory=dict)
    # The parameter the rate is converted into (e.g. kvpress's compression_ratio = 1 - rate);
    # None for methods driven by their parameters alone (a threshold).
    rate_param: str | None = None
    # Names of parameters that hold a nested method spec (or a list of them).
    nested: tuple[str, ...] = ()
    # The class that implements it (a kvpress press class name, or a compressor class).
    implementation: str = ""
    # Why it cannot run offline, if it needs artefacts from the Hugging Face hub.
    needs_hub: str | None = None
    # Attention implementation it requires ("eager") or refuses ("!eager"), if any.
    attention: str | None = None
    aliases: tuple[str, ...] = ()
    # "module:Class" building the method where the workbench replaces the library's class (None: implementation).
    builder: str | None = None

    @property
    def rate_driven(self) -> bool:
        return self.rate_param is not None

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, unknown names refused, nested method specs resolved. Raises ValueError."""
        if self.rate_param and self.rate_param in given:
            raise ValueError(
                f"{self.name}: '{self.rate_param}' is set by the plan's rates (rate = fraction kept); list rates instead"
            )
        unknown = set(given) - set(self.params)
        if unknown:
            allowed = ", ".join(p for p in self.params if p != self.rate_param) or "none"
            raise ValueError(f"unknown parameter(s) {sorted(unknown)} for {self.name}; parameters: {allowed}")
        out: dict[str, Any] = {}
        for key, default in self.params.items():
            if key == self.rate_param:
                continue
            value = given.get(key, default)
            if key in self.nested and value is not None:
                value = (
                    [resolve_nested(v, f"{self.name}.{key}[{i}]") for i, v in enumerate(value)]
                    if isinstance(value, list)
                    else resolve_nested(value, f"{self.name}.{key}")
                )
            out[key] = value
        return out


def resolve_nested(spec: Any, where: str) -> dict[str, Any]:
    """A wrapped method given as a name or {"name":..., "params":...}, resolved like a top-level one."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{where}: expected a method name or an object with 'name' and 'params'")
    info = lookup(spec["name"], "kv")
    params = info.resolve_params(spec.get("params", {}))
    return {"name": info.name, "params": params}


def _normalise(name: str) -> str:
    n = name.strip().lower().replace("_", "-").replace(" ", "-")
    for suffix in ("-press", "press"):
        if n.endswith(suffix) and len(n) > len(suffix):
            n = n[: -len(suffix)]
    return n


def _tables() -> dict[str, dict[str, MethodInfo]]:
    from workbench.methods import presses

    tables = {"kv": presses.PRESSES}
    try:
        from workbench.methods import prompt  # the prompt-compressor family, when present
    except ImportError:
        pass
    else:
        tables["prompt"] = prompt.COMPRESSORS
    return tables


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
