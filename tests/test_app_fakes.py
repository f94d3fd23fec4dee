"""A fast fake of ``runner.run`` for the app's tests and benchmark (no tests in this module).

It follows the real runner's contract: the same event kinds in the same order (run-started,
model-loading, model-loaded, per cell-started, progress after every sample, cell-finished,
run-finished), real Session objects filled through Session.add_sample / set_status with sample
records shaped like evaluate.py's, the session saved after every sample when it has a path, the
cancel event checked between samples (running cells become 'cancelled', finished ones stay).

Figures are deterministic functions of (method, rate), so snapshots are stable: NLL grows as the rate
drops, more for 'random' than for the others; the KV budget is rate × context tokens.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

from workbench import figures
from workbench.model_check import KIND_TEXT, ModelCheck, check_model
from workbench.plan import BASELINE_LABEL, CellSpec, Plan
from workbench.families.prompt import EXAMPLES_PER_CELL
from workbench.runner import Event
from workbench.session import Session

BASE_NLL = 2.5  # nats per token: PPL ≈ 12.2

# The plan the app opens with in tests: quickstart's KV part, fixed here so that snapshots and counts do
# not change when the shipped preset does (test_app.py checks the real quickstart separately).
DEMO_PLAN = {
    "name": "demo", "description": "six KV presses at three rates (the tests' plan)", "model": "smollm2-135m",
    "datasets": [{"name": "wikitext2", "samples": 4, "seed": 0}],
    "protocol": {"name": "context-continuation", "context_tokens": 1024, "continuation_tokens": 128},
    "rates": [0.75, 0.5, 0.25],
    "methods": [{"name": "random", "family": "kv"}, "streaming-llm", "snapkv", "expected-attention", "knorm", "tova"],
}
DEMO_PRESET = Path(tempfile.mkdtemp(prefix="workbench-test-")) / "demo.json"
DEMO_PRESET.write_text(json.dumps(DEMO_PLAN))
atexit.register(shutil.rmtree, DEMO_PRESET.parent, True)
BYTES_PER_TOKEN = 2 * 30 * 3 * 64 * 4  # K and V, 30 layers, 3 KV heads, head_dim 64, float32


def penalty(method: str, rate: float | None) -> float:
    if rate is None:
        return 0.05
    weight = 0.6 if method.startswith("random") else 0.1 + 0.07 * (sum(map(ord, method)) % 5)
    return weight * (1 - rate) ** 1.5


def record(sample_id: str, method: str, rate: float | None, context: int, scored: int, path: str, task: bool = False) -> dict:
    """A sample record as evaluate.py (perplexity) or task_eval.py (task score) writes it."""
    kept = 1.0 if rate is None and method == BASELINE_LABEL else (rate if rate is not None else 0.6)
    tokens = kept * context
    loss = penalty(method, rate if method != BASELINE_LABEL else 1.0)
    budget = {"kept_fraction": kept, "kept_fraction_physical": kept, "kv_tokens_per_layer": tokens,
              "kv_bytes": int(tokens * BYTES_PER_TOKEN), "kv_bytes_physical": int(tokens * BYTES_PER_TOKEN),
              "prefill_seconds": 0.01 * context / 64, "path": path}
    if task:
        return {"sample_id": sample_id, "nll_sum": None, "n_tokens": 0, "score": max(0.0, 0.8 - loss), "metric": "accuracy",
                "generated": "42", "scoring_seconds": 0.05, **budget}
    return {"sample_id": sample_id, "nll_sum": scored * (BASE_NLL + loss), "n_tokens": scored,
            "scoring_seconds": 0.002 * scored, **budget}


class FakeRunner:
    """Callable like runner.run. Options:

    - ``delay``: seconds slept per sample (a worker that takes time, for cancel and stall tests);
    - ``fail``: {method label: message} — those cells end as 'error' (the run goes on);
    - ``unavailable``: {method label: reason} — those cells end as 'unavailable';
    - ``raise_at``: "model" raises while "loading the model" (a worker failure), like a bad model spec, with
      ``raise_message`` (default "could not load MODEL: fake failure");
    - ``pause_after``: after this many samples (an int, or several counts), set ``paused`` and wait until
      ``resume`` is set (then both are cleared and the run goes on) or the run is cancelled: deterministic
      points for a test to look at the screen or press keys during a run;
    - ``pause_in_load``: the same hold while "loading the model" (after the model-loading event);
    - ``load_seconds``: how far loading the model moves the fake clock (``now``; each sample moves it 0.5 s);
    - ``examples``: prompt-compression cells get an "examples" record (the Inspect screen's input).
    """

    def __init__(self, delay: float = 0.0, fail: dict | None = None, unavailable: dict | None = None,
                 raise_at: str | None = None, raise_message: str | None = None, pause_after=None,
                 pause_in_load: bool = False, load_seconds: float = 0.0, examples: bool = True):
        self.delay, self.fail, self.unavailable = delay, fail or {}, unavailable or {}
        self.raise_at, self.raise_message, self.examples = raise_at, raise_message, examples
        self.pause_after = {pause_after} if isinstance(pause_after, int) else set(pause_after or ())
        self.pause_in_load, self.load_seconds = pause_in_load, load_seconds
        self.paused, self.resume = threading.Event(), threading.Event()
        self.calls: list[Session] = []
        self.events: list[Event] = []
        self.thread: str | None = None
        self.holds = 0  # holds left so far
        self.now = 0.0  # a fake clock, seconds: 0.5 per sample; the app reads it (make_app), so times are stable

    def __call__(self, target: Plan | Session, on_event=None, cancel: threading.Event | None = None, out: str | None = None) -> Session:
        session = target if isinstance(target, Session) else Session(target, out)
        if out:
            session.path = Path(out)
        cancel = cancel or threading.Event()
        self.calls.append(session)
        self.thread = threading.current_thread().name
        started = self.now

        def emit(kind, message="", **data):
            event = Event(kind, message, data)
            self.events.append(event)
            if on_event:
                on_event(event)

        def save():
            if session.path is not None:
                session.save()

        plan = session.plan
        session.status = "running"
        todo = [c for c in session.cells.values() if c["status"] not in ("done", "unavailable")]
        emit("run-started", f"{len(todo)} of {len(session.cells)} cells to run", cells=len(session.cells), todo=len(todo))
        save()
        emit("model-loading", f"loading {plan.model}", model=plan.model)
        if self.pause_in_load:
            self._hold(cancel)
        self.now += self.load_seconds
        if self.raise_at == "model":
            message = self.raise_message or f"could not load {plan.model}: fake failure"
            session.status = "failed"
            for c in todo:
                session.set_status(c["key"], "error", error=f"model could not be loaded: {message}")
            save()
            raise RuntimeError(message)
        emit("model-loaded", f"{plan.model} on cpu (float32) in 0.1s", device="cpu", dtype="float32", n_layers=30)
        samples_seen = 0
        try:
            for ds in plan.datasets:
                groups = [(BASELINE_LABEL, "baseline", [1.0], None)]
                groups += [(m.label, m.family, m.rates if m.rates is not None else plan.rates, m) for m in plan.methods]
                for label, family, rates, method in groups:
                    if cancel.is_set():
                        break
                    keys = {r: CellSpec(plan.model, ds.name, label, family, r).key for r in rates}
                    keys = {r: k for r, k in keys.items() if session.cells[k]["status"] not in ("done", "unavailable")}
                    if not keys:
                        continue
                    for k in keys.values():
                        emit("cell-started", k, cell=k)
                    if label in self.unavailable or label in self.fail:
                        for k in keys.values():
                            if label in self.fail:
                                session.set_status(k, "error", error=self.fail[label])
                            else:
                                session.set_status(k, "unavailable", reason=self.unavailable[label])
                            emit("cell-finished", session.cells[k]["status"], cell=dict(session.cells[k]))
                        save()
                        continue
                    for i in range(ds.samples):
                        if cancel.is_set():
                            break
                        sid = f"{ds.name}:{ds.seed}:{i}"
                        for r, k in keys.items():
                            if sid in session.done_samples(k):
                                continue
                            path = "baseline" if label == BASELINE_LABEL else "shared-prefill"
                            rec = record(sid, label, r, plan.protocol.context_tokens, plan.protocol.continuation_tokens, path,
                                         task=plan.protocol.name == "task")
                            if family == "prompt" and self.examples and i < EXAMPLES_PER_CELL:  # as the real runner keeps them
                                rec["example"] = example(sid, r)
                            session.add_sample(k, rec)
                        save()
                        samples_seen += 1
                        self.now += 0.5
                        if self.delay:
                            time.sleep(self.delay)
                        done, total = figures.sample_counts(session.cells.values())
                        emit("progress", f"{label}: {sid}", done=done, total=total, cell=next(iter(keys.values())),
                             elapsed=self.now - started)
                        if samples_seen in self.pause_after:
                            self._hold(cancel)
                    if cancel.is_set():
                        break
                    for k in keys.values():
                        session.set_status(k, "done")
                        emit("cell-finished", "done", cell=dict(session.cells[k]))
                    save()
        finally:
            session.end_run(cancelled=cancel.is_set())
            save()
            emit("run-finished", session.status, status=session.status, failed=len(session.failed_cells()),
                 elapsed=self.now - started)
        return session


    def _hold(self, cancel: threading.Event, limit: float = 20.0) -> None:
        self.paused.set()
        deadline = time.monotonic() + limit  # a failing test never resumes: do not keep its app from closing
        while not (self.resume.is_set() or cancel.is_set() or time.monotonic() > deadline):
            time.sleep(0.005)
        self.resume.clear()
        self.paused.clear()
        self.holds += 1


ORIGINAL = ("The committee met on Tuesday to discuss the budget for the coming year. After a long debate, "
            "the members agreed to fund the new library and to postpone the road repairs until spring.")


def example(sample_id: str, rate: float) -> dict:
    """Drop every other word beyond the first ``rate`` share of words: spans of the original text."""
    words, pos = [], 0
    for w in ORIGINAL.split(" "):
        words.append((pos, pos + len(w)))
        pos += len(w) + 1
    keep = max(1, int(len(words) * rate))
    dropped = [[s, e + 1] for i, (s, e) in enumerate(words) if i >= keep and i % 2 == 1]
    compressed = "".join(ch for j, ch in enumerate(ORIGINAL) if not any(s <= j < e for s, e in dropped))
    return {"original": ORIGINAL, "compressed": compressed, "dropped": dropped}


def fixed_device() -> dict:
    """A device probe with fixed answers (snapshots must not depend on the machine)."""
    return {"device": "cpu", "dtype": "float32", "name": "CPU", "memory_bytes": 16 * 2**30, "cpus": 8}


FIXED_MEMORY = "memory 1.0 GiB (fixed in tests)"


def fixed_model_check(spec: str) -> ModelCheck:
    """The embedded model is available (whether or not its package is installed where the tests run); any other
    spec is checked for real (a folder, a file; a hub id with the hub switched off by the test)."""
    if spec == "smollm2-135m":
        return ModelCheck(True, "embedded", KIND_TEXT["embedded"])
    return check_model(spec)


def make_app(tmp_path, runner: FakeRunner | None = None, **kwargs):
    """The app as the tests drive it: every machine figure fixed (device, memory line, model check) and the
    clock the fake runner's, so what the screens show depends on the test only."""
    from screens.app import WorkbenchApp

    runner = runner or FakeRunner()
    if "sessions_dir" not in kwargs:
        kwargs["sessions_dir"] = tmp_path / "sessions"
    kwargs.setdefault("device_probe", fixed_device)
    kwargs.setdefault("memory_probe", lambda: FIXED_MEMORY)
    kwargs.setdefault("model_check", fixed_model_check)
    kwargs.setdefault("clock", lambda: runner.now)
    kwargs.setdefault("stamp", lambda: "test")
    kwargs.setdefault("theme", "textual-dark")
    kwargs.setdefault("preset", str(DEMO_PRESET))
    return WorkbenchApp(run_fn=runner, **kwargs)



async def wait_for(pilot, condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app process messages until ``condition()`` holds (workers post from other threads)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def setup_ready(pilot) -> None:
    """Until Setup holds the plan and has checked it (its hidden tabs are built just after the first frame)."""
    app = pilot.app
    await wait_for(pilot, lambda: app.plan is not None and getattr(app.screen, "_filled", False) and not app.model_checking,
                   what="Setup to be filled and its model checked")
    await pilot.pause(0.05)


async def run_to_end(pilot, timeout: float = 20.0) -> None:
    """Start nothing; wait until the current run's worker is over and its outcome handled."""
    app = pilot.app
    await wait_for(pilot, lambda: not app.run_after_model_check, timeout, "a ctrl+r waiting for the model check")
    await pilot.pause(0.05)
    await wait_for(pilot, lambda: not app.run_state.active and not any(w.group == "run" and not w.is_finished
                                                                        for w in app.workers), timeout, "the run to end")
    await pilot.pause(0.05)


async def run_and_show_results(pilot):
    """ctrl+r, wait for the run to end, show Results (F4); returns the Results screen."""
    await pilot.press("ctrl+r")
    await run_to_end(pilot)
    await pilot.press("f4")
    await pilot.pause()
    return pilot.app.screen


async def highlight_method(pilot, setup, name: str):
    """Show Setup's Methods tab with ``name`` highlighted in its list; returns the list."""
    setup.query_one("#tabs").active = "tab-methods"
    await pilot.pause()
    methods = setup.query_one("#methods")
    labels = [str(methods.get_option_at_index(i).prompt) for i in range(methods.option_count)]
    methods.highlighted = labels.index(name)
    await pilot.pause()
    return methods


def saved_session(path, runner: "FakeRunner | None" = None, plan_doc: dict | None = None) -> Session:
    """A finished fake session, written to ``path`` when given (for open / compare tests)."""
    from workbench.plan import parse_plan

    plan = parse_plan(plan_doc or DEMO_PLAN, source="test")
    return (runner or FakeRunner())(Session(plan, path), out=str(path) if path else None)


def screen_text(app) -> list[str]:
    """What the terminal shows now, as lines of text (from the app's own SVG screenshot)."""
    import html
    import re

    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)" textLength="[\d.]+"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(m[2]), []).append((float(m[1]), html.unescape(m[3])))
    lines = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            line = line.ljust(round(x / 12.2)) + text
        lines.append(line.replace("\xa0", " ").rstrip())
    return lines
