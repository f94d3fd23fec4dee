"""The `workbench` command: bare or with a session file → the TUI; `--preset` → a headless run.

Headless output: the comparison table (or JSON with --json) on stdout; progress and diagnostics
on stderr. Exit codes: 0 all cells done (or unavailable, with their reason), 1 some cells failed
or the run was cancelled, 2 bad input (unknown preset/method/dataset, malformed file, conflicting
arguments, a plan this machine cannot run, a session file another run is writing, a model that
cannot be loaded): one line naming the file and the field, never a traceback, and nothing written.

``--out`` never replaces a file that is not this plan's session; one process writes a session file
at a time (its lock, see workbench.session_lock).

Only argparse is imported at start-up so `workbench --help` stays instant; the engine modules are
imported when needed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

# Subcommands: `workbench NAME ...` hands the rest of the arguments to the named module's `main(argv) -> int`
# (imported only when asked for, so `workbench --help` stays instant). Each one parses its own arguments and keeps
# this module's exit codes. A session file that happens to be called like a subcommand opens as ./NAME.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("workbench.analysis.cli:main", "where each method breaks: thresholds r*, paired ranking, tests, verdict"),
    "serve": ("workbench.serve.cli:main", "serve a model (optionally under a KV press) over an OpenAI-compatible API"),
    "train-kvzap": ("workbench.kvzap.cli:main", "train the KVzap scorer for a model (so the kvzap press runs offline)"),
    "train-points": ("workbench.points.cli:main", "train the compression-point classifier for the learned-points schedule"),
    "points-meta": ("workbench.points.meta_cli:main", "what the text around recorded compression points is; accuracy vs compressions"),
    "train": ("workbench.learned.cli:main", "train a learned soft compressor (cross-attention, conv, pooling, gist)"),
}


def _count(text: str) -> int:
    """A positive whole number in ASCII digits ('²'.isdigit() is true, int('٣') is 3: both refused)."""
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _dollars(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected an amount in US dollars (a number of at least 0), got {text!r}")
    return value


def _batch_size(text: str) -> int | str:
    """ASCII digits as a number; anything else goes on to the plan, which names the field when it is wrong."""
    return int(text) if re.fullmatch(r"[0-9]+", text) else text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workbench",
        description="Benchmark LLM context compression: KV-cache presses (kvpress) and prompt compressors,\n"
        "measured on the same model and the same tokens. Without --preset it opens the terminal app.",
        epilog="rate = fraction of context tokens KEPT (1.0 = uncompressed; kvpress's compression_ratio = 1 - rate).\n"
        "Exit codes: 0 ok, 1 some cells failed or cancelled, 2 bad input."
        + ("\n\nsubcommands (each with its own --help):" if SUBCOMMANDS else "")
        + "".join(f"\n  workbench {name:12s} {what}" for name, (_, what) in SUBCOMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", nargs="?", help="a saved session (.json) to open in the app")
    p.add_argument("--preset", metavar="NAME|PATH", help="run a shipped preset or a preset file headless")
    p.add_argument("--resume", metavar="SESSION", help="resume (or re-report) a saved session headless")
    p.add_argument("--out", metavar="FILE", help="session file to write (default: sessions/NAME-TIME.json); "
                   "an existing file is resumed when it holds this plan's session and never replaced otherwise")
    p.add_argument("--dry-run", action="store_true", help="print the resolved plan and the work it implies, then exit")
    p.add_argument("--device", help="override the plan's device: auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", help="override the plan's dtype: auto, float32, float16, bfloat16")
    p.add_argument("--batch-size", type=_batch_size, metavar="N|auto", help="samples per forward pass where results do "
                   "not change (baseline, shared-prefill presses); auto: as many as the GPU's free memory allows, 1 on a CPU")
    p.add_argument("--samples", type=_count, metavar="N", help="override the number of samples of every dataset")
    p.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    p.add_argument("--max-cost", type=_dollars, metavar="USD", help="with an API evaluator: stop before the session's "
                   "spend would cross USD dollars (overrides the plan's max_cost_usd; allowed with --resume)")
    p.add_argument("--no-cache", action="store_true", help="with an API evaluator: send every request, even those "
                   "answered before (the response cache is neither read nor written)")
    p.add_argument("--workers", type=_count, metavar="N", help="measure on N Ray workers: one per GPU (at most the GPUs), "
                   "or N CPU processes on a machine without one; needs the ray extra")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run the workers on an existing Ray cluster (auto: the one this "
                   "machine joined; or HOST:PORT); needs the ray extra")
    p.add_argument("--list", choices=["presets", "methods", "datasets"], help="list what is available and exit")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


_HEADLESS_ONLY = ("out", "dry_run", "device", "dtype", "batch_size", "samples", "json", "max_cost", "no_cache", "workers", "ray")


def _conflict(args) -> str | None:
    """Arguments that would silently ignore one another; None when they fit together."""
    def flag(name):
        return "--" + name.replace("_", "-")

    given = [n for n in _HEADLESS_ONLY if getattr(args, n) not in (None, False)]
    if args.version or args.list:
        others = [flag(n) for n in ("preset", "resume", *_HEADLESS_ONLY) if getattr(args, n) not in (None, False)]
        others += ["SESSION"] if args.session else []
        if args.version and args.list:
            others.insert(0, "--list")
        if others:
            return f"{'--version' if args.version else '--list'} takes no other argument (got {', '.join(others)})"
        return None
    if args.preset and args.resume:
        return ("--preset and --resume both name what to run: give one (--resume SESSION continues a session; "
                "--preset SESSION --out NEW runs its plan afresh)")
    if args.session and (args.preset or args.resume):
        return (f"the session file {args.session} opens the app, {'--preset' if args.preset else '--resume'} runs headless: "
                "give one (to run a session headless: --resume FILE)")
    if not (args.preset or args.resume) and given:
        return (f"{', '.join(flag(n) for n in given)} {'applies' if len(given) == 1 else 'apply'} to a headless run: "
                "add --preset NAME|PATH or --resume SESSION")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        target, _ = SUBCOMMANDS[argv[0]]
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed its one-line usage error (or the help)
        return exit_.code if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    problem = _conflict(args)
    if problem:
        _err(problem)
        return EXIT_BAD_INPUT
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
    # A file name from argv or a string from a JSON file may hold bytes the terminal cannot encode.
    text = f"workbench: {message}\n"
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def _open_app(session_path: str | None) -> int:
    if session_path:  # a file the app cannot open is said here, before the terminal switches to the app
        from workbench.session import Session, SessionError

        try:
            Session.load(session_path)
        except SessionError as err:
            hint = ""
            if "field 'schema_version'" in str(err) and _looks_like_a_preset(session_path):
                hint = f"; it looks like a preset: run it with workbench --preset {session_path}"
            _err(f"{err}{hint}")
            return EXIT_BAD_INPUT
    try:
        from screens.app import run_app
    except ImportError:
        _err("the terminal app is not part of this build yet; run a preset headless: workbench --preset quickstart")
        return EXIT_BAD_INPUT
    return run_app(session_path)


def _looks_like_a_preset(path: str) -> bool:
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "schema_version" not in data and bool({"model", "methods", "datasets"} & set(data))


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
    """(plan, source, resume path or None, output path) from the arguments; raises the engine's input errors.

    Reads the preset or the session to resume; writes nothing."""
    from workbench.plan import load_preset, parse_plan
    from workbench.session import Session, SessionError, check_target

    if args.resume:
        plan, source = Session.load(args.resume).plan, args.resume
    else:
        plan = load_preset(args.preset)
        source = args.preset if args.preset.endswith(".json") or "/" in args.preset else f"preset {args.preset}"
    overrides = {k: v for k, v in (("device", args.device), ("dtype", args.dtype), ("batch_size", args.batch_size))
                 if v is not None}
    if overrides or args.samples:
        if args.resume:
            raise SessionError("--device/--dtype/--batch-size/--samples cannot change a session being resumed; "
                               f"run its plan afresh instead: --preset {args.resume} --out NEW.json")
        data = plan.to_dict()
        data.update(overrides)
        if args.samples:
            for ds in data["datasets"]:
                ds["samples"] = args.samples
        flags = [f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()] + ([f"--samples {args.samples}"] if args.samples else [])
        source = f"{source} with {' '.join(flags)}"
        plan = parse_plan(data, source=source)
    out = args.out or args.resume or str(Path("sessions") / f"{safe_stem(plan.name)}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    check_target(out)
    return plan, source, args.resume, out


def safe_stem(name: str) -> str:
    """A plan name as one file name: nothing that walks out of the sessions folder or hides the file."""
    stem = re.sub(r"[^\w.+-]+", "_", name).strip("._") or "session"
    return stem[:80]


def _session_for(plan, resume: str | None, out: str):
    """The session to run: the resumed one, this plan's session already at ``out``, or a new one.

    Never adopts (and so never replaces) a file at ``out`` that is not this plan's session."""
    from workbench.session import Session, SessionError

    target = Path(out)
    if resume:
        session = Session.load(resume)
        if target.exists() and not _same_file(target, Path(resume)):
            raise SessionError(f"{out}: already exists; --resume {resume} --out FILE writes a new copy and never replaces "
                               f"a file: choose a new --out (or continue that file itself with --resume {out})")
        session.path = target
        return session
    if not target.exists():
        return Session(plan, target)
    try:
        existing = Session.load(target)
    except SessionError as err:
        raise SessionError(f"{out}: exists and is not a usable workbench session ({err}); --out never replaces another "
                           "file: choose another --out") from None
    if existing.plan.result_dict() != plan.result_dict():  # where it ran (workers) is no part of what it measures
        raise SessionError(f"{out}: holds a session of a different plan ({existing.plan.name}); --out never replaces it: "
                           "choose another --out (or delete it)")
    return existing


def _locked_session(checked, plan, resume: str | None, out: str):
    """``out``'s lock taken, then the session read again under it: another run may have written the file
    between the first look (``checked``) and now. Raises SessionLocked naming the holder."""
    checked.acquire_lock(out)
    try:
        session = _session_for(plan, resume, out)
        session.acquire_lock(out)  # a share of the same lock: this process holds it
        return session
    finally:
        checked.release_lock()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _protocol_lengths(protocol) -> str:
    """The token lengths a protocol works with, as the dry run says them."""
    from workbench import protocols

    if protocols.info(protocol.name).decodes:  # a prompt (a text window's start, or a task's), then generation
        return (f"{protocol.context_tokens}-token prompts of text windows (tasks: their own prompts), "
                f"up to {protocol.max_new_tokens} new tokens")
    return (f"{protocol.context_tokens} context + {protocol.continuation_tokens} continuation tokens"
            + (f", chunks of {protocol.chunk_size}" if protocol.chunk_size else ""))


def _driven_by(method) -> str:
    """What sets a method's kept fraction when it takes no rates: its own budget parameter, else a threshold."""
    from workbench.methods import registry

    info = registry.lookup(method.name, method.family)
    budget = method.params.get(info.rates_unless) if info.rates_unless else None
    return f"none ({info.rates_unless} {budget})" if budget is not None else "none (threshold)"


def _describe(plan, done: set[str] | None = None) -> str:
    """The dry run: the resolved plan and the work it implies (``done``: cell keys a resumed session has)."""
    from workbench import families
    from workbench.plan import BASELINE_LABEL

    lines = [f"plan {plan.name}: {plan.description}".rstrip(": "),
             f"  model     {plan.model} (device {plan.device}, dtype {plan.dtype})",
             f"  protocol  {plan.protocol.name}: {_protocol_lengths(plan.protocol)}",
             "  datasets  " + ", ".join(f"{d.name} ({d.samples} samples, seed {d.seed})" for d in plan.datasets),
             f"  rates     {', '.join(f'{r:g}' for r in plan.rates)} (fraction of tokens kept)",
             "  batch     " + ("auto (as many samples per forward pass as the GPU's free memory allows; 1 on a CPU)"
                            if plan.batch_size == "auto" else f"up to {plan.batch_size} samples per forward pass"),
             "  methods"]
    ex = plan.execution
    if ex is not None:  # where the units run
        count = f"{ex.workers} Ray worker{'s' * (ex.workers != 1)}" if ex.workers else "one Ray worker per GPU"
        lines.insert(-1, f"  workers   {count} on " + (f"the Ray cluster at {ex.ray}" if ex.ray else
                                                         "a local Ray (one GPU each, or CPU processes without GPUs)"))
    lines.append(f"    {BASELINE_LABEL:24s} no compression, once per sample")
    for m in plan.methods:
        rates = m.rates if m.rates is not None else plan.rates
        path, why = families.get(m.family).path(m, plan)
        unavailable = families.get(m.family).unavailable(m, plan)
        if unavailable:
            path, why = "unavailable", unavailable
        rate_text = _driven_by(m) if rates == [None] else ",".join(f"{r:g}" for r in rates)
        params = ", ".join(f"{k}={v['name'] if isinstance(v, dict) else v}" for k, v in m.params.items())
        lines.append(f"    {m.label:24s} {m.name} [{params}] rates {rate_text}; {path}" + (f" ({why})" if why else ""))
    cells = plan.cells()
    passes = plan.forward_passes()
    n_samples = sum(d.samples for d in plan.datasets)
    if plan.evaluator is not None:
        from workbench.api.estimate import estimate

        e = plan.evaluator
        est = estimate(plan, done)
        lines.insert(2, f"  evaluator {e.label()} at {e.base_url} (key from ${e.api_key_env or '(none)'}; up to {e.max_concurrency} "
                        f"requests at once, temperature {e.temperature:g})")
        lines.append(f"  cells {len(cells)}, samples {n_samples} per cell; API: {est.text()}"
                     + (f" (prices: {est.price_source})" if est.price_source else "")
                     + (f"; cap ${plan.max_cost_usd:,.2f}" if plan.max_cost_usd is not None else "")
                     + ("; contexts of unreadable datasets estimated at context_tokens" if est.approximate_inputs else ""))
        return "\n".join(lines)
    lines.append(f"  cells {len(cells)}, samples {n_samples} per cell, forward passes ≈ {passes['total']} "
                 f"(baseline {passes['baseline']}, methods {passes['methods']}; fewer with shared prefill)")
    return "\n".join(lines)


class _Progress:
    """A one-line progress bar on stderr when it is a terminal; one line per finished cell otherwise."""

    def __init__(self):
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.first: tuple[float, int] | None = None  # (time, samples done) at the first progress of this run
        self.finished: dict = {}  # the run-finished event's data
        self.api = ""  # a remote evaluator's latest activity, shown on the progress line
        self.workers: dict[int, str] = {}  # Ray workers: what each is measuring and its pace, on the progress line

    def __call__(self, event) -> None:
        if event.kind == "progress":
            now = time.monotonic()
            done, total = event.data["done"], max(event.data["total"], 1)
            if self.first is None:
                self.first = (now, done)
            if not self.tty or now - self.last < 0.1:
                return
            self.last = now
            width = 30
            filled = int(width * done / total)
            elapsed = event.data["elapsed"]
            # The pace of this run's samples (model loading and what a resumed session had done excluded).
            t0, done0 = self.first
            eta = f"{(now - t0) / (done - done0) * (total - done):4.0f}s" if done > done0 else "   ?"
            detail = self.api or " | ".join(self.workers[w] for w in sorted(self.workers)) or event.message
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                             f"{elapsed:5.0f}s eta {eta} {detail[:40 if not self.workers else 120]:40s}")
            sys.stderr.flush()
        elif event.kind == "worker":
            d = event.data
            pace = f" {d['samples_per_s']:.1f}/s" if d.get("samples_per_s") else ""
            self.workers[d["worker"]] = f"w{d['worker']} {d['device']} {d['state']} {(d.get('unit') or '')[:24]}{pace}".rstrip()
            if d["state"] in ("ready", "lost", "starting"):  # the workers' comings and goings, one line each
                if self.tty:
                    sys.stderr.write("\r" + " " * 100 + "\r")
                sys.stderr.write(f"{event.message}\n")
        elif event.kind == "api":
            d = event.data
            self.api = (f"API {d['done']} done, {d['in_flight']} in flight, {d['waiting']} waiting, "
                        f"${d['session_usd']:.4f}")
        elif event.kind in ("cell-finished",):
            cell = event.data["cell"]
            if self.tty:
                sys.stderr.write("\r" + " " * 100 + "\r")
            detail = (f"ppl {cell['ppl']:.3f}" if cell.get("ppl") is not None else
                      f"score {cell['score']:.3f}" if cell.get("score") is not None and cell["status"] == "done" else
                      (cell.get("error") or cell.get("reason") or ""))
            if cell.get("cost_usd") is not None:
                detail += f", ${cell['cost_usd']:.4f}" + (" (estimated)" if cell.get("cost_estimated") else "")
            from workbench.tables import rate_text

            sys.stderr.write(f"  {cell['status']:11s} {cell['method']} @ {rate_text(cell)}: {detail}\n")
        elif event.kind in ("model-loading", "model-loaded", "run-started", "run-finished", "log"):
            if event.kind == "run-finished":
                self.finished = event.data
            if self.tty:
                sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.write(f"{event.message}\n")


def headless(args) -> int:
    from workbench.datasets import DatasetError
    from workbench.models import ModelLoadError
    from workbench.plan import PlanError
    from workbench.session import SessionError

    bad_input = (PlanError, SessionError, DatasetError, ModelLoadError)
    try:
        plan, source, resume, out = _load(args)
        session = _session_for(plan, resume, out)
        _apply_max_cost(args, session)
        _apply_execution(args, session)
        if args.dry_run:
            print(_describe(session.plan, {k for k, c in session.cells.items() if c["status"] in ("done", "unavailable")}))
            return EXIT_OK
        from workbench.preflight import preflight

        preflight(session.plan, source)
        session = _locked_session(session, plan, resume, out)
        _apply_max_cost(args, session)  # read again under the lock: apply the cap to what will run
        _apply_execution(args, session)
    except bad_input as err:
        _err(str(err))
        return EXIT_BAD_INPUT
    try:
        return _run(args, session, out)
    finally:
        session.release_lock()


def _apply_max_cost(args, session) -> None:
    """--max-cost: the spending cap of this run (on --resume too: it changes no result, only when the run stops)."""
    from workbench.plan import PlanError, parse_plan

    if args.max_cost is None:
        return
    data = session.plan.to_dict()
    data["max_cost_usd"] = args.max_cost
    try:
        session.plan = parse_plan(data, source="--max-cost")
    except PlanError as err:
        raise PlanError(f"--max-cost: {err.message}") from None


def _apply_execution(args, session) -> None:
    """--workers/--ray: where this run measures (on --resume too: it changes no result). Without Ray installed,
    they — or a plan's "execution" block — are bad input, named with how to install it."""
    from workbench.plan import PlanError, parse_execution

    if args.workers is not None or args.ray is not None:
        given = {"workers": args.workers, "ray": args.ray}
        if session.plan.execution is not None and args.workers is None:  # --ray alone keeps the plan's worker count
            given["workers"] = session.plan.execution.workers
        session.plan.execution = parse_execution(given, "--workers/--ray", "execution")
        if session.plan.evaluator is not None:
            raise PlanError("--workers/--ray measure a local model; a plan with an evaluator sends its requests from one "
                            "process (its max_concurrency sets how many at once)")
    if session.plan.execution is not None:
        from workbench.ray_worker import RAY_MISSING, ray_available

        if not ray_available():
            raise PlanError(RAY_MISSING)


def _run(args, session, out: str) -> int:
    import json
    import signal
    import threading

    from workbench import figures, report, runner
    from workbench.models import ModelLoadError
    from workbench.plan import PlanError
    from workbench.session import SessionError

    cancel = threading.Event()

    def on_sigint(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        _err("cancelling after the current sample (Ctrl+C again to stop at once); finished cells are kept")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        loader = (lambda plan: runner.load_backend(plan, use_cache=False)) if args.no_cache else runner.load_backend
        progress = _Progress()
        session = runner.run(session, progress, cancel, out=out, backend_loader=loader)
    except (ModelLoadError, PlanError) as err:  # PlanError: more workers than the Ray cluster has GPUs
        _err(str(err))
        return EXIT_BAD_INPUT
    except SessionError as err:  # the file could not be written any more (disk full, folder removed)
        _err(str(err))
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps({"session": str(session.path), "status": session.status,
                          "cells": [report.summary(c) for c in session.cells.values()]}, indent=1))
    else:
        print(report.text_table(session))
    print(f"session saved to {session.path}", file=sys.stderr)
    cost, estimated = figures.session_cost(session.cells.values())
    if session.plan.evaluator is not None:
        _err(f"API spend of this session: ${cost:.4f}{' (partly estimated: the API reported no usage)' if estimated else ''}")
    stopped = progress.finished.get("stopped")
    if stopped:
        _err(f"{stopped['reason']}; resume with: workbench --resume {session.path}"
             + (" --max-cost USD" if stopped["kind"] == "budget" else ""))
        return EXIT_BAD_INPUT if stopped["kind"] == "refused" else EXIT_FAILED
    if session.status == "cancelled":
        _err(f"cancelled; resume with: workbench --resume {session.path}")
        return EXIT_FAILED
    return EXIT_FAILED if session.failed_cells() else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
