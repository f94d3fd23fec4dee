"""`workbench train --ablation GRID`: expand an ablation grid and train its runs, one per GPU at a time.

Each run's progress lines go to stderr as ``[run] line``; the summary table (or JSON with --json) to stdout.
Exit codes: 0 every run done, 1 some run failed or was cancelled, 2 bad input (the grid, a flag).

``workbench train`` hands its arguments here when the first is ``--ablation`` (``main(argv[1:])``); run alone it is
``python -m workbench.learned.ablation_cli GRID``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench train --ablation", description=(
        "Train every run of an ablation grid (architectures × rates): one run per GPU at a time, the rest queued; "
        "one at a time on a machine without a GPU. A failed run does not stop the others."))
    p.add_argument("grid", metavar="GRID", help="a shipped grid (presets/train/, e.g. ablation-squad) or a grid file")
    p.add_argument("--gpus", type=int, metavar="N", help="use only the first N GPUs (0: none, run on the CPU)")
    p.add_argument("--cpu-workers", type=int, metavar="N", help="without a GPU: N runs at once (default 1)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="schedule through Ray: one actor per GPU of the cluster at ADDRESS ('auto'), or a local Ray")
    p.add_argument("--workdir", metavar="DIR", help="where each run's plan is written (default: the data directory)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and where they would go, then exit")
    p.add_argument("--json", action="store_true", help="print the outcomes as JSON instead of a table")
    return p


def main(argv: list[str] | None = None, command=None) -> int:
    """``command``: an argv that replaces ``python -m workbench train`` before each run's plan path (tests)."""
    from workbench.learned import ablation, grid

    args = build_parser().parse_args(argv)
    for flag, value in (("--gpus", args.gpus), ("--cpu-workers", args.cpu_workers)):
        if value is not None and value < (0 if flag == "--gpus" else 1):
            print(f"workbench train: {flag} must be at least {0 if flag == '--gpus' else 1}, got {value}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.ray:  # "" (the flag alone): a local Ray
        from workbench.ray_cluster import address_problem

        if address_problem(args.ray):
            print(f"workbench train: --ray: {address_problem(args.ray)}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        data, source = grid.load_grid(args.grid)
        runs = grid.expand(data, source)
        grid.check_configs(runs, source)
    except grid.GridError as err:
        print(f"workbench train: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from workbench.models.spec import data_root

    workdir = args.workdir or str(data_root() / "learned" / "ablations" / data["name"])
    if os.path.exists(workdir) and not os.path.isdir(workdir):  # else every run would fail to start, one by one
        print(f"workbench train: --workdir {workdir}: is a file; name a folder for the runs' plans", file=sys.stderr)
        return EXIT_BAD_INPUT
    launcher, slots = None, None
    if args.ray is not None:
        from workbench.learned.ablation_ray import RayLauncher

        try:
            launcher = RayLauncher(args.ray or None, workdir, command, args.gpus, args.cpu_workers)
        except RuntimeError as err:
            print(f"workbench train: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        slots, where = launcher.slots, launcher.where
    else:
        slots = ablation.local_slots(args.gpus, args.cpu_workers)
        if args.gpus and len(slots) < args.gpus or (args.gpus and not slots[0].startswith("cuda:")):
            found = sum(s.startswith("cuda:") for s in slots)
            print(f"workbench train: --gpus {args.gpus} asked for, but this machine has {found} GPU{'s' * (found != 1)} "
                  "(--ray for a cluster's)", file=sys.stderr)
            return EXIT_BAD_INPUT
        cpu = not slots[0].startswith("cuda:")
        threads = max(1, (os.cpu_count() or 1) // len(slots)) if cpu and len(slots) > 1 else None
        launcher = ablation.LocalLauncher(workdir, command, threads)
        where = f"{len(slots)} GPU{'s' * (len(slots) != 1)}" if not cpu else f"{len(slots)} CPU worker{'s' * (len(slots) != 1)}"
    print(f"{data['name']}: {len(runs)} runs on {where}, {len(slots)} at a time", file=sys.stderr)
    if args.dry_run:
        for i, run in enumerate(runs):
            print(f"{run.name}: {run.architecture} at rate {run.rate:.4g}, "
                  + (f"starts on {slots[i]}" if i < len(slots) else "queued"))
        if hasattr(launcher, "close"):
            launcher.close()
        return EXIT_OK
    cancel = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set()) if threading.current_thread() is threading.main_thread() else None

    def started(run, slot):
        print(f"[{run.name}] started on {slot}", file=sys.stderr, flush=True)

    def ended(run, outcome):
        why = f": {outcome.error}" if outcome.error else ""
        print(f"[{run.name}] {outcome.status} after {outcome.seconds / 60:.1f} min{why}", file=sys.stderr, flush=True)

    try:
        outcomes = ablation.schedule(runs, slots, launcher, on_line=lambda name, line: print(f"[{name}] {line}", file=sys.stderr, flush=True),
                                     on_start=started, on_outcome=ended, cancel=cancel)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if hasattr(launcher, "close"):
            launcher.close()
    if args.json:
        print(json.dumps([{"run": r.name, "architecture": r.architecture, "rate": r.rate, "soft_tokens": r.soft_tokens,
                           "slot": o.slot, "status": o.status, "seconds": round(o.seconds, 3), "error": o.error,
                           **ablation.final_figures(o.record)} for r, o in zip(runs, outcomes)], indent=2))
    else:
        print(ablation.summary_table(runs, outcomes))
    return EXIT_OK if all(o.status == "done" for o in outcomes) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
