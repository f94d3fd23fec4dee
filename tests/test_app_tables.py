"""One home for each number and each wording: cell counts, table columns, the views; the UI package without
import circles; machine figures out of what tests see. Pure functions first, then two small app checks."""

from __future__ import annotations

import ast
import asyncio
import pathlib
import subprocess
import sys

from test_app_fakes import FIXED_MEMORY, FakeRunner, make_app, run_to_end, saved_session, screen_text, wait_for
from workbench import figures, report, tables

SCREENS = pathlib.Path(__file__).resolve().parents[1] / "screens"


def cells(*statuses: str) -> list[dict]:
    return [{"status": s, "samples_total": 4, "samples_done": 4 if s == "done" else 0, "method": "m", "dataset": "d"}
            for s in statuses]


def test_the_open_dialogs_two_examples_read_one_way():
    assert tables.counts_text(figures.cell_counts(cells(*["error"] * 28))) == "0/28 cells done, 28 failed"
    assert tables.counts_text(figures.cell_counts(cells("done", "done", "unavailable", "unavailable"))) == \
        "2/4 cells done, 2 unavailable"
    assert tables.cells_text(cells("done", "cancelled", "pending", "error")) == "1/4 cells done, 1 failed, 2 to run"
    assert figures.sample_counts(cells("done", "error", "pending")) == (8, 12)  # settled cells count whole
    assert figures.measured_samples(cells("done", "error", "pending")) == 4


def test_a_task_session_has_score_columns_and_a_perplexity_one_has_none():
    ppl = saved_session(None)
    task = saved_session(None, plan_doc={"name": "t", "model": "smollm2-135m", "datasets": [{"name": "gsm8k", "samples": 2}],
                                         "protocol": {"name": "task", "max_new_tokens": 8}, "rates": [0.5],
                                         "methods": ["knorm"]})
    assert "Score" not in report.markdown_table(ppl).splitlines()[2]
    header = report.markdown_table(task).splitlines()[2]
    assert "| Score | ΔScore |" in header and "PPL" not in header
    text = report.text_table(ppl).splitlines()
    assert "Time/sample" in text[1] and "Status" in text[1] and "Path" in text[1]


def test_columns_that_do_not_fit_go_least_needed_first_never_the_method():
    cols = tables.columns_for(cells("done"))
    widths = {c.key: 10 for c in cols}
    shown, dropped = tables.fit(cols, widths, room=11 * (len(cols) - 2))  # 10 wide and a gap: two must go
    assert [c.key for c in dropped] == ["dpct", "kv"]
    assert {"method", "rate", "status"} <= {c.key for c in shown}


def test_engine_modules_load_neither_textual_nor_rich():
    code = ("import sys, workbench.figures, workbench.tables, workbench.report, workbench.model_check; "
            "bad = [m for m in ('textual', 'rich', 'torch', 'huggingface_hub') if m in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _imports(path: pathlib.Path) -> set[str]:
    """screens.* modules a module imports, at its top or inside a function (a lazy import is still a circle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "screens":
                found |= {f"screens.{a.name}" for a in node.names}
            elif node.module.startswith("screens."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("screens.")}
    return found


def test_the_ui_package_has_no_import_circles():
    graph = {f"screens.{p.stem}": _imports(p) for p in SCREENS.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert circles == [], circles


def test_the_views_are_written_once():
    from screens import views
    from screens.app import WorkbenchApp

    assert set(WorkbenchApp.MODES) == {v.mode for v in views.MODES}
    keys = {b.key: b.action for b in WorkbenchApp.BINDINGS}
    assert all(keys[v.key.lower()] == f"view('{v.mode}')" for v in views.MODES)
    for path in SCREENS.glob("*.py"):
        if path.stem != "views":
            text = path.read_text(encoding="utf-8")
            assert '"F3"' not in text and "'F3'" not in text, f"{path.name} names a view's key itself"


def test_what_tests_see_carries_no_machine_figure(tmp_path):
    """The error-modal snapshot showed the process's RAM, which depends on what ran before: the memory line
    is the injected fixed figure, and the clock the fake runner's."""
    runner = FakeRunner(raise_at="model")

    async def go():
        app = make_app(tmp_path, runner)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            await wait_for(pilot, lambda: app.screen.is_modal, what="the error modal")
            await pilot.press("enter")
            await pilot.pause(1.2)  # the memory line is read again every second
            text = "\n".join(screen_text(app))
            assert FIXED_MEMORY in text and "RAM" not in text and "0m00s" in text

    asyncio.run(go())
