"""80 columns, the size that must stay usable: method names are never cut (session names and units are
shortened instead), Results keeps Status and Family and the footer keeps ^o Open, Inspect's and Setup's
labels fit. Checked on what the terminal shows (the app's own screenshot as text)."""

from __future__ import annotations

import asyncio

from test_app_fakes import FakeRunner, make_app, saved_session, screen_text, setup_ready, wait_for

# quickstart's shape: KV presses and prompt compressors (two methods named random), a long plan name.
MIXED = {"name": "quickstart-mixed", "model": "smollm2-135m", "datasets": [{"name": "wikitext2", "samples": 2}],
         "protocol": {"context_tokens": 256, "continuation_tokens": 32}, "rates": [0.75, 0.5, 0.25],
         "methods": [{"name": "random", "family": "kv"}, "streaming-llm", "snapkv", "expected-attention", "knorm", "tova",
                     {"name": "random", "family": "prompt"}, "naive", "selective-context"]}
UNAVAILABLE = {"selective-context": "needs a scoring model that is not cached here"}


def drive(coro):
    return asyncio.run(coro)


def test_results_at_80_columns_keep_names_status_family_and_open(tmp_path):
    session = saved_session(tmp_path / "sessions" / "quickstart-mixed-20261122-101500.json",
                            runner=FakeRunner(unavailable=UNAVAILABLE), plan_doc=MIXED)

    async def go():
        app = make_app(tmp_path, session=session)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session")
            await pilot.press("f4")
            await pilot.pause(0.3)
            lines = screen_text(app)
            header = next(line for line in lines if line.lstrip().startswith("Method"))
            for column in ("Rate", "PPL", "ΔPPL", "Status", "Family"):
                assert column in header, header
            body = "\n".join(lines)
            for name in ("random-kv", "random-prompt", "expected-attention", "selective-context"):
                assert f" {name} " in body, name
            assert "^o Open" in lines[-1]
            assert max(len(line) for line in lines) <= 80

    drive(go())


def test_compare_at_80_columns_shortens_session_names_never_method_names(tmp_path):
    folder = tmp_path / "sessions"
    a = saved_session(folder / "quickstart-mixed-20261122-101500.json", plan_doc=MIXED)
    b = saved_session(folder / "quickstart-mixed-20261122-113000.json", plan_doc=MIXED)

    async def go():
        app = make_app(tmp_path, session=a)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session")
            await pilot.press("f5")
            await pilot.pause()
            app.screen.add_session(b)
            await pilot.pause(0.3)
            table = app.screen.query_one("DataTable")
            methods = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
            assert {"random-kv", "random-prompt", "expected-attention"} <= methods
            bar = screen_text(app)[1]
            assert "A: " in bar and "B: " in bar and "101500" in bar and "113000" in bar  # told apart by what differs
            assert [str(c.label) for c in table.columns.values()][:4] == ["Method", "Rate", "ΔPPL A", "ΔPPL B"]

    drive(go())


def test_inspect_header_fits_and_says_what_is_struck_out(tmp_path):
    session = saved_session(tmp_path / "sessions" / "quickstart-mixed-20261122-101500.json",
                            runner=FakeRunner(unavailable=UNAVAILABLE), plan_doc=MIXED)

    async def go():
        app = make_app(tmp_path, session=session)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session")
            await pilot.press("f6")
            await pilot.pause(0.3)
            bar = screen_text(app)[1]
            assert bar.strip().startswith("struck out: what 2 method(s) dropped at rate 0.75") and not bar.endswith("…")

    drive(go())


def test_setup_protocol_labels_are_not_cut(tmp_path):
    async def go():
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await setup_ready(pilot)
            app.screen.query_one("#tabs").active = "tab-rates"
            await pilot.pause(0.2)
            protocol = next(line for line in screen_text(app) if "Protocol" in line)
            assert "context→continuation" in protocol and "…" not in protocol and "decoding" in protocol

    drive(go())


def test_inspect_never_shows_select_null_and_explains_unavailable_compressors(tmp_path):
    prompt_only = {**MIXED, "name": "prompt-only", "methods": [{"name": "random", "family": "prompt"}, "naive"]}
    working = saved_session(tmp_path / "ok.json", plan_doc=prompt_only)
    blocked = saved_session(tmp_path / "blocked.json", plan_doc=prompt_only,
                            runner=FakeRunner(unavailable={"random-prompt": "needs the hub"}, fail={"naive": "boom"}))

    async def go():
        app = make_app(tmp_path, session=working)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: app.session is not None, what="the session")
            await pilot.press("f6")
            await pilot.pause(0.2)
            from textual.widgets import Select

            app.screen.query_one("#rate", Select).clear()  # the blank entry of the rate list
            app.screen.query_one("#sample", Select).clear()
            await pilot.pause(0.2)
            bar = str(app.screen.query_one("#bar").render())
            assert "Select.NULL" not in bar and "at all rates" in bar and "sample 1/2" in bar
            assert len(app.screen.query(".panel")) == 6  # two methods at three rates
            app.open_session(blocked)
            await pilot.pause(0.2)
            await pilot.press("f6")
            await pilot.pause(0.2)
            empty = str(app.screen.query_one("#empty").render())
            assert "No prompt-compression cells in this session" not in empty
            assert "random-prompt @ 0.75: unavailable here — needs the hub" in empty
            assert "naive @ 0.50: failed — boom" in empty

    drive(go())


def test_the_view_bar_lists_every_view_where_the_line_has_room(tmp_path):
    """At 80 columns the bar holds the six everyday views and Help (F7/F8 are in help and the palette); from ~102
    columns every view is listed; the current view is listed where it fits."""
    import asyncio

    from test_app_fakes import make_app, setup_ready

    def bar(app) -> str:
        return str(app.screen.query_one("ViewBar").render())

    async def go(tmp, size):
        app = make_app(tmp)
        async with app.run_test(size=size) as pilot:
            await setup_ready(pilot)
            seen = [bar(app)]
            await pilot.press("f8")
            await pilot.pause()
            seen.append(bar(app))
            return seen

    narrow = asyncio.run(go(tmp_path / "narrow", (80, 24)))
    wide = asyncio.run(go(tmp_path / "wide", (120, 30)))
    assert "F7 Analysis" not in narrow[0] and "F8 Train" not in narrow[0] and narrow[0].rstrip().endswith("F1 Help")
    assert narrow[1] == narrow[0]  # no room for the current one beside the six and Help: the line is not cut
    assert all("F7 Analysis" in line and "F8 Train" in line and line.rstrip().endswith("F1 Help") for line in wide)
