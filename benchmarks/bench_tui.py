"""Speed targets of the terminal app, printed as a table.

1. Time to first frame, two ways. (a) In tmux at 100×30, as a user sees it: from starting the command
   `.venv/bin/workbench` in a new tmux pane (its own tmux server) until `tmux capture-pane` shows the
   Setup form; median of --starts runs, and the same for a bare Textual app (a header, a static, a
   footer) as the reference row, measured in the same run so that the machine's load is the same for
   both. (b) `python -m workbench` in a pseudo-terminal (80×24), from the spawn until the Setup screen's
   text arrives. Both include the interpreter's start. Target < 0.8 s (torch must not load before a run
   starts; the first frame shows the first Setup tab and builds the others just after).
2. Keypress-to-redraw during a run: the app runs headless in this process with a run in its worker;
   a second thread presses a key that redraws a plot ("b", budget unit) every ~0.1 s and the time from
   the key being posted to the next frame composed after its handler ran is recorded. Also the worst
   lateness of a 20 ms timer on the event loop (the main thread's longest stall). Target < 100 ms.
   Runners: "fake" (the tests' fake runner: ~40 samples a second, each saved, a cell finishing every ~0.4 s), "tiny" (the
   real runner on a random-weight tiny Llama: real torch work competing for the GIL and the cores),
   "embedded" (the real runner on smollm2-135m; needs the embedded model package).

Usage: .venv/bin/python benchmarks/bench_tui.py [--runner fake,tiny] [--seconds 8] [--starts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import re
import select
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake runner lives with the tests
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\x1b\][^\x07]*\x07")
MARKER = "Plan name"  # a label of the Setup screen: its arrival means the first frame is drawn


# -- 1. time to first frame ------------------------------------------------------------------------


def first_frame_seconds(timeout: float = 20.0) -> float:
    import fcntl
    import termios

    cwd = tempfile.mkdtemp(prefix="bench-tui-")
    pid, fd = pty.fork()
    if pid == 0:  # child: the real command a user types, in a real (pseudo) terminal
        os.chdir(cwd)
        os.environ.update(TERM="xterm-256color", COLORTERM="truecolor")
        os.execv(sys.executable, [sys.executable, "-m", "workbench"])
    start = time.perf_counter()
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    seen, elapsed = "", None
    try:
        while time.perf_counter() - start < timeout:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 65536).decode("utf-8", "replace")
                except OSError:
                    break
                seen += ANSI.sub("", chunk)
                if MARKER in seen:
                    elapsed = time.perf_counter() - start
                    break
        os.write(fd, b"\x11")  # ctrl+q
        deadline = time.perf_counter() + 5
        while time.perf_counter() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            select.select([fd], [], [], 0.05) and _drain(fd)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    finally:
        os.close(fd)
    if elapsed is None:
        raise RuntimeError(f"no first frame within {timeout}s; the terminal showed: {seen[-500:]!r}")
    return elapsed


BARE_APP = """
from textual.app import App
from textual.widgets import Footer, Header, Static


class Bare(App):
    def compose(self):
        yield Header()
        yield Static("Plan name")
        yield Footer()


Bare().run()
"""


def tmux_first_frame(command: list[str], cwd: str, size: tuple[int, int] = (100, 30), timeout: float = 20.0) -> float:
    """Seconds from starting ``command`` in a new tmux pane until capture-pane shows MARKER (polled every 10 ms).
    A tmux server of its own (-L), so no other tmux session is touched."""
    tmux = ["tmux", "-L", f"bench-tui-{os.getpid()}"]
    start = time.perf_counter()
    subprocess.run([*tmux, "new-session", "-d", "-s", "bench", "-x", str(size[0]), "-y", str(size[1]), "-c", cwd,
                    f"{shlex.join(command)}; sleep 60"], check=True)
    try:
        while time.perf_counter() - start < timeout:
            shown = subprocess.run([*tmux, "capture-pane", "-p", "-t", "bench"], capture_output=True, text=True).stdout
            if MARKER in shown:
                return time.perf_counter() - start
            time.sleep(0.01)
        raise RuntimeError(f"no first frame within {timeout}s; the pane showed: {shown[-500:]!r}")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        time.sleep(0.2)  # the server's exit, before the next start


def tmux_rows(starts: int) -> list[tuple]:
    """The workbench and the bare app, interleaved (so a change of load hits both alike), `starts` times each."""
    if not shutil.which("tmux"):
        print("tmux not found: the tmux rows are left out", file=sys.stderr)
        return []
    cwd = tempfile.mkdtemp(prefix="bench-tui-tmux-")
    bare = Path(cwd) / "bare_app.py"
    bare.write_text(BARE_APP)
    script = ROOT / ".venv" / "bin" / "workbench"
    workbench = [str(script)] if script.exists() else [sys.executable, "-m", "workbench"]
    times: dict[str, list[float]] = {"workbench": [], "bare": []}
    for _ in range(starts):
        times["workbench"].append(tmux_first_frame(workbench, cwd))
        times["bare"].append(tmux_first_frame([sys.executable, str(bare)], cwd))
    load = os.getloadavg()[0]
    rows = []
    for name, label, target in (("workbench", "time to first frame (tmux 100×30, `.venv/bin/workbench`)", "< 0.8 s"),
                                ("bare", "  reference: bare Textual app (header, static, footer), same way", "—")):
        t = times[name]
        rows.append((label, len(t), f"{statistics.median(t):.2f} s", "—", f"{max(t):.2f} s", target,
                     ("yes" if statistics.median(t) < 0.8 else "NO") if target != "—" else "—"))
    print(f"[tmux] workbench {', '.join(f'{x:.2f}' for x in times['workbench'])} s; bare "
          f"{', '.join(f'{x:.2f}' for x in times['bare'])} s; load average {load:.1f}", file=sys.stderr)
    return rows


def _drain(fd) -> None:
    try:
        os.read(fd, 65536)
    except OSError:
        pass


# -- 2. keypress-to-redraw during a run ------------------------------------------------------------


def tiny_llama(folder: Path) -> Path:
    """A random-weight Llama (as tests/conftest.py builds it), big enough to keep a core busy."""
    from conftest import save_tiny_llama

    return save_tiny_llama(folder, hidden_size=256, intermediate_size=512, num_hidden_layers=4, max_position_embeddings=2048)


def bench_plan(kind: str, folder: Path):
    from workbench.plan import parse_plan

    methods = ["knorm", "streaming-llm", "snapkv", {"name": "random", "family": "kv"}, "tova", "expected-attention"]
    if kind == "fake":
        # Sessions as big as real ones (the runner saves the whole document after every sample), many events.
        doc = {"model": "smollm2-135m", "datasets": [{"name": "wikitext2", "samples": 16}, {"name": "tinystories", "samples": 16},
                                                     {"name": "paulgraham", "samples": 16}],
               "methods": methods, "rates": [0.75, 0.5, 0.25]}
    elif kind == "tiny":
        # Built in another process: torch must first load in the run's worker thread, as in the app.
        subprocess.run([sys.executable, __file__, "--build-tiny", str(folder / "tiny")], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        doc = {"model": str(folder / "tiny"), "device": "cpu", "dtype": "float32",
               "datasets": [{"name": "wikitext2", "samples": 16}],
               "protocol": {"context_tokens": 512, "continuation_tokens": 64}, "methods": methods, "rates": [0.75, 0.5, 0.25]}
    else:
        doc = {"model": "smollm2-135m", "device": "cpu", "datasets": [{"name": "wikitext2", "samples": 4}],
               "protocol": {"context_tokens": 512, "continuation_tokens": 64}, "methods": methods, "rates": [0.75, 0.5, 0.25]}
    return parse_plan({"name": f"bench-{kind}", **doc}, source="bench")


async def _stall(kind: str, seconds: float, folder: Path) -> dict:
    from textual import events

    from test_app_fakes import FakeRunner, fixed_device
    from screens.app import WorkbenchApp
    from screens import run as run_screen

    plan = bench_plan(kind, folder)
    runner = FakeRunner(delay=0.02) if kind == "fake" else None
    app = WorkbenchApp(run_fn=runner, sessions_dir=folder / "sessions", device_probe=fixed_device, stamp=lambda: kind,
                       theme="textual-dark")
    frames: list[float] = []
    handled: list[float] = []
    original_display = app._display

    def display(screen, renderable):
        frames.append(time.perf_counter())
        return original_display(screen, renderable)

    app._display = display  # every composed frame (headless: composed, not written to a terminal)
    original_action = run_screen.RunScreen.action_cycle_budget

    def action(self):
        handled.append(time.perf_counter())
        return original_action(self)

    run_screen.RunScreen.action_cycle_budget = action
    lateness: list[float] = []
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            app.replace_plan(plan)
            await pilot.pause(0.2)
            app.action_start_run()
            deadline = time.perf_counter() + 30
            while not app.run_state.active and time.perf_counter() < deadline:  # (Setup's model check answers first)
                await asyncio.sleep(0.05)
            while app.run_state.status == "running" and app.run_state.model == "":
                await asyncio.sleep(0.05)
            while app.run_state.active and "loading" in app.run_state.model:  # model loading is not the UI's cost
                await asyncio.sleep(0.05)
            last = [time.perf_counter()]

            def tick():
                now = time.perf_counter()
                lateness.append(now - last[0] - 0.02)
                last[0] = now

            timer = app.set_interval(0.02, tick)
            posted: list[float] = []
            stop = threading.Event()

            def presser():
                while not stop.is_set():
                    posted.append(time.perf_counter())
                    app.post_message(events.Key("b", "b"))  # thread-safe, like the terminal driver's input thread
                    stop.wait(0.1)

            thread = threading.Thread(target=presser, daemon=True)
            started = time.perf_counter()
            thread.start()
            while app.run_state.active and time.perf_counter() - started < seconds:
                await asyncio.sleep(0.05)
            stop.set()
            thread.join()
            await pilot.pause(0.3)  # the last keys are handled before the app closes
            timer.stop()
            done = app.run_state.done
            app.action_cancel_run()
            while app.run_state.active:
                await asyncio.sleep(0.05)
    finally:
        run_screen.RunScreen.action_cycle_budget = original_action
    latencies = []
    for t0, t1 in zip(posted, handled):
        frame = next((f for f in frames if f >= t1), None)
        if frame is not None:
            latencies.append(frame - t0)
    return {"latencies": latencies, "lateness": [max(0.0, x) for x in lateness], "samples": done, "t0": started,
            "presses": len(posted), "handled": len(handled)}


def stall(kind: str, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-tui-{kind}-") as tmp:
        return asyncio.run(_stall(kind, seconds, Path(tmp)))


# -- the table ---------------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", default="fake,tiny", help="comma-separated: fake, tiny, embedded")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to press keys during each run")
    parser.add_argument("--starts", type=int, default=5, help="app starts for the first-frame time")
    parser.add_argument("--first-frame-only", action="store_true", help="only the time-to-first-frame rows")
    parser.add_argument("--build-tiny", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_tiny:
        tiny_llama(Path(args.build_tiny))
        return 0

    rows = tmux_rows(args.starts)
    starts = [first_frame_seconds() for _ in range(args.starts)]
    rows.append(("time to first frame (pty 80×24, `python -m workbench`)", len(starts), f"{statistics.median(starts):.2f} s",
                 "—", f"{max(starts):.2f} s", "< 0.8 s", "yes" if max(starts) < 0.8 else "NO"))
    for kind in [] if args.first_frame_only else [k.strip() for k in args.runner.split(",") if k.strip()]:
        result = stall(kind, args.seconds)
        lat, late = result["latencies"], result["lateness"]
        name = {"fake": "fake runner, ~40 samples/s", "tiny": "real runner, tiny Llama (CPU)",
                "embedded": "real runner, smollm2-135m (CPU)"}[kind]
        if lat:
            rows.append((f"keypress→redraw during a run: {name}", len(lat), ms(statistics.median(lat)), ms(pct(lat, 0.95)),
                         ms(max(lat)), "< 100 ms", "yes" if max(lat) < 0.1 else "NO"))
        rows.append((f"main-loop stall (20 ms timer lateness): {name}", len(late), ms(statistics.median(late)) if late else "—",
                     ms(pct(late, 0.95)) if late else "—", ms(max(late)) if late else "—", "< 100 ms",
                     "yes" if late and max(late) < 0.1 else "NO"))
        print(f"[{kind}] {result['presses']} keys posted, {result['handled']} handled, {result['samples']} samples run",
              file=sys.stderr)
    header = ("measurement", "n", "median", "p95", "worst", "target", "met")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print(f"\nmachine: {os.cpu_count()} CPU cores visible, python {sys.version.split()[0]}; "
          f"load average {os.getloadavg()[0]:.1f} (other people's work shares these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
