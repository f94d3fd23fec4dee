"""`workbench analyze` on a real quickstart session (recorded from `workbench --preset quickstart`, the Inspect
examples left out), on two sessions of different plans, on input it cannot use; and the app's Analysis view
showing the numbers the CLI writes."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import synthetic_sessions as synth
from test_app_fakes import make_app, wait_for
from workbench import tables
from workbench.analysis import text
from workbench.analysis.cli import main
from workbench.plan import parse_plan
from workbench.session import Session

QUICKSTART = Path(__file__).parent / "data" / "quickstart_session.json"


@pytest.fixture()
def quickstart(tmp_path) -> Path:
    path = tmp_path / "quickstart.json"
    shutil.copy(QUICKSTART, path)
    return path


def _report(capsys, *args) -> tuple[int, dict | None, str]:
    code = main([*map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_quickstart_ranking_agrees_with_the_tables_means_where_the_paired_test_is_significant(quickstart, capsys):
    code, report, _ = _report(capsys, quickstart)
    assert code == 0
    session = Session.load(quickstart)
    dppl = tables.COLUMN_BY_KEY["dppl"].value
    table = {}
    for cell in session.cells.values():
        table.setdefault(cell["method"], {})[cell["rate"]] = dppl(cell)
    rank = {r["method"]: r["rank"] for r in report["paired"]["ranking"]}
    significant = [c for c in report["paired"]["comparisons"] if c["significant"]]
    assert len(significant) >= 10  # 4 samples × 3 rates: the paired test has something to say
    for c in significant:
        rates = c["rates"]
        mean = {m: sum(table[m][r] for r in rates) / len(rates) for m in (c["a"], c["b"])}
        worse = c["b"] if c["better"] == c["a"] else c["a"]
        assert mean[c["better"]] < mean[worse], c  # lower ΔPPL in the table
        assert rank[c["better"]] < rank[worse], c
    # Methods no test tells apart share a rank; the order within it follows the means.
    assert report["paired"]["ranking"][0]["rank"] == 1
    assert {r["method"] for r in report["paired"]["ranking"]} == set(report["methods"])


def test_quickstart_declines_r_star_per_method_with_the_reason_and_writes_png_and_markdown(quickstart, tmp_path, capsys):
    out, md, png = tmp_path / "r" / "report.json", tmp_path / "report.md", tmp_path / "thresholds.png"
    assert main([str(quickstart), "--out", str(out), "--markdown", str(md), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    for name, entry in report["methods"].items():
        th = entry["threshold"]
        assert th["status"] == "declined" and th["reason"] == (
            "4 rates (0.25, 0.5, 0.75 and the baseline's 1.0): locating a breakpoint needs at least 6")
        assert 0 < entry["auc"]["value"] <= 1.0 + 1e-9
    assert f"No r* for every method: {th['reason']}." in printed
    assert report["homogeneity"]["thresholds"]["status"] == "not tested"
    assert report["homogeneity"]["curves"]["status"] == "tested"
    assert report["interaction"]["reason"].startswith("one task type (language modelling: wikitext2)")
    assert report["libraries"]["statsmodels"] and report["libraries"]["piecewise-regression"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text_md = md.read_text()
    assert "## Verdict" in text_md and all(s in text_md for s in report["verdict"])
    # The AUC orders the methods as their mean loss does (more loss, less area).
    by_auc = sorted(report["methods"], key=lambda m: -report["methods"][m]["auc"]["value"])
    assert by_auc[0] in {"expected-attention", "snapkv"} and by_auc[-1] in {"naive", "random-kv", "random-prompt"}


def test_two_sessions_of_different_plans_compare_only_what_they_share(tmp_path, capsys):
    rng = np.random.default_rng(3)
    a = synth.write(tmp_path / "a.json", rng, {"snapkv": synth.kinked(0.4), "knorm": synth.straight})
    b = synth.write(tmp_path / "b.json", rng, {"snapkv": synth.kinked(0.4), "tova": synth.straight},
                    rates=synth.RATES[::2], samples=6)
    code, report, _ = _report(capsys, a, b)
    assert code == 0
    assert list(report["methods"]) == ["snapkv @ a", "snapkv @ b"]
    for entry in report["methods"].values():
        assert [p["rate"] for p in entry["curve"]] == [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
        assert entry["samples"] == 6  # the samples both sessions measured
    left = report["left_out"]
    assert "a: knorm @ 0.1 on wikitext2: not in every session" in left
    assert "b: tova @ 0.5 on wikitext2: not in every session" in left
    assert "a: snapkv @ 0.2 on wikitext2: not in every session" in left
    assert "a: snapkv @ 0.1 on wikitext2: 2 sample(s) not measured in every session" in left
    pair = report["paired"]["comparisons"][0]
    assert pair["n_pairs"] == 5 * 6
    # b's snapkv breaks (true r* 0.4, the interval holds it); a's interval reaches the lowest rate, so no r*
    th = report["methods"]["snapkv @ b"]["threshold"]
    assert th["ci"][0] <= 0.4 <= th["ci"][1]
    assert report["verdict"][0] == f"snapkv @ b holds quality down to r* = {text.r_star(th)} (Davies p < 0.001)."
    assert report["verdict"][1].startswith("No r* for snapkv @ a: no breakpoint supported: the slope changes")


def _session(tmp_path, name, samples=1, rates=(0.5,), finish=True) -> Path:
    doc = {"name": "small", "model": "smollm2-135m", "datasets": [{"name": "wikitext2", "samples": samples}],
           "protocol": {"context_tokens": 64, "continuation_tokens": 8}, "rates": list(rates), "methods": ["knorm", "snapkv"]}
    session = Session(parse_plan(doc, source="test"), tmp_path / name)
    if finish:
        for key, cell in session.cells.items():
            for i in range(samples):
                session.add_sample(key, {"sample_id": f"s{i}", "nll_sum": 8 * (3 + (1 - cell["rate"]) * (1 + i % 3)
                                                                                  + 0.1 * (cell["method"] == "knorm")),
                                         "n_tokens": 8})
            session.set_status(key, "done")
    session.save()
    session.release_lock()
    return tmp_path / name


def test_too_few_rates_or_samples_get_a_statement_per_test_not_a_traceback(tmp_path, capsys):
    code, report, err = _report(capsys, _session(tmp_path, "one.json", samples=1))
    assert code == 0 and err == ""
    th = report["methods"]["knorm"]["threshold"]
    assert th["reason"] == "2 rates (0.5 and the baseline's 1.0): locating a breakpoint needs at least 6"
    pair = report["paired"]["comparisons"][0]
    assert pair["p"] is None and pair["reason"].startswith("1 shared (rate, sample) pairs, 1 with a difference: the "
                                                           "paired test needs at least 6")
    assert report["paired"]["status"] == "not tested"
    assert report["homogeneity"]["curves"]["reason"] == "the methods share fewer than 2 rates: no curve shapes to compare"
    code, report, _ = _report(capsys, _session(tmp_path, "thin.json", samples=1, rates=(0.9, 0.7, 0.5, 0.3, 0.2)))
    assert report["methods"]["knorm"]["threshold"]["reason"].startswith("fewer than 2 samples at rate(s) 0.2, 0.3")
    assert report["homogeneity"]["curves"]["reason"].startswith("fewer than 2 samples in some (method, rate) cell")


@pytest.mark.parametrize("make,expected", [
    (lambda d: _session(d, "pending.json", samples=2, finish=False),
     "pending.json: field 'cells[].samples': no finished compressed cell has per-sample values"),
    (lambda d: (d / "bad.json").write_text("{not json") and d / "bad.json", "bad.json: "),
    (lambda d: d / "missing.json", "missing.json: no such session file"),
])
def test_input_it_cannot_use_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, make, expected):
    path = make(tmp_path)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_options_and_unwritable_outputs_exit_2_and_leave_nothing(quickstart, tmp_path, capsys):
    assert main([str(quickstart), "--alpha", "2"]) == 2
    (tmp_path / "folder.json").mkdir()
    assert main([str(quickstart), "--out", str(tmp_path / "folder.json")]) == 2
    err = capsys.readouterr().err
    assert "folder.json: cannot write" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left behind
    assert main([str(quickstart), "--metric", "score"]) == 2  # a perplexity session has no task scores
    assert "field 'cells': no finished compressed cell with a finished baseline has per-sample score values" in \
        capsys.readouterr().err
    rng = np.random.default_rng(0)
    a = synth.write(tmp_path / "a.json", rng, {"knorm": synth.straight})
    b = synth.write(tmp_path / "b.json", rng, {"snapkv": synth.straight})
    assert main([str(a), str(b)]) == 2
    assert "the sessions share no finished (model, dataset, method, rate) cell" in capsys.readouterr().err


def test_the_analysis_view_shows_the_numbers_of_the_cli_report(quickstart, tmp_path, capsys):
    from screens.analysis import AnalysisScreen, rows

    code, report, _ = _report(capsys, quickstart)
    assert code == 0

    async def go():
        app = make_app(tmp_path, session=str(quickstart))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session to open")
            await pilot.press("f7")
            await wait_for(pilot, lambda: isinstance(app.screen, AnalysisScreen) and app.screen.report is not None,
                           timeout=60, what="the analysis")
            screen = app.screen
            table = screen.query_one("#methods")
            shown = [tuple(str(v) for v in table.get_row_at(i)) for i in range(table.row_count)]
            assert shown == rows(report)
            # and those strings are the CLI report's numbers
            first = report["methods"]["random-kv"]
            assert shown[0][:4] == ("random-kv", "none", "—", text.auc(first["auc"]))
            verdict = str(screen.query_one("#verdict").render())
            assert all(sentence in verdict for sentence in report["verdict"])

    asyncio.run(go())


def test_the_analysis_view_adds_a_session_and_shows_what_the_cli_says_of_both(tmp_path, capsys):
    from screens.analysis import AnalysisScreen, rows

    rng = np.random.default_rng(5)
    a = synth.write(tmp_path / "a.json", rng, {"snapkv": synth.kinked(0.4), "knorm": synth.straight})
    b = synth.write(tmp_path / "b.json", rng, {"snapkv": synth.kinked(0.6)}, rates=synth.RATES[1:])
    code, report, _ = _report(capsys, a, b)
    assert code == 0 and list(report["methods"]) == ["snapkv @ a", "snapkv @ b"]

    async def go():
        app = make_app(tmp_path, session=str(a))
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session to open")
            assert "view: analysis" in [c.title for c in app.get_system_commands(app.screen)]
            await pilot.press("ctrl+p")
            await pilot.pause()
            await pilot.press(*"view: analysis")
            await pilot.pause(0.3)
            await pilot.press("enter")  # the command palette's way in; the other test presses F7
            await wait_for(pilot, lambda: getattr(app.screen, "report", None) is not None, timeout=60, what="the analysis")
            screen = app.screen
            assert isinstance(screen, AnalysisScreen) and list(screen.report["methods"]) == ["snapkv", "knorm"]
            await pilot.press("a")
            await pilot.pause()
            app.screen.query_one("#path").value = str(b)
            await pilot.press("enter")
            await wait_for(pilot, lambda: screen.report is not None and len(screen.report["sessions"]) == 2,
                           timeout=60, what="the analysis of both sessions")
            table = screen.query_one("#methods")
            assert [tuple(str(v) for v in table.get_row_at(i)) for i in range(table.row_count)] == rows(report)
            assert "2 sessions, 2 methods" in str(screen.query_one("#bar").render())
            found = report["methods"]["snapkv @ b"]["threshold"]
            assert found["status"] == "found" and rows(report)[1][1] == text.r_star(found)

    asyncio.run(go())


def test_a_real_nine_rate_sweep_locates_the_presses_thresholds(tmp_path, capsys):
    """A session recorded from the embedded model (WikiText-2, 8 samples of 1,024 + 128 tokens, KV presses at
    rates 0.1–0.9): the score-based presses break near a third of the cache kept, together; random eviction
    loses quality at every rate and no single breakpoint fits it; random eviction ranks last."""
    path = tmp_path / "kv-sweep.json"
    shutil.copy(Path(__file__).parent / "data" / "kv_sweep_session.json", path)
    code, report, _ = _report(capsys, path, "--plot", tmp_path / "t.png")
    assert code == 0
    for name in ("streaming-llm", "snapkv", "expected-attention"):
        th = report["methods"][name]["threshold"]
        assert th["status"] == "found" and 0.2 < th["ci"][0] < th["r_star"] < th["ci"][1] < 0.5, (name, th)
    assert report["methods"]["random-kv"]["threshold"]["status"] == "declined"
    hom = report["homogeneity"]["thresholds"]
    assert hom["status"] == "tested" and not hom["differ"]
    assert report["paired"]["ranking"][-1] == {**report["paired"]["ranking"][-1], "method": "random-kv", "rank": 4}
    assert report["verdict"][-1].endswith(f"(one shared threshold r*)\": not rejected ({text.p(hom['p'])}).")
