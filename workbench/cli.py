"""The `workbench` command: bare or with a session file → the TUI; `--preset` → a headless run.

Headless output: the comparison table (or JSON with --json) on stdout; progress and diagnostics
on stderr. Exit codes: 0 all cells done (or unavailable, with their reason), 1 some cells failed
or the run was cancelled, 2 bad input (unknown preset/method/dataset, malformed file, a model
that cannot be loaded).

Only argparse is imported at start-up so `workbench --help` stays instant; the engine modules are
imported when needed.
"""

from __future__ import annotations

import argparse
import sys
import time

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench",
        description="Benchmark LLM context compression: KV-cache presses (kvpress) and prompt compressors, "
        "measured on the same model and the same tokens. Without --preset it opens the terminal app.",
        epilog="rate = fraction of context tokens KEPT (1.0 = uncompressed; kvpress's compression_ratio = 1 - rate). "
        "Exit codes: 0 ok, 1 some cells failed or cancelled, 2 bad input.",
    )
    p.add_argument("session", nargs="?", help="a saved session (.json) to open in the app")
    p.add_argument("--preset", metavar="NAME|PATH", help="run a shipped preset or a preset file headless")
    p.add_argument("--resume", metavar="SESSION", help="resume (or re-report) a saved session headless")
    p.add_argument("--out", metavar="FILE", help="session file to write (default: sessions/NAME-TIME.json); "
                   "an existing file with the same plan is resumed")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and the work it implies, then exit")
    p.add_argument("--device", help="override the plan's device: auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", help="override the plan's dtype: auto, float32, float16, bfloat16")
    p.add_argument("--batch-size", metavar="N|auto", help="samples per forward pass where results do not change "
                   "(baseline, shared-prefill presses); auto: as many as the GPU's free memory allows, 1 on a CPU")
    p.add_argument("--samples", type=int, metavar="N", help="override the number of samples of every dataset")
    p.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    p.add_argument("--list", choices=["presets", "methods", "datasets"], help="list what is available and exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        from workbench import __version__

        print(f"workbench {__version__}")
        return EXIT_OK
    if args.list:
        return _list(args.list)
    if args.preset or args.resume:
        return headless(args)
    return _open_app(args.session)


def _err(message: str) -> None:
    print(f"workbench: {message}", file=sys.stderr)


def _open_app(session_path: str | None) -> int:
    try:
        from screens.app import run_app
    except ImportError:
        _err("the terminal app is not part of this build yet; run a preset headless: workbench --preset quickstart")
        return EXIT_BAD_INPUT
    return run_app(session_path)


def _list(what: str) -> int:
    if what == "presets":
        from workbench.plan import load_preset, preset_names

        for name in preset_names():
            print(f"{name:28s} {load_preset(name).description}")
    elif what == "methods":
        from workbench.methods import registry

        for info in registry.all_methods():
            extra = " [needs hub]" if info.needs_hub else ""
            driven = "rate" if info.rate_driven else "params"
            print(f"{info.family:6s} {info.name:28s} ({driven}) {info.summary}{extra}")
    else:
        from workbench.datasets import list_datasets

        for info in list_datasets():
            print(f"{info.name:14s} {info.kind:5s} {info.description} — {info.licence}")
    return EXIT_OK


def _load(args):
    """(plan or session, output path) from the arguments; raises the engine's input errors."""
    from pathlib import Path

    from workbench.plan import load_preset
    from workbench.session import Session, SessionError

    if args.resume:
        session = Session.load(args.resume)
        plan = session.plan
    else:
        session = None
        plan = load_preset(args.preset)
    overrides = {}
    if args.device:
        overrides["device"] = args.device
    if args.dtype:
        overrides["dtype"] = args.dtype
    if args.batch_size:
        overrides["batch_size"] = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    if overrides or args.samples:
        from workbench.plan import parse_plan

        data = plan.to_dict()
        data.update(overrides)
        if args.samples:
            for ds in data["datasets"]:
                ds["samples"] = args.samples
        plan = parse_plan(data, source="command line")
        if session is not None:
            raise SessionError("--device/--dtype/--batch-size/--samples cannot change a session being resumed; use --preset SESSION --out NEW")
    out = args.out or (args.resume if args.resume else None)
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = str(Path("sessions") / f"{plan.name}-{stamp}.json")
    if session is None and Path(out).exists():
        existing = Session.load(out)
        if existing.plan.to_dict() != plan.to_dict():
            raise SessionError(f"{out} holds a session of a different plan; choose another --out (or delete it)")
        session = existing
    return (session or plan), out


def _describe(plan) -> str:
    from workbench import families
    from workbench.plan import BASELINE_LABEL

    lines = [f"plan {plan.name}: {plan.description}".rstrip(": "),
             f"  model     {plan.model} (device {plan.device}, dtype {plan.dtype})",
             f"  protocol  {plan.protocol.name}: {plan.protocol.context_tokens} context + {plan.protocol.continuation_tokens} "
             f"continuation tokens" + (f", chunks of {plan.protocol.chunk_size}" if plan.protocol.chunk_size else ""),
             "  datasets  " + ", ".join(f"{d.name} ({d.samples} samples, seed {d.seed})" for d in plan.datasets),
             f"  rates     {', '.join(f'{r:g}' for r in plan.rates)} (fraction of tokens kept)",
             "  batch     " + ("auto (as many samples per forward pass as the GPU's free memory allows; 1 on a CPU)"
                            if plan.batch_size == "auto" else f"up to {plan.batch_size} samples per forward pass"),
             "  methods"]
    lines.append(f"    {BASELINE_LABEL:24s} no compression, once per sample")
    for m in plan.methods:
        rates = m.rates if m.rates is not None else plan.rates
        path, why = families.get(m.family).path(m, plan)
        rate_text = "threshold" if rates == [None] else ",".join(f"{r:g}" for r in rates)
        params = ", ".join(f"{k}={v['name'] if isinstance(v, dict) else v}" for k, v in m.params.items())
        lines.append(f"    {m.label:24s} {m.name} [{params}] rates {rate_text}; {path}" + (f" ({why})" if why else ""))
    cells = plan.cells()
    passes = plan.forward_passes()
    n_samples = sum(d.samples for d in plan.datasets)
    lines.append(f"  cells {len(cells)}, samples {n_samples} per cell, forward passes ≈ {passes['total']} "
                 f"(baseline {passes['baseline']}, methods {passes['methods']}; fewer with shared prefill)")
    return "\n".join(lines)


class _Progress:
    """A one-line progress bar on stderr when it is a terminal; one line per finished cell otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, event) -> None:
        if event.kind == "progress":
            now = time.monotonic()
            if not self.tty or now - self.last < 0.1:
                return
            self.last = now
            done, total = event.data["done"], max(event.data["total"], 1)
            width = 30
            filled = int(width * done / total)
            elapsed = event.data["elapsed"]
            eta = elapsed / done * (total - done) if done else 0
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                             f"{elapsed:5.0f}s eta {eta:4.0f}s {event.message[:40]:40s}")
            sys.stderr.flush()
        elif event.kind in ("cell-finished",):
            cell = event.data["cell"]
            if self.tty:
                sys.stderr.write("\r" + " " * 100 + "\r")
            detail = f"ppl {cell['ppl']:.3f}" if cell.get("ppl") is not None else (cell.get("error") or cell.get("reason") or "")
            sys.stderr.write(f"  {cell['status']:11s} {cell['method']} @ {cell['rate']}: {detail}\n")
        elif event.kind in ("model-loading", "model-loaded", "run-started", "run-finished", "log"):
            if self.tty:
                sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.write(f"{event.message}\n")


def headless(args) -> int:
    import json
    import signal
    import threading

    from workbench.datasets import DatasetError
    from workbench.models import ModelLoadError
    from workbench.plan import PlanError
    from workbench.session import SessionError

    try:
        target, out = _load(args)
    except (PlanError, SessionError, DatasetError, ModelLoadError) as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    plan = target.plan if hasattr(target, "plan") else target
    if args.dry_run:
        print(_describe(plan))
        return EXIT_OK

    from workbench import report, runner

    cancel = threading.Event()

    def on_sigint(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        _err("cancelling after the current sample (Ctrl+C again to stop at once); finished cells are kept")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        session = runner.run(target, _Progress(), cancel, out=out)
    except ModelLoadError as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps({"session": str(session.path), "status": session.status,
                          "cells": [report.summary(c) for c in session.cells.values()]}, indent=1))
    else:
        print(report.text_table(session))
    print(f"session saved to {session.path}", file=sys.stderr)
    if session.status == "cancelled":
        _err(f"cancelled; resume with: workbench --resume {session.path}")
        return EXIT_FAILED
    return EXIT_FAILED if session.failed_cells() else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
