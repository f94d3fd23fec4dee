"""Random damage to a real session: loading it raises SessionError or gives a session that works.

"Works" means what the faces do with a loaded session: recompute its figures, print its table, and
write it back (JSON without NaN). No other exception may escape, whatever the document holds.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from real_session import session_doc
from workbench import report
from workbench.session import Session, SessionError

BASE = session_doc(Path(tempfile.mkdtemp(prefix="workbench-fuzz-")), "smollm2-135m")

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
                | st.sampled_from(["done", "running", "baseline", "knorm", "wikitext2", "1", "", "0.5", "kv", "prompt"])
                | st.sampled_from([0, 1, -1, 2, 0.5, 0.75, 1e308, -16, 10**12]))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


def _paths(value, prefix=()):
    """Every (container path, key) in the document."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(BASE) if p]


def _parent(doc, path):
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutations(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        try:
            parent = _parent(doc, path)
            key = path[-1]
            parent[key]  # noqa: B018 - the path may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        action = draw(st.sampled_from(["replace", "delete", "duplicate", "add-key"]))
        if action == "replace":
            parent[key] = draw(json_values)
        elif action == "delete":
            del parent[key]
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        elif action == "add-key" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=8))] = draw(json_values)
    return doc


def _works(session: Session) -> None:
    text = json.dumps(session.to_dict(), allow_nan=False, default=str)
    assert text
    report.text_table(session)
    for cell in session.cells.values():
        for name in ("ppl", "delta_ppl", "delta_ppl_pct", "kept_fraction", "kv_bytes"):
            value = cell.get(name)
            assert value is None or math.isfinite(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_from_dict_raises_session_error_or_works(doc):
    try:
        session = Session.from_dict(doc, "fuzzed.json")
    except SessionError as err:
        assert str(err).startswith("fuzzed.json")
        return
    _works(session)


@st.composite
def damaged_bytes(draw):
    raw = bytearray(json.dumps(BASE, indent=1).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del raw[at:at + draw(st.integers(1, 64))]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(damaged_bytes())
def test_load_of_damaged_bytes_raises_session_error_or_works(tmp_path, raw):
    path = tmp_path / "s.json"
    path.write_bytes(raw)
    try:
        session = Session.load(path)
    except SessionError as err:
        assert str(path) in str(err)
        return
    _works(session)


def test_the_base_document_loads():
    _works(Session.from_dict(copy.deepcopy(BASE), "base.json"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, object()])
def test_values_json_cannot_hold_are_refused(value):
    doc = copy.deepcopy(BASE)
    doc["cells"][1]["samples"][0]["nll_sum"] = value
    with pytest.raises(SessionError, match=r"cells\[1\]\.samples\[0\]\.nll_sum"):
        Session.from_dict(doc, "python.json")
