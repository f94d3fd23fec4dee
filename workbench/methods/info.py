"""What a method is, as data: its description, parameters with their types and ranges, and its traits.

Families describe their methods with :class:`MethodInfo` (``presses.py``, ``prompt.py``); the registry
(``registry.py``) finds them by name and resolves parameters. No torch, no library import here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class ParamError(ValueError):
    """A bad method parameter. ``field`` is its path below the method's ``params`` (e.g. ``press.params.window_size``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class ParamRule:
    """Type and range of one parameter. ``kind`` None: the default's type (a None default accepts anything
    unless a kind is given). Floats accept whole numbers; whole numbers refuse 5.0 and booleans."""

    kind: type | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False  # minimum excluded
    choices: tuple | None = None
    optional: bool = False  # None is accepted too
    item_minimum: float | None = None  # lists of numbers: each item's range
    item_maximum: float | None = None
    # A string naming a local folder: it must exist where the plan runs (preflight); a "module:function" here also
    # checks what is in it (raising ValueError naming the file), without torch.
    folder: bool | str = False

    def check(self, value: Any, default: Any, name: str) -> Any:
        kind = self.kind or (type(default) if default is not None else None)
        if value is None:
            if default is None or self.optional:
                return None
            raise ParamError(name, f"expected {_KIND_WORDS.get(kind, 'a value')}, got null")
        if self.choices is not None:
            if value not in self.choices:
                raise ParamError(name, f"expected one of {', '.join(map(repr, self.choices))}, got {value!r}")
            return value
        if kind is None and self.minimum is None and self.maximum is None:
            return value
        if kind is list:
            if not isinstance(value, list) or not value:
                raise ParamError(name, f"expected a non-empty list, got {value!r}")
            for i, item in enumerate(value):
                _number(item, f"{name}[{i}]", float, self.item_minimum, self.item_maximum, False)
            return value
        if kind is bool:
            if not isinstance(value, bool):
                raise ParamError(name, f"expected true or false, got {value!r}")
            return value
        if kind is str:
            if not isinstance(value, str):
                raise ParamError(name, f"expected a string, got {value!r}")
            return value
        return _number(value, name, int if kind is int else float, self.minimum, self.maximum, self.open_minimum)


_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", list: "a list"}


def _number(value: Any, name: str, kind: type, minimum, maximum, open_minimum: bool):
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (kind is int and not isinstance(value, int)):
        raise ParamError(name, f"expected {_KIND_WORDS[kind]}, got {value!r}")
    if minimum is not None and (value <= minimum if open_minimum else value < minimum):
        raise ParamError(name, f"must be {'greater than' if open_minimum else 'at least'} {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ParamError(name, f"must be at most {maximum:g}, got {value!r}")
    return value


NO_RULE = ParamRule()


@dataclass(frozen=True)
class MethodInfo:
    name: str
    family: str
    summary: str
    # Parameter name -> default. Parameters named in ``nested`` hold another method spec (a wrapped press).
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
    # What the engine needs to know about the method (its family's traits class, e.g. presses.PressTraits).
    traits: Any = None
    # Types and ranges of parameters beyond what their defaults say.
    rules: dict[str, ParamRule] = field(default_factory=dict)
    # A boolean parameter that, when true, makes a method driven by its parameters (a threshold) take the plan's
    # rates after all: it then meets each rate by setting that parameter per sample (DMS's ``match_rate``).
    rates_when: str | None = None
    # A parameter that, when set (not None), makes a rate-driven method driven by it instead (a decoding
    # schedule's fixed ``budget`` of tokens): its cells then have no rate.
    rates_unless: str | None = None

    @property
    def rate_driven(self) -> bool:
        return self.rate_param is not None

    def takes_rates(self, params: dict[str, Any]) -> bool:
        """Whether a method configured with ``params`` is measured at the plan's rates (else at its own settings)."""
        if self.rates_unless and params.get(self.rates_unless) is not None:
            return False
        return self.rate_driven or bool(self.rates_when and params.get(self.rates_when))
