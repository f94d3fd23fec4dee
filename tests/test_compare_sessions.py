"""scripts/compare_sessions.py: the check that a refactoring leaves every number where it was."""

from __future__ import annotations

import json
import subprocess
import sys

from test_engine import tiny_plan
from workbench import runner
from workbench.plan import parse_plan

from conftest import REPO_ROOT

SCRIPT = str(REPO_ROOT / "scripts" / "compare_sessions.py")


def _compare(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_two_runs_of_one_plan_are_bitwise_equal_and_a_changed_sample_is_found(tiny_llama_dir, tmp_path):
    plan = parse_plan(tiny_plan(tiny_llama_dir))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    runner.run(plan, out=str(a))
    runner.run(parse_plan(tiny_plan(tiny_llama_dir)), out=str(b))
    same = _compare(a, b)
    assert same.returncode == 0 and "bitwise equal" in same.stdout, same.stdout

    data = json.loads(b.read_text())
    cell = next(c for c in data["cells"] if c["method"] != "baseline" and c["samples"])
    cell["samples"][0]["nll_sum"] *= 1 + 1e-12  # far below any figure a table prints
    b.write_text(json.dumps(data))
    changed = _compare(a, b)
    assert changed.returncode == 1 and "1 differ" in changed.stdout and cell["key"] in changed.stdout
    assert _compare(a, b, "--tolerance", "1e-9").returncode == 0  # within a stated tolerance it passes
    assert _compare(a, tmp_path / "missing.json").returncode == 2
