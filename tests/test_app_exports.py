"""Exports from the Results view, checked against what the screen shows and against figures worked out here
from the fake runner's definitions — never against the functions that wrote the files."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math

import pytest

from test_app_fakes import BASE_NLL, FakeRunner, make_app, run_and_show_results, run_to_end, wait_for
from workbench.session import Session

FAILING = dict(fail={"snapkv": "RuntimeError: shapes do not match"}, unavailable={"tova": "needs the hub"})
SECONDS_PER_SAMPLE = 0.01 * 1024 / 64 + 0.002 * 128  # the fake's prefill + scoring seconds of one sample


def approx(value):
    return pytest.approx(value, rel=1e-9)


def fake_ppl(method: str, rate: float) -> float:
    """The fake runner's perplexity of a cell: exp(BASE_NLL + penalty), penalty 0.6·(1 − rate)^1.5 for random."""
    weight = 0.6 if method.startswith("random") else 0.1 + 0.07 * (sum(map(ord, method)) % 5)
    return math.exp(BASE_NLL + weight * (1 - rate) ** 1.5)


def export(tmp_path, fmt: str, path: str | None = None):
    """Run the demo plan, sort Results by ΔPPL (descending), export ``fmt``; returns (file text, the rows of the
    table on screen as (method, rate text), the path offered, the app's session path)."""

    async def go():
        app = make_app(tmp_path, FakeRunner(**FAILING))
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            results = await run_and_show_results(pilot)
            column = [c.key for c in results.columns].index("dppl") + 1
            await pilot.press(str(column), str(column))  # sort by ΔPPL, then reverse: largest first
            await pilot.pause()
            table = results.query_one("DataTable")
            shown = [(str(table.get_row_at(i)[0]).strip(), str(table.get_row_at(i)[1]).strip()) for i in range(table.row_count)]
            await pilot.press("ctrl+e")
            await pilot.pause()
            radios = list(app.screen.query("RadioButton"))
            radios[["csv", "md", "json"].index(fmt)].value = True
            await pilot.pause()
            field = app.screen.query_one("#path")
            offered = field.value
            if path:
                field.value = path
            await pilot.press("enter")
            await wait_for(pilot, lambda: not app.screen.is_modal, what="the export dialog to close")
            session_path = app.session.path
            return open(path or offered, encoding="utf-8", newline="").read(), shown, offered, session_path

    return asyncio.run(go())


def test_csv_rows_follow_the_screen_and_carry_the_figures(tmp_path):
    text, shown, offered, _ = export(tmp_path, "csv")
    assert offered.endswith("demo-test.csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["method"], f"{float(r['rate']):.2f}" if r["rate"] else "1.00") for r in rows] == shown  # the on-screen order
    assert shown[0] == ("random-kv", "0.25") and {m for m, _ in shown[-6:]} == {"snapkv", "tova"}  # no ΔPPL: last
    by = {(r["method"], r["rate"]): r for r in rows}
    baseline = by[("baseline", "1.0")]
    assert float(baseline["ppl"]) == approx(math.exp(BASE_NLL))
    assert float(baseline["delta_ppl"]) == 0.0 and float(baseline["delta_ppl_pct"]) == 0.0  # as the table's +0.000
    worst = by[("random-kv", "0.25")]
    assert float(worst["ppl"]) == approx(fake_ppl("random-kv", 0.25))
    assert float(worst["delta_ppl"]) == approx(fake_ppl("random-kv", 0.25) - math.exp(BASE_NLL))
    assert float(worst["kept_fraction"]) == 0.25 and worst["status"] == "done"
    assert float(worst["seconds_per_sample"]) == approx(SECONDS_PER_SAMPLE)
    assert float(worst["seconds"]) == approx(4 * SECONDS_PER_SAMPLE)  # the cell's total, 4 samples
    assert by[("snapkv", "0.5")]["status"] == "error" and "shapes do not match" in by[("snapkv", "0.5")]["error"]
    assert by[("tova", "0.5")]["status"] == "unavailable" and by[("tova", "0.5")]["reason"] == "needs the hub"
    assert by[("snapkv", "0.5")]["ppl"] == ""


def test_markdown_has_the_table_columns_units_and_order(tmp_path):
    text, shown, offered, _ = export(tmp_path, "md")
    assert offered.endswith("demo-test.md")
    lines = text.splitlines()
    assert "| Method | Rate | Kept | PPL | ΔPPL | ΔPPL % | KV bytes | Time/sample | Status |" in lines  # no Score column
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Method")]
    assert [tuple(cell.strip() for cell in row.strip("|").split("|")[:2]) for row in rows] == shown
    assert rows[0] == "| random-kv | 0.25 | 0.250 | 17.988 | +5.806 | +47.7% | 11.2 MiB | 0.42s | done |"
    assert "| baseline | 1.00 | 1.000 | 12.182 | +0.000 | +0.0% | 45.0 MiB | 0.42s | done |" in rows
    assert "| snapkv | 0.50 | — | — | — | — | — | — | error |" in rows
    assert "- snapkv @ 0.50: error: RuntimeError: shapes do not match" in lines
    assert lines[-1] == "13/19 cells done, 3 failed, 3 unavailable"


def test_json_export_offers_a_new_name_never_the_live_session_file(tmp_path):
    text, _, offered, session_path = export(tmp_path, "json")
    assert offered.endswith("demo-test-export.json") and offered != str(session_path)
    exported = Session.from_dict(json.loads(text))
    live = Session.load(session_path)
    assert exported.cells.keys() == live.cells.keys()
    assert {k: c["ppl"] for k, c in exported.cells.items()} == {k: c["ppl"] for k, c in live.cells.items()}


def test_exporting_over_the_session_file_is_refused(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await run_to_end(pilot)
            before = app.session.path.read_text()
            app.export("json", str(app.session.path))
            await pilot.pause()
            from screens.dialogs import ErrorModal

            assert isinstance(app.screen, ErrorModal)
            assert "this session's own file" in str(app.screen.query_one("#error-message").render())
            assert app.session.path.read_text() == before

    asyncio.run(go())
