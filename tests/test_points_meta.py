"""The meta-analysis of compression points: categories by rules over the text around each point, counts per
method, accuracy by number of compressions — on sessions written by the real Session class, headless
(`workbench points-meta`) and in the app's Analysis view (`c`) at 80×24."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import synthetic_sessions as synth
from test_app_fakes import make_app, wait_for

from workbench.plan import parse_plan
from workbench.points import meta
from workbench.points.meta_cli import main
from workbench.session import Session

TEXT = ("Natalia sold 48/2 = 24 clips in May.\n"  # a calculation ends at the full stop
        "She sold 48 clips in April and 24 clips in May.\n"  # a restatement: 48 and 24 were said
        "Next she counts them all.\n"  # no number, a line end: a new step
        "So she sold 48+24 = 72 clips.\n"  # a conclusion
        "#### 72")


def _at(text: str, after: str) -> int:
    """The character offset right after the first occurrence of ``after``."""
    return text.index(after) + len(after)


def test_categories_follow_the_rules_in_order():
    assert meta.category(TEXT, _at(TEXT, "in May.")) == "calculation"
    assert meta.category(TEXT, _at(TEXT, "in May.\n")) == "calculation"  # the same sentence, after its line end
    assert meta.category(TEXT, _at(TEXT, "April and 24 clips in May.")) == "restatement"
    assert meta.category(TEXT, _at(TEXT, "them all.")) == "new step"
    assert meta.category(TEXT, _at(TEXT, "72 clips.")) == "conclusion"
    assert meta.category(TEXT, _at(TEXT, "She sold")) == "other"  # mid-sentence, before any number of its own
    assert meta.category("The answer is 5", 15) == "conclusion"
    assert meta.last_sentence("One. Two is 2.\n") == "Two is 2."


def write_session(path, records: dict[str, list[tuple[str, list[int], float]]]):
    """A finished task session whose cells (one per method) hold decoding-style sample records:
    method -> [(generated text, character offsets of the points, score)]."""
    n = max(map(len, records.values()))
    doc = {"name": "decoding-meta", "model": "smollm2-135m", "datasets": [{"name": "gsm8k", "samples": n}],
           "protocol": {"name": "task", "max_new_tokens": 64}, "rates": [0.5], "methods": list(records)}
    session = Session(parse_plan(doc, source="test"), path)
    for key, cell in session.cells.items():
        for i, (text, chars, score) in enumerate(records.get(cell["method"], [])):
            session.add_sample(key, {"sample_id": f"gsm8k#{i}", "nll_sum": None, "n_tokens": 0, "score": score,
                                     "metric": "accuracy", "generated_text": text,
                                     "compression_points": [10 * j for j in range(len(chars))],
                                     "compression_chars": chars, "prefill_seconds": 0.01, "scoring_seconds": 0.01,
                                     "path": "per-rate"})
        session.set_status(key, "done")
    session.status = "finished"
    session.save()
    session.release_lock()
    return path


def _records():
    every_line = [_at(TEXT, "May.\n"), _at(TEXT, "April and 24 clips in May.\n"), _at(TEXT, "all.\n"), _at(TEXT, "clips.\n")]
    return {"knorm": [(TEXT, every_line, 1.0), (TEXT, every_line[:2], 0.0), (TEXT, [], 1.0)],
            "snapkv": [(TEXT, [_at(TEXT, "She sold")], 0.0), (TEXT, every_line, 1.0), (TEXT, every_line, 0.0)]}


def test_counts_per_method_and_accuracy_by_number_of_compressions(tmp_path, capsys):
    path = write_session(tmp_path / "s.json", _records())
    report = meta.analyse(Session.load(path))
    knorm, snapkv = report["methods"]["knorm"], report["methods"]["snapkv"]
    assert knorm["points"] == 6 and knorm["categories"] == {"calculation": 2, "conclusion": 1, "restatement": 2,
                                                           "new step": 1, "other": 0}
    assert snapkv["categories"]["other"] == 1 and snapkv["points"] == 9
    assert knorm["accuracy"] == 2 / 3 and snapkv["accuracy"] == 1 / 3
    bins = {b["compressions"]: b for b in report["bins"]}
    assert bins["0"]["samples"] == 1 and bins["0"]["accuracy"] == 1.0
    assert bins["1-2"]["samples"] == 2 and bins["1-2"]["accuracy"] == 0.0  # knorm's 2 points and snapkv's 1, both wrong
    assert bins["3-5"]["samples"] == 3 and bins["3-5"]["accuracy"] == 2 / 3
    assert bins["3-5"]["per_method"]["snapkv"] == {"samples": 2, "scored": 2, "accuracy": 0.5}

    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == meta.text(report) and all(len(line) <= 78 for line in out.splitlines())
    assert "knorm                   6   2.0 0.667   33%   17%    33%  17%    0%" in out
    assert main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["methods"]["knorm"]["points"] == 6


def test_a_session_without_points_or_a_file_that_is_no_session_is_refused(tmp_path, capsys):
    plain = synth.write_scores(tmp_path / "plain.json", np.random.default_rng(0), {"knorm": {"gsm8k": 0.5}}, samples=4)
    assert main([str(plain)]) == 2
    assert "field 'cells[].samples[].compression_points': no cell records compression points" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main([str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "Traceback" not in err


def test_the_analysis_view_shows_the_points_at_80_by_24(tmp_path):
    from screens.analysis import AnalysisScreen

    path = write_session(tmp_path / "s.json", _records())
    expected = meta.text(meta.analyse(Session.load(path)))

    async def go():
        app = make_app(tmp_path, session=str(path))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session to open")
            await pilot.press("f7")
            await wait_for(pilot, lambda: isinstance(app.screen, AnalysisScreen), what="the Analysis view")
            await pilot.press("c")
            await pilot.pause()
            shown = str(app.screen.query_one("#points-report").render())
            assert shown == expected
            assert app.screen.query_one("#below").current == "points"
            # every line fits the pane at 80 columns (nothing wraps)
            assert app.screen.query_one("#points-report").size.width >= max(map(len, expected.splitlines()))
            await pilot.press("c")
            assert app.screen.query_one("#below").current == "tests"

    asyncio.run(go())
