"""The engine's boundaries, checked by the build: import contracts, no circles, a dry run without torch,
validation without file reads, and no method or protocol named where the engine schedules and measures."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([*LINT_IMPORTS, "--no-cache"], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_import_contracts_hold():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("violation,contract", [
    ("workbench/plan.py", "The engine never imports the UI"),
    ("workbench/runner.py", "Torch, transformers and the method libraries only in the modules that compute"),
    ("workbench/schedule.py", "No import circles between the modules of a package"),
])
def test_a_violation_breaks_the_build(tmp_path, violation, contract):
    """The contracts fail on a violation: a copy of the sources with one forbidden import added."""
    for name in ("workbench", "screens"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    line = {"workbench/plan.py": "import textual\n", "workbench/runner.py": "import torch\n",
            "workbench/schedule.py": "from workbench import runner\n"}[violation]  # runner imports schedule: a circle
    target = tmp_path / violation
    target.write_text(target.read_text() + "\n" + line)
    result = _lint_imports(tmp_path)
    assert result.returncode == 1
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken


def test_dry_run_imports_no_torch_and_reads_no_dataset():
    code = ("import sys, builtins; from workbench.cli import main; opened = []\n"
            "real = builtins.open\n"
            "def spy(f, *a, **k):\n"
            "    opened.append(str(f)); return real(f, *a, **k)\n"
            "builtins.open = spy\n"
            "code = main(['--dry-run', '--preset', 'quickstart'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'kvpress', 'llmlingua', 'textual') if m in sys.modules]\n"
            "data = [f for f in opened if '/data/' in f]\n"
            "print('RESULT', code, heavy, data)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO).stdout
    assert "RESULT 0 [] []" in out, out


def test_validation_reads_no_file_after_the_first(tmp_path):
    """The Setup screen validates on every keystroke: the second validation of a plan opens no file."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"context": "Paris is in France.", "question": "Where is Paris?", "answers": ["France"]}\n')
    plan = {"name": "v", "model": "smollm2-135m", "datasets": ["gsm8k", str(qa)], "protocol": {"name": "task"},
            "methods": ["snapkv", "selective-context", {"name": "adakv", "params": {"press": "knorm"}}], "rates": [0.5]}
    code = ("import json, sys\n"
            "from workbench.plan import parse_plan\n"
            f"plan = json.loads({repr(__import__('json').dumps(plan))})\n"
            "parse_plan(plan)\n"
            "opened = []\n"
            "sys.addaudithook(lambda event, args: opened.append(args[0]) if event == 'open' else None)\n"
            "parse_plan(plan); parse_plan(plan)\n"
            "print('OPENED', opened)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "OPENED []" in out.stdout, out.stdout + out.stderr


def _code(path: Path) -> str:
    """A module's code without its comments (a name quoted in a string counts: that is how a branch on it reads)."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def test_no_press_name_in_the_modules_that_schedule_and_measure():
    from workbench.methods.presses import PRESSES

    names = {name for name in PRESSES if len(name) > 3}  # 'cur', 'cam' are ordinary words too
    for module in ("runner.py", "evaluate.py", "kv_eval.py", "task_eval.py", "schedule.py", "families/kv.py"):
        code = _code(REPO / "workbench" / module)
        found = [n for n in names if re.search(rf"""["']{re.escape(n)}["']""", code)]
        assert not found, f"{module} names presses {found}: write the trait on the registry entry instead"


def test_the_runner_branches_on_no_family_or_protocol_name():
    from workbench.families import FAMILIES
    from workbench.protocols import PROTOCOLS

    code = _code(REPO / "workbench" / "runner.py")
    for name in [*FAMILIES, *PROTOCOLS]:
        assert not re.search(rf"""["']{re.escape(name)}["']""", code), f"runner.py names {name!r}"
