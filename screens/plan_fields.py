"""Plan field paths (``methods[4].rates[0]``, the engine's PlanError.field_path) in the words of the Setup
screen: which tab, which method, which field — what the user typed, not where it sits in a list.
Pure functions, no Textual."""

from __future__ import annotations

import re

ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_INDEX = re.compile(r"^(\w+)\[(\d+)\](.*)$")


def ordinal(i: int) -> str:
    return ORDINALS[i] if i < len(ORDINALS) else f"#{i + 1}"


def _method(entry: dict) -> str:
    """A method as the Methods tab lists it: its label when it has one, its name, and the family when the
    name is shared (random)."""
    from workbench.plan import default_label

    label = entry.get("label") or default_label(entry["name"], entry["family"])
    return f"method '{label}'" if label == entry["name"] else f"method '{label}' ({entry['name']}, {entry['family']})"


def describe(path: str | None, doc: dict, labels: dict[str, str]) -> str:
    """``path`` in Setup's words. ``doc`` is the plan document the form built, ``labels`` {field path: the
    field's label on screen} for the fields that are one input (``protocol.context_tokens`` → 'Context tokens')."""
    if not path or path == "(top level)":
        return "the plan"
    match = _INDEX.match(path)
    if match and match[1] == "methods" and int(match[2]) < len(doc.get("methods", [])):
        entry, rest = doc["methods"][int(match[2])], match[3].lstrip(".")
        where = f"Methods tab, {_method(entry)}"
        if not rest:
            return where
        field, _, sub = rest.partition(".")
        inner = _INDEX.match(field)
        if inner and inner[1] == "rates":
            return f"{where}, its rates ({ordinal(int(inner[2]))} value)"
        if field == "params" and sub:
            return f"{where}, parameter {sub.split('.')[0].split('[')[0]}"
        return f"{where}, {'parameters' if field == 'params' else field}"
    if match and match[1] == "datasets" and int(match[2]) < len(doc.get("datasets", [])):
        name, rest = doc["datasets"][int(match[2])]["name"], match[3].lstrip(".")
        return f"Datasets tab, {name}" + (f", {rest}" if rest and rest != "name" else "")
    if match and match[1] == "rates":
        return f"{labels.get('rates', 'Rates')}, {ordinal(int(match[2]))} value"
    for key in sorted(labels, key=len, reverse=True):  # the most specific field first
        if path == key or path.startswith(key + ".") or path.startswith(key + "["):
            return labels[key]
    return path


def message(err, doc: dict, labels: dict[str, str]) -> str:
    """A PlanError's message with its field path put in Setup's words (and without the 'setup: ' source)."""
    text = str(err)
    prefix = f"{err.source}: " if getattr(err, "source", None) else ""
    text = text.removeprefix(prefix)
    path = getattr(err, "field_path", None)
    if path and text.startswith(f"field '{path}': "):
        text = f"{describe(path, doc, labels)}: " + text[len(f"field '{path}': "):]
    return text
